//! The executors: JetStream job consumers that run a step's tools (terraform and helm, or the
//! sandbox provider's stand-ins, which live in the `standins` crate and are never linked here)
//! per environment and report the results.

pub mod driver;
mod inflight;
mod job;
pub mod kubeconfig;
pub mod logs;
pub mod process;
pub mod runner;
pub mod settings;
pub mod terraform_helm;
pub mod terraform_render;

/// How every child starts (its own crate, shared with `local-services`); in scope at the crate
/// root so that `crate::child_process` keeps naming it.
use child_process;
