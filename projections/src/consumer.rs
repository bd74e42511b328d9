//! The durable JetStream consumer that keeps `environments_view` up to date.
//!
//! At-least-once delivery plus an idempotent store: a message is acknowledged only after the
//! transaction that applied it committed; redeliveries are skipped by sequence. Messages that
//! arrive ahead of a missing one (a gap) are negatively acknowledged with a delay, so they come
//! back after the missing event. The loop itself is `jetstream-consumer`'s, sequential by batch,
//! which keeps the order.

use crate::Result;
use crate::store::{self, Disposition as Applied, ViewTable};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, Message};
use domain::wire::{EventEnvelope, Subjects};
use jetstream_consumer::{Backoff, Consumer, Delivery, Disposition};
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

/// The durable consumer's name on the events stream.
pub const CONSUMER_NAME: &str = Subjects::PROJECTION_CONSUMER;

/// Messages fetched per batch (and applied per transaction).
const BATCH_SIZE: usize = 256;
/// How long one fetch waits for messages; bounds how late the loop notices a shutdown.
const FETCH_EXPIRES: Duration = Duration::from_secs(1);
/// Redelivery delay of a message that arrived before the event it follows; grows with the
/// number of deliveries up to `GAP_DELAY_MAX`.
const GAP_DELAY: Duration = Duration::from_millis(500);
const GAP_DELAY_MAX: Duration = Duration::from_secs(5);
/// Redelivery delay of an event this build cannot fold (version skew: a newer build will).
const REJECTED_DELAY: Duration = Duration::from_secs(30);
/// Back-off after a database error (failed batches in a row), with jitter.
const DB_RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

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
/// consumer [`CONSUMER_NAME`], then fetches, applies and settles batches one after the other
/// (the runtime of `jetstream-consumer`). NATS and database failures are logged and retried
/// with back-off; they never end the loop.
///
/// How each message ends: applied or already applied → ack; arrived before the event it
/// follows → retried after a delay growing with its deliveries; not an event envelope → term
/// (poison: it can never decode); does not fold (a newer build's event) → retried every
/// [`REJECTED_DELAY`], the environment's row stuck until a build that folds it; database
/// failure → the whole batch retried with back-off. No `max_deliver`: an event given up on
/// would leave its environment's row behind for good.
pub async fn run(
    js: jetstream::Context,
    subjects: Subjects,
    pool: PgPool,
    shutdown: CancellationToken,
) -> Result<()> {
    let table = ViewTable::live();
    info!(
        stream = %subjects.events_stream(),
        consumer = CONSUMER_NAME,
        "environment projection starting"
    );
    Consumer::new(js, subjects.events_stream(), consumer_config(&subjects))
        .batch(BATCH_SIZE)
        .fetch_expires(FETCH_EXPIRES)
        .retry_backoff(DB_RETRY)
        .run_batches(&shutdown, |messages| process(&pool, &table, messages))
        .await;
    Ok(())
}

/// Decodes and applies one batch in one transaction; one disposition per message, in order.
/// Fails (the whole batch is retried) when the database failed.
async fn process(
    pool: &PgPool,
    table: &ViewTable,
    messages: Vec<Message>,
) -> Result<Vec<Disposition>> {
    let mut dispositions = vec![Disposition::Ack; messages.len()];
    let mut envelopes = Vec::with_capacity(messages.len());
    let mut carriers = Vec::with_capacity(messages.len());
    for (index, message) in messages.iter().enumerate() {
        match serde_json::from_slice::<EventEnvelope>(&message.payload) {
            Ok(envelope) => {
                envelopes.push(envelope);
                carriers.push(index);
            }
            Err(err) => {
                dispositions[index] = Disposition::term(format!("not an event envelope: {err}"));
            }
        }
    }
    if envelopes.is_empty() {
        return Ok(dispositions);
    }

    let outcome = store::apply_batch(pool, table, &envelopes).await?;
    for ((&index, envelope), applied) in carriers.iter().zip(&envelopes).zip(&outcome.dispositions)
    {
        let message = &messages[index];
        let env_id = envelope.environment_id.as_str();
        let sequence = envelope.sequence;
        dispositions[index] = match applied {
            Applied::Applied => {
                debug!(env_id, sequence, event_type = %envelope.event_type, "applied");
                Disposition::Ack
            }
            Applied::Duplicate => {
                debug!(env_id, sequence, "already applied; skipped");
                Disposition::Ack
            }
            Applied::Gap { expected } => {
                let delay = gap_delay(message);
                debug!(
                    env_id,
                    sequence,
                    expected,
                    retry_in_ms = delay.as_millis() as u64,
                    "event arrived before the one it follows; retrying later"
                );
                Disposition::retry_after(delay)
            }
            Applied::Rejected { reason } => {
                error!(
                    env_id,
                    sequence,
                    event_type = %envelope.event_type,
                    subject = %message.subject,
                    reason = %reason,
                    "event does not fold into the read model; the environment's row is stuck until it does"
                );
                Disposition::retry_after(REJECTED_DELAY)
            }
        };
    }
    debug!(
        applied = outcome.applied(),
        duplicates = outcome.duplicates(),
        gaps = outcome.gaps(),
        rejected = outcome.rejected(),
        "batch done"
    );
    Ok(dispositions)
}

fn gap_delay(message: &Message) -> Duration {
    let delivered = Delivery::of(message).map_or(1, |delivery| delivery.delivered.clamp(1, 100));
    (GAP_DELAY * delivered as u32).min(GAP_DELAY_MAX)
}
