//! The batch writer against a real Postgres: idempotency, gaps, rejections, concurrency.

mod support;

use projections::environment_view::{self, EnvironmentView};
use projections::queries;
use projections::store::{self, Disposition, ViewTable};
use support::{History, TestDb};

fn fold(history: &History) -> EnvironmentView {
    environment_view::fold(&history.envelopes())
        .unwrap()
        .unwrap()
        .into_view()
}

async fn row(db: &TestDb, history: &History) -> Option<EnvironmentView> {
    queries::get(&db.pool, history.env_id.as_str())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_writes_the_folded_view_with_its_version() {
    let db = TestDb::new().await;
    let history = History::ready("alpha");

    let outcome = store::apply_batch(&db.pool, &ViewTable::live(), &history.envelopes())
        .await
        .unwrap();

    assert_eq!(outcome.applied(), 5);
    assert_eq!(row(&db, &history).await, Some(fold(&history)));
}

#[tokio::test]
async fn applying_the_same_batch_twice_changes_nothing() {
    let db = TestDb::new().await;
    let history = History::ready("alpha").destroy_requested();
    let envelopes = history.envelopes();

    store::apply_batch(&db.pool, &ViewTable::live(), &envelopes)
        .await
        .unwrap();
    let first = row(&db, &history).await.unwrap();
    let again = store::apply_batch(&db.pool, &ViewTable::live(), &envelopes)
        .await
        .unwrap();

    assert!(
        again
            .dispositions
            .iter()
            .all(|d| *d == Disposition::Duplicate)
    );
    let second = row(&db, &history).await.unwrap();
    assert_eq!(second, first);
    assert_eq!(second.version, 6);
}

#[tokio::test]
async fn overlapping_batches_apply_only_the_new_events() {
    let db = TestDb::new().await;
    let history = History::ready("alpha");
    let envelopes = history.envelopes();

    store::apply_batch(&db.pool, &ViewTable::live(), &envelopes[..3])
        .await
        .unwrap();
    let outcome = store::apply_batch(&db.pool, &ViewTable::live(), &envelopes[1..])
        .await
        .unwrap();

    assert_eq!(
        outcome.dispositions,
        [
            Disposition::Duplicate,
            Disposition::Duplicate,
            Disposition::Applied,
            Disposition::Applied
        ]
    );
    assert_eq!(row(&db, &history).await, Some(fold(&history)));
}

#[tokio::test]
async fn an_event_after_a_missing_one_is_reported_as_a_gap_and_not_applied() {
    let db = TestDb::new().await;
    let history = History::ready("alpha");
    let envelopes = history.envelopes();
    store::apply_batch(&db.pool, &ViewTable::live(), &envelopes[..2])
        .await
        .unwrap();

    let outcome = store::apply_batch(&db.pool, &ViewTable::live(), &envelopes[3..])
        .await
        .unwrap();

    assert_eq!(
        outcome.dispositions,
        [
            Disposition::Gap { expected: 3 },
            Disposition::Gap { expected: 3 }
        ]
    );
    assert_eq!(row(&db, &history).await.unwrap().version, 2);

    // Once the missing event arrives, the rest applies.
    let outcome = store::apply_batch(&db.pool, &ViewTable::live(), &envelopes[2..])
        .await
        .unwrap();
    assert_eq!(outcome.applied(), 3);
    assert_eq!(row(&db, &history).await, Some(fold(&history)));
}

#[tokio::test]
async fn an_event_for_an_environment_not_yet_requested_is_a_gap() {
    let db = TestDb::new().await;
    let history = History::ready("alpha");

    let outcome = store::apply_batch(&db.pool, &ViewTable::live(), &[history.envelope(2)])
        .await
        .unwrap();

    assert_eq!(outcome.dispositions, [Disposition::Gap { expected: 1 }]);
    assert_eq!(row(&db, &history).await, None);
}

#[tokio::test]
async fn an_event_that_does_not_decode_is_rejected_without_holding_up_others() {
    let db = TestDb::new().await;
    let broken = History::requested("alpha").infra_started(1);
    let healthy = History::requested("beta");
    store::apply_batch(&db.pool, &ViewTable::live(), &[broken.envelope(1)])
        .await
        .unwrap();
    let mut bad = broken.envelope(2);
    bad.event_type = "SomethingFromTheFuture".to_owned();

    let outcome = store::apply_batch(&db.pool, &ViewTable::live(), &[bad, healthy.envelope(1)])
        .await
        .unwrap();

    assert!(matches!(
        outcome.dispositions[0],
        Disposition::Rejected { .. }
    ));
    assert_eq!(outcome.dispositions[1], Disposition::Applied);
    assert_eq!(row(&db, &broken).await.unwrap().version, 1);
    assert_eq!(row(&db, &healthy).await.unwrap().version, 1);
}

#[tokio::test]
async fn interleaved_environments_in_one_batch_each_apply_in_order() {
    let db = TestDb::new().await;
    let a = History::ready("alpha");
    let b = History::requested("beta")
        .infra_started(1)
        .infra_failed(1, "boom");
    let (ea, eb) = (a.envelopes(), b.envelopes());
    let mut batch = Vec::new();
    for i in 0..ea.len().max(eb.len()) {
        batch.extend(eb.get(i).cloned());
        batch.extend(ea.get(i).cloned());
    }

    let outcome = store::apply_batch(&db.pool, &ViewTable::live(), &batch)
        .await
        .unwrap();

    assert_eq!(outcome.applied(), batch.len());
    assert_eq!(row(&db, &a).await, Some(fold(&a)));
    assert_eq!(row(&db, &b).await, Some(fold(&b)));
}

#[tokio::test]
async fn concurrent_writers_of_the_same_events_converge() {
    let db = TestDb::new().await;
    let history = History::ready("alpha").destroy_requested();
    let envelopes = history.envelopes();

    let writers: Vec<_> = (0..6)
        .map(|i| {
            let pool = db.pool.clone();
            // Different prefixes, so some writers create the row and others extend it.
            let batch = envelopes[..envelopes.len() - (i % 3)].to_vec();
            tokio::spawn(async move { store::apply_batch(&pool, &ViewTable::live(), &batch).await })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap().expect("no writer fails");
    }
    store::apply_batch(&db.pool, &ViewTable::live(), &envelopes)
        .await
        .unwrap();

    assert_eq!(row(&db, &history).await, Some(fold(&history)));
}

#[tokio::test]
async fn a_batch_writes_only_the_table_it_is_given() {
    let db = TestDb::new().await;
    sqlx::raw_sql("CREATE TABLE scratch_view (LIKE environments_view INCLUDING ALL)")
        .execute(&db.pool)
        .await
        .unwrap();
    let history = History::ready("alpha");
    let scratch = ViewTable::new("scratch_view").unwrap();

    store::apply_batch(&db.pool, &scratch, &history.envelopes())
        .await
        .unwrap();

    assert_eq!(row(&db, &history).await, None);
    let version: i64 = sqlx::query_scalar("SELECT version FROM scratch_view WHERE id = $1")
        .bind(history.env_id.as_str())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(version, 5);
}

#[tokio::test]
async fn a_database_failure_is_an_error_and_writes_nothing() {
    let db = TestDb::new().await;
    let history = History::ready("alpha");
    let missing = ViewTable::new("no_such_table").unwrap();

    let err = store::apply_batch(&db.pool, &missing, &history.envelopes())
        .await
        .unwrap_err();

    assert!(matches!(err, projections::Error::Database(_)), "{err:?}");
    assert_eq!(row(&db, &history).await, None);
}

/// Writes `view` as a row written before the read model kept the domain state (`state` NULL).
async fn insert_stateless_row(db: &TestDb, view: &EnvironmentView) {
    sqlx::query(
        "INSERT INTO environments_view \
         (id, name, status, provider, spec, outputs, error, operation, version, created_at, \
          updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&view.id)
    .bind(&view.name)
    .bind(&view.status)
    .bind(&view.provider)
    .bind(&view.spec)
    .bind(&view.outputs)
    .bind(&view.error)
    .bind(&view.operation)
    .bind(view.version)
    .bind(view.created_at)
    .bind(view.updated_at)
    .execute(&db.pool)
    .await
    .unwrap();
}

async fn stored_state(db: &TestDb, history: &History) -> Option<serde_json::Value> {
    sqlx::query_scalar("SELECT state FROM environments_view WHERE id = $1")
        .bind(history.env_id.as_str())
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_row_is_written_with_the_domain_state_it_derives_from() {
    let db = TestDb::new().await;
    let history = History::ready("alpha");

    store::apply_batch(&db.pool, &ViewTable::live(), &history.envelopes())
        .await
        .unwrap();

    let mut aggregate = domain::aggregate::Environment::default();
    for event in &history.events {
        aggregate.apply(event);
    }
    let folded = environment_view::fold(&history.envelopes())
        .unwrap()
        .unwrap();
    let stored = stored_state(&db, &history).await.unwrap();
    assert_eq!(stored, folded.stored().unwrap());
    // The domain state itself, and the conditions folded beside it.
    let mut state_only = stored.clone();
    let conditions = state_only.as_object_mut().unwrap().remove("conditions");
    assert_eq!(state_only, serde_json::to_value(&aggregate).unwrap());
    assert_eq!(
        conditions,
        Some(serde_json::to_value(&folded.view().conditions).unwrap())
    );
}

#[tokio::test]
async fn a_row_whose_state_predates_the_conditions_is_rebuilt_with_them() {
    let db = TestDb::new().await;
    let history = History::ready("alpha");
    history.record(&db.pool).await;
    let envelopes = history.envelopes();
    store::apply_batch(&db.pool, &ViewTable::live(), &envelopes[..2])
        .await
        .unwrap();
    // As a build before conditions wrote it: the bare domain state, no conditions.
    let bare = environment_view::fold(&envelopes[..2]).unwrap().unwrap();
    sqlx::query("UPDATE environments_view SET state = $2, conditions = '[]' WHERE id = $1")
        .bind(history.env_id.as_str())
        .bind(serde_json::to_value(bare.state()).unwrap())
        .execute(&db.pool)
        .await
        .unwrap();
    let outcome = store::apply_batch(&db.pool, &ViewTable::live(), &envelopes[2..])
        .await
        .unwrap();
    assert_eq!(outcome.applied(), envelopes.len() - 2);
    assert_eq!(row(&db, &history).await, Some(fold(&history)));
    let view = row(&db, &history).await.unwrap();
    assert_eq!(view.conditions.as_slice().len(), 4);
}

#[tokio::test]
async fn a_row_without_state_is_rebuilt_from_the_event_store_and_goes_on() {
    let db = TestDb::new().await;
    let history = History::ready("alpha").destroy_requested();
    history.record(&db.pool).await;
    let envelopes = history.envelopes();
    let before = History {
        events: history.events[..3].to_vec(),
        ..history.clone()
    };
    insert_stateless_row(&db, &fold(&before)).await;

    // A duplicate needs no state.
    let outcome = store::apply_batch(&db.pool, &ViewTable::live(), &envelopes[2..3])
        .await
        .unwrap();
    assert_eq!(outcome.dispositions, [Disposition::Duplicate]);
    assert_eq!(stored_state(&db, &history).await, None);

    // The next event folds from the state rebuilt from the event store.
    let outcome = store::apply_batch(&db.pool, &ViewTable::live(), &envelopes[3..])
        .await
        .unwrap();
    assert_eq!(outcome.applied(), 3);
    assert_eq!(row(&db, &history).await, Some(fold(&history)));
    let expected = environment_view::fold(&envelopes).unwrap().unwrap();
    assert_eq!(
        stored_state(&db, &history).await,
        Some(expected.stored().unwrap())
    );
}

#[tokio::test]
async fn a_row_with_an_unreadable_state_is_rebuilt_from_the_event_store() {
    let db = TestDb::new().await;
    let history = History::ready("alpha");
    history.record(&db.pool).await;
    let envelopes = history.envelopes();
    store::apply_batch(&db.pool, &ViewTable::live(), &envelopes[..2])
        .await
        .unwrap();
    sqlx::query("UPDATE environments_view SET state = '\"from a future build\"' WHERE id = $1")
        .bind(history.env_id.as_str())
        .execute(&db.pool)
        .await
        .unwrap();

    let outcome = store::apply_batch(&db.pool, &ViewTable::live(), &envelopes[2..])
        .await
        .unwrap();

    assert_eq!(outcome.applied(), 3);
    assert_eq!(row(&db, &history).await, Some(fold(&history)));
}

#[tokio::test]
async fn a_row_without_state_whose_events_are_not_stored_rejects_the_next_event() {
    let db = TestDb::new().await;
    let history = History::ready("alpha");
    let envelopes = history.envelopes();
    let before = History {
        events: history.events[..2].to_vec(),
        ..history.clone()
    };
    let written = fold(&before);
    insert_stateless_row(&db, &written).await;

    let outcome = store::apply_batch(&db.pool, &ViewTable::live(), &envelopes[2..3])
        .await
        .unwrap();

    let [Disposition::Rejected { reason }] = outcome.dispositions.as_slice() else {
        panic!("{outcome:?}")
    };
    assert!(reason.contains("cannot be rebuilt"), "{reason}");
    // As it was written: before the read model kept the state, or conditions.
    let mut unchanged = written;
    unchanged.conditions = serde_json::from_value(serde_json::json!([])).unwrap();
    assert_eq!(row(&db, &history).await, Some(unchanged));
    assert_eq!(stored_state(&db, &history).await, None);
}
