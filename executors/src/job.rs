//! One job message, from delivery to its disposition: decode, skip what is cancelled or
//! superseded, run the step under the environment's lock, publish the result, ack. The consumer
//! runtime (`jetstream-consumer`) sends the heartbeats meanwhile and settles the message.
//!
//! The result is published (and its JetStream ack awaited) *before* the job is acked, so a crash
//! in between redelivers the job; the result's message id `result:<operation_id>` lets
//! JetStream drop the duplicate, and the aggregate ignores results it no longer expects.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::message::PublishMessage;
use domain::OperationId;
use domain::aggregate::event_sets::{ENDED_EARLY_EVENTS, JOB_EVENTS};
use domain::aggregate::{OperationJob, OperationOutcome, Outputs};
use domain::wire::{EventEnvelope, OperationResult, RequestId, Subjects};
use jetstream_consumer::Disposition;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::driver::{Drivers, StepContext, StepError};
use crate::inflight::{EnvironmentLocks, RunningOperations};
use crate::lease::{Acquired, HeldLease, LeaseError, Leases};
use crate::logs::{LogReceiver, LogSink};
use crate::metrics::{JobOutcome, JobTimer};
use crate::progress::{ProgressReceiver, ProgressSink};
use crate::settings::ExecutorSettings;

/// How long a nak'd job waits before it is delivered again.
const RETRY_DELAY: Duration = Duration::from_secs(5);
/// How long the log forwarder may take to flush after a step ended.
const LOG_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one condition report may take to be stored by JetStream.
const PROGRESS_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// What every job shares.
pub struct Runtime {
    pub settings: ExecutorSettings,
    pub subjects: Subjects,
    pub jetstream: jetstream::Context,
    pub events: jetstream::stream::Stream,
    pub drivers: Drivers,
    pub running: RunningOperations,
    pub environments: EnvironmentLocks,
    pub leases: Leases,
}

/// Handles one delivered job message to its end and says how to settle it: `Ack` when done
/// (result published, or nothing to do), `Retry` after [`RETRY_DELAY`] when something failed on
/// this executor, handed back at once when `hand_back` fired (the executor shuts down and stops
/// waiting for in-flight jobs: the step is interrupted), `Term` when undecodable.
pub async fn handle(
    runtime: Arc<Runtime>,
    message: jetstream::Message,
    hand_back: CancellationToken,
) -> Disposition {
    let (operation_id, job, request_id) = match decode(&message) {
        Ok(decoded) => decoded,
        Err(reason) => return Disposition::Term { reason },
    };
    // The request that caused the job (carried forward by the process manager's trigger), so
    // every executor line of it can be found from the API's `X-Request-ID`.
    let span = tracing::info_span!(
        "executor_job",
        request_id = %request_id,
        env_id = %job.environment_id,
        op_id = %operation_id,
        step = job.step.as_str(),
    );
    run_job(
        &runtime,
        &message,
        (operation_id, request_id),
        job,
        &hand_back,
    )
    .instrument(span)
    .await
}

/// The job a message carries and the id of the request that caused it, or why it carries none
/// (it never will: poison).
fn decode(message: &jetstream::Message) -> Result<(OperationId, OperationJob, RequestId), String> {
    let envelope: EventEnvelope = serde_json::from_slice(&message.payload)
        .map_err(|e| format!("job message is not an event envelope: {e}"))?;
    let event = envelope.event().map_err(|e| {
        format!(
            "undecodable job event {event_type}: {e}",
            event_type = envelope.event_type
        )
    })?;
    match event.job() {
        Some((operation_id, job)) => Ok((
            operation_id.clone(),
            job.clone(),
            envelope.metadata.request_id.clone(),
        )),
        None => Err(format!(
            "event {event_type} carries no job",
            event_type = envelope.event_type
        )),
    }
}

async fn run_job(
    runtime: &Runtime,
    message: &jetstream::Message,
    (operation_id, request_id): (OperationId, RequestId),
    job: OperationJob,
    hand_back: &CancellationToken,
) -> Disposition {
    let environment_id = job.environment_id.clone();
    // Registered before the look-up below, so a cancellation is either seen there or delivered
    // to this token: there is no gap.
    let registration = runtime.running.register(operation_id.as_str());
    let stream_sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    if let Some(reason) = obsolete(runtime, &environment_id, &operation_id, stream_sequence).await {
        tracing::info!(reason, "skipping job");
        return Disposition::Ack;
    }

    let _environment = tokio::select! {
        guard = runtime.environments.lock(environment_id.as_str()) => guard,
        () = hand_back.cancelled() => return Disposition::hand_back(),
    };
    // A job that waited for another of its environment may have been cancelled meanwhile.
    if registration.token().is_cancelled() {
        tracing::info!("operation cancelled before it started");
        return Disposition::Ack;
    }
    let workdir = runtime.settings.workdir(environment_id.as_str());
    if let Err(e) = create_private_dir(&workdir).await {
        tracing::error!(error = %e, workdir = %workdir.display(), "cannot create the workdir");
        return Disposition::retry_after(RETRY_DELAY);
    }

    let attempt = message
        .info()
        .map(|i| u64::try_from(i.delivered).unwrap_or(1))
        .unwrap_or(1);
    let held = match runtime
        .leases
        .acquire(environment_id.as_str(), &operation_id, attempt)
        .await
    {
        Ok(Acquired::Held(held)) => held,
        Ok(Acquired::Busy { holder }) => {
            tracing::info!(
                holder = holder.executor,
                holder_attempt = holder.attempt,
                "another attempt holds this environment's step lease and may be running; trying later"
            );
            return Disposition::retry_after(runtime.settings.ack_wait);
        }
        Ok(Acquired::Superseded { holder }) => {
            tracing::info!(
                holder = holder.executor,
                holder_attempt = holder.attempt,
                attempt,
                "a newer attempt of this operation holds the lease; this delivery is obsolete"
            );
            return Disposition::retry_after(runtime.settings.ack_wait);
        }
        Err(error) => {
            tracing::warn!(%error, "cannot take the step lease; trying later");
            return Disposition::retry_after(RETRY_DELAY);
        }
    };
    if let Some(takeover) = &held.takeover {
        tracing::warn!(
            previous = takeover.previous.executor,
            previous_attempt = takeover.previous.attempt,
            attempt,
            "took over the step lease of a holder whose heartbeat lapsed"
        );
    }
    let leased = Leased {
        operation_id,
        attempt,
        environment_id,
        request_id,
        workdir,
    };
    let (disposition, held) = run_leased(
        runtime,
        message,
        leased,
        held,
        job,
        &registration,
        hand_back,
    )
    .await;
    if let Some(held) = held {
        runtime.leases.release(held).await;
    }
    disposition
}

/// What a job holding its environment's lease runs with.
struct Leased {
    operation_id: OperationId,
    attempt: u64,
    environment_id: domain::EnvironmentId,
    /// The request that caused the job, named in its results.
    request_id: RequestId,
    workdir: std::path::PathBuf,
}

/// Runs the step under the lease `held`, renewing it at every heartbeat; a renewal that finds
/// the lease taken over stops the step, and nothing is reported (the lease is then not ours to
/// release: `None` comes back).
async fn run_leased(
    runtime: &Runtime,
    message: &jetstream::Message,
    leased: Leased,
    held: HeldLease,
    job: OperationJob,
    registration: &crate::inflight::Registration<'_>,
    hand_back: &CancellationToken,
) -> (Disposition, Option<HeldLease>) {
    let Leased {
        operation_id,
        attempt,
        environment_id,
        request_id,
        workdir,
    } = leased;
    let (logs, log_rx) = LogSink::channel(environment_id.clone(), operation_id.clone());
    let forwarder = tokio::spawn(forward_logs(
        runtime.jetstream.clone(),
        runtime
            .subjects
            .logs(environment_id.as_str(), operation_id.as_str()),
        log_rx,
    ));
    let (progress, progress_rx) = ProgressSink::channel();
    let progress_forwarder = tokio::spawn(forward_progress(
        runtime.jetstream.clone(),
        runtime.subjects.result(environment_id.as_str()),
        ResultAddress {
            environment_id: environment_id.clone(),
            operation_id: operation_id.clone(),
            attempt,
            request_id: request_id.clone(),
        },
        progress_rx,
    ));
    let step_cancel = registration.token().child_token();
    let takeover = held.takeover.clone();
    let timer = JobTimer::start(job.step);
    let ctx = StepContext {
        operation_id: operation_id.clone(),
        job,
        workdir,
        cancel: step_cancel.clone(),
        logs,
        progress,
        takeover,
    };
    tracing::info!(attempt, "step started");
    let lost = CancellationToken::new();
    let renewal_stop = CancellationToken::new();
    let renewal = tokio::spawn(renew_lease(
        runtime.leases.clone(),
        held,
        runtime.settings.heartbeat,
        step_cancel.clone(),
        lost.clone(),
        renewal_stop.clone(),
    ));
    let outcome = run_step(&runtime.drivers, ctx, &step_cancel, hand_back).await;
    renewal_stop.cancel();
    let held = renewal.await.ok().flatten();
    let _ = tokio::time::timeout(LOG_FLUSH_TIMEOUT, forwarder).await;
    // The observations on the way reach the results subject before the result itself.
    let _ = tokio::time::timeout(LOG_FLUSH_TIMEOUT, progress_forwarder).await;
    if lost.is_cancelled() {
        tracing::warn!(
            attempt,
            "this attempt was superseded while its step ran (paused past its lease?): the step \
             was stopped and nothing is reported"
        );
        timer.finish(JobOutcome::HandedBack);
        return (Disposition::Ack, None);
    }

    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
    let outcome = match outcome {
        Ok(outputs) => OperationOutcome::Succeeded { outputs },
        Err(StepError::Failed { message }) => OperationOutcome::Failed { error: message },
        Err(StepError::Cancelled) if registration.token().is_cancelled() => {
            tracing::info!("operation cancelled; no result is reported");
            timer.finish(JobOutcome::Cancelled);
            return (Disposition::Ack, held);
        }
        Err(StepError::Cancelled) => {
            tracing::info!("interrupted by shutdown; handing the job back");
            timer.finish(JobOutcome::HandedBack);
            return (Disposition::hand_back(), held);
        }
        Err(error @ StepError::Io { .. }) if delivered < runtime.settings.max_deliver => {
            tracing::warn!(%error, delivered, "executor error; handing the job back");
            timer.finish(JobOutcome::HandedBack);
            return (Disposition::retry_after(RETRY_DELAY), held);
        }
        Err(error @ StepError::Io { .. }) => OperationOutcome::Failed {
            error: format!("executor error after {delivered} attempts: {error}"),
        },
    };
    let reported = match &outcome {
        OperationOutcome::Succeeded { .. } => JobOutcome::Succeeded,
        _ => JobOutcome::Failed,
    };
    let result = ResultAddress {
        environment_id,
        operation_id,
        attempt,
        request_id,
    }
    .result(outcome);
    match publish_result(runtime, &result).await {
        Ok(()) => {
            timer.finish(reported);
            (Disposition::Ack, held)
        }
        Err(e) => {
            tracing::error!(error = %e, "failed to publish the result; the job will run again");
            timer.finish(JobOutcome::HandedBack);
            (Disposition::retry_after(RETRY_DELAY), held)
        }
    }
}

/// Renews `held` every `every` until `stop`; when the lease was taken over, cancels the step
/// (`step`) and fires `lost`. Returns the lease if it is still ours.
async fn renew_lease(
    leases: Leases,
    mut held: HeldLease,
    every: Duration,
    step: CancellationToken,
    lost: CancellationToken,
    stop: CancellationToken,
) -> Option<HeldLease> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Some(held),
            () = tokio::time::sleep(every) => {}
        }
        match leases.renew(&mut held).await {
            Ok(()) => {}
            Err(LeaseError::Lost { holder }) => {
                tracing::warn!(
                    holder = holder.executor,
                    holder_attempt = holder.attempt,
                    "the step lease was taken over; stopping the step"
                );
                lost.cancel();
                step.cancel();
                return None;
            }
            Err(error @ LeaseError::Unavailable(_)) => {
                tracing::warn!(%error, "could not renew the step lease");
            }
        }
    }
}

/// Creates `dir` (and its parents) for the executor's user alone: a workdir holds Terraform's
/// saved plan and, during a step, the customer role's variables.
async fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .await?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).await
}

/// Runs the step; on `hand_back` the step is cancelled and awaited (its tools get SIGINT).
async fn run_step(
    drivers: &Drivers,
    ctx: StepContext,
    step_cancel: &CancellationToken,
    hand_back: &CancellationToken,
) -> Result<Outputs, StepError> {
    let driver = drivers.for_provider(ctx.job.infra_model.provider)?;
    let step = driver.run(ctx);
    tokio::pin!(step);
    tokio::select! {
        result = &mut step => result,
        () = hand_back.cancelled() => {
            step_cancel.cancel();
            step.await
        }
    }
}

/// Why the job must not run, if it must not: its operation was cancelled or timed out, or a
/// newer step of the environment has started since (a stale redelivery).
async fn obsolete(
    runtime: &Runtime,
    environment_id: &domain::EnvironmentId,
    operation_id: &OperationId,
    stream_sequence: u64,
) -> Option<&'static str> {
    let env = environment_id.as_str();
    for event_type in ENDED_EARLY_EVENTS {
        let subject = runtime.subjects.event(env, event_type);
        if let Some((_, envelope)) = last_event(runtime, &subject).await
            && let Ok(event) = envelope.event()
            && event.ends_operation_early()
            && event.operation_id() == Some(operation_id)
        {
            return Some("the operation was cancelled or timed out");
        }
    }
    for event_type in JOB_EVENTS {
        let subject = runtime.subjects.event(env, event_type);
        if let Some((sequence, _)) = last_event(runtime, &subject).await
            && sequence > stream_sequence
        {
            return Some("a newer step of the environment has started");
        }
    }
    None
}

/// The last event on `subject` with its stream sequence; `None` when there is none (or the
/// look-up failed: the guard is best effort, the aggregate has the last word).
async fn last_event(runtime: &Runtime, subject: &str) -> Option<(u64, EventEnvelope)> {
    match runtime
        .events
        .get_last_raw_message_by_subject(subject)
        .await
    {
        Ok(message) => {
            let envelope = serde_json::from_slice(&message.payload).ok()?;
            Some((message.sequence, envelope))
        }
        Err(e)
            if e.kind()
                == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
        {
            None
        }
        Err(e) => {
            tracing::warn!(subject, error = %e, "could not look up the last event");
            None
        }
    }
}

/// Publishes the result and waits for JetStream to store it.
async fn publish_result(runtime: &Runtime, result: &OperationResult) -> anyhow::Result<()> {
    let subject = runtime.subjects.result(result.environment_id.as_str());
    let message_id = format!("result:{}", result.operation_id);
    let ack = publish_acked(&runtime.jetstream, subject, message_id, result).await?;
    tracing::info!(
        outcome = match &result.outcome {
            OperationOutcome::Succeeded { .. } => "succeeded",
            OperationOutcome::Failed { .. } => "failed",
            OperationOutcome::Progressed { .. } => "progressed",
        },
        duplicate = ack.duplicate,
        "result published"
    );
    Ok(())
}

/// Publishes `result` on `subject` under `message_id` (JetStream drops a re-send with the same
/// id) and waits for the stream to store it.
async fn publish_acked(
    jetstream: &jetstream::Context,
    subject: String,
    message_id: String,
    result: &OperationResult,
) -> anyhow::Result<jetstream::publish::PublishAck> {
    let payload = serde_json::to_vec(result)?;
    let ack = jetstream
        .send_publish(
            subject,
            PublishMessage::build()
                .payload(payload.into())
                .message_id(message_id),
        )
        .await?
        .await?;
    Ok(ack)
}

/// Whose result a message is: the operation, the attempt that ran it (the fencing token) and the
/// request that caused its job.
struct ResultAddress {
    environment_id: domain::EnvironmentId,
    operation_id: OperationId,
    attempt: u64,
    request_id: RequestId,
}

impl ResultAddress {
    fn result(&self, outcome: OperationOutcome) -> OperationResult {
        OperationResult {
            environment_id: self.environment_id.clone(),
            operation_id: self.operation_id.clone(),
            outcome,
            attempt: Some(self.attempt),
            request_id: Some(self.request_id.clone()),
        }
    }
}

/// Publishes each condition the step reports to the environment's results subject, in order,
/// each acknowledged by JetStream before the next; best effort (a report that cannot be
/// published is logged and dropped: the step's result still decides the operation). Message
/// ids `progress:<operation_id>:<attempt>:<n>` let JetStream drop a re-send.
async fn forward_progress(
    jetstream: jetstream::Context,
    subject: String,
    address: ResultAddress,
    mut reports: ProgressReceiver,
) {
    let mut sent: u64 = 0;
    while let Some(report) = reports.recv().await {
        sent += 1;
        let result = address.result(OperationOutcome::Progressed { report });
        let message_id = format!(
            "progress:{}:{}:{sent}",
            address.operation_id, address.attempt
        );
        let publish = publish_acked(&jetstream, subject.clone(), message_id, &result);
        match tokio::time::timeout(PROGRESS_PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "could not publish a condition report"),
            Err(_) => tracing::warn!("publishing a condition report timed out"),
        }
    }
}

/// Publishes each log line to the operation's log subject; best effort: errors are logged once.
async fn forward_logs(jetstream: jetstream::Context, subject: String, mut lines: LogReceiver) {
    let mut warned = false;
    while let Some(line) = lines.recv().await {
        let Ok(payload) = serde_json::to_vec(&line) else {
            continue;
        };
        // Only the send is awaited, not the stream's ack: logs must never slow a step down.
        if let Err(e) = jetstream.publish(subject.clone(), payload.into()).await
            && !warned
        {
            warned = true;
            tracing::warn!(error = %e, "failed to publish log lines");
        }
    }
}
