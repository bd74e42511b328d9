//! Cluster bootstrap: after infra is applied, install the baseline charts and Beta9 on the new
//! cluster. This crate decides *what* to install (releases, charts, computed values); the
//! executor runs `helm` to install it.

pub mod kubeconfig;
pub mod plan;

pub use plan::{BootstrapPlan, Release};
