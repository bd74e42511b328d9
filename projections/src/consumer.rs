//! The durable JetStream consumer that keeps `environments_view` up to date.
//!
//! At-least-once delivery plus an idempotent store: a message is acknowledged only after the
//! transaction that applied it committed; redeliveries are skipped by sequence. Messages that
//! arrive ahead of a missing one (a gap) are negatively acknowledged with a delay, so they come
//! back after the missing event.

use crate::Result;
use crate::store::{self, Disposition, ViewTable};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind, Message};
use domain::wire::{EventEnvelope, Subjects};
use futures::StreamExt;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// The durable consumer's name on the events stream.
pub const CONSUMER_NAME: &str = Subjects::PROJECTION_CONSUMER;

/// Messages fetched per batch (and applied per transaction).
const BATCH_SIZE: usize = 256;
/// How long one fetch waits for messages; the loop also stops at once on shutdown.
const FETCH_EXPIRES: Duration = Duration::from_secs(1);
/// How often to look for the events stream until command-api has created it.
const STREAM_POLL: Duration = Duration::from_millis(200);
/// Redelivery delay of a message that arrived before the event it follows; grows with the
/// number of deliveries up to `GAP_DELAY_MAX`.
const GAP_DELAY: Duration = Duration::from_millis(500);
const GAP_DELAY_MAX: Duration = Duration::from_secs(5);
/// Redelivery delay of an event this build cannot fold (version skew: a newer build will).
const REJECTED_DELAY: Duration = Duration::from_secs(30);
/// Back-off after a database error, doubling up to `DB_RETRY_MAX`.
const DB_RETRY_MIN: Duration = Duration::from_millis(500);
const DB_RETRY_MAX: Duration = Duration::from_secs(10);

/// The consumer's configuration: every event, explicit acks, from the start of the stream.
pub fn consumer_config(subjects: &Subjects) -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER_NAME.to_owned()),
        description: Some("environment read model (projections)".to_owned()),
        filter_subject: subjects.all_events(),
        ack_policy: AckPolicy::Explicit,
        deliver_policy: DeliverPolicy::All,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 10_000,
        ..Default::default()
    }
}

/// Runs the projection until `shutdown` is cancelled, then returns `Ok(())`.
///
/// Waits for the events stream (command-api creates it), gets or creates the durable pull
/// consumer [`CONSUMER_NAME`], then fetches, applies and acknowledges batches. NATS and database
/// failures are logged and retried; they never end the loop.
pub async fn run(
    js: jetstream::Context,
    subjects: Subjects,
    pool: PgPool,
    shutdown: CancellationToken,
) -> Result<()> {
    let table = ViewTable::live();
    let mut db_backoff = DB_RETRY_MIN;
    'connect: loop {
        let Some(consumer) = attach(&js, &subjects, &shutdown).await else {
            return Ok(());
        };
        info!(
            stream = %subjects.events_stream(),
            consumer = CONSUMER_NAME,
            "environment projection started"
        );
        loop {
            let fetched = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                fetched = fetch(&consumer) => fetched,
            };
            let messages = match fetched {
                Ok(messages) => messages,
                Err(err) => {
                    warn!(error = %err, "fetching events failed; reattaching to the stream");
                    if !pause(&shutdown, STREAM_POLL).await {
                        return Ok(());
                    }
                    continue 'connect;
                }
            };
            if messages.is_empty() {
                continue;
            }
            // Dropping a batch half-way on shutdown is safe: its transaction rolls back and
            // unacknowledged messages are redelivered (and skipped if already applied).
            let applied = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                applied = process(&pool, &table, messages, db_backoff) => applied,
            };
            if applied {
                db_backoff = DB_RETRY_MIN;
            } else {
                if !pause(&shutdown, db_backoff).await {
                    return Ok(());
                }
                db_backoff = (db_backoff * 2).min(DB_RETRY_MAX);
            }
        }
    }
}

/// Waits for the stream and gets or creates the consumer; `None` on shutdown.
async fn attach(
    js: &jetstream::Context,
    subjects: &Subjects,
    shutdown: &CancellationToken,
) -> Option<PullConsumer> {
    let stream_name = subjects.events_stream();
    let mut reported = false;
    loop {
        if shutdown.is_cancelled() {
            return None;
        }
        match js.get_stream(&stream_name).await {
            Ok(stream) => {
                match stream
                    .get_or_create_consumer(CONSUMER_NAME, consumer_config(subjects))
                    .await
                {
                    Ok(consumer) => return Some(consumer),
                    Err(err) => warn!(
                        stream = %stream_name,
                        consumer = CONSUMER_NAME,
                        error = %err,
                        "creating the projection consumer failed; retrying"
                    ),
                }
            }
            Err(err) if !reported => {
                info!(stream = %stream_name, error = %err, "waiting for the events stream");
                reported = true;
            }
            Err(err) => debug!(stream = %stream_name, error = %err, "events stream not there yet"),
        }
        if !pause(shutdown, STREAM_POLL).await {
            return None;
        }
    }
}

/// One fetch: up to [`BATCH_SIZE`] messages, or fewer when the stream has no more for now.
async fn fetch(consumer: &PullConsumer) -> Result<Vec<Message>, async_nats::Error> {
    let mut batch = consumer
        .fetch()
        .max_messages(BATCH_SIZE)
        .expires(FETCH_EXPIRES)
        .messages()
        .await?;
    let mut messages = Vec::new();
    while let Some(item) = batch.next().await {
        match item {
            Ok(message) => messages.push(message),
            // Keep what arrived; the next fetch reports a persistent problem.
            Err(err) if !messages.is_empty() => {
                debug!(error = %err, "fetch ended early");
                break;
            }
            Err(err) => return Err(err),
        }
    }
    Ok(messages)
}

/// Decodes, applies and acknowledges one batch. Returns false when the database failed (the
/// batch was negatively acknowledged with `retry_delay`).
async fn process(
    pool: &PgPool,
    table: &ViewTable,
    messages: Vec<Message>,
    retry_delay: Duration,
) -> bool {
    let mut envelopes = Vec::with_capacity(messages.len());
    let mut carriers = Vec::with_capacity(messages.len());
    for message in messages {
        match serde_json::from_slice::<EventEnvelope>(&message.payload) {
            Ok(envelope) => {
                envelopes.push(envelope);
                carriers.push(message);
            }
            Err(err) => {
                error!(
                    subject = %message.subject,
                    error = %err,
                    "message on the events stream is not an event envelope; terminating it"
                );
                acknowledge(&message, AckKind::Term).await;
            }
        }
    }
    if envelopes.is_empty() {
        return true;
    }

    let outcome = match store::apply_batch(pool, table, &envelopes).await {
        Ok(outcome) => outcome,
        Err(err) => {
            error!(
                error = %err,
                messages = envelopes.len(),
                retry_in_ms = retry_delay.as_millis() as u64,
                "applying events to the read model failed; will retry"
            );
            for message in &carriers {
                acknowledge(message, AckKind::Nak(Some(retry_delay))).await;
            }
            return false;
        }
    };

    for ((message, envelope), disposition) in
        carriers.iter().zip(&envelopes).zip(&outcome.dispositions)
    {
        let env_id = envelope.environment_id.as_str();
        let sequence = envelope.sequence;
        match disposition {
            Disposition::Applied => {
                debug!(env_id, sequence, event_type = %envelope.event_type, "applied");
                acknowledge(message, AckKind::Ack).await;
            }
            Disposition::Duplicate => {
                debug!(env_id, sequence, "already applied; skipped");
                acknowledge(message, AckKind::Ack).await;
            }
            Disposition::Gap { expected } => {
                let delay = gap_delay(message);
                debug!(
                    env_id,
                    sequence,
                    expected,
                    retry_in_ms = delay.as_millis() as u64,
                    "event arrived before the one it follows; retrying later"
                );
                acknowledge(message, AckKind::Nak(Some(delay))).await;
            }
            Disposition::Rejected { reason } => {
                error!(
                    env_id,
                    sequence,
                    event_type = %envelope.event_type,
                    subject = %message.subject,
                    reason = %reason,
                    "event does not fold into the read model; the environment's row is stuck until it does"
                );
                acknowledge(message, AckKind::Nak(Some(REJECTED_DELAY))).await;
            }
        }
    }
    debug!(
        applied = outcome.applied(),
        duplicates = outcome.duplicates(),
        gaps = outcome.gaps(),
        rejected = outcome.rejected(),
        "batch done"
    );
    true
}

fn gap_delay(message: &Message) -> Duration {
    let delivered = message
        .info()
        .map(|info| info.delivered.clamp(1, 100))
        .unwrap_or(1);
    (GAP_DELAY * delivered as u32).min(GAP_DELAY_MAX)
}

async fn acknowledge(message: &Message, kind: AckKind) {
    if let Err(err) = message.ack_with(kind).await {
        warn!(subject = %message.subject, error = %err, "acknowledging a message failed");
    }
}

/// Sleeps for `delay`; false if shutdown came first.
async fn pause(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}
