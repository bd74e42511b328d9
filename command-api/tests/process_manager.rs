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
use domain::wire::{OperationResult, Subjects};
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

#[tokio::test(flavor = "multi_thread")]
async fn results_that_can_never_be_recorded_are_terminated_once_and_triggers_keep_flowing() {
    command_api::install_tls_provider();
    let db = support::test_db().await;
    let nats = system_tests::services::nats().await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect nats"));
    let subjects = Subjects::new(format!("t{:08x}", rand::random::<u32>()));
    ensure_streams(&js, &subjects).await.expect("streams");
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

    // Two poison results: not JSON, and a result for an environment that does not exist (the
    // store refuses it for good).
    let unknown = EnvironmentId::generate();
    publish(&js, subjects.result(unknown.as_str()), b"not json".to_vec()).await;
    let orphan = OperationResult {
        environment_id: unknown.clone(),
        operation_id: OperationId::generate(),
        outcome: OperationOutcome::Failed {
            error: "boom".into(),
        },
    };
    publish(
        &js,
        subjects.result(unknown.as_str()),
        serde_json::to_vec(&orphan).unwrap(),
    )
    .await;

    // A real environment still gets its first step started (the trigger consumer flows).
    let id = EnvironmentId::generate();
    store
        .request(&id, sandbox_spec("pm-poison"), &metadata("req_pm"))
        .await
        .expect("request commits");
    let deadline = Instant::now() + WITHIN;
    loop {
        let history = store.history(id.as_str()).await.unwrap();
        if history.iter().any(|e| e.event_type == "InfraApplyStarted") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the step never started: {history:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

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

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the process manager stops promptly")
        .unwrap();
}
