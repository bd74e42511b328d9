use crate::conditions::ConditionReport;
use crate::ids::{EnvironmentId, OperationId};
use crate::operator::{LockId, Reason};
use crate::spec::{EnvironmentSpec, Step};
use crate::tenant::TenantId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What can be asked of an environment.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// A user asks for a new environment.
    Request {
        id: EnvironmentId,
        spec: EnvironmentSpec,
        /// The caller's tenant, which owns the environment for good.
        tenant: TenantId,
    },
    /// The process manager starts whatever step is pending (no-op when none is, or one is
    /// running), giving it the timeout of its step.
    StartPendingOperation {
        operation_id: OperationId,
        timeouts: StepTimeouts,
    },
    /// The deadline sweep reports that an operation's deadline passed without a result. Like a
    /// result, it counts only for the operation in flight.
    TimeOutOperation { operation_id: OperationId },
    /// An executor reports how an operation ended, or a condition it observed on the way.
    CompleteOperation {
        operation_id: OperationId,
        outcome: OperationOutcome,
    },
    /// A user asks to resume a failed environment from its failed phase.
    Retry,
    /// A user asks to destroy the environment (cancelling an in-flight step first).
    Destroy,
    /// An admin cancels the operation in flight: the environment fails in its phase, saying
    /// who cancelled, so a retry resumes it. `by` is the admin's actor.
    Cancel { by: String },
    /// An admin declares the in-flight or stuck (pending, never started) environment failed.
    MarkFailed { by: String, reason: Reason },
    /// An admin declares the environment's resources removed by hand: it becomes `destroyed`
    /// and its name is freed. Refused while an operation is in flight.
    MarkDestroyed { reason: Reason },
    /// An admin authorises the next run of a step to force open exactly this Terraform state
    /// lock; on a failed environment it also queues the retry of the failed phase.
    AuthorizeForceUnlock {
        by: String,
        lock_id: LockId,
        reason: Option<Reason>,
    },
}

/// What an executor reports of an operation: how it ended, or, on the way, a condition it
/// observed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OperationOutcome {
    Succeeded {
        #[serde(default)]
        outputs: super::Outputs,
    },
    Failed {
        error: String,
    },
    /// Not an end: the operation goes on (recorded as `BootstrapProgressed` while a bootstrap
    /// is in flight; ignored otherwise).
    Progressed {
        report: ConditionReport,
    },
}

impl Command {
    /// A stable name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Request { .. } => "request",
            Command::StartPendingOperation { .. } => "start_pending_operation",
            Command::CompleteOperation { .. } => "complete_operation",
            Command::TimeOutOperation { .. } => "time_out_operation",
            Command::Retry => "retry",
            Command::Destroy => "destroy",
            Command::Cancel { .. } => "cancel",
            Command::MarkFailed { .. } => "mark_failed",
            Command::MarkDestroyed { .. } => "mark_destroyed",
            Command::AuthorizeForceUnlock { .. } => "force_unlock",
        }
    }
}

/// How long each step may run, from its `…Started` event, before the operation is failed as
/// timed out. Real clouds are slow: an RDS instance alone can take 30 minutes to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepTimeouts {
    pub infra: Duration,
    pub bootstrap: Duration,
    pub destroy: Duration,
}

impl StepTimeouts {
    pub const DEFAULT: StepTimeouts = StepTimeouts {
        infra: Duration::from_secs(90 * 60),
        bootstrap: Duration::from_secs(45 * 60),
        destroy: Duration::from_secs(90 * 60),
    };

    pub fn for_step(&self, step: Step) -> Duration {
        match step {
            Step::Infra => self.infra,
            Step::Bootstrap => self.bootstrap,
            Step::Destroy => self.destroy,
        }
    }
}

impl Default for StepTimeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}
