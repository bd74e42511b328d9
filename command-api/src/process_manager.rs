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

use crate::relay::error_chain;
use crate::store::{EventStore, StoreError};
use async_nats::jetstream::{self, AckKind, consumer::pull};
use domain::aggregate::event_sets::STEP_TRIGGERS;
use domain::aggregate::{Command, DomainError, OperationOutcome, StepTimeouts};
use domain::ids::OperationId;
use domain::wire::{EventEnvelope, EventMetadata, MAX_EVENT_BYTES, OperationResult, Subjects};
use futures::StreamExt;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TRIGGER_CONSUMER: &str = Subjects::PROCESS_MANAGER_CONSUMER;
const RESULTS_CONSUMER: &str = Subjects::PROCESS_MANAGER_RESULTS_CONSUMER;
const CONCURRENCY: usize = 32;
const RETRY_DELAY: Duration = Duration::from_millis(250);
const STREAM_WAIT: Duration = Duration::from_millis(200);

/// What to do with a message after handling it.
enum Disposition {
    Done,
    Retry,
    /// Undecodable: never redeliver it.
    Poison,
    /// Its event would be too large to record: never redeliver it.
    TooLarge,
}

#[derive(Clone)]
pub struct ProcessManager {
    store: EventStore,
    js: jetstream::Context,
    subjects: Subjects,
    timeouts: StepTimeouts,
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
        }
    }

    /// Runs both loops until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let triggers = {
            let this = self.clone();
            let config = pull::Config {
                durable_name: Some(TRIGGER_CONSUMER.into()),
                filter_subjects: STEP_TRIGGERS
                    .iter()
                    .map(|t| self.subjects.event_type(t))
                    .collect(),
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            };
            consume(
                self.js.clone(),
                self.subjects.events_stream(),
                config,
                shutdown.clone(),
                move |message| {
                    let this = this.clone();
                    async move { this.on_trigger(&message.payload).await }
                },
            )
        };
        let results = {
            let this = self.clone();
            let config = pull::Config {
                durable_name: Some(RESULTS_CONSUMER.into()),
                filter_subject: self.subjects.all_results(),
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            };
            consume(
                self.js.clone(),
                self.subjects.results_stream(),
                config,
                shutdown.clone(),
                move |message| {
                    let this = this.clone();
                    async move { this.on_result(&message.payload).await }
                },
            )
        };
        tokio::join!(
            triggers,
            results,
            self.fail_abandoned_jobs(shutdown.clone())
        );
    }

    /// Fails the operation of every job the executors' consumer stopped redelivering.
    async fn fail_abandoned_jobs(&self, shutdown: CancellationToken) {
        let subject = format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
            self.subjects.events_stream(),
            Subjects::EXECUTOR_CONSUMER
        );
        while !shutdown.is_cancelled() {
            let mut advisories = match self.js.client().subscribe(subject.clone()).await {
                Ok(subscription) => Box::pin(subscription.take_until(shutdown.cancelled())),
                Err(error) => {
                    tracing::warn!(%error, "cannot watch for abandoned jobs; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(STREAM_WAIT) => continue,
                    }
                }
            };
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
        // Retried like any command; a result that arrived meanwhile wins (the operation is no
        // longer in flight and this is ignored).
        for _ in 0..5 {
            match self
                .execute(envelope.environment_id.as_str(), command.clone(), &metadata)
                .await
            {
                Disposition::Retry => tokio::time::sleep(RETRY_DELAY).await,
                Disposition::Done | Disposition::Poison | Disposition::TooLarge => return,
            }
        }
    }

    async fn on_trigger(&self, payload: &[u8]) -> Disposition {
        let Ok(envelope) = serde_json::from_slice::<EventEnvelope>(payload) else {
            tracing::error!("undecodable event on the events stream; skipped");
            return Disposition::Poison;
        };
        let operation_id = OperationId::generate();
        let metadata = EventMetadata::trigger(&envelope, &operation_id);
        let command = Command::StartPendingOperation {
            operation_id,
            timeouts: self.timeouts,
        };
        self.execute(envelope.environment_id.as_str(), command, &metadata)
            .await
    }

    async fn on_result(&self, payload: &[u8]) -> Disposition {
        let Ok(result) = serde_json::from_slice::<OperationResult>(payload) else {
            tracing::error!("undecodable executor result; skipped");
            return Disposition::Poison;
        };
        let metadata = EventMetadata::result(&result.operation_id);
        let environment_id = result.environment_id.as_str();
        let command = Command::CompleteOperation {
            operation_id: result.operation_id.clone(),
            outcome: result.outcome,
        };
        match self.execute(environment_id, command, &metadata).await {
            Disposition::TooLarge => {
                let error = format!(
                    "the step's result is too large to record (an event may be at most {MAX_EVENT_BYTES} bytes); retry to run it again"
                );
                let command = Command::CompleteOperation {
                    operation_id: result.operation_id,
                    outcome: OperationOutcome::Failed { error },
                };
                self.execute(environment_id, command, &metadata).await
            }
            other => other,
        }
    }

    async fn execute(
        &self,
        environment_id: &str,
        command: Command,
        metadata: &EventMetadata,
    ) -> Disposition {
        match self.store.execute(environment_id, command, metadata).await {
            Ok(()) => Disposition::Done,
            Err(StoreError::Rejected(DomainError::NotFound)) => {
                tracing::error!(
                    env_id = environment_id,
                    "message for an unknown environment"
                );
                Disposition::Poison
            }
            Err(StoreError::Rejected(rejected)) => {
                tracing::warn!(env_id = environment_id, %rejected, "command rejected");
                Disposition::Done
            }
            // Retrying cannot shrink the event.
            Err(error @ StoreError::EventTooLarge(_)) => {
                tracing::error!(env_id = environment_id, %error, "event too large to record");
                Disposition::TooLarge
            }
            Err(error) => {
                tracing::warn!(env_id = environment_id, error = %error_chain(&error), "will retry");
                Disposition::Retry
            }
        }
    }
}

/// Runs a durable pull consumer until shutdown, handling messages concurrently and acking each
/// by its disposition. Waits for the stream to exist and reconnects after errors.
async fn consume<H, F>(
    js: jetstream::Context,
    stream: String,
    config: pull::Config,
    shutdown: CancellationToken,
    handler: H,
) where
    H: Fn(jetstream::Message) -> F + Clone,
    F: Future<Output = Disposition>,
{
    let name = config.durable_name.clone().unwrap_or_default();
    while !shutdown.is_cancelled() {
        let messages = async {
            let stream = js.get_stream(&stream).await?;
            let consumer: pull::Stream = stream
                .get_or_create_consumer(&name, config.clone())
                .await?
                .messages()
                .await?;
            Ok::<_, async_nats::Error>(consumer)
        };
        let messages = match messages.await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::debug!(consumer = %name, %error, "consumer not ready; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(STREAM_WAIT) => continue,
                }
            }
        };
        messages
            .take_until(shutdown.cancelled())
            .for_each_concurrent(CONCURRENCY, |message| {
                let handler = handler.clone();
                async move {
                    let message = match message {
                        Ok(message) => message,
                        Err(error) => {
                            tracing::warn!(%error, "consumer error");
                            return;
                        }
                    };
                    let ack = match handler(message.clone()).await {
                        Disposition::Done => AckKind::Ack,
                        Disposition::Retry => AckKind::Nak(Some(RETRY_DELAY)),
                        Disposition::Poison | Disposition::TooLarge => AckKind::Term,
                    };
                    if let Err(error) = message.ack_with(ack).await {
                        tracing::warn!(%error, "ack failed; the message will be redelivered");
                    }
                }
            })
            .await;
    }
}
