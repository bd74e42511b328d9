//! The one reader of stored events against a real Postgres: what every read path sees of rows
//! written before today's shapes, and what it refuses to read silently.

mod support;

use domain::aggregate::{Command, Event, OperationOutcome};
use domain::ids::{EnvironmentId, OperationId};
use domain::wire::EventMetadata;
use event_store::reader::{self, DecodeReason};
use event_store::{EventStore, ReadError};

/// An environment whose infra step has started (events 1 and 2).
async fn started(store: &EventStore) -> (EnvironmentId, OperationId) {
    let name = format!("old-{}", &EnvironmentId::generate().as_str()[20..]);
    system_tests::fixtures::started_environment(store, &name).await
}

#[tokio::test]
async fn a_job_stored_before_deadlines_existed_still_loads_on_every_read_path() {
    let db = support::test_db().await;
    let store = EventStore::new(db.pool.clone());
    let (id, operation_id) = started(&store).await;
    // The `…Started` row as it was stored before jobs carried `timeout_seconds` (a real
    // historical shape, still version 1: the field was added with a default).
    sqlx::query(
        "UPDATE events SET payload = (payload::jsonb #- '{data,job,timeout_seconds}')::json
          WHERE aggregate_id = $1 AND sequence = 2",
    )
    .bind(id.as_str())
    .execute(&db.pool)
    .await
    .unwrap();

    // The reader (history, relay, replay).
    let history = store.history(id.as_str()).await.expect("history reads");
    assert_eq!(history.len(), 2);
    assert!(history[1].payload["job"].get("timeout_seconds").is_none());
    let Event::InfraApplyStarted { job, .. } = history[1].event().expect("decodes") else {
        panic!("expected InfraApplyStarted");
    };
    assert_eq!(job.timeout_seconds, None);
    let keyed = reader::by_keys(&db.pool, &[(id.to_string(), 2)])
        .await
        .unwrap();
    assert_eq!(keyed[&(id.to_string(), 2)].as_ref().unwrap(), &history[1]);
    let scanned = reader::scan(&db.pool, None, None).await.unwrap();
    assert_eq!(scanned.len(), 2);
    assert_eq!(scanned[1].1.as_ref().unwrap(), &history[1]);

    // The aggregate's load: the operation is in flight, so its result is recorded.
    store
        .execute(
            id.as_str(),
            Command::CompleteOperation {
                operation_id: operation_id.clone(),
                outcome: OperationOutcome::Succeeded {
                    outputs: Default::default(),
                },
            },
            &EventMetadata::result(&operation_id, None),
        )
        .await
        .expect("the aggregate loads the old row");
    let history = store.history(id.as_str()).await.unwrap();
    assert_eq!(history[2].event_type, "InfraApplied");
    assert_eq!(
        history[2].metadata.causation_id.as_str(),
        format!("result:{operation_id}")
    );
    assert_eq!(history[1].metadata.causation_id.as_str(), format!("{id}:1"));
}

#[tokio::test]
async fn stored_metadata_that_does_not_decode_fails_the_history_naming_the_event() {
    let db = support::test_db().await;
    let store = EventStore::new(db.pool.clone());
    let (id, _) = started(&store).await;
    sqlx::query(
        "UPDATE events SET metadata = '{\"actor\": \"token:admin\"}'
          WHERE aggregate_id = $1 AND sequence = 2",
    )
    .bind(id.as_str())
    .execute(&db.pool)
    .await
    .unwrap();

    let error = store.history(id.as_str()).await.unwrap_err();
    let ReadError::Decode(undecodable) = &error else {
        panic!("expected a decode error, got {error:?}");
    };
    assert_eq!(undecodable.sequence, 2);
    assert!(
        matches!(undecodable.reason, DecodeReason::Metadata(_)),
        "{error}"
    );
    assert!(
        error
            .to_string()
            .contains(&format!("{id}:2 (InfraApplyStarted)")),
        "{error}"
    );

    // Read one by one, only that row fails.
    let scanned = reader::scan(&db.pool, None, None).await.unwrap();
    assert!(scanned[0].1.is_ok());
    assert!(scanned[1].1.is_err());
}

#[tokio::test]
async fn the_scan_pages_in_environment_and_sequence_order() {
    let db = support::test_db().await;
    let store = EventStore::new(db.pool.clone());
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(started(&store).await.0.to_string());
    }
    ids.sort();
    let mut keys = Vec::new();
    let mut after = None;
    loop {
        let page = reader::scan(&db.pool, after.as_ref(), Some(2))
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().map(|(key, _)| key.clone());
        keys.extend(page.into_iter().map(|(key, _)| key));
    }
    let expected: Vec<(String, i64)> = ids
        .iter()
        .flat_map(|id| [(id.clone(), 1), (id.clone(), 2)])
        .collect();
    assert_eq!(keys, expected);
    // Absent keys are absent, not errors.
    let keyed = reader::by_keys(&db.pool, &[(ids[0].clone(), 9)])
        .await
        .unwrap();
    assert!(keyed.is_empty());
}
