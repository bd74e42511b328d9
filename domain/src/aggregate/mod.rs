//! The `Environment` aggregate: commands in, events out, one status machine.
//!
//! `handle` decides (pure, may reject); `apply` only assigns fields and never fails.
//! At most one operation is in flight; a result is accepted only for that operation, so late or
//! redelivered results are ignored (no events, no error).

mod commands;
pub mod event_sets;
mod events;
mod handle;
mod state;
mod upcast;

pub use commands::{Command, OperationOutcome, StepTimeouts};
pub use events::{Event, FailureInfo, OperationJob, Outputs, current_version};
pub use state::{Environment, InFlight, Requested, Status};
pub use upcast::{UpcastError, Upcasted, upcast};

/// Why a command was refused. Each variant maps to one HTTP status at the edge.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("the environment already exists")]
    AlreadyExists,
    #[error("the environment does not exist")]
    NotFound,
    #[error("the environment is {status}, only a failed environment can be retried")]
    NotFailed { status: Status },
    #[error("the environment is {status}; {action} is not allowed now")]
    NotAllowed {
        action: &'static str,
        status: Status,
    },
    /// An admin's operation the environment's state does not allow, with why.
    #[error("the environment is {status}; {action} is refused: {why}")]
    Refused {
        action: &'static str,
        status: Status,
        why: &'static str,
    },
    /// A request whose spec still holds the external id's value: the caller must seal it apart
    /// first ([`crate::spec::CloudSpec::seal_external_id`]), so no event ever holds it.
    #[error("the external id must be sealed apart before the environment is requested")]
    ExternalIdNotSealed,
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
