use crate::ids::{EnvironmentId, OperationId};
use crate::spec::EnvironmentSpec;
use serde::{Deserialize, Serialize};

/// What can be asked of an environment.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// A user asks for a new environment.
    Request {
        id: EnvironmentId,
        spec: EnvironmentSpec,
    },
    /// The process manager starts whatever step is pending (no-op when none is, or one is running).
    StartPendingOperation { operation_id: OperationId },
    /// An executor reports how an operation ended.
    CompleteOperation {
        operation_id: OperationId,
        outcome: OperationOutcome,
    },
    /// A user asks to resume a failed environment from its failed phase.
    Retry,
    /// A user asks to destroy the environment (cancelling an in-flight step first).
    Destroy,
}

/// The end of an operation, as reported by an executor.
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
}

impl Command {
    /// A stable name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Request { .. } => "request",
            Command::StartPendingOperation { .. } => "start_pending_operation",
            Command::CompleteOperation { .. } => "complete_operation",
            Command::Retry => "retry",
            Command::Destroy => "destroy",
        }
    }
}
