//! Deciding: one arm per command, each a small named helper.

use super::DomainError;
use super::commands::{Command, OperationOutcome, StepTimeouts};
use super::events::{Event, OperationJob};
use super::state::{Environment, InFlight, Requested, Status};
use crate::ids::{EnvironmentId, OperationId};
use crate::infra_model::InfraModel;
use crate::operator::{LockId, Reason};
use crate::spec::{EnvironmentSpec, Step};
use crate::tenant::TenantId;

impl Environment {
    /// Decides what a command means for this environment: the events to record, or why not.
    /// An empty list means "nothing to do" (e.g. a late result), which is not an error.
    pub fn handle(&self, command: Command) -> Result<Vec<Event>, DomainError> {
        match command {
            Command::Request { id, spec, tenant } => self.request(id, spec, tenant),
            Command::StartPendingOperation {
                operation_id,
                timeouts,
            } => self.start_pending(operation_id, timeouts),
            Command::CompleteOperation {
                operation_id,
                outcome,
            } => self.complete(operation_id, outcome),
            Command::TimeOutOperation { operation_id } => self.time_out(operation_id),
            Command::Retry => self.retry(),
            Command::Destroy => self.destroy(),
            Command::Cancel { by } => self.cancel(&by),
            Command::MarkFailed { by, reason } => self.mark_failed(&by, &reason),
            Command::MarkDestroyed { reason } => self.mark_destroyed(reason),
            Command::AuthorizeForceUnlock {
                by,
                lock_id,
                reason,
            } => self.authorize_force_unlock(by, lock_id, reason),
        }
    }

    fn request(
        &self,
        id: EnvironmentId,
        spec: EnvironmentSpec,
        tenant: TenantId,
    ) -> Result<Vec<Event>, DomainError> {
        if self.exists() {
            return Err(DomainError::AlreadyExists);
        }
        if spec.cloud.holds_external_id() {
            return Err(DomainError::ExternalIdNotSealed);
        }
        let infra_model = InfraModel::for_spec(&spec);
        Ok(vec![Event::EnvironmentRequested {
            id,
            spec,
            infra_model,
            tenant,
        }])
    }

    fn start_pending(
        &self,
        operation_id: OperationId,
        timeouts: StepTimeouts,
    ) -> Result<Vec<Event>, DomainError> {
        let requested = self.require_exists()?;
        if self.in_flight.is_some() {
            return Ok(vec![]);
        }
        let Some(step) = self.pending else {
            return Ok(vec![]);
        };
        let mut job = self.job(requested, step);
        // Whole seconds, rounded up, never zero: a deadline is never earlier than configured.
        let timeout = timeouts.for_step(step);
        let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        job.timeout_seconds = Some(seconds.max(1));
        Ok(vec![match step {
            Step::Infra => Event::InfraApplyStarted { operation_id, job },
            Step::Bootstrap => Event::BootstrapStarted { operation_id, job },
            Step::Destroy => Event::DestroyStarted { operation_id, job },
        }])
    }

    fn complete(
        &self,
        operation_id: OperationId,
        outcome: OperationOutcome,
    ) -> Result<Vec<Event>, DomainError> {
        self.require_exists()?;
        let Some(in_flight) = self.in_flight_with(&operation_id) else {
            // A late, duplicate or cancelled operation's result: harmless, ignored.
            return Ok(vec![]);
        };
        let event = match (in_flight.step, outcome) {
            (Step::Bootstrap, OperationOutcome::Progressed { report }) => {
                let report = report.bounded();
                if in_flight
                    .reported
                    .contains(&(report.condition, report.status))
                {
                    // Reported again (a redelivered message, a re-run after a crash).
                    return Ok(vec![]);
                }
                Event::BootstrapProgressed {
                    operation_id,
                    report,
                }
            }
            // Only the bootstrap reports conditions on the way.
            (Step::Infra | Step::Destroy, OperationOutcome::Progressed { .. }) => {
                return Ok(vec![]);
            }
            (Step::Infra, OperationOutcome::Succeeded { outputs }) => Event::InfraApplied {
                operation_id,
                outputs,
            },
            (Step::Infra, OperationOutcome::Failed { error }) => Event::InfraApplyFailed {
                operation_id,
                error,
            },
            (Step::Bootstrap, OperationOutcome::Succeeded { outputs }) => {
                Event::BootstrapCompleted {
                    operation_id,
                    outputs,
                }
            }
            (Step::Bootstrap, OperationOutcome::Failed { error }) => Event::BootstrapFailed {
                operation_id,
                error,
            },
            (Step::Destroy, OperationOutcome::Succeeded { .. }) => {
                Event::InfraDestroyed { operation_id }
            }
            (Step::Destroy, OperationOutcome::Failed { error }) => Event::DestroyFailed {
                operation_id,
                error,
            },
        };
        Ok(vec![event])
    }

    /// The operation in flight, if it is `operation_id`.
    fn in_flight_with(&self, operation_id: &OperationId) -> Option<&InFlight> {
        self.in_flight
            .as_ref()
            .filter(|op| op.operation_id == *operation_id)
    }

    fn time_out(&self, operation_id: OperationId) -> Result<Vec<Event>, DomainError> {
        self.require_exists()?;
        let Some(in_flight) = self.in_flight_with(&operation_id) else {
            // It ended (or was cancelled) before its deadline was noticed: nothing to do.
            return Ok(vec![]);
        };
        Ok(vec![Event::OperationTimedOut {
            operation_id,
            phase: in_flight.step,
            timeout_seconds: in_flight.timeout_seconds,
            error: timed_out_message(in_flight.step, in_flight.timeout_seconds),
        }])
    }

    fn retry(&self) -> Result<Vec<Event>, DomainError> {
        self.require_exists()?;
        match (&self.failure, self.status) {
            (Some(failure), Status::Failed) => Ok(vec![Event::RetryRequested {
                phase: failure.phase,
            }]),
            _ => Err(DomainError::NotFailed {
                status: self.status,
            }),
        }
    }

    fn destroy(&self) -> Result<Vec<Event>, DomainError> {
        self.require_exists()?;
        match self.status {
            // Already on its way out (or gone): asking again changes nothing.
            Status::DestroyQueued | Status::Destroying | Status::Destroyed => Ok(vec![]),
            Status::Queued
            | Status::Provisioning
            | Status::Bootstrapping
            | Status::Ready
            | Status::Updating
            | Status::Failed => {
                let mut events = Vec::with_capacity(2);
                if let Some(in_flight) = &self.in_flight {
                    events.push(Event::OperationCancelled {
                        operation_id: in_flight.operation_id.clone(),
                        reason: "destroy requested".to_owned(),
                        failed_phase: None,
                    });
                }
                events.push(Event::DestroyRequested {});
                Ok(events)
            }
        }
    }

    fn cancel(&self, by: &str) -> Result<Vec<Event>, DomainError> {
        self.require_exists()?;
        let Some(in_flight) = &self.in_flight else {
            return Err(self.refused(
                "cancel",
                "no operation is in flight, so there is nothing to cancel",
            ));
        };
        Ok(vec![Event::OperationCancelled {
            operation_id: in_flight.operation_id.clone(),
            reason: format!(
                "cancelled by {by}; retry to run the {} step again",
                in_flight.step.as_str()
            ),
            failed_phase: Some(in_flight.step),
        }])
    }

    fn mark_failed(&self, by: &str, reason: &Reason) -> Result<Vec<Event>, DomainError> {
        self.require_exists()?;
        let (operation_id, phase) = match (&self.in_flight, self.pending) {
            (Some(in_flight), _) => (Some(in_flight.operation_id.clone()), in_flight.step),
            (None, Some(step)) => (None, step),
            (None, None) => {
                return Err(self.refused(
                    "mark-failed",
                    "no operation is in flight or waiting to start; only a running or stuck \
                     environment can be marked failed",
                ));
            }
        };
        Ok(vec![Event::MarkedFailed {
            operation_id,
            phase,
            reason: reason.to_string(),
            error: format!(
                "marked failed by {by}: {reason}; retry to run the {} step again",
                phase.as_str()
            ),
        }])
    }

    fn mark_destroyed(&self, reason: Reason) -> Result<Vec<Event>, DomainError> {
        self.require_exists()?;
        if self.status == Status::Destroyed {
            return Err(self.refused("mark-destroyed", "it is already destroyed"));
        }
        if self.in_flight.is_some() {
            return Err(self.refused(
                "mark-destroyed",
                "an operation is in flight; cancel it or mark it failed first",
            ));
        }
        Ok(vec![Event::MarkedDestroyed {
            reason: reason.to_string(),
        }])
    }

    fn authorize_force_unlock(
        &self,
        by: String,
        lock_id: LockId,
        reason: Option<Reason>,
    ) -> Result<Vec<Event>, DomainError> {
        self.require_exists()?;
        if self.status == Status::Destroyed {
            return Err(self.refused("force-unlock", "it is destroyed, so no step will run again"));
        }
        let mut events = vec![Event::ForceUnlockAuthorized {
            lock_id,
            authorized_by: by,
            reason: reason.map(|reason| reason.to_string()),
        }];
        // The usual flow is "the step failed on the lock → force-unlock → retry": a failed
        // environment's retry is queued with it.
        if let (Some(failure), Status::Failed) = (&self.failure, self.status) {
            events.push(Event::RetryRequested {
                phase: failure.phase,
            });
        }
        Ok(events)
    }

    fn refused(&self, action: &'static str, why: &'static str) -> DomainError {
        DomainError::Refused {
            action,
            status: self.status,
            why,
        }
    }

    fn require_exists(&self) -> Result<&Requested, DomainError> {
        self.requested.as_ref().ok_or(DomainError::NotFound)
    }

    fn job(&self, requested: &Requested, step: Step) -> OperationJob {
        OperationJob {
            environment_id: requested.id.clone(),
            name: requested.spec.name.clone(),
            step,
            infra_model: requested.infra_model.clone(),
            beta9: requested.spec.beta9.clone(),
            simulate: requested.spec.cloud.simulation().cloned(),
            infra_outputs: self.infra_outputs.clone(),
            timeout_seconds: None,
            customer_role: requested.spec.cloud.customer_role(),
            force_unlock: self.force_unlock.clone(),
        }
    }
}

/// What a timed-out operation's error says: the step, its timeout, and what to do.
fn timed_out_message(step: Step, timeout_seconds: Option<u64>) -> String {
    let within = match timeout_seconds {
        Some(seconds) => format!("within its timeout of {}", human_duration(seconds)),
        None => "before its deadline".to_owned(),
    };
    format!(
        "timed out: the {} step did not finish {within}; retry to run it again",
        step.as_str()
    )
}

/// `90m`, `1h`, `45s`, `2m30s`: the largest whole units, as the settings are usually written.
fn human_duration(seconds: u64) -> String {
    let (hours, minutes, secs) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    match (hours, minutes, secs) {
        (0, 0, s) => format!("{s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, 0) => format!("{}m", h * 60 + m),
        (h, m, s) => format!("{}m{s}s", h * 60 + m),
    }
}
