//! The provisioner's domain: what a user may ask for and what happens to an environment.
//!
//! Pure by design: no I/O, no async runtime, no database or messaging client. Everything here is
//! deterministic given its inputs, so it is tested without any infrastructure.

pub mod aggregate;
pub mod conditions;
pub mod config;
pub mod cost;
pub mod ids;
pub mod infra_model;
pub mod operator;
pub mod outputs;
pub mod sealed;
pub mod spec;
pub mod tenant;
pub mod text;
pub mod wire;

pub use aggregate::{Command, DomainError, Environment, Event, Status};
pub use ids::{EnvironmentId, OperationId};
pub use spec::EnvironmentSpec;
