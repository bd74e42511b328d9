//! Throw-away infrastructure for the command side's integration tests: a Postgres database
//! (random name, migrated, dropped on drop) and a private nats-server.
//!
//! Postgres: `PROVISIONER_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432`), a server
//! where that user may create databases. NATS: see `command_api::local_nats`.

#![allow(dead_code)]

use command_api::store;
use domain::config::{self, Format};
use domain::spec::EnvironmentSpec;
use domain::wire::EventMetadata;
use sqlx::{Connection, PgConnection, PgPool};

fn postgres_base_url() -> String {
    std::env::var("PROVISIONER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

pub struct TestDb {
    pub pool: PgPool,
    name: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("command_api_test_{:016x}", rand::random::<u64>());
        let mut admin = PgConnection::connect(&format!("{}/postgres", postgres_base_url()))
            .await
            .expect("connect to the test Postgres");
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let pool = PgPool::connect(&format!("{}/{name}", postgres_base_url()))
            .await
            .expect("connect to the test database");
        store::migrate(&pool).await.expect("migrate");
        Self { pool, name }
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A plain thread with its own runtime: this may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let mut admin =
                    PgConnection::connect(&format!("{}/postgres", postgres_base_url())).await?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
    }
}

/// A valid sandbox spec named `name`, through the parser.
pub fn sandbox_spec(name: &str) -> EnvironmentSpec {
    let yaml = format!("name: {name}\ncloud:\n  provider: sandbox\n");
    config::parse(&yaml, Format::Yaml).expect("valid sandbox config")
}

/// Command metadata with the given request id.
pub fn metadata(request_id: &str) -> EventMetadata {
    EventMetadata {
        actor: "token:admin".into(),
        tenant: None,
        request_id: request_id.into(),
        correlation_id: request_id.into(),
        causation_id: format!("request:{request_id}"),
        recorded_at: "2025-01-01T00:00:00.000000Z".into(),
    }
}
