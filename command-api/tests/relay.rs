//! The outbox relay against a real Postgres and a real JetStream: a row that can never be
//! published is quarantined, holds only its own environment (in order), and never stalls the
//! others.

mod support;

use command_api::jetstream::ensure_streams;
use command_api::relay::Relay;
use domain::ids::EnvironmentId;
use domain::wire::{MAX_EVENT_BYTES, Subjects};
use event_store::EventStore;
use serde_json::json;
use std::time::{Duration, Instant};
use support::TestDb;
use system_tests::fixtures::{admin_request as metadata, sandbox_spec};
use tokio_util::sync::CancellationToken;

/// A generous bound for liveness; the relay normally publishes within milliseconds.
const WITHIN: Duration = Duration::from_secs(30);

struct Harness {
    db: TestDb,
    _nats: local_services::nats::LocalNats,
    js: async_nats::jetstream::Context,
    subjects: Subjects,
    store: EventStore,
    shutdown: CancellationToken,
}

impl Harness {
    async fn start() -> Self {
        command_api::install_tls_provider();
        let db = support::test_db().await;
        let nats = system_tests::services::nats().await;
        let client = async_nats::connect(nats.url()).await.expect("connect nats");
        let js = async_nats::jetstream::new(client);
        let subjects = Subjects::new(format!("t{:08x}", rand::random::<u32>()));
        ensure_streams(&js, &subjects, 1).await.expect("streams");
        let store = EventStore::new(db.pool.clone());
        Self {
            db,
            _nats: nats,
            js,
            subjects,
            store,
            shutdown: CancellationToken::new(),
        }
    }

    fn start_relay(&self) {
        let relay = Relay::new(
            self.db.pool.clone(),
            self.js.clone(),
            self.subjects.clone(),
            self.store.committed(),
        );
        tokio::spawn(relay.run(self.shutdown.clone()));
    }

    /// Writes an event row as a defect, a hand edit or an older version could have: straight
    /// into the table, past the store's checks (the trigger still adds its outbox row).
    async fn insert_raw_event(&self, env: &str, sequence: i64, event_type: &str, blob: &str) {
        sqlx::query(
            "INSERT INTO events
                 (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ('Environment', $1, $2, $3, '1', $4, $5)",
        )
        .bind(env)
        .bind(sequence)
        .bind(event_type)
        .bind(json!({"type": event_type, "data": {"blob": blob}}))
        .bind(
            serde_json::to_value(event_store::stored_metadata(
                &metadata("req_raw"),
                chrono::Utc::now(),
            ))
            .unwrap(),
        )
        .execute(&self.db.pool)
        .await
        .expect("insert raw event");
    }

    /// The sequences of one environment's events on the stream.
    async fn published(&self, env: &str) -> Vec<u64> {
        system_tests::events_on_stream(&self.js, &self.subjects, env)
            .await
            .iter()
            .map(|envelope| envelope.sequence)
            .collect()
    }

    /// Waits until `env` has exactly `expected` on the stream (panics after [`WITHIN`]).
    async fn wait_published(&self, env: &str, expected: &[u64]) {
        let deadline = Instant::now() + WITHIN;
        loop {
            let published = self.published(env).await;
            if published == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{env}: expected {expected:?} on the stream within {WITHIN:?}, got {published:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `env` is quarantined and returns (sequence, reason).
    async fn wait_quarantined(&self, env: &str) -> (i64, String) {
        let deadline = Instant::now() + WITHIN;
        loop {
            let row: Option<(i64, String)> = sqlx::query_as(
                "SELECT sequence, reason FROM event_outbox_quarantine WHERE aggregate_id = $1",
            )
            .bind(env)
            .fetch_optional(&self.db.pool)
            .await
            .expect("read the quarantine");
            if let Some(row) = row {
                return row;
            }
            assert!(
                Instant::now() < deadline,
                "{env} was not quarantined within {WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `env` has no outbox row left: the relay deletes a row after JetStream acked
    /// its message, so a message can be on the stream a moment before its row is gone.
    async fn wait_outbox_empty(&self, env: &str) {
        let deadline = Instant::now() + WITHIN;
        loop {
            let rows = self.outbox_rows(env).await;
            if rows == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{env}: {rows} outbox rows left after {WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn outbox_rows(&self, env: &str) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM event_outbox WHERE aggregate_id = $1")
            .bind(env)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Commits a normal environment through the store; returns its id.
    async fn request(&self, name: &str) -> String {
        let id = EnvironmentId::generate();
        self.store
            .request(
                &id,
                sandbox_spec(name),
                domain::tenant::TenantId::default(),
                &metadata("req_ok"),
            )
            .await
            .expect("request commits");
        id.to_string()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_that_can_never_be_published_holds_only_its_environment_until_released() {
    let harness = Harness::start().await;
    // Too large for the stream (and for NATS's default max_payload), followed by a small event
    // of the same environment, which must wait behind it.
    let oversized = EnvironmentId::generate().to_string();
    harness
        .insert_raw_event(
            &oversized,
            1,
            "InfraApplied",
            &"x".repeat(2 * MAX_EVENT_BYTES),
        )
        .await;
    harness
        .insert_raw_event(&oversized, 2, "BootstrapStarted", "small")
        .await;
    // A type that is not a subject token.
    let bad_subject = EnvironmentId::generate().to_string();
    harness
        .insert_raw_event(&bad_subject, 1, "Bad Type", "small")
        .await;
    let healthy = harness.request("healthy").await;

    harness.start_relay();

    harness.wait_published(&healthy, &[1]).await;
    let (sequence, reason) = harness.wait_quarantined(&oversized).await;
    assert_eq!(sequence, 1);
    assert!(reason.contains("bytes"), "{reason}");
    let (_, reason) = harness.wait_quarantined(&bad_subject).await;
    assert!(reason.contains("subject"), "{reason}");

    // Held, in order: nothing of the quarantined environment is published, its rows are kept.
    assert_eq!(harness.published(&oversized).await, Vec::<u64>::new());
    assert_eq!(harness.outbox_rows(&oversized).await, 2);
    // The others keep flowing.
    let later = harness.request("later").await;
    harness.wait_published(&later, &[1]).await;

    // An operator shrinks the event and releases the environment: both events go out, in order.
    sqlx::query(
        "UPDATE events SET payload = '{\"type\": \"InfraApplied\", \"data\": {}}'
          WHERE aggregate_id = $1 AND sequence = 1",
    )
    .bind(&oversized)
    .execute(&harness.db.pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM event_outbox_quarantine WHERE aggregate_id = $1")
        .bind(&oversized)
        .execute(&harness.db.pool)
        .await
        .unwrap();
    harness.wait_published(&oversized, &[1, 2]).await;
    harness.wait_outbox_empty(&oversized).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn outbox_rows_whose_event_is_missing_do_not_stall_the_relay() {
    let harness = Harness::start().await;
    // More orphaned rows than one relay batch holds: they must not fill every batch forever.
    let orphaned = EnvironmentId::generate().to_string();
    sqlx::query(
        "INSERT INTO event_outbox (aggregate_type, aggregate_id, sequence)
         SELECT 'Environment', $1, n FROM generate_series(1, 1500) AS n",
    )
    .bind(&orphaned)
    .execute(&harness.db.pool)
    .await
    .unwrap();
    let healthy = harness.request("healthy").await;

    harness.start_relay();

    harness.wait_published(&healthy, &[1]).await;
    let (sequence, reason) = harness.wait_quarantined(&orphaned).await;
    assert_eq!(sequence, 1);
    assert!(reason.contains("missing"), "{reason}");
}
