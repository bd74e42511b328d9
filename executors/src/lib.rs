//! The executors: JetStream job consumers that run a step's tools (terraform and helm, or the
//! sandbox provider's stand-ins, which live in the `standins` crate and are never linked here)
//! per environment and report the results. How every child starts is the `child-process` crate's
//! (shared with `local-services`). The process's metrics are [`metrics`]'s, served with its
//! health by [`status`].

pub mod beta9_secrets;
pub mod customer_account;
pub mod driver;
pub mod external_ids;
mod inflight;
mod job;
pub mod lease;
pub mod logs;
pub mod metrics;
pub mod process;
pub mod progress;
pub mod runner;
pub mod settings;
pub mod status;
pub mod terraform_errors;
pub mod terraform_helm;
pub mod terraform_version;
