//! Throw-away infrastructure for the event store's integration tests: a Postgres database
//! (random name, migrated, dropped on drop), from `system_tests::services`.

#![allow(dead_code)]

use domain::config::{self, Format};
use domain::spec::EnvironmentSpec;
use domain::wire::{Actor, EventMetadata, RequestId};
pub use system_tests::services::TestDb;

/// A fresh, migrated database on the test PostgreSQL (see `system_tests::services`).
pub async fn test_db() -> TestDb {
    TestDb::new("event_store_test").await
}

/// A valid sandbox spec named `name`, through the parser.
pub fn sandbox_spec(name: &str) -> EnvironmentSpec {
    let yaml = format!("name: {name}\ncloud:\n  provider: sandbox\n");
    config::parse(&yaml, Format::Yaml).expect("valid sandbox config")
}

/// Command metadata with the given request id (an admin token's request).
pub fn metadata(request_id: &str) -> EventMetadata {
    EventMetadata::request(
        Actor::caller("token:admin"),
        None,
        RequestId::new(request_id),
    )
}
