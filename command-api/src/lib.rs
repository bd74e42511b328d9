//! The provisioner's command side and query API.
//!
//! Every request runs as a [`access::Principal`] (a token's tenant and role); every environment
//! belongs to a tenant, whose limits are [`tenancy`]'s.
//!
//! REST commands are validated at the edge ([`environments`]) and executed against the
//! `Environment` aggregate in the Postgres event store (the `event-store` crate, re-exported as
//! [`store`]); the [`relay`] publishes every
//! committed event to JetStream; the [`process_manager`] turns events into next steps and
//! executor results into commands; [`deadlines`] fails operations that outlive their deadline; [`runbook`] runs the admins'
//! operations (cancel, force-unlock, mark-failed, mark-destroyed, requeue-stuck);
//! [`plans`] previews a document without recording anything; [`http`] serves the API including
//! live SSE streams and `GET /metrics` (the process's [`metrics`]); [`client`] is the API's HTTP
//! client (the `provisioner` binary's verbs and the system tests use it).
//!
//! The composition (command line, `dev`, telemetry) lives in the `provisioner` binary; this
//! crate depends on neither `executors` nor the stand-ins (`tests/tests/architecture.rs`).

pub mod access;
pub mod app;
pub mod client;
pub mod database;
pub mod deadlines;
pub mod environments;
pub mod http;
pub mod jetstream;
pub mod metrics;
pub mod plans;
pub mod process_manager;
pub mod relay;
pub mod runbook;
pub mod secrets;
pub mod server;
pub mod settings;
pub mod tenancy;

/// The event store (the `event-store` crate), where this crate's modules have always found it.
pub(crate) use event_store as store;

/// Installs the process-wide TLS crypto provider (ring, as async-nats and sqlx use) that the
/// HTTPS client needs. Idempotent; call it before building a `reqwest::Client`.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
