//! The outbox relay: publishes every committed event to JetStream, in order per environment,
//! and forgets it only after JetStream acknowledged it.
//!
//! A trigger writes an `event_outbox` row in the same transaction as each event, so a crash at
//! any point leaves the row behind and the next relay publishes it. JetStream drops a republished
//! duplicate by its `Nats-Msg-Id = <env_id>:<sequence>`. One relay is active at a time (a
//! Postgres advisory lock held on a dedicated connection); other replicas stand by.
//!
//! Ordering: per environment, sequence n+1 can only be written after n committed (optimistic
//! concurrency), so its outbox id (allocated when the row is inserted) is larger. Reading the
//! outbox in id order therefore never returns n+1 without n (unless n was already published),
//! and publishing each environment's events one after another, each after the previous one's
//! ack, keeps their order on the stream. Ids are not commit order *across* environments, so they
//! are never used as a checkpoint: a row is forgotten only by deleting it after its ack.
//!
//! Poison: a row that can never be published (its event row is missing, its subject is not a
//! valid one, or it is larger than [`MAX_EVENT_BYTES`] or than what the server or stream accepts)
//! must not stall the relay. It is quarantined: recorded in `event_outbox_quarantine` with the
//! reason, logged as an error, and its environment is held — that row and every later row of the
//! same environment stay in the outbox unpublished, so the environment's order is never broken —
//! while every other environment keeps flowing. An operator fixes the cause and deletes the
//! quarantine row; the relay then publishes the held rows in order. The event store refuses
//! oversized events at commit, so this is for defects, hand edits and a server configured with a
//! smaller `max_payload`; a stored event the event store's reader cannot decode (see
//! [`crate::store::reader`]) is poison too.
//!
//! Publishing, deleting and quarantining outbox rows is this module's; a batch of rows and their
//! events is read in one statement through the event store's reader
//! ([`crate::store::reader::outbox_batch`]), which decodes events as every read does.

use crate::store::{AGGREGATE_TYPE, DecodeError, reader};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, ErrorCode, message::PublishMessage};
use chrono::{DateTime, Utc};
use domain::text::error_chain;
use domain::wire::{EventEnvelope, MAX_EVENT_BYTES, MAX_EVENT_MESSAGE_BYTES, Subjects};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sqlx::{PgPool, Postgres, pool::PoolConnection};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Advisory lock key for the single active relay ("relay" in ASCII).
const RELAY_LOCK_KEY: i64 = 0x0072_656c_6179;
const BATCH_SIZE: i64 = 1000;
const IDLE_POLL: Duration = Duration::from_millis(100);
const ERROR_BACKOFF: Duration = Duration::from_millis(500);
/// How often the active relay repeats, while any environment is held, that some are.
const QUARANTINE_REMINDER: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox query failed")]
    Database(#[from] sqlx::Error),
    #[error("publish to {subject} failed")]
    Publish {
        subject: String,
        #[source]
        source: async_nats::Error,
    },
}

pub struct Relay {
    pool: PgPool,
    js: jetstream::Context,
    subjects: Subjects,
    wake: Arc<Notify>,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        js: jetstream::Context,
        subjects: Subjects,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            pool,
            js,
            subjects,
            wake,
        }
    }

    /// Runs until `shutdown`: waits to become the active relay, then drains the outbox.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            match self.lead(&shutdown).await {
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "relay interrupted; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(ERROR_BACKOFF) => {}
                    }
                }
            }
        }
    }

    /// Takes the leader lock (waiting for it), then publishes until shutdown or an error.
    async fn lead(&self, shutdown: &CancellationToken) -> Result<(), RelayError> {
        let mut lock_conn = self.pool.acquire().await?;
        loop {
            let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(RELAY_LOCK_KEY)
                .fetch_one(&mut *lock_conn)
                .await?;
            if acquired {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(IDLE_POLL * 10) => {}
            }
        }
        tracing::info!("relay is active");
        let max_payload = self.js.client().server_info().max_payload;
        // 0 until the first connection has told us.
        if max_payload != 0 && max_payload < MAX_EVENT_MESSAGE_BYTES {
            tracing::error!(
                max_payload,
                needed = MAX_EVENT_MESSAGE_BYTES,
                "the NATS server's max_payload is below the event size limit: larger events will be quarantined"
            );
        }
        let result = self.drain_until(shutdown, &mut lock_conn).await;
        // Closing the connection releases the session-level lock whatever happened.
        drop(lock_conn.detach());
        result
    }

    async fn drain_until(
        &self,
        shutdown: &CancellationToken,
        lock_conn: &mut PoolConnection<Postgres>,
    ) -> Result<(), RelayError> {
        let mut reminded: Option<tokio::time::Instant> = None;
        while !shutdown.is_cancelled() {
            let published = self.publish_batch().await?;
            if reminded.is_none_or(|at| at.elapsed() >= QUARANTINE_REMINDER) {
                self.remind_of_quarantine().await?;
                reminded = Some(tokio::time::Instant::now());
            }
            if published == 0 {
                // Proves the leader connection (and so the lock) is still alive while idle.
                sqlx::query("SELECT 1").execute(&mut **lock_conn).await?;
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
            }
        }
        Ok(())
    }

    /// Publishes one batch of pending events; returns how many rows it dealt with (published
    /// or quarantined).
    async fn publish_batch(&self) -> Result<usize, RelayError> {
        let pending = self.pending().await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let mut by_environment: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        for row in pending {
            by_environment
                .entry(row.environment_id.clone())
                .or_default()
                .push(row);
        }
        // Environments in parallel, each environment's events strictly one after another.
        let mut chains: FuturesUnordered<_> = by_environment
            .into_values()
            .map(|rows| self.publish_in_order(rows))
            .collect();
        let (mut acked, mut poisoned) = (Vec::new(), Vec::new());
        let mut first_error = None;
        while let Some(chain) = chains.next().await {
            acked.extend(chain.acked);
            poisoned.extend(chain.poisoned);
            if first_error.is_none() {
                first_error = chain.error;
            }
        }
        if !acked.is_empty() {
            sqlx::query("DELETE FROM event_outbox WHERE id = ANY($1)")
                .bind(&acked)
                .execute(&self.pool)
                .await?;
        }
        for (row, reason) in &poisoned {
            self.quarantine(row, reason).await?;
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(acked.len() + poisoned.len()),
        }
    }

    /// Publishes one environment's rows in sequence order, stopping at the first failure so a
    /// later event never overtakes an earlier one: a transient failure is retried with the next
    /// batch, a row that can never be published ends the chain as poisoned.
    async fn publish_in_order(&self, rows: Vec<Pending>) -> Chain {
        let mut chain = Chain {
            acked: Vec::with_capacity(rows.len()),
            poisoned: None,
            error: None,
        };
        for row in rows {
            match self.publish(&row).await {
                Ok(()) => chain.acked.push(row.outbox_id),
                Err(Failure::Poison(reason)) => {
                    chain.poisoned = Some((row, reason));
                    break;
                }
                Err(Failure::Transient(error)) => {
                    chain.error = Some(error);
                    break;
                }
            }
        }
        chain
    }

    async fn publish(&self, row: &Pending) -> Result<(), Failure> {
        let envelope = match &row.envelope {
            Some(Ok(envelope)) => envelope,
            Some(Err(undecodable)) => return Err(Failure::Poison(undecodable.to_string())),
            None => {
                return Err(Failure::Poison(
                    "the outbox row's event is missing from the events table".into(),
                ));
            }
        };
        for token in [envelope.environment_id.as_str(), &envelope.event_type] {
            if !is_subject_token(token) {
                return Err(Failure::Poison(format!(
                    "{} is not a valid subject token",
                    domain::text::shown(token)
                )));
            }
        }
        let subject = self
            .subjects
            .event(envelope.environment_id.as_str(), &envelope.event_type);
        let payload = envelope
            .encode()
            .map_err(|error| Failure::Poison(format!("the event cannot be encoded: {error}")))?;
        if payload.len() > MAX_EVENT_BYTES {
            return Err(Failure::Poison(format!(
                "the event is {} bytes, more than the {MAX_EVENT_BYTES}-byte limit",
                payload.len()
            )));
        }
        let publish = PublishMessage::build()
            .payload(payload.into())
            .message_id(envelope.message_id());
        let failure = |source: jetstream::context::PublishError| {
            if let Some(reason) = never_accepted(&source) {
                return Failure::Poison(reason);
            }
            Failure::Transient(RelayError::Publish {
                subject: subject.clone(),
                source: source.into(),
            })
        };
        let ack = self
            .js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(failure)?;
        ack.await.map_err(failure)?;
        tracing::debug!(env_id = %envelope.environment_id, sequence = envelope.sequence, "published");
        Ok(())
    }

    /// Holds the row's environment: records why, and says so loudly.
    async fn quarantine(&self, row: &Pending, reason: &str) -> Result<(), sqlx::Error> {
        tracing::error!(
            env_id = %row.environment_id,
            sequence = row.sequence,
            outbox_id = row.outbox_id,
            reason,
            "event can never be published: its environment's events are held (see event_outbox_quarantine)"
        );
        sqlx::query(
            "INSERT INTO event_outbox_quarantine
                 (aggregate_type, aggregate_id, sequence, outbox_id, reason)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (aggregate_type, aggregate_id) DO NOTHING",
        )
        .bind(AGGREGATE_TYPE)
        .bind(&row.environment_id)
        .bind(row.sequence)
        .bind(row.outbox_id)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Logs, as an error, how many environments are held, if any.
    async fn remind_of_quarantine(&self) -> Result<(), sqlx::Error> {
        let held = held(&self.pool).await?;
        if held > 0 {
            tracing::error!(
                held,
                "environments are held behind events that cannot be published (see event_outbox_quarantine)"
            );
        }
        Ok(())
    }

    /// The oldest outbox rows of environments that are not held, with their events. A row whose
    /// event is missing comes back without one, to be quarantined rather than skipped silently
    /// (enough of them would fill every batch).
    async fn pending(&self) -> Result<Vec<Pending>, sqlx::Error> {
        Ok(reader::outbox_batch(&self.pool, BATCH_SIZE)
            .await?
            .into_iter()
            .map(|row| Pending {
                outbox_id: row.outbox_id,
                environment_id: row.aggregate_id,
                sequence: row.sequence,
                envelope: row.event,
            })
            .collect())
    }
}

/// How many environments are held in quarantine.
async fn held(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM event_outbox_quarantine WHERE aggregate_type = $1")
        .bind(AGGREGATE_TYPE)
        .fetch_one(pool)
        .await
}

/// What waits in the outbox (the relay's gauges).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backlog {
    /// Outbox rows: committed events not yet published (held ones included).
    pub rows: i64,
    /// The age of the oldest of them, by its event's `recorded_at`; zero when there is none.
    pub oldest: Duration,
    /// Environments held in quarantine.
    pub quarantined: i64,
}

/// The outbox's backlog at `now`.
pub async fn backlog(pool: &PgPool, now: DateTime<Utc>) -> Result<Backlog, sqlx::Error> {
    let (rows, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*), min(provisioner_recorded_at(e.metadata))
           FROM event_outbox o
           LEFT JOIN events e
                  ON (e.aggregate_type, e.aggregate_id, e.sequence)
                   = (o.aggregate_type, o.aggregate_id, o.sequence)",
    )
    .fetch_one(pool)
    .await?;
    let oldest = oldest
        .and_then(|at| (now - at).to_std().ok())
        .unwrap_or_default();
    Ok(Backlog {
        rows,
        oldest,
        quarantined: held(pool).await?,
    })
}

/// One outbox row and its event (`None` when the event row is missing).
struct Pending {
    outbox_id: i64,
    environment_id: String,
    sequence: i64,
    envelope: Option<Result<EventEnvelope, DecodeError>>,
}

/// What publishing one environment's rows came to.
struct Chain {
    acked: Vec<i64>,
    poisoned: Option<(Pending, String)>,
    error: Option<RelayError>,
}

/// Why a row was not published.
enum Failure {
    /// It never will be: quarantine it.
    Poison(String),
    /// It may be next time (NATS unreachable, a timeout): retry.
    Transient(RelayError),
}

/// Why the server will never accept this message, if that is what `error` says.
fn never_accepted(error: &jetstream::context::PublishError) -> Option<String> {
    if error.kind() == PublishErrorKind::MaxPayloadExceeded {
        return Some(format!("larger than the server's max_payload: {error}"));
    }
    let refused = std::error::Error::source(error)?.downcast_ref::<jetstream::Error>()?;
    matches!(
        refused.error_code(),
        ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM | ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM
    )
    .then(|| format!("refused by the events stream: {refused}"))
}

/// One token of a subject: environment ids and event types are words of `[A-Za-z0-9_-]`.
fn is_subject_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
