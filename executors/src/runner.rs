//! The executor process: a durable JetStream pull consumer of job events, shared by every
//! executor replica, running up to `concurrency` jobs at once.
//!
//! Streams are the command side's: the runner waits for them and never creates them. It owns
//! only its consumer, `executor`, on the events stream, filtered to the three job event types.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use domain::Event;
use domain::wire::{EventEnvelope, Subjects};
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::driver::Drivers;
pub use crate::inflight::Exclusion;
use crate::inflight::{EnvironmentLocks, RunningOperations};
use crate::job::{self, Runtime};
use crate::settings::ExecutorSettings;
use domain::aggregate::event_sets::{ENDED_EARLY_EVENTS, JOB_EVENTS};

/// The durable consumer's name, shared by all executor replicas.
pub const CONSUMER: &str = domain::wire::Subjects::EXECUTOR_CONSUMER;
/// How often the runner looks for the streams while the command side has not created them.
const STREAM_POLL: Duration = Duration::from_millis(200);
/// How long one pull request waits for a job; bounds how late a shutdown stops pulling.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// How long the executor waits for a pull request's answer before it gives up on it: the
/// server's expiry plus a margin for the trip.
const PULL_DEADLINE: Duration = Duration::from_secs(PULL_EXPIRES.as_secs() + 5);
/// How long a stopping executor waits for NATS to take what it still buffers.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed pull request.
const PULL_RETRY: Duration = Duration::from_secs(1);

/// Runs the executor until `shutdown` fires, with the standard drivers (real CLIs for `aws`,
/// the stand-ins for `sandbox`).
pub async fn run(settings: ExecutorSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let drivers = Drivers::from_settings(&settings);
    run_with_drivers(settings, drivers, Exclusion::PerEnvironment, shutdown).await
}

/// Runs the executor with the given drivers until `shutdown` fires.
///
/// On shutdown it stops pulling, lets in-flight jobs finish for up to
/// `settings.shutdown_grace`, then interrupts what remains and hands those jobs back (nak) so
/// another executor resumes them from Terraform state.
///
/// `exclusion` is [`Exclusion::PerEnvironment`] everywhere but in the test that shows the
/// overlap check can fail.
pub async fn run_with_drivers(
    settings: ExecutorSettings,
    drivers: Drivers,
    exclusion: Exclusion,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let client = async_nats::connect(&settings.nats_url)
        .await
        .with_context(|| format!("failed to connect to NATS at {}", settings.nats_url))?;
    let jetstream = jetstream::new(client.clone());
    let subjects = Subjects::new(settings.subject_prefix.clone());

    let Some(events) = wait_for_stream(&jetstream, &subjects.events_stream(), &shutdown).await?
    else {
        return Ok(());
    };
    if wait_for_stream(&jetstream, &subjects.results_stream(), &shutdown)
        .await?
        .is_none()
    {
        return Ok(());
    }
    let consumer: PullConsumer = events
        .get_or_create_consumer(CONSUMER, consumer_config(&settings, &subjects))
        .await
        .context("failed to create the executor consumer")?;
    let cancellations = client
        .subscribe(subjects.event_type(ENDED_EARLY_EVENTS[0]))
        .await
        .context("failed to subscribe to cancellations")?;
    let time_outs = client
        .subscribe(subjects.event_type(ENDED_EARLY_EVENTS[1]))
        .await
        .context("failed to subscribe to time-outs")?;
    let cancellations = futures::stream::select(cancellations, time_outs);

    let runtime = Arc::new(Runtime {
        subjects,
        jetstream,
        events,
        drivers,
        running: RunningOperations::default(),
        environments: EnvironmentLocks::new(exclusion),
        settings,
    });
    let listener_stop = CancellationToken::new();
    let listener = tokio::spawn(listen_for_cancellations(
        Arc::clone(&runtime),
        cancellations,
        listener_stop.clone(),
    ));
    tracing::info!(
        concurrency = runtime.settings.concurrency,
        prefix = runtime.subjects.prefix(),
        "executor started"
    );

    let hand_back = CancellationToken::new();
    let jobs = pull_jobs(&runtime, &consumer, &shutdown, &hand_back).await;
    drain(jobs, &runtime.settings, &hand_back).await;

    listener_stop.cancel();
    let _ = listener.await;
    // Bounded: with the server gone a flush never completes (results are acked publishes, so
    // nothing that matters is left only in this buffer).
    match tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await {
        Ok(flushed) => flushed.context("failed to flush the NATS connection")?,
        Err(_) => tracing::warn!("NATS did not take the last messages within {FLUSH_TIMEOUT:?}"),
    }
    tracing::info!("executor stopped");
    Ok(())
}

/// The durable pull consumer every executor shares.
pub fn consumer_config(settings: &ExecutorSettings, subjects: &Subjects) -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        description: Some("executors: infra, bootstrap and destroy jobs".to_owned()),
        filter_subjects: JOB_EVENTS.iter().map(|t| subjects.event_type(t)).collect(),
        ack_policy: AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        max_deliver: settings.max_deliver,
        max_ack_pending: i64::try_from(settings.concurrency).unwrap_or(i64::MAX),
        ..Default::default()
    }
}

/// Waits until the stream exists; `None` when shutdown came first.
async fn wait_for_stream(
    jetstream: &jetstream::Context,
    name: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<jetstream::stream::Stream>> {
    let mut logged = false;
    loop {
        match jetstream.get_stream(name).await {
            Ok(stream) => return Ok(Some(stream)),
            Err(e) if !logged => {
                tracing::info!(stream = name, reason = %e, "waiting for the stream to exist");
                logged = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(STREAM_POLL) => {}
            () = shutdown.cancelled() => return Ok(None),
        }
    }
}

/// Pulls one job per free slot until shutdown; returns the jobs still in flight.
async fn pull_jobs(
    runtime: &Arc<Runtime>,
    consumer: &PullConsumer,
    shutdown: &CancellationToken,
    hand_back: &CancellationToken,
) -> JoinSet<()> {
    let slots = Arc::new(Semaphore::new(runtime.settings.concurrency));
    let mut jobs = JoinSet::new();
    loop {
        while jobs.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        // Not raced against shutdown: the pull expires within PULL_EXPIRES, and a job it
        // brings after shutdown is handed back below instead of being lost until ack_wait.
        let request = consumer
            .batch()
            .max_messages(1)
            .expires(PULL_EXPIRES)
            .messages();
        let mut batch = match tokio::time::timeout(PULL_DEADLINE, request).await {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "pull request failed");
                pause(PULL_RETRY, shutdown).await;
                continue;
            }
            Err(_) => {
                tracing::warn!("pull request unanswered within {PULL_DEADLINE:?}");
                pause(PULL_RETRY, shutdown).await;
                continue;
            }
        };
        // Bounded on this side too: while the server is unreachable no expiry ever arrives.
        while let Ok(Some(message)) = tokio::time::timeout(PULL_DEADLINE, batch.next()).await {
            let message = match message {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(error = %e, "failed to receive a job");
                    continue;
                }
            };
            if shutdown.is_cancelled() {
                let _ = message.ack_with(jetstream::AckKind::Nak(None)).await;
                continue;
            }
            let runtime = Arc::clone(runtime);
            let hand_back = hand_back.clone();
            jobs.spawn(async move {
                job::handle(runtime, message, hand_back).await;
                drop(permit);
            });
            break;
        }
    }
    jobs
}

/// Lets in-flight jobs finish for up to the shutdown grace, then hands the rest back.
async fn drain(mut jobs: JoinSet<()>, settings: &ExecutorSettings, hand_back: &CancellationToken) {
    if jobs.is_empty() {
        return;
    }
    tracing::info!(jobs = jobs.len(), "waiting for in-flight jobs");
    let finished = tokio::time::timeout(settings.shutdown_grace, async {
        while jobs.join_next().await.is_some() {}
    })
    .await;
    if finished.is_ok() {
        return;
    }
    tracing::warn!(
        jobs = jobs.len(),
        "interrupting in-flight jobs and handing them back"
    );
    hand_back.cancel();
    // The tools get SIGINT, then SIGKILL after cancel_grace; allow a little more than that.
    let bound = settings.cancel_grace + Duration::from_secs(5);
    if tokio::time::timeout(bound, async { while jobs.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::error!(jobs = jobs.len(), "jobs did not stop; aborting them");
        jobs.shutdown().await;
    }
}

/// Cancels running operations as their `OperationCancelled` and `OperationTimedOut` events
/// arrive: the command side no longer waits for their results, so their tools are stopped.
async fn listen_for_cancellations(
    runtime: Arc<Runtime>,
    mut cancellations: impl futures::Stream<Item = async_nats::Message> + Unpin,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            message = cancellations.next() => match message {
                Some(message) => message,
                None => return,
            },
            () = stop.cancelled() => return,
        };
        let event = serde_json::from_slice::<EventEnvelope>(&message.payload)
            .ok()
            .and_then(|envelope| envelope.event().ok());
        if let Some(
            Event::OperationCancelled { operation_id, .. }
            | Event::OperationTimedOut { operation_id, .. },
        ) = event
            && runtime.running.cancel(operation_id.as_str())
        {
            tracing::info!(op_id = %operation_id, "cancelling the running operation");
        }
    }
}

async fn pause(duration: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        () = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_consumer_takes_only_job_events_and_at_most_concurrency_at_once() {
        let mut settings = ExecutorSettings::new("nats://x", "prov");
        settings.concurrency = 3;
        let config = consumer_config(&settings, &Subjects::new("prov"));
        assert_eq!(config.durable_name.as_deref(), Some("executor"));
        assert_eq!(
            config.filter_subjects,
            [
                "prov.events.*.InfraApplyStarted",
                "prov.events.*.BootstrapStarted",
                "prov.events.*.DestroyStarted"
            ]
        );
        assert_eq!(config.ack_policy, AckPolicy::Explicit);
        assert_eq!(config.max_ack_pending, 3);
        assert_eq!(config.ack_wait, Duration::from_secs(30));
        assert_eq!(config.max_deliver, 5);
    }
}
