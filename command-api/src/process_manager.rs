//! The process manager: turns events into the next step and executor results into commands.
//!
//! * Events that leave a step pending (`EnvironmentRequested`, `InfraApplied`,
//!   `RetryRequested`, `DestroyRequested`) → `StartPendingOperation` with a fresh operation id.
//!   The aggregate ignores it when a step is already running, so redelivery is harmless.
//! * Executor results → `CompleteOperation`; the aggregate accepts only the in-flight
//!   operation's result, so late and duplicate results are harmless too.
//! * A job JetStream gave up on (its executor crashed or timed out on every delivery, reported by
//!   the `MAX_DELIVERIES` advisory) → `CompleteOperation` with a failure, so the environment
//!   ends `failed` — visible and retryable — soon after. The advisory is a core-NATS message,
//!   lost when no API process listens; the durable guarantee is the step's deadline
//!   ([`crate::deadlines`]).
//! * A result too large to record (its outputs would make an event over the size limit) →
//!   `CompleteOperation` with a failure saying so, for the same reason.
//!
//! * Events that end an operation (its result, a cancellation, a time-out) → the
//!   `provisioning_operations_total` and `provisioning_duration_seconds` metrics
//!   ([`crate::metrics`]), from the events' own times. A durable consumer shares them among the
//!   replicas, so each end is counted once (by the replica that acknowledges it; a crash before
//!   the ack loses that replica's counters anyway). It starts at the events that come after its
//!   creation, so a first start does not count the history.
//!
//! * The final events (`InfraDestroyed`, `MarkedDestroyed`) → the environment's sealed
//!   external id removed from the secrets bucket ([`crate::secrets`]): nothing of a destroyed
//!   environment's secrets is kept.
//!
//! The consumers run on `jetstream-consumer`, up to [`CONCURRENCY`] messages at once each. A
//! command that fails is classified ([`disposition`]): one that can never succeed (unknown
//! environment, an event too large, a name clash) is terminated at once and logged; one that
//! fails for now (database unavailable, a conflict) is retried with back-off and jitter, without
//! a bound — a trigger or result given up on would leave its environment waiting; an internal
//! store error (e.g. a stored event that does not decode) is retried a few times, then
//! terminated.

use crate::metrics::{Outcome, record_operation_end};
use crate::store::{EventStore, StoreError, reader};
use async_nats::jetstream::{self, Message, consumer::DeliverPolicy, consumer::pull, kv};
use domain::aggregate::event_sets::{FINAL_EVENTS, OPERATION_END_EVENTS, STEP_TRIGGERS};
use domain::aggregate::{Command, DomainError, OperationOutcome, StepTimeouts};
use domain::ids::OperationId;
use domain::text::error_chain;
use domain::wire::{
    EventEnvelope, EventMetadata, MAX_EVENT_BYTES, OperationResult, StepLease, Subjects,
};
use futures::StreamExt;
use jetstream_consumer::{Backoff, Consumer, Delivery, Disposition};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

const TRIGGER_CONSUMER: &str = Subjects::PROCESS_MANAGER_CONSUMER;
const RESULTS_CONSUMER: &str = Subjects::PROCESS_MANAGER_RESULTS_CONSUMER;
const ENDS_CONSUMER: &str = Subjects::OPERATION_ENDS_CONSUMER;
const FINAL_CONSUMER: &str = Subjects::FINAL_EVENTS_CONSUMER;
/// Messages handled at once per consumer.
const CONCURRENCY: usize = 32;
/// How long a handler may hold a message before JetStream redelivers it (heartbeats extend it).
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Back-off (with jitter) of a command that failed for now, by delivery count.
const RETRY: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
/// Deliveries of a message whose command failed with an internal store error before it is
/// terminated.
const INTERNAL_ERROR_DELIVERIES: u64 = 5;
/// Attempts of the command that fails an abandoned job (an advisory is not redelivered).
const ADVISORY_ATTEMPTS: u64 = 5;
/// Back-off (with jitter) of re-subscribing to the advisories.
const SUBSCRIBE_RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

#[derive(Clone)]
pub struct ProcessManager {
    store: EventStore,
    js: jetstream::Context,
    subjects: Subjects,
    timeouts: StepTimeouts,
    /// The executors' lease bucket, looked up once it exists (the executors create it).
    leases: Arc<OnceCell<kv::Store>>,
    /// The secrets bucket (the API creates it at start-up).
    secrets: Arc<OnceCell<kv::Store>>,
}

impl ProcessManager {
    /// `timeouts` go into every step it starts (the job's `timeout_seconds`).
    pub fn new(
        store: EventStore,
        js: jetstream::Context,
        subjects: Subjects,
        timeouts: StepTimeouts,
    ) -> Self {
        Self {
            store,
            js,
            subjects,
            timeouts,
            leases: Arc::default(),
            secrets: Arc::default(),
        }
    }

    /// Runs the loops until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let events_of = |types: &[&str]| -> Vec<String> {
            types.iter().map(|t| self.subjects.event_type(t)).collect()
        };
        let triggers = self.consume(
            Loop::Triggers,
            self.subjects.events_stream(),
            pull::Config {
                durable_name: Some(TRIGGER_CONSUMER.into()),
                filter_subjects: events_of(&STEP_TRIGGERS),
                ..Default::default()
            },
            &shutdown,
        );
        let results = self.consume(
            Loop::Results,
            self.subjects.results_stream(),
            pull::Config {
                durable_name: Some(RESULTS_CONSUMER.into()),
                filter_subject: self.subjects.all_results(),
                ..Default::default()
            },
            &shutdown,
        );
        // From new events only: a first deployment does not count the history as operations
        // that just ended.
        let ends = self.consume(
            Loop::OperationEnds,
            self.subjects.events_stream(),
            pull::Config {
                durable_name: Some(ENDS_CONSUMER.into()),
                filter_subjects: events_of(&OPERATION_END_EVENTS),
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            },
            &shutdown,
        );
        let finals = self.consume(
            Loop::Final,
            self.subjects.events_stream(),
            pull::Config {
                durable_name: Some(FINAL_CONSUMER.into()),
                filter_subjects: events_of(&FINAL_EVENTS),
                ..Default::default()
            },
            &shutdown,
        );
        tokio::join!(
            triggers,
            results,
            ends,
            finals,
            self.fail_abandoned_jobs(shutdown.clone())
        );
    }

    /// One of the loops: `config`'s durable consumer on `stream`, each message to `which`'s
    /// handler, until `shutdown`.
    fn consume(
        &self,
        which: Loop,
        stream: String,
        config: pull::Config,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = ()> + use<> {
        let this = self.clone();
        let config = pull::Config {
            ack_wait: ACK_WAIT,
            ..config
        };
        let consumer = Consumer::new(self.js.clone(), stream, config);
        let shutdown = shutdown.clone();
        async move {
            consumer
                .batch(CONCURRENCY)
                .retry_backoff(RETRY)
                .run_each(CONCURRENCY, &shutdown, move |message| {
                    let this = this.clone();
                    async move {
                        match which {
                            Loop::Triggers => this.on_trigger(&message).await,
                            Loop::Results => this.on_result(&message).await,
                            Loop::OperationEnds => this.on_operation_end(&message).await,
                            Loop::Final => this.on_final(&message).await,
                        }
                    }
                })
                .await
                .wait()
                .await;
        }
    }

    /// Fails the operation of every job the executors' consumer stopped redelivering.
    async fn fail_abandoned_jobs(&self, shutdown: CancellationToken) {
        let subject = format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
            self.subjects.events_stream(),
            Subjects::EXECUTOR_CONSUMER
        );
        let mut failures = 0;
        while !shutdown.is_cancelled() {
            let mut advisories = match self.js.client().subscribe(subject.clone()).await {
                Ok(subscription) => Box::pin(subscription.take_until(shutdown.cancelled())),
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, "cannot watch for abandoned jobs; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(SUBSCRIBE_RETRY.delay(failures)) => continue,
                    }
                }
            };
            failures = 0;
            while let Some(message) = advisories.next().await {
                self.on_abandoned_job(&message.payload).await;
            }
        }
    }

    async fn on_abandoned_job(&self, payload: &[u8]) {
        #[derive(serde::Deserialize)]
        struct MaxDeliveries {
            stream_seq: u64,
            deliveries: u64,
        }
        let Ok(advisory) = serde_json::from_slice::<MaxDeliveries>(payload) else {
            tracing::warn!("undecodable max-deliveries advisory");
            return;
        };
        let job = async {
            let stream = self.js.get_stream(self.subjects.events_stream()).await?;
            let message = stream.get_raw_message(advisory.stream_seq).await?;
            let envelope: EventEnvelope = serde_json::from_slice(&message.payload)?;
            Ok::<_, async_nats::Error>(envelope)
        };
        let envelope = match job.await {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::error!(%error, stream_seq = advisory.stream_seq, "cannot load abandoned job");
                return;
            }
        };
        let Some(operation_id) = envelope
            .event()
            .ok()
            .and_then(|e| e.job().map(|(op, _)| op.clone()))
        else {
            return;
        };
        tracing::error!(
            env_id = %envelope.environment_id,
            op_id = %operation_id,
            deliveries = advisory.deliveries,
            "executors gave up on a job"
        );
        let metadata = EventMetadata::abandoned(&envelope, &operation_id, advisory.stream_seq);
        let error = format!(
            "no executor finished this step after {} deliveries (each attempt crashed or timed out); retry to run it again",
            advisory.deliveries
        );
        let command = Command::CompleteOperation {
            operation_id,
            outcome: OperationOutcome::Failed { error },
        };
        // Retried with back-off while it fails for now, a bounded number of times (the
        // advisory is not redelivered; the step's deadline is the durable guarantee); a result
        // that arrived meanwhile wins (the operation is no longer in flight and this is ignored).
        for attempt in 1..=ADVISORY_ATTEMPTS {
            let result = self
                .store
                .execute(envelope.environment_id.as_str(), command.clone(), &metadata)
                .await;
            match settle(envelope.environment_id.as_str(), result, attempt) {
                Disposition::Retry { .. } if attempt < ADVISORY_ATTEMPTS => {
                    tokio::time::sleep(RETRY.delay(attempt)).await;
                }
                Disposition::Retry { .. } => tracing::error!(
                    env_id = %envelope.environment_id,
                    attempts = attempt,
                    "could not fail the abandoned job; its deadline will"
                ),
                Disposition::Term { reason } => {
                    tracing::error!(
                        env_id = %envelope.environment_id,
                        reason,
                        "cannot fail the abandoned job"
                    );
                    return;
                }
                Disposition::Ack => return,
            }
        }
    }

    async fn on_trigger(&self, message: &Message) -> Disposition {
        let envelope = match serde_json::from_slice::<EventEnvelope>(&message.payload) {
            Ok(envelope) => envelope,
            Err(error) => return Disposition::term(format!("undecodable event: {error}")),
        };
        let operation_id = OperationId::generate();
        let metadata = EventMetadata::trigger(&envelope, &operation_id);
        let command = Command::StartPendingOperation {
            operation_id,
            timeouts: self.timeouts,
        };
        let result = self
            .store
            .execute(envelope.environment_id.as_str(), command, &metadata)
            .await;
        settle(envelope.environment_id.as_str(), result, delivered(message))
    }

    async fn on_result(&self, message: &Message) -> Disposition {
        let result = match serde_json::from_slice::<OperationResult>(&message.payload) {
            Ok(result) => result,
            Err(error) => {
                return Disposition::term(format!("undecodable executor result: {error}"));
            }
        };
        if let Some(holder) = self.fencing_lease(&result).await {
            tracing::warn!(
                env_id = %result.environment_id,
                op_id = %result.operation_id,
                attempt = result.attempt,
                holder_attempt = holder.attempt,
                "rejected the result of a superseded attempt (its executor was paused or cut off \
                 past its lease; a newer attempt runs the step)"
            );
            return Disposition::Ack;
        }
        let metadata = EventMetadata::result(&result.operation_id, result.request_id.as_ref());
        let environment_id = result.environment_id.as_str();
        let command = Command::CompleteOperation {
            operation_id: result.operation_id.clone(),
            outcome: result.outcome,
        };
        match self.store.execute(environment_id, command, &metadata).await {
            Err(error @ StoreError::EventTooLarge(_)) => {
                tracing::error!(env_id = environment_id, %error, "result too large to record");
                let error = format!(
                    "the step's result is too large to record (an event may be at most {MAX_EVENT_BYTES} bytes); retry to run it again"
                );
                let command = Command::CompleteOperation {
                    operation_id: result.operation_id,
                    outcome: OperationOutcome::Failed { error },
                };
                let result = self.store.execute(environment_id, command, &metadata).await;
                settle(environment_id, result, delivered(message))
            }
            other => settle(environment_id, other, delivered(message)),
        }
    }
}

impl ProcessManager {
    /// Removes the sealed external id of `message`'s environment, which is final (destroyed or
    /// marked so): nothing needs it any more. Retried while NATS cannot take it.
    async fn on_final(&self, message: &Message) -> Disposition {
        let Ok(end) = serde_json::from_slice::<EventEnvelope>(&message.payload) else {
            return Disposition::term("undecodable event");
        };
        let env = end.environment_id.as_str();
        let store = match self
            .secrets
            .get_or_try_init(|| self.js.get_key_value(self.subjects.secrets_bucket()))
            .await
        {
            Ok(store) => store,
            Err(error) => {
                tracing::warn!(env_id = env, %error, "the secrets bucket is unavailable; will retry");
                return Disposition::retry();
            }
        };
        match crate::secrets::forget(store, env).await {
            Ok(()) => {
                tracing::debug!(
                    env_id = env,
                    "the environment's sealed secrets were removed"
                );
                Disposition::Ack
            }
            Err(error) => {
                tracing::warn!(env_id = env, %error, "will retry");
                Disposition::retry()
            }
        }
    }

    /// Counts an operation's end, with how long it ran: from its `…Started` event (found in the
    /// environment's history, which says the step too) to `message`'s event, by their recorded
    /// times. Best effort: an event it cannot read is skipped (logged), a database failure
    /// retried.
    async fn on_operation_end(&self, message: &Message) -> Disposition {
        let Ok(end) = serde_json::from_slice::<EventEnvelope>(&message.payload) else {
            return Disposition::term("undecodable event");
        };
        let env = end.environment_id.as_str();
        let Some((operation_id, outcome)) = end.event().ok().and_then(|event| {
            let outcome = Outcome::of(&event)?;
            Some((event.operation_id()?.clone(), outcome))
        }) else {
            tracing::debug!(env_id = env, event_type = %end.event_type, "not an operation end");
            return Disposition::Ack;
        };
        let history = match reader::history(self.store.pool(), env).await {
            Ok(history) => history,
            Err(reader::ReadError::Database(error)) => {
                tracing::warn!(env_id = env, %error, "cannot read the history for metrics; will retry");
                return Disposition::retry();
            }
            Err(error) => {
                tracing::warn!(env_id = env, error = %error_chain(&error), "cannot read the history for metrics; not counted");
                return Disposition::Ack;
            }
        };
        let started = history.iter().find_map(|envelope| {
            let event = envelope.event().ok()?;
            let (op, job) = event.job()?;
            (*op == operation_id).then_some((job.step, envelope.recorded_at))
        });
        match started {
            Some((step, started_at)) => {
                let ran = (end.recorded_at - started_at).to_std().unwrap_or_default();
                record_operation_end(step, outcome, ran);
            }
            None => tracing::warn!(
                env_id = env,
                op_id = %operation_id,
                "an operation ended without its start in the history; not counted"
            ),
        }
        Disposition::Ack
    }

    /// The executors' step lease that fences `result` out, if one does: a newer attempt of the
    /// same operation holds (or last held) the environment. Results that carry no attempt, and
    /// results when the bucket cannot be read, pass (the aggregate still accepts a result only
    /// for the operation in flight).
    async fn fencing_lease(&self, result: &OperationResult) -> Option<StepLease> {
        let attempt = result.attempt?;
        let store = self
            .leases
            .get_or_try_init(|| self.js.get_key_value(self.subjects.leases_bucket()))
            .await
            .ok()?;
        let value = match store.get(result.environment_id.as_str()).await {
            Ok(value) => value?,
            Err(error) => {
                tracing::warn!(%error, "could not read the step lease; accepting the result");
                return None;
            }
        };
        let lease: StepLease = serde_json::from_slice(&value).ok()?;
        lease
            .fences_out(&result.operation_id, attempt)
            .then_some(lease)
    }
}

/// How often `message` has been delivered (1 on the first delivery).
fn delivered(message: &Message) -> u64 {
    Delivery::of(message).map_or(1, |delivery| delivery.delivered)
}

/// The disposition of a message whose command ended with `result` on its `delivered`-th
/// delivery, logged.
fn settle(environment_id: &str, result: Result<(), StoreError>, delivered: u64) -> Disposition {
    let error = match result {
        Ok(()) => return Disposition::Ack,
        Err(error) => error,
    };
    let disposition = disposition(&error, delivered);
    match &disposition {
        Disposition::Ack => {
            tracing::warn!(env_id = environment_id, rejected = %error, "command rejected");
        }
        Disposition::Retry { .. } => tracing::warn!(
            env_id = environment_id,
            delivered,
            error = %error_chain(&error),
            "will retry"
        ),
        // The runtime logs it as an error with the message's subject and sequence.
        Disposition::Term { .. } => {}
    }
    disposition
}

/// Classifies a failed command: whether its message is done (the domain refused it, as it
/// refuses a stale or duplicate message), can never succeed (term), or may succeed later
/// (retry with back-off).
fn disposition(error: &StoreError, delivered: u64) -> Disposition {
    match error {
        StoreError::Rejected(DomainError::NotFound) => {
            Disposition::term("message for an unknown environment")
        }
        StoreError::Rejected(_) => Disposition::Ack,
        // Retrying cannot shrink the event, nor free a name.
        StoreError::EventTooLarge(_) | StoreError::NameTaken(_) | StoreError::QuotaExceeded(_) => {
            Disposition::term(error_chain(error))
        }
        StoreError::Conflict | StoreError::Unavailable(_) => Disposition::retry(),
        // A stored event that does not decode, a statement the database refuses: most likely
        // for good, but only the database knows. A few tries, then give up.
        StoreError::Internal(_) if delivered < INTERNAL_ERROR_DELIVERIES => Disposition::retry(),
        StoreError::Internal(_) => Disposition::term(format!(
            "{} (after {delivered} deliveries)",
            error_chain(error)
        )),
    }
}

/// Runs one of the process manager's consumers until shutdown: up to [`CONCURRENCY`] messages
/// at once, retries backing off by [`RETRY`]; waits for the handlers still running.
/// The process manager's consumer loops.
#[derive(Clone, Copy)]
enum Loop {
    /// `…Started`-causing events → `StartPendingOperation`.
    Triggers,
    /// Executors' results → `CompleteOperation`.
    Results,
    /// The events that end an operation → the operation metrics.
    OperationEnds,
    /// The final events → the environment's sealed secrets removed.
    Final,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn internal() -> StoreError {
        StoreError::Internal("a stored event does not decode".into())
    }

    #[test]
    fn a_command_refused_for_good_is_terminated_at_once() {
        for error in [
            StoreError::Rejected(DomainError::NotFound),
            StoreError::NameTaken("taken".into()),
        ] {
            assert!(
                matches!(disposition(&error, 1), Disposition::Term { .. }),
                "{error:?}"
            );
        }
    }

    #[test]
    fn a_command_the_domain_declines_is_done() {
        assert_eq!(
            disposition(&StoreError::Rejected(DomainError::AlreadyExists), 1),
            Disposition::Ack
        );
    }

    #[test]
    fn transient_failures_are_retried_with_back_off_without_a_bound() {
        let unavailable = StoreError::Unavailable("connection refused".into());
        for delivered in [1, 5, 1000] {
            assert_eq!(
                disposition(&StoreError::Conflict, delivered),
                Disposition::retry()
            );
            assert_eq!(disposition(&unavailable, delivered), Disposition::retry());
        }
    }

    #[test]
    fn an_internal_store_error_is_retried_a_few_times_then_terminated() {
        assert_eq!(disposition(&internal(), 1), Disposition::retry());
        assert_eq!(
            disposition(&internal(), INTERNAL_ERROR_DELIVERIES - 1),
            Disposition::retry()
        );
        let Disposition::Term { reason } = disposition(&internal(), INTERNAL_ERROR_DELIVERIES)
        else {
            panic!("terminated after {INTERNAL_ERROR_DELIVERIES} deliveries");
        };
        assert!(reason.contains("does not decode"), "{reason}");
    }
}
