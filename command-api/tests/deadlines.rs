//! The deadline sweep against a real Postgres: an overdue operation is timed out in the request
//! of the event that started it (read through the event store's reader).

mod support;

use command_api::deadlines::DeadlineSweep;
use domain::aggregate::StepTimeouts;
use domain::wire::Actor;
use event_store::EventStore;

#[tokio::test]
async fn an_overdue_operation_times_out_in_the_request_that_started_it() {
    let db = support::test_db().await;
    let store = EventStore::new(db.pool.clone());
    let (id, operation_id) = system_tests::fixtures::started_environment(&store, "late").await;

    let sweep = DeadlineSweep::new(store.clone(), StepTimeouts::DEFAULT);
    let far_future = chrono::Utc::now() + chrono::Duration::days(365);
    assert_eq!(sweep.sweep(far_future).await.unwrap(), 1);

    let history = store.history(id.as_str()).await.unwrap();
    let timed_out = &history[2];
    assert_eq!(timed_out.event_type, "OperationTimedOut");
    assert_eq!(timed_out.metadata.actor.as_str(), Actor::DEADLINE_SWEEP);
    // The request of the step's start, the environment's request (`req_1`), carries through.
    assert_eq!(
        timed_out.metadata.request_id,
        history[0].metadata.request_id
    );
    assert_eq!(timed_out.metadata.request_id.as_str(), "req_1");
    assert_eq!(
        timed_out.metadata.correlation_id.as_str(),
        operation_id.as_str()
    );
    assert_eq!(
        timed_out.metadata.causation_id.as_str(),
        format!("deadline:{id}:2")
    );
    // Nothing is overdue any more.
    assert_eq!(sweep.sweep(far_future).await.unwrap(), 0);
}
