//! The event store against a real Postgres: what it refuses to commit.

mod support;

use domain::aggregate::Command;
use domain::ids::EnvironmentId;
use domain::wire::MAX_EVENT_BYTES;
use event_store::{EventStore, StoreError};
use system_tests::fixtures::{admin_request as metadata, sandbox_spec};

#[tokio::test]
async fn an_event_too_large_to_publish_is_refused_at_commit_and_changes_nothing() {
    let db = support::test_db().await;
    let store = EventStore::new(db.pool.clone());

    // The store does not bound metadata itself (the API does): a huge value reaches it here.
    let huge = metadata(&"x".repeat(MAX_EVENT_BYTES));
    let id = EnvironmentId::generate();
    let refused = store
        .request(
            &id,
            sandbox_spec("huge"),
            domain::tenant::TenantId::default(),
            &huge,
        )
        .await;
    let Err(StoreError::EventTooLarge(too_large)) = refused else {
        panic!("expected EventTooLarge, got {refused:?}");
    };
    assert_eq!(too_large.event_type, "EnvironmentRequested");
    assert_eq!(too_large.limit, MAX_EVENT_BYTES);
    assert!(too_large.size > MAX_EVENT_BYTES, "{too_large:?}");
    for table in ["events", "event_outbox", "environment_names"] {
        let rows = db.count(&format!("SELECT count(*) FROM {table}")).await;
        assert_eq!(rows, 0, "{table} must be untouched");
    }

    // Below the limit is fine, and a later command with oversized metadata is refused too,
    // leaving the history as it was.
    let id = EnvironmentId::generate();
    let large = metadata(&"x".repeat(MAX_EVENT_BYTES / 4));
    store
        .request(
            &id,
            sandbox_spec("large"),
            domain::tenant::TenantId::default(),
            &large,
        )
        .await
        .expect("an event below the limit commits");
    let refused = store.execute(id.as_str(), Command::Destroy, &huge).await;
    assert!(
        matches!(refused, Err(StoreError::EventTooLarge(_))),
        "{refused:?}"
    );
    let history = store.history(id.as_str()).await.unwrap();
    assert_eq!(history.len(), 1, "only the request is recorded");
    assert_eq!(db.count("SELECT count(*) FROM event_outbox").await, 1);
}
