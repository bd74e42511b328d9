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

use crate::store::AGGREGATE_TYPE;
use async_nats::jetstream::{self, message::PublishMessage};
use domain::wire::{EventEnvelope, Subjects};
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
        while !shutdown.is_cancelled() {
            let published = self.publish_batch().await?;
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

    /// Publishes one batch of pending events; returns how many were published.
    async fn publish_batch(&self) -> Result<usize, RelayError> {
        let pending = self.pending().await?;
        if pending.is_empty() {
            return Ok(0);
        }
        let mut by_environment: BTreeMap<String, Vec<(i64, EventEnvelope)>> = BTreeMap::new();
        for (outbox_id, envelope) in pending {
            by_environment
                .entry(envelope.environment_id.clone())
                .or_default()
                .push((outbox_id, envelope));
        }
        // Environments in parallel, each environment's events strictly one after another.
        let mut chains: FuturesUnordered<_> = by_environment
            .into_values()
            .map(|events| self.publish_in_order(events))
            .collect();
        let mut acked = Vec::new();
        let mut first_error = None;
        while let Some((ids, error)) = chains.next().await {
            acked.extend(ids);
            if first_error.is_none() {
                first_error = error;
            }
        }
        if !acked.is_empty() {
            sqlx::query("DELETE FROM event_outbox WHERE id = ANY($1)")
                .bind(&acked)
                .execute(&self.pool)
                .await?;
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(acked.len()),
        }
    }

    /// Publishes one environment's events in sequence order, stopping at the first failure so
    /// a later event never overtakes an earlier one. Returns the outbox ids that were acked.
    async fn publish_in_order(
        &self,
        events: Vec<(i64, EventEnvelope)>,
    ) -> (Vec<i64>, Option<RelayError>) {
        let mut acked = Vec::with_capacity(events.len());
        for (outbox_id, envelope) in events {
            match self.publish(&envelope).await {
                Ok(()) => acked.push(outbox_id),
                Err(error) => return (acked, Some(error)),
            }
        }
        (acked, None)
    }

    async fn publish(&self, envelope: &EventEnvelope) -> Result<(), RelayError> {
        let subject = self
            .subjects
            .event(&envelope.environment_id, &envelope.event_type);
        let payload = serde_json::to_vec(envelope).unwrap_or_default();
        let publish = PublishMessage::build()
            .payload(payload.into())
            .message_id(envelope.message_id());
        let to_error = |source: async_nats::Error| RelayError::Publish {
            subject: subject.clone(),
            source,
        };
        let ack = self
            .js
            .send_publish(subject.clone(), publish)
            .await
            .map_err(|e| to_error(e.into()))?;
        ack.await.map_err(|e| to_error(e.into()))?;
        tracing::debug!(env_id = %envelope.environment_id, sequence = envelope.sequence, "published");
        Ok(())
    }

    async fn pending(&self) -> Result<Vec<(i64, EventEnvelope)>, sqlx::Error> {
        type Row = (
            i64,
            String,
            i64,
            String,
            String,
            serde_json::Value,
            serde_json::Value,
        );
        let rows: Vec<Row> = sqlx::query_as(
            // The batch is chosen first, on the outbox's primary key alone, so the join reads
            // just those events however large the backlog or the events table is.
            "WITH batch AS (
                 SELECT id, aggregate_type, aggregate_id, sequence
                   FROM event_outbox
                  WHERE aggregate_type = $1
                  ORDER BY id
                  LIMIT $2)
             SELECT b.id, e.aggregate_id, e.sequence, e.event_type, e.event_version,
                    e.payload::jsonb, e.metadata::jsonb
               FROM batch b
               JOIN events e USING (aggregate_type, aggregate_id, sequence)
              ORDER BY b.id",
        )
        .bind(AGGREGATE_TYPE)
        .bind(BATCH_SIZE)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, env, sequence, event_type, version, payload, metadata)| {
                    let sequence = u64::try_from(sequence).unwrap_or_default();
                    let envelope = EventEnvelope::from_stored(
                        env, sequence, event_type, version, payload, metadata,
                    );
                    (id, envelope)
                },
            )
            .collect())
    }
}

/// Renders an error with its sources, for one-line logs.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
