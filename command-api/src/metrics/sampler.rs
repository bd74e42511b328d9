//! The periodic gauges of the API process: environments per status and the newest request (read
//! model), operations past their deadline, the relay's backlog, and each durable JetStream
//! consumer's pending, ack-pending and redelivered messages (the projection's lag among them).
//!
//! Every replica samples the same numbers (they are gauges: Prometheus keeps the last value of
//! each). Each sample is bounded by [`QUERY_TIMEOUT`]; one that fails or times out logs a warning
//! and leaves its gauges at their last values.

use super::{
    CONSUMER_ACK_PENDING, CONSUMER_PENDING, CONSUMER_REDELIVERED, DEPENDENCY_UP,
    ENVIRONMENT_CREATED_AT, ENVIRONMENTS_TOTAL, OPERATIONS_PAST_DEADLINE, PROJECTION_LAG_EVENTS,
    RELAY_LAG_SECONDS, RELAY_OUTBOX_ROWS, RELAY_QUARANTINED_ROWS, per_status,
};
use crate::{deadlines, relay};
use async_nats::jetstream;
use chrono::{DateTime, Utc};
use domain::aggregate::StepTimeouts;
use domain::wire::Subjects;
use sqlx::PgPool;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The longest one sample (one query, or one consumer's info) may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
enum SampleError {
    #[error("query failed")]
    Database(#[from] sqlx::Error),
    #[error("jetstream request failed")]
    JetStream(#[source] async_nats::Error),
}

/// Samples the gauges every `interval` until shutdown.
pub struct Sampler {
    pool: PgPool,
    js: jetstream::Context,
    subjects: Subjects,
    timeouts: StepTimeouts,
    interval: Duration,
}

impl Sampler {
    /// `timeouts` are the configured step timeouts (for operations whose job carries none).
    pub fn new(
        pool: PgPool,
        js: jetstream::Context,
        subjects: Subjects,
        timeouts: StepTimeouts,
        interval: Duration,
    ) -> Self {
        Self {
            pool,
            js,
            subjects,
            timeouts,
            interval,
        }
    }

    /// Samples at once, then every interval, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            self.sample().await;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One round of every gauge, and whether each dependency answered it.
    pub async fn sample(&self) {
        let now = Utc::now();
        let mut postgres = bounded("environments", self.environments()).await;
        postgres &= bounded("operations past deadline", self.past_deadline(now)).await;
        postgres &= bounded("relay backlog", self.relay(now)).await;
        let mut nats = true;
        for (stream, consumer) in self.subjects.durable_consumers() {
            nats &= bounded(consumer, self.consumer(stream, consumer)).await;
        }
        for (dependency, up) in [("postgres", postgres), ("nats", nats)] {
            ::metrics::gauge!(DEPENDENCY_UP, "dependency" => dependency)
                .set(f64::from(u8::from(up)));
        }
    }

    async fn environments(&self) -> Result<(), SampleError> {
        let rows: Vec<(String, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT status, count(*), max(created_at) FROM environments_view GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await?;
        let counts: Vec<(String, i64)> = rows
            .iter()
            .map(|(status, count, _)| (status.clone(), *count))
            .collect();
        for (status, count) in per_status(&counts) {
            ::metrics::gauge!(ENVIRONMENTS_TOTAL, "status" => status.as_str()).set(count as f64);
        }
        let newest = rows.iter().filter_map(|(_, _, at)| *at).max();
        ::metrics::gauge!(ENVIRONMENT_CREATED_AT)
            .set(newest.map_or(0.0, |at| at.timestamp_millis() as f64 / 1000.0));
        Ok(())
    }

    async fn past_deadline(&self, now: DateTime<Utc>) -> Result<(), SampleError> {
        let overdue = deadlines::past_deadline(&self.pool, &self.timeouts, now).await?;
        ::metrics::gauge!(OPERATIONS_PAST_DEADLINE).set(overdue as f64);
        Ok(())
    }

    async fn relay(&self, now: DateTime<Utc>) -> Result<(), SampleError> {
        let backlog = relay::backlog(&self.pool, now).await?;
        ::metrics::gauge!(RELAY_LAG_SECONDS).set(backlog.oldest.as_secs_f64());
        ::metrics::gauge!(RELAY_OUTBOX_ROWS).set(backlog.rows as f64);
        ::metrics::gauge!(RELAY_QUARANTINED_ROWS).set(backlog.quarantined as f64);
        Ok(())
    }

    /// One durable consumer's numbers; nothing for a consumer that does not exist yet (no
    /// executor has started, say).
    async fn consumer(&self, stream: String, name: &'static str) -> Result<(), SampleError> {
        let stream = self
            .js
            .get_stream(stream)
            .await
            .map_err(|e| SampleError::JetStream(e.into()))?;
        let info = match stream.consumer_info(name).await {
            Ok(info) => info,
            Err(error) if is_not_found(&error) => return Ok(()),
            Err(error) => return Err(SampleError::JetStream(error.into())),
        };
        ::metrics::gauge!(CONSUMER_PENDING, "consumer" => name).set(info.num_pending as f64);
        ::metrics::gauge!(CONSUMER_ACK_PENDING, "consumer" => name)
            .set(info.num_ack_pending as f64);
        ::metrics::gauge!(CONSUMER_REDELIVERED, "consumer" => name)
            .set(info.num_redelivered as f64);
        if name == Subjects::PROJECTION_CONSUMER {
            // Not applied yet: not delivered, or delivered and not acknowledged (the
            // projection acknowledges an event once its transaction committed).
            ::metrics::gauge!(PROJECTION_LAG_EVENTS)
                .set((info.num_pending + info.num_ack_pending as u64) as f64);
        }
        Ok(())
    }
}

fn is_not_found(error: &jetstream::context::ConsumerInfoError) -> bool {
    error.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound
}

/// Runs one sample for at most [`QUERY_TIMEOUT`]; a failure is logged, the gauges stay.
/// Whether it succeeded.
async fn bounded(what: &str, sample: impl Future<Output = Result<(), SampleError>>) -> bool {
    let outcome = tokio::time::timeout(QUERY_TIMEOUT, sample).await;
    match &outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(
            sample = what,
            error = %domain::text::error_chain(error),
            "metrics sample failed; keeping the last values"
        ),
        Err(_) => tracing::warn!(
            sample = what,
            timeout_ms = QUERY_TIMEOUT.as_millis() as u64,
            "metrics sample timed out; keeping the last values"
        ),
    }
    matches!(outcome, Ok(Ok(())))
}
