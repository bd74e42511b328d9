use crate::conditions::ConditionReport;
use crate::ids::{EnvironmentId, OperationId};
use crate::infra_model::InfraModel;
use crate::operator::{AuthorizedUnlock, LockId};
use crate::spec::{Beta9Spec, CustomerRole, EnvironmentName, EnvironmentSpec, Simulation, Step};
use crate::tenant::TenantId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Non-secret outputs of a step (endpoints, ids, secret *references*). Never secret values.
pub type Outputs = BTreeMap<String, String>;

/// The payload version an event type is written with today, `None` for a type this build does
/// not know. Every type is at version 1 so far.
///
/// The rule for changing a payload: add fields with `#[serde(default)]` where that suffices (no
/// new version); otherwise bump the type's version here and add an arm from the old version to
/// the new one in [`super::upcast`]'s steps. Never tighten deserialization: events are kept
/// forever, and every read path (aggregate load, the event store's reader, consumers of the
/// events stream) goes through [`super::upcast`].
pub fn current_version(event_type: &str) -> Option<u32> {
    match event_type {
        "EnvironmentRequested"
        | "InfraApplyStarted"
        | "InfraApplied"
        | "InfraApplyFailed"
        | "BootstrapStarted"
        | "BootstrapProgressed"
        | "BootstrapCompleted"
        | "BootstrapFailed"
        | "RetryRequested"
        | "DestroyRequested"
        | "OperationCancelled"
        | "DestroyStarted"
        | "InfraDestroyed"
        | "DestroyFailed"
        | "OperationTimedOut"
        | "MarkedFailed"
        | "MarkedDestroyed"
        | "ForceUnlockAuthorized" => Some(1),
        _ => None,
    }
}

/// Everything an executor needs to run one step, carried on the `…Started` event so executors
/// need no database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationJob {
    pub environment_id: EnvironmentId,
    pub name: EnvironmentName,
    pub step: Step,
    pub infra_model: InfraModel,
    pub beta9: Beta9Spec,
    /// Sandbox fault injection; absent for real clouds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulate: Option<Simulation>,
    /// The infra outputs, for bootstrap.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub infra_outputs: Outputs,
    /// The step's deadline, in seconds after the `…Started` event's `recorded_at`: without a
    /// result by then the operation fails with `OperationTimedOut`. Absent on events recorded
    /// before deadlines existed (the configured timeout of the step applies to those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// The role to assume in the customer's account (real clouds only). Absent on events
    /// recorded before it was carried: the executor then refuses the step with a message that
    /// says to retry (a retry records a new job with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_role: Option<CustomerRole>,
    /// A state lock an admin authorised this run to force open when it meets it
    /// (`ForceUnlockAuthorized`). Absent normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_unlock: Option<AuthorizedUnlock>,
}

/// Why a step failed, kept on the environment until it is retried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureInfo {
    pub phase: Step,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<OperationId>,
}

/// Everything that has happened to an environment. Serialized forever: add fields with
/// `#[serde(default)]`, never remove or tighten them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    EnvironmentRequested {
        id: EnvironmentId,
        spec: EnvironmentSpec,
        infra_model: InfraModel,
        /// The tenant that owns the environment, for good (environments requested before
        /// tenants existed belong to the default tenant).
        #[serde(default)]
        tenant: TenantId,
    },
    InfraApplyStarted {
        operation_id: OperationId,
        job: OperationJob,
    },
    InfraApplied {
        operation_id: OperationId,
        outputs: Outputs,
    },
    InfraApplyFailed {
        operation_id: OperationId,
        error: String,
    },
    BootstrapStarted {
        operation_id: OperationId,
        job: OperationJob,
    },
    /// The executor observed a condition on the way (the cluster reachable, the baseline
    /// installed): recorded for the operation in flight, once per condition and status.
    BootstrapProgressed {
        operation_id: OperationId,
        report: ConditionReport,
    },
    BootstrapCompleted {
        operation_id: OperationId,
        outputs: Outputs,
    },
    BootstrapFailed {
        operation_id: OperationId,
        error: String,
    },
    RetryRequested {
        phase: Step,
    },
    DestroyRequested {},
    OperationCancelled {
        operation_id: OperationId,
        reason: String,
        /// Set when an admin cancelled (`POST …/cancel`): the environment fails in this phase
        /// with `reason` as its error, and a retry resumes it. Absent when a destroy cancelled
        /// the operation (the destroy follows).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed_phase: Option<Step>,
    },
    DestroyStarted {
        operation_id: OperationId,
        job: OperationJob,
    },
    InfraDestroyed {
        operation_id: OperationId,
    },
    DestroyFailed {
        operation_id: OperationId,
        error: String,
    },
    /// The operation's deadline passed without a result: it failed, and a late result of it is
    /// ignored.
    OperationTimedOut {
        operation_id: OperationId,
        phase: Step,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_seconds: Option<u64>,
        error: String,
    },
    /// An admin declared the environment failed in `phase` (its executor gone for good, or its
    /// step never started): the operation in flight, if any, ended, and a late result of it is
    /// ignored. `error` is what the environment shows, naming who and why.
    MarkedFailed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        operation_id: Option<OperationId>,
        phase: Step,
        reason: String,
        error: String,
    },
    /// An admin declared the environment's resources removed by hand: it is destroyed, and its
    /// name is free again.
    MarkedDestroyed {
        reason: String,
    },
    /// An admin authorised the next run of a step to force open the state lock `lock_id`.
    ForceUnlockAuthorized {
        lock_id: LockId,
        authorized_by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl Event {
    /// The event's type name, as stored and as the last token of its NATS subject.
    pub fn event_type(&self) -> &'static str {
        match self {
            Event::EnvironmentRequested { .. } => "EnvironmentRequested",
            Event::InfraApplyStarted { .. } => "InfraApplyStarted",
            Event::InfraApplied { .. } => "InfraApplied",
            Event::InfraApplyFailed { .. } => "InfraApplyFailed",
            Event::BootstrapStarted { .. } => "BootstrapStarted",
            Event::BootstrapProgressed { .. } => "BootstrapProgressed",
            Event::BootstrapCompleted { .. } => "BootstrapCompleted",
            Event::BootstrapFailed { .. } => "BootstrapFailed",
            Event::RetryRequested { .. } => "RetryRequested",
            Event::DestroyRequested { .. } => "DestroyRequested",
            Event::OperationCancelled { .. } => "OperationCancelled",
            Event::DestroyStarted { .. } => "DestroyStarted",
            Event::InfraDestroyed { .. } => "InfraDestroyed",
            Event::DestroyFailed { .. } => "DestroyFailed",
            Event::OperationTimedOut { .. } => "OperationTimedOut",
            Event::MarkedFailed { .. } => "MarkedFailed",
            Event::MarkedDestroyed { .. } => "MarkedDestroyed",
            Event::ForceUnlockAuthorized { .. } => "ForceUnlockAuthorized",
        }
    }

    /// The payload version this event is written with: its type's [`current_version`].
    pub fn version(&self) -> u32 {
        // Every variant's type name is in the table (a unit test checks each).
        current_version(self.event_type()).unwrap_or(1)
    }

    /// The payload alone (without the type tag), as shown in history and SSE.
    pub fn payload(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.remove("data").unwrap_or(serde_json::Value::Null)
            }
            _ => serde_json::Value::Null,
        }
    }

    /// The operation this event belongs to, if any.
    pub fn operation_id(&self) -> Option<&OperationId> {
        match self {
            Event::InfraApplyStarted { operation_id, .. }
            | Event::InfraApplied { operation_id, .. }
            | Event::InfraApplyFailed { operation_id, .. }
            | Event::BootstrapStarted { operation_id, .. }
            | Event::BootstrapProgressed { operation_id, .. }
            | Event::BootstrapCompleted { operation_id, .. }
            | Event::BootstrapFailed { operation_id, .. }
            | Event::OperationCancelled { operation_id, .. }
            | Event::DestroyStarted { operation_id, .. }
            | Event::InfraDestroyed { operation_id }
            | Event::DestroyFailed { operation_id, .. }
            | Event::OperationTimedOut { operation_id, .. } => Some(operation_id),
            Event::MarkedFailed { operation_id, .. } => operation_id.as_ref(),
            Event::EnvironmentRequested { .. }
            | Event::RetryRequested { .. }
            | Event::DestroyRequested {}
            | Event::MarkedDestroyed { .. }
            | Event::ForceUnlockAuthorized { .. } => None,
        }
    }

    /// The job this event asks an executor to run, if it starts a step.
    pub fn job(&self) -> Option<(&OperationId, &OperationJob)> {
        match self {
            Event::InfraApplyStarted { operation_id, job }
            | Event::BootstrapStarted { operation_id, job }
            | Event::DestroyStarted { operation_id, job } => Some((operation_id, job)),
            _ => None,
        }
    }

    /// Whether the process manager should try to start a pending step after this event.
    pub fn leaves_step_pending(&self) -> bool {
        matches!(
            self,
            Event::EnvironmentRequested { .. }
                | Event::InfraApplied { .. }
                | Event::RetryRequested { .. }
                | Event::DestroyRequested {}
        )
    }
}
