//! The deadline sweep: fails every operation whose deadline passed without a result.
//!
//! Every `…Started` event's job carries `timeout_seconds`; a trigger keeps the operation in
//! flight of each environment, with its deadline (`recorded_at + timeout_seconds`), in
//! `operation_deadlines`, in the same transaction as the events that start and end it. The sweep
//! reads that table every [`sweep_interval`] and sends `TimeOutOperation` for each overdue
//! operation, so a step nobody finishes — no executor at all, or every delivery lost while no API
//! process listened for JetStream's advisory — still ends, and a restarted API finds what became
//! overdue while it was down.
//!
//! Every API replica sweeps. That is harmless: the aggregate records `OperationTimedOut` only for
//! the operation in flight, so a second replica either loses the optimistic-concurrency race
//! (and then finds nothing to do) or finds the operation already ended.

use crate::store::{EventStore, StoreError, reader};
use chrono::{DateTime, Utc};
use domain::aggregate::{Command, DomainError, StepTimeouts};
use domain::ids::OperationId;
use domain::text::error_chain;
use domain::wire::{EventEnvelope, EventMetadata};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Overdue operations handled per query.
const BATCH: i64 = 100;
/// Attempts per operation when concurrent commands keep winning the race.
const ATTEMPTS: usize = 5;

/// How often to look for overdue operations: a twentieth of the shortest timeout, between
/// 100 ms and 10 s, so a deadline is noticed at most 5 % (or 10 s) late.
pub fn sweep_interval(timeouts: &StepTimeouts) -> Duration {
    let shortest = timeouts.infra.min(timeouts.bootstrap).min(timeouts.destroy);
    (shortest / 20).clamp(Duration::from_millis(100), Duration::from_secs(10))
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("failed to read overdue operations")]
    Database(#[from] sqlx::Error),
    #[error("failed to record a time-out")]
    Store(#[from] StoreError),
}

/// One overdue operation.
#[derive(Debug, sqlx::FromRow)]
struct Overdue {
    environment_id: String,
    operation_id: String,
    started_sequence: i64,
}

/// Each in-flight operation with its deadline (`due_at`): the job's, or `started_at` plus the
/// configured timeout of its step (`$2`, `$3`, `$4`: infra, bootstrap, destroy, in seconds) for
/// an operation started before deadlines existed.
const DUE: &str = "WITH due AS (
     SELECT environment_id, operation_id, started_sequence,
            COALESCE(deadline, started_at + make_interval(secs =>
                CASE step WHEN 'infra' THEN $2
                          WHEN 'bootstrap' THEN $3
                          ELSE $4 END)) AS due_at
       FROM operation_deadlines)";

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// How many operations in flight are past their deadline at `now` (the sweep has not timed them
/// out yet): the `provisioning_operations_past_deadline` gauge.
pub async fn past_deadline(
    pool: &sqlx::PgPool,
    timeouts: &StepTimeouts,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "{DUE} SELECT count(*) FROM due WHERE due_at <= $1"
    ))
    .bind(now)
    .bind(seconds(timeouts.infra))
    .bind(seconds(timeouts.bootstrap))
    .bind(seconds(timeouts.destroy))
    .fetch_one(pool)
    .await
}

#[derive(Clone)]
pub struct DeadlineSweep {
    store: EventStore,
    timeouts: StepTimeouts,
}

impl DeadlineSweep {
    /// `timeouts` apply to operations whose job carries none (started before deadlines existed).
    pub fn new(store: EventStore, timeouts: StepTimeouts) -> Self {
        Self { store, timeouts }
    }

    /// Sweeps every [`sweep_interval`] until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = sweep_interval(&self.timeouts);
        loop {
            if let Err(error) = self.sweep(Utc::now()).await {
                tracing::warn!(error = %error_chain(&error), "deadline sweep failed; will retry");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Records `OperationTimedOut` for every operation overdue at `now`; returns how many
    /// overdue operations it handled (some may have ended meanwhile: nothing is recorded then).
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<usize, SweepError> {
        Ok(self.sweep_as(now, None).await?.len())
    }

    /// [`Self::sweep`] on an admin's request (`requeue-stuck`): the time-outs are recorded with
    /// the admin as their actor, in the admin's request. Returns the environments whose
    /// overdue operation it handled.
    pub async fn sweep_as(
        &self,
        now: DateTime<Utc>,
        requested_by: Option<&EventMetadata>,
    ) -> Result<Vec<String>, SweepError> {
        let mut handled = Vec::new();
        loop {
            let overdue = self.overdue(now).await?;
            let batch = overdue.len();
            // The `…Started` events, for the request and tenant the time-outs belong to.
            let keys: Vec<(String, i64)> = overdue
                .iter()
                .map(|o| (o.environment_id.clone(), o.started_sequence))
                .collect();
            let started = reader::by_keys(self.store.pool(), &keys).await?;
            for operation in overdue {
                let key = (operation.environment_id.clone(), operation.started_sequence);
                let started = started.get(&key).and_then(|read| read.as_ref().ok());
                self.time_out(&operation, started, requested_by).await?;
                handled.push(operation.environment_id);
            }
            if batch < BATCH as usize {
                return Ok(handled);
            }
        }
    }

    async fn overdue(&self, now: DateTime<Utc>) -> Result<Vec<Overdue>, sqlx::Error> {
        sqlx::query_as(&format!(
            "{DUE}
             SELECT environment_id, operation_id, started_sequence
               FROM due
              WHERE due_at <= $1
              ORDER BY due_at
              LIMIT $5"
        ))
        .bind(now)
        .bind(seconds(self.timeouts.infra))
        .bind(seconds(self.timeouts.bootstrap))
        .bind(seconds(self.timeouts.destroy))
        .bind(BATCH)
        .fetch_all(self.store.pool())
        .await
    }

    /// `started` is the operation's `…Started` event, when it can be read.
    async fn time_out(
        &self,
        overdue: &Overdue,
        started: Option<&EventEnvelope>,
        requested_by: Option<&EventMetadata>,
    ) -> Result<(), SweepError> {
        let env = overdue.environment_id.as_str();
        let Ok(operation_id) = OperationId::parse(&overdue.operation_id) else {
            tracing::error!(env_id = env, op_id = %overdue.operation_id, "malformed operation id in operation_deadlines; dropped");
            return self.forget(overdue).await;
        };
        let mut metadata = EventMetadata::timeout(
            env,
            overdue.started_sequence,
            &operation_id,
            started.map(|started| &started.metadata),
        );
        if let Some(requested) = requested_by {
            metadata.actor = requested.actor.clone();
            metadata.request_id = requested.request_id.clone();
        }
        let command = Command::TimeOutOperation { operation_id };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.store.execute(env, command.clone(), &metadata).await {
                Ok(()) => break,
                // Another replica or a result got there first: look again with its event.
                Err(StoreError::Conflict) if attempt < ATTEMPTS => continue,
                Err(StoreError::Rejected(DomainError::NotFound)) => {
                    tracing::error!(env_id = env, "deadline of an unknown environment; dropped");
                    break;
                }
                Err(error) => return Err(error.into()),
            }
        }
        tracing::warn!(env_id = env, op_id = %overdue.operation_id, "operation passed its deadline (timed out unless it had just ended)");
        // The trigger deleted the row if a time-out was recorded; if the operation had ended
        // some other way the row is stale: either way it is done with.
        self.forget(overdue).await
    }

    async fn forget(&self, overdue: &Overdue) -> Result<(), SweepError> {
        sqlx::query(
            "DELETE FROM operation_deadlines WHERE environment_id = $1 AND operation_id = $2",
        )
        .bind(&overdue.environment_id)
        .bind(&overdue.operation_id)
        .execute(self.store.pool())
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_runs_often_enough_for_the_shortest_timeout_within_bounds() {
        assert_eq!(
            sweep_interval(&StepTimeouts::DEFAULT),
            Duration::from_secs(10)
        );
        let short = StepTimeouts {
            bootstrap: Duration::from_secs(4),
            ..StepTimeouts::DEFAULT
        };
        assert_eq!(sweep_interval(&short), Duration::from_millis(200));
        let tiny = StepTimeouts {
            destroy: Duration::from_secs(1),
            ..StepTimeouts::DEFAULT
        };
        assert_eq!(sweep_interval(&tiny), Duration::from_millis(100));
    }
}
