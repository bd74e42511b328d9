//! The provisioner's command side and query API.
//!
//! REST commands are validated at the edge ([`environments`]) and executed against the
//! `Environment` aggregate in the Postgres event store (the `event-store` crate, re-exported as
//! [`store`]); the [`relay`] publishes every
//! committed event to JetStream; the [`process_manager`] turns events into next steps and
//! executor results into commands; [`deadlines`] fails operations that outlive their deadline;
//! [`http`] serves the API including live SSE streams.

pub mod app;
pub mod cli;
pub mod database;
pub mod deadlines;
pub mod environments;
pub mod http;
pub mod jetstream;
pub mod local;
pub mod process_manager;
pub mod relay;
pub mod server;
pub mod settings;
pub mod telemetry;

/// The event store (the `event-store` crate), where this crate's modules have always found it.
pub use event_store as store;

/// The private nats-server, where the tests and `dev` have always found it.
pub use local::nats as local_nats;

/// Installs the process-wide TLS crypto provider (ring, as async-nats and sqlx use) that the
/// HTTPS client needs. Idempotent; call it before building a `reqwest::Client`.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
