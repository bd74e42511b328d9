//! Replay: rebuild from the events table, compare with the live read model.

mod support;

use domain::spec::Step;
use projections::replay::{self, Mismatch, MismatchKind};
use projections::store::{self, ViewTable};
use serde_json::Value;
use support::{History, TestDb};

/// Records the histories in the event store and projects them into the live table.
async fn record_and_project(db: &TestDb, histories: &[History]) {
    for history in histories {
        history.record(&db.pool).await;
        let outcome = store::apply_batch(&db.pool, &ViewTable::live(), &history.envelopes())
            .await
            .unwrap();
        assert_eq!(outcome.applied(), history.events.len());
    }
}

fn lifecycles() -> Vec<History> {
    vec![
        History::ready("alpha"),
        History::ready("beta")
            .destroy_requested()
            .destroy_started(3)
            .destroyed(3),
        History::requested("gamma")
            .infra_started(1)
            .infra_failed(1, "quota exceeded")
            .retry(Step::Infra)
            .infra_started(2),
        History::requested("delta"),
    ]
}

async fn live_rows(db: &TestDb) -> Vec<Value> {
    sqlx::query_scalar("SELECT to_jsonb(v) FROM environments_view v ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn replay_of_a_projected_history_matches_the_live_read_model() {
    let db = TestDb::new().await;
    let histories = lifecycles();
    record_and_project(&db, &histories).await;

    let report = replay::replay(&db.pool).await.unwrap();

    assert!(report.is_consistent(), "{report:#?}");
    assert_eq!(report.environments, 4);
    assert_eq!(
        report.events,
        histories.iter().map(|h| h.events.len()).sum::<usize>()
    );
}

#[tokio::test]
async fn a_tampered_live_row_is_reported_with_the_columns_that_differ() {
    let db = TestDb::new().await;
    let histories = lifecycles();
    record_and_project(&db, &histories).await;
    let tampered = &histories[0];
    sqlx::query(
        "UPDATE environments_view SET status = 'failed', outputs = '{\"x\": \"y\"}' WHERE id = $1",
    )
    .bind(tampered.env_id.as_str())
    .execute(&db.pool)
    .await
    .unwrap();

    let report = replay::replay(&db.pool).await.unwrap();

    assert!(!report.is_consistent());
    assert_eq!(
        report.mismatches,
        [Mismatch {
            environment_id: tampered.env_id.to_string(),
            kind: MismatchKind::Differs {
                fields: vec!["status".to_owned(), "outputs".to_owned()]
            },
        }]
    );
}

#[tokio::test]
async fn rows_on_one_side_only_are_reported_as_missing() {
    let db = TestDb::new().await;
    let projected = History::ready("alpha");
    record_and_project(&db, std::slice::from_ref(&projected)).await;
    // In the event store, never projected.
    let unprojected = History::requested("beta");
    unprojected.record(&db.pool).await;
    // Projected, but not in the event store.
    let orphan = History::requested("gamma");
    store::apply_batch(&db.pool, &ViewTable::live(), &orphan.envelopes())
        .await
        .unwrap();

    let report = replay::replay(&db.pool).await.unwrap();

    let mut expected = vec![
        Mismatch {
            environment_id: unprojected.env_id.to_string(),
            kind: MismatchKind::MissingInLive,
        },
        Mismatch {
            environment_id: orphan.env_id.to_string(),
            kind: MismatchKind::MissingInReplay,
        },
    ];
    expected.sort_by(|a, b| a.environment_id.cmp(&b.environment_id));
    assert_eq!(report.mismatches, expected);
}

#[tokio::test]
async fn replay_never_modifies_the_live_table_and_can_run_again() {
    let db = TestDb::new().await;
    record_and_project(&db, &lifecycles()).await;
    sqlx::query("UPDATE environments_view SET name = 'renamed' WHERE name = 'delta'")
        .execute(&db.pool)
        .await
        .unwrap();
    let before = live_rows(&db).await;

    let first = replay::replay(&db.pool).await.unwrap();
    let second = replay::replay(&db.pool).await.unwrap();

    assert_eq!(live_rows(&db).await, before);
    assert_eq!(first, second);
    assert_eq!(first.mismatches.len(), 1);
}

#[tokio::test]
async fn an_event_the_build_cannot_fold_makes_the_replay_inconsistent() {
    let db = TestDb::new().await;
    let history = History::ready("alpha");
    record_and_project(&db, std::slice::from_ref(&history)).await;
    sqlx::query(
        "INSERT INTO events \
         (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Environment', $1, 6, 'DriftDetected', '1', \
                 '{\"type\": \"DriftDetected\", \"data\": {}}', '{}')",
    )
    .bind(history.env_id.as_str())
    .execute(&db.pool)
    .await
    .unwrap();

    let report = replay::replay(&db.pool).await.unwrap();

    assert!(report.mismatches.is_empty(), "{report:#?}");
    assert_eq!(report.unapplied.len(), 1);
    assert_eq!(report.unapplied[0].sequence, 6);
    assert!(!report.is_consistent());
}

#[tokio::test]
async fn replay_reads_histories_longer_than_one_page() {
    let db = TestDb::new().await;
    // 1,250 events: an environment's history straddles the 1,000-event page boundary.
    let histories: Vec<History> = (0..250)
        .map(|i| History::ready(&format!("env-{i}")))
        .collect();
    record_and_project(&db, &histories).await;

    let report = replay::replay(&db.pool).await.unwrap();

    assert!(report.is_consistent(), "{report:#?}");
    assert_eq!(report.environments, 250);
    assert_eq!(report.events, 1_250);
}

#[tokio::test]
async fn the_stored_state_is_compared_unless_the_live_row_has_none_yet() {
    let db = TestDb::new().await;
    let histories = lifecycles();
    record_and_project(&db, &histories).await;
    // A row written before the state was kept: no difference.
    sqlx::query("UPDATE environments_view SET state = NULL WHERE id = $1")
        .bind(histories[0].env_id.as_str())
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(replay::replay(&db.pool).await.unwrap().is_consistent());

    // A state that differs from the one the events fold to is.
    let tampered = &histories[1];
    sqlx::query("UPDATE environments_view SET state = jsonb_set(state, '{pending}', '\"infra\"') WHERE id = $1")
        .bind(tampered.env_id.as_str())
        .execute(&db.pool)
        .await
        .unwrap();
    let report = replay::replay(&db.pool).await.unwrap();
    assert_eq!(
        report.mismatches,
        [Mismatch {
            environment_id: tampered.env_id.to_string(),
            kind: MismatchKind::Differs {
                fields: vec!["state".to_owned()]
            },
        }]
    );
}
