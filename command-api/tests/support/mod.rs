//! Throw-away infrastructure for the command side's integration tests: a Postgres database
//! (random name, migrated, dropped on drop) and a private nats-server.
//!
//! The servers come from `system_tests::services`.

#![allow(dead_code)]

pub use system_tests::services::TestDb;

/// A fresh, migrated database on the test PostgreSQL (see `system_tests::services`).
pub async fn test_db() -> TestDb {
    TestDb::new("command_api_test").await
}
