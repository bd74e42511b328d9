use super::events::{Event, FailureInfo, OperationJob, Outputs};
use crate::conditions::{ConditionStatus, ConditionType};
use crate::ids::{EnvironmentId, OperationId};
use crate::infra_model::InfraModel;
use crate::operator::AuthorizedUnlock;
use crate::spec::{EnvironmentSpec, Step};
use crate::tenant::TenantId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The status words the API shows.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Queued,
    Provisioning,
    Bootstrapping,
    Ready,
    Updating,
    Failed,
    DestroyQueued,
    Destroying,
    Destroyed,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Queued,
        Status::Provisioning,
        Status::Bootstrapping,
        Status::Ready,
        Status::Updating,
        Status::Failed,
        Status::DestroyQueued,
        Status::Destroying,
        Status::Destroyed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Provisioning => "provisioning",
            Status::Bootstrapping => "bootstrapping",
            Status::Ready => "ready",
            Status::Updating => "updating",
            Status::Failed => "failed",
            Status::DestroyQueued => "destroy_queued",
            Status::Destroying => "destroying",
            Status::Destroyed => "destroyed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|status| status.as_str() == s)
    }

    /// Statuses a `watch` can stop at: nothing more happens without a new command.
    pub fn is_settled(self) -> bool {
        matches!(self, Status::Ready | Status::Failed | Status::Destroyed)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The operation currently running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub operation_id: OperationId,
    pub step: Step,
    /// The job's `timeout_seconds`.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// The conditions the executor reported for this operation so far, with their status: a
    /// report already recorded is not recorded again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reported: Vec<(ConditionType, ConditionStatus)>,
}

/// The identity and spec fixed at request time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Requested {
    pub id: EnvironmentId,
    pub spec: EnvironmentSpec,
    pub infra_model: InfraModel,
    #[serde(default)]
    pub tenant: TenantId,
}

/// The state of one environment, rebuilt by applying its events in order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// What was asked for; `None` until `EnvironmentRequested`.
    pub requested: Option<Requested>,
    pub status: Status,
    /// The step waiting to be started by the process manager.
    pub pending: Option<Step>,
    pub in_flight: Option<InFlight>,
    pub failure: Option<FailureInfo>,
    pub infra_outputs: Outputs,
    pub outputs: Outputs,
    /// A state lock an admin authorised the next step to force open; handed to the next job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_unlock: Option<AuthorizedUnlock>,
}

impl Environment {
    /// Whether `EnvironmentRequested` has been applied.
    pub fn exists(&self) -> bool {
        self.requested.is_some()
    }

    /// Folds one event into the state. Never fails, does no I/O.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::EnvironmentRequested {
                id,
                spec,
                infra_model,
                tenant,
            } => {
                self.requested = Some(Requested {
                    id: id.clone(),
                    spec: spec.clone(),
                    infra_model: infra_model.clone(),
                    tenant: tenant.clone(),
                });
                self.status = Status::Queued;
                self.pending = Some(Step::Infra);
            }
            Event::InfraApplyStarted { operation_id, job } => {
                self.start(operation_id, Step::Infra, job, Status::Provisioning)
            }
            Event::BootstrapStarted { operation_id, job } => {
                self.start(operation_id, Step::Bootstrap, job, Status::Bootstrapping)
            }
            Event::DestroyStarted { operation_id, job } => {
                self.start(operation_id, Step::Destroy, job, Status::Destroying)
            }
            Event::InfraApplied { outputs, .. } => {
                self.in_flight = None;
                self.infra_outputs = outputs.clone();
                self.outputs = outputs.clone();
                self.pending = Some(Step::Bootstrap);
            }
            Event::BootstrapProgressed { report, .. } => {
                if let Some(in_flight) = &mut self.in_flight {
                    in_flight.reported.push((report.condition, report.status));
                }
            }
            Event::BootstrapCompleted { outputs, .. } => {
                self.in_flight = None;
                self.outputs.extend(outputs.clone());
                self.status = Status::Ready;
            }
            Event::InfraDestroyed { .. } | Event::MarkedDestroyed { .. } => self.destroyed(),
            Event::InfraApplyFailed {
                operation_id,
                error,
            } => self.fail(Some(operation_id), Step::Infra, error),
            Event::BootstrapFailed {
                operation_id,
                error,
            } => self.fail(Some(operation_id), Step::Bootstrap, error),
            Event::DestroyFailed {
                operation_id,
                error,
            } => self.fail(Some(operation_id), Step::Destroy, error),
            Event::OperationTimedOut {
                operation_id,
                phase,
                error,
                ..
            } => self.fail(Some(operation_id), *phase, error),
            Event::MarkedFailed {
                operation_id,
                phase,
                error,
                ..
            } => {
                self.pending = None;
                self.fail(operation_id.as_ref(), *phase, error)
            }
            Event::ForceUnlockAuthorized {
                lock_id,
                authorized_by,
                ..
            } => {
                self.force_unlock = Some(AuthorizedUnlock {
                    lock_id: lock_id.clone(),
                    authorized_by: authorized_by.clone(),
                });
            }
            Event::RetryRequested { phase } => {
                self.failure = None;
                self.pending = Some(*phase);
                self.status = match phase {
                    Step::Infra => Status::Provisioning,
                    Step::Bootstrap => Status::Bootstrapping,
                    Step::Destroy => Status::DestroyQueued,
                };
            }
            Event::OperationCancelled {
                operation_id,
                reason,
                failed_phase,
            } => match failed_phase {
                Some(phase) => self.fail(Some(operation_id), *phase, reason),
                None => self.in_flight = None,
            },
            Event::DestroyRequested {} => {
                self.failure = None;
                self.pending = Some(Step::Destroy);
                self.status = Status::DestroyQueued;
            }
        }
    }

    fn start(
        &mut self,
        operation_id: &OperationId,
        step: Step,
        job: &OperationJob,
        status: Status,
    ) {
        self.pending = None;
        // The job carries it (`OperationJob::force_unlock`): this run uses it up.
        self.force_unlock = None;
        self.in_flight = Some(InFlight {
            operation_id: operation_id.clone(),
            step,
            timeout_seconds: job.timeout_seconds,
            reported: Vec::new(),
        });
        self.status = status;
    }

    fn fail(&mut self, operation_id: Option<&OperationId>, phase: Step, error: &str) {
        self.in_flight = None;
        self.status = Status::Failed;
        self.failure = Some(FailureInfo {
            phase,
            message: error.to_owned(),
            operation_id: operation_id.cloned(),
        });
    }

    fn destroyed(&mut self) {
        self.in_flight = None;
        self.pending = None;
        self.failure = None;
        self.force_unlock = None;
        self.infra_outputs.clear();
        self.outputs.clear();
        self.status = Status::Destroyed;
    }
}
