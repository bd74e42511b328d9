//! The executors: JetStream job consumers that run a step's tools (terraform and helm, or the
//! sandbox provider's stand-ins, which live in the `standins` crate and are never linked here)
//! per environment and report the results. How every child starts is the `child-process` crate's
//! (shared with `local-services`).

pub mod beta9_secrets;
pub mod customer_account;
pub mod driver;
mod inflight;
mod job;
pub mod lease;
pub mod logs;
pub mod process;
pub mod progress;
pub mod runner;
pub mod settings;
pub mod terraform_errors;
pub mod terraform_helm;
pub mod terraform_version;
