//! The executor process: a durable JetStream pull consumer of job events, shared by every
//! executor replica, running up to `concurrency` jobs at once.
//!
//! Streams are the command side's: the runner waits for them and never creates them. It owns
//! only its consumer, `executor`, on the events stream, filtered to the three job event types.
//!
//! The consumer loop is `jetstream-consumer`'s: jobs are fetched only for free slots, each runs
//! in its own task with `InProgress` heartbeats while its step runs, and is settled by the
//! [`Disposition`] [`job::handle`] returns (acks confirmed by the server). Redelivery is bounded
//! by `max_deliver`: a job whose last delivery fails or is handed back is not delivered again,
//! and the process manager fails its operation on JetStream's `MAX_DELIVERIES` advisory.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use domain::wire::{EventEnvelope, Subjects};
use futures::StreamExt;
use jetstream_consumer::{Backoff, Consumer, InFlight, wait_for_stream};
use tokio_util::sync::CancellationToken;

use crate::driver::Drivers;
pub use crate::inflight::Exclusion;
use crate::inflight::{EnvironmentLocks, RunningOperations};
use crate::job::{self, Runtime};
use crate::lease::{Leases, executor_identity};
use crate::settings::ExecutorSettings;
use crate::terraform_helm::TerraformHelmDriver;
use crate::terraform_version;
use domain::aggregate::event_sets::{ENDED_EARLY_EVENTS, JOB_EVENTS};

/// The durable consumer's name, shared by all executor replicas.
pub const CONSUMER: &str = domain::wire::Subjects::EXECUTOR_CONSUMER;
/// How long one pull request waits for a job; bounds how late a shutdown stops pulling.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// The step lease bucket, opened (or created) as soon as NATS lets it be: a server restarting
/// while the executor starts delays the start, it does not end it. `None` on shutdown.
async fn open_leases(
    jetstream: &jetstream::Context,
    subjects: &Subjects,
    ttl: Duration,
    replicas: usize,
    shutdown: &CancellationToken,
) -> Option<Leases> {
    const RETRY: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let identity = executor_identity();
    for attempt in 1.. {
        match Leases::open(jetstream, subjects, identity.clone(), ttl, replicas).await {
            Ok(leases) => return Some(leases),
            Err(error) if attempt == 1 => {
                tracing::warn!(%error, "the step lease bucket is unavailable; retrying");
            }
            Err(_) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(RETRY.delay(attempt)) => {}
        }
    }
    None
}

/// How long a stopping executor waits for NATS to take what it still buffers.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the executor until `shutdown` fires, with the standard drivers (real CLIs for `aws`,
/// the stand-ins for `sandbox`).
pub async fn run(settings: ExecutorSettings, shutdown: CancellationToken) -> anyhow::Result<()> {
    if settings.state_bucket.is_some() {
        // Configured for `aws`: its Terraform must run and be new enough, or nothing starts.
        let terraform = TerraformHelmDriver::aws(&settings).terraform;
        let version = terraform_version::check(&terraform, settings.terraform_flavour).await?;
        tracing::info!(%version, flavour = settings.terraform_flavour.name(), "terraform checked");
    }
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
    crate::metrics::describe();
    let client = async_nats::connect(&settings.nats_url)
        .await
        .with_context(|| format!("failed to connect to NATS at {}", settings.nats_url))?;
    let jetstream = jetstream::new(client.clone());
    let subjects = Subjects::new(settings.subject_prefix.clone());

    let Some(events) = wait_for_stream(&jetstream, &subjects.events_stream(), &shutdown).await
    else {
        return Ok(());
    };
    if wait_for_stream(&jetstream, &subjects.results_stream(), &shutdown)
        .await
        .is_none()
    {
        return Ok(());
    }
    let consumer = Consumer::new(
        jetstream.clone(),
        subjects.events_stream(),
        consumer_config(&settings, &subjects),
    )
    .batch(settings.concurrency)
    .fetch_expires(PULL_EXPIRES)
    .heartbeat(settings.heartbeat)
    // An ack lost here would redeliver a finished job.
    .confirm_acks();
    // Cancellations, time-outs and operations an admin marked failed.
    let mut ended_early = Vec::with_capacity(ENDED_EARLY_EVENTS.len());
    for event_type in ENDED_EARLY_EVENTS {
        ended_early.push(
            client
                .subscribe(subjects.event_type(event_type))
                .await
                .with_context(|| format!("failed to subscribe to {event_type}"))?,
        );
    }
    let cancellations = futures::stream::select_all(ended_early);

    // A lease lapses when its holder missed heartbeats for as long as JetStream waits before it
    // redelivers the job: the two agree on when a holder is gone.
    let Some(leases) = open_leases(
        &jetstream,
        &subjects,
        settings.ack_wait,
        settings.stream_replicas,
        &shutdown,
    )
    .await
    else {
        return Ok(());
    };
    let leases = match exclusion {
        Exclusion::PerEnvironment => leases,
        Exclusion::Disabled => leases.bypassed(),
    };
    let runtime = Arc::new(Runtime {
        subjects,
        jetstream,
        events,
        drivers,
        running: RunningOperations::default(),
        environments: EnvironmentLocks::new(exclusion),
        leases,
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
    let jobs = {
        let runtime = Arc::clone(&runtime);
        let hand_back = hand_back.clone();
        consumer
            .run_each(runtime.settings.concurrency, &shutdown, move |message| {
                job::handle(Arc::clone(&runtime), message, hand_back.clone())
            })
            .await
    };
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

/// Lets in-flight jobs finish for up to the shutdown grace, then hands the rest back.
async fn drain(mut jobs: InFlight, settings: &ExecutorSettings, hand_back: &CancellationToken) {
    if jobs.is_empty() {
        return;
    }
    tracing::info!(jobs = jobs.len(), "waiting for in-flight jobs");
    if jobs.wait_for(settings.shutdown_grace).await {
        return;
    }
    tracing::warn!(
        jobs = jobs.len(),
        "interrupting in-flight jobs and handing them back"
    );
    hand_back.cancel();
    // The tools get SIGINT, then SIGKILL after cancel_grace; allow a little more than that.
    let bound = settings.cancel_grace + Duration::from_secs(5);
    if !jobs.wait_for(bound).await {
        tracing::error!(jobs = jobs.len(), "jobs did not stop; aborting them");
        jobs.abort().await;
    }
}

/// Cancels running operations as the events that end them early (`OperationCancelled`,
/// `OperationTimedOut`, `MarkedFailed`) arrive: the command side no longer waits for their results, so their tools are stopped.
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
        if let Some(event) = event
            && event.ends_operation_early()
            && let Some(operation_id) = event.operation_id()
            && runtime.running.cancel(operation_id.as_str())
        {
            tracing::info!(op_id = %operation_id, "cancelling the running operation");
        }
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
