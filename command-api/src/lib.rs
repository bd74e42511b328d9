//! The provisioner's command side and query API.
//!
//! REST commands are validated at the edge ([`environments`]) and executed against the
//! `Environment` aggregate in the Postgres event store ([`store`]); the [`relay`] publishes every
//! committed event to JetStream; the [`process_manager`] turns events into next steps and
//! executor results into commands; [`http`] serves the API including live SSE streams.

pub mod app;
pub mod cli;
pub mod database;
pub mod environments;
pub mod http;
pub mod jetstream;
pub mod local_nats;
pub mod process_manager;
pub mod relay;
pub mod server;
pub mod settings;
pub mod store;
pub mod telemetry;

/// The allocator of every process that links this crate (the `provisioner` binary). glibc's
/// malloc kept the memory of closed connections (about 30 KB each) for good: its main arena
/// cannot give back freed memory below live allocations. jemalloc returns freed pages to the
/// system, and its background threads do so while the process is idle.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Installs the process-wide TLS crypto provider (ring, as async-nats and sqlx use) that the
/// HTTPS client needs. Idempotent; call it before building a `reqwest::Client`.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
