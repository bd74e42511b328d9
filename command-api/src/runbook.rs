//! The runbook's operations, admin only (the edge checks `Principal::require_admin`): what the
//! operators of the system this replaces did by hand (psql, the cloud console), as commands
//! recorded as events with their actor.
//!
//! - cancel, mark-failed, mark-destroyed: commands on one environment ([`Environments::run`]);
//! - force-unlock: refused while the executor running the environment's step is alive (its
//!   step lease in `<P>_LEASES` held and not lapsed, [`StepLease::is_live`]);
//! - requeue-stuck: what the process manager and the deadline sweep would have done, for the
//!   environments they missed.

use crate::deadlines::DeadlineSweep;
use crate::environments::{Accepted, Caller, Environments, ServiceError};
use crate::store::StoreError;
use async_nats::jetstream;
use domain::aggregate::event_sets::STEP_TRIGGERS;
use domain::aggregate::{Command, DomainError, StepTimeouts};
use domain::ids::{EnvironmentId, OperationId};
use domain::operator::{LockId, Reason};
use domain::wire::{StepLease, Subjects};
use serde::Serialize;

/// Attempts of one command that keeps losing optimistic-concurrency races.
const CONFLICT_ATTEMPTS: usize = 5;
/// Environments that may have a pending step looked at per `requeue-stuck`.
const MAX_PENDING: i64 = 1000;

/// What `requeue-stuck` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Requeued {
    /// Environments whose pending step it started.
    pub started: Vec<String>,
    /// Environments whose overdue operation it timed out.
    pub timed_out: Vec<String>,
}

#[derive(Clone)]
pub struct Runbook {
    environments: Environments,
    js: jetstream::Context,
    subjects: Subjects,
    timeouts: StepTimeouts,
}

impl Runbook {
    pub fn new(
        environments: Environments,
        js: jetstream::Context,
        subjects: Subjects,
        timeouts: StepTimeouts,
    ) -> Self {
        Self {
            environments,
            js,
            subjects,
            timeouts,
        }
    }

    /// Cancels the operation in flight; the environment fails in its phase.
    pub async fn cancel(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
    ) -> Result<Accepted, ServiceError> {
        let command = Command::Cancel {
            by: caller.actor.clone(),
        };
        self.environments.run(caller, id, command).await
    }

    /// Declares the in-flight or stuck environment failed.
    pub async fn mark_failed(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        reason: &str,
    ) -> Result<Accepted, ServiceError> {
        let command = Command::MarkFailed {
            by: caller.actor.clone(),
            reason: Reason::parse(reason)?,
        };
        self.environments.run(caller, id, command).await
    }

    /// Declares the environment's resources removed by hand: destroyed, its name freed.
    pub async fn mark_destroyed(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        reason: &str,
    ) -> Result<Accepted, ServiceError> {
        let command = Command::MarkDestroyed {
            reason: Reason::parse(reason)?,
        };
        self.environments.run(caller, id, command).await
    }

    /// Authorises the next run of a step to force open the state lock `lock_id` (and, on a
    /// failed environment, queues the retry) — unless an executor is alive on the environment.
    pub async fn force_unlock(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        lock_id: &str,
        reason: Option<&str>,
    ) -> Result<Accepted, ServiceError> {
        let command = Command::AuthorizeForceUnlock {
            by: caller.actor.clone(),
            lock_id: LockId::parse(lock_id)?,
            reason: reason.map(Reason::parse).transpose()?,
        };
        let state = self.environments.load(id).await?;
        if state.in_flight.is_some()
            && let Some(lease) = self.lease(id).await?
        {
            let now_ms = chrono::Utc::now().timestamp_millis();
            if lease.is_live(now_ms) {
                return Err(ServiceError::ExecutorAlive {
                    status: state.status,
                    executor: lease.executor,
                    age_seconds: now_ms.saturating_sub(lease.renewed_at_ms) / 1000,
                });
            }
        }
        self.environments.run(caller, id, command).await
    }

    /// The environment's step lease, if the bucket and the key exist.
    async fn lease(&self, id: &EnvironmentId) -> Result<Option<StepLease>, ServiceError> {
        let unavailable =
            |error: &dyn std::fmt::Display| ServiceError::LeasesUnavailable(error.to_string());
        let store = match self.js.get_key_value(self.subjects.leases_bucket()).await {
            Ok(store) => store,
            // No executor ever ran (the executors create the bucket): no lease.
            Err(error) if bucket_missing(&error) => return Ok(None),
            Err(error) => return Err(unavailable(&error)),
        };
        let value = store
            .get(id.as_str())
            .await
            .map_err(|error| unavailable(&error))?;
        Ok(value.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// Starts every pending step no operation runs for (the process manager missed its
    /// trigger), and times out every operation past its deadline (the sweep has not yet), as
    /// they would, recorded with the admin as actor. Idempotent: what is no longer stuck when
    /// its command runs changes nothing.
    pub async fn requeue_stuck(&self, caller: &Caller) -> Result<Requeued, ServiceError> {
        let metadata = caller.metadata();
        let mut requeued = Requeued::default();
        for id in self.pending_not_started().await? {
            let Ok(id) = EnvironmentId::parse(&id) else {
                continue;
            };
            if self.start_pending(&id, &metadata).await? {
                requeued.started.push(id.as_str().to_owned());
            }
        }
        let sweep = DeadlineSweep::new(self.environments.store().clone(), self.timeouts);
        requeued.timed_out = sweep
            .sweep_as(chrono::Utc::now(), Some(&metadata))
            .await
            .map_err(|error| match error {
                crate::deadlines::SweepError::Database(error) => ServiceError::Database(error),
                crate::deadlines::SweepError::Store(error) => ServiceError::Store(error),
            })?;
        requeued.timed_out.sort();
        requeued.timed_out.dedup();
        Ok(requeued)
    }

    /// Environments that may have a step pending with none in flight: those whose last event
    /// leaves a step pending (or authorised a force-unlock, which may follow one). Read from the
    /// event store, not the read model, so a lagging projection hides nothing; the aggregate
    /// decides (`StartPendingOperation` does nothing when nothing is pending or a step runs).
    async fn pending_not_started(&self) -> Result<Vec<String>, ServiceError> {
        let last_types: Vec<&str> = STEP_TRIGGERS
            .iter()
            .copied()
            .chain(["ForceUnlockAuthorized"])
            .collect();
        Ok(sqlx::query_scalar(
            "SELECT aggregate_id
               FROM (SELECT DISTINCT ON (aggregate_id) aggregate_id, event_type
                       FROM events
                      WHERE aggregate_type = 'Environment'
                      ORDER BY aggregate_id, sequence DESC) AS last_event
              WHERE event_type = ANY($1)
              ORDER BY aggregate_id
              LIMIT $2",
        )
        .bind(&last_types)
        .bind(MAX_PENDING)
        .fetch_all(self.environments.store().pool())
        .await?)
    }

    /// `StartPendingOperation` for one environment; whether it started a step.
    async fn start_pending(
        &self,
        id: &EnvironmentId,
        metadata: &domain::wire::EventMetadata,
    ) -> Result<bool, ServiceError> {
        let operation_id = OperationId::generate();
        let command = Command::StartPendingOperation {
            operation_id: operation_id.clone(),
            timeouts: self.timeouts,
        };
        let store = self.environments.store();
        for attempt in 1..=CONFLICT_ATTEMPTS {
            match store.execute(id.as_str(), command.clone(), metadata).await {
                Ok(()) => break,
                Err(StoreError::Conflict) if attempt < CONFLICT_ATTEMPTS => continue,
                Err(StoreError::Rejected(DomainError::NotFound)) => return Ok(false),
                Err(error) => return Err(error.into()),
            }
        }
        let state = self.environments.load(id).await?;
        Ok(state
            .in_flight
            .is_some_and(|in_flight| in_flight.operation_id == operation_id))
    }
}

/// Whether the bucket does not exist (its stream is not found), as opposed to NATS failing to
/// answer: only the first means there is no lease.
fn bucket_missing(error: &jetstream::context::KeyValueError) -> bool {
    use jetstream::ErrorCode;
    use jetstream::context::{GetStreamError, GetStreamErrorKind, KeyValueErrorKind};
    error.kind() == KeyValueErrorKind::GetBucket
        && std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<GetStreamError>())
            .is_some_and(|source| {
                matches!(source.kind(), GetStreamErrorKind::JetStream(error)
                    if error.error_code() == ErrorCode::STREAM_NOT_FOUND)
            })
}
