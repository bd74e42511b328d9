//! The process manager's consumers against a real Postgres and a real JetStream: a message
//! whose command can never succeed (an undecodable result, a result for an environment that
//! does not exist) is terminated once, not retried forever, while triggers keep flowing.

mod support;

use async_nats::jetstream;
use command_api::jetstream::ensure_streams;
use command_api::process_manager::ProcessManager;
use command_api::relay::Relay;
use domain::aggregate::{OperationOutcome, StepTimeouts};
use domain::ids::{EnvironmentId, OperationId};
use domain::wire::{EventEnvelope, OperationResult, StepLease, Subjects};
use event_store::EventStore;
use std::time::{Duration, Instant};
use system_tests::fixtures::{admin_request as metadata, sandbox_spec};
use tokio_util::sync::CancellationToken;

const WITHIN: Duration = Duration::from_secs(30);
const RESULTS_CONSUMER: &str = "process-manager-results";

async fn publish(js: &jetstream::Context, subject: String, payload: Vec<u8>) {
    js.publish(subject, payload.into())
        .await
        .expect("publish")
        .await
        .expect("stream ack");
}

/// A process manager and a relay over a fresh database and a private nats-server.
struct Harness {
    _db: support::TestDb,
    _nats: system_tests::services::LocalNats,
    js: jetstream::Context,
    subjects: Subjects,
    store: EventStore,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start() -> Self {
        command_api::install_tls_provider();
        let db = support::test_db().await;
        let nats = system_tests::services::nats().await;
        let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect nats"));
        let subjects = Subjects::new(format!("t{:08x}", rand::random::<u32>()));
        ensure_streams(&js, &subjects, 1).await.expect("streams");
        let store = EventStore::new(db.pool.clone());
        let shutdown = CancellationToken::new();
        let manager = ProcessManager::new(
            store.clone(),
            js.clone(),
            subjects.clone(),
            StepTimeouts::DEFAULT,
        );
        let running = tokio::spawn(manager.run(shutdown.clone()));
        let relay = Relay::new(
            db.pool.clone(),
            js.clone(),
            subjects.clone(),
            store.committed(),
        );
        tokio::spawn(relay.run(shutdown.clone()));
        Harness {
            _db: db,
            _nats: nats,
            js,
            subjects,
            store,
            shutdown,
            running,
        }
    }

    /// Waits until `id`'s history has an event of `event_type`; returns it.
    async fn wait_for(&self, id: &EnvironmentId, event_type: &str) -> EventEnvelope {
        let deadline = Instant::now() + WITHIN;
        loop {
            let history = self.store.history(id.as_str()).await.unwrap();
            if let Some(event) = history.iter().find(|e| e.event_type == event_type) {
                return event.clone();
            }
            assert!(Instant::now() < deadline, "no {event_type} in {history:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running)
            .await
            .expect("the process manager stops promptly")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn results_that_can_never_be_recorded_are_terminated_once_and_triggers_keep_flowing() {
    let harness = Harness::start().await;
    let (js, subjects, store) = (&harness.js, &harness.subjects, &harness.store);

    // Two poison results: not JSON, and a result for an environment that does not exist (the
    // store refuses it for good).
    let unknown = EnvironmentId::generate();
    publish(js, subjects.result(unknown.as_str()), b"not json".to_vec()).await;
    let orphan = OperationResult {
        environment_id: unknown.clone(),
        operation_id: OperationId::generate(),
        outcome: OperationOutcome::Failed {
            error: "boom".into(),
        },
        attempt: None,
        request_id: None,
    };
    publish(
        js,
        subjects.result(unknown.as_str()),
        serde_json::to_vec(&orphan).unwrap(),
    )
    .await;

    // A real environment still gets its first step started (the trigger consumer flows).
    let id = EnvironmentId::generate();
    store
        .request(
            &id,
            sandbox_spec("pm-poison"),
            domain::tenant::TenantId::default(),
            &metadata("req_pm"),
        )
        .await
        .expect("request commits");
    harness.wait_for(&id, "InfraApplyStarted").await;

    // Both poison results were delivered once and terminated: nothing pending, nothing
    // waiting for redelivery, nothing redelivered.
    let results = js.get_stream(subjects.results_stream()).await.unwrap();
    let deadline = Instant::now() + WITHIN;
    loop {
        let info = results.consumer_info(RESULTS_CONSUMER).await.unwrap();
        if info.delivered.stream_sequence >= 2 && info.num_ack_pending == 0 {
            assert_eq!(info.num_pending, 0, "{info:?}");
            assert_eq!(info.num_redelivered, 0, "{info:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "poison results still pending: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A while later it is still so (a retried message would be pending again).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let info = results.consumer_info(RESULTS_CONSUMER).await.unwrap();
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    assert!(
        store.history(unknown.as_str()).await.unwrap().is_empty(),
        "nothing recorded for the unknown environment"
    );

    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_of_a_superseded_attempt_is_rejected_and_the_current_attempts_counts() {
    let harness = Harness::start().await;
    let id = EnvironmentId::generate();
    harness
        .store
        .request(
            &id,
            sandbox_spec("pm-fencing"),
            domain::tenant::TenantId::default(),
            &metadata("req_fence"),
        )
        .await
        .expect("request commits");
    let started = harness.wait_for(&id, "InfraApplyStarted").await;
    let operation_id =
        OperationId::parse(started.payload["operation_id"].as_str().unwrap()).unwrap();

    // Attempt 2 took the step over (the executors' lease says so), as when attempt 1's
    // executor was paused past its lease.
    let leases = harness
        .js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: harness.subjects.leases_bucket(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let lease = StepLease {
        operation_id: operation_id.clone(),
        attempt: 2,
        executor: "executor-b".into(),
        renewed_at_ms: chrono::Utc::now().timestamp_millis(),
        released: false,
        ttl_ms: None,
    };
    leases
        .put(id.as_str(), serde_json::to_vec(&lease).unwrap().into())
        .await
        .unwrap();

    let result = |attempt, error: &str| OperationResult {
        environment_id: id.clone(),
        operation_id: operation_id.clone(),
        outcome: OperationOutcome::Failed {
            error: error.into(),
        },
        attempt: Some(attempt),
        request_id: None,
    };
    // The late result of attempt 1 is dropped...
    let subject = harness.subjects.result(id.as_str());
    publish(
        &harness.js,
        subject.clone(),
        serde_json::to_vec(&result(1, "late zombie")).unwrap(),
    )
    .await;
    let results = harness
        .js
        .get_stream(harness.subjects.results_stream())
        .await
        .unwrap();
    let deadline = Instant::now() + WITHIN;
    while results
        .consumer_info(RESULTS_CONSUMER)
        .await
        .unwrap()
        .num_ack_pending
        > 0
        || results
            .consumer_info(RESULTS_CONSUMER)
            .await
            .unwrap()
            .num_pending
            > 0
    {
        assert!(
            Instant::now() < deadline,
            "the late result was never handled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history = harness.store.history(id.as_str()).await.unwrap();
    assert!(
        !history.iter().any(|e| e.event_type == "InfraApplyFailed"),
        "a superseded attempt's result was recorded: {history:?}"
    );
    // ...and attempt 2's counts.
    publish(
        &harness.js,
        subject,
        serde_json::to_vec(&result(2, "the real outcome")).unwrap(),
    )
    .await;
    let failed = harness.wait_for(&id, "InfraApplyFailed").await;
    assert_eq!(failed.payload["error"], "the real outcome");
    harness.stop().await;
}
