//! Reads: one environment, filtered lists, keyset pagination.

mod support;

use projections::queries::{self, ListQuery};
use projections::store::{self, ViewTable};
use projections::{EnvironmentView, Error};
use support::{History, TestDb, at, sandbox_spec};

async fn project(db: &TestDb, histories: &[History]) {
    let envelopes: Vec<_> = histories.iter().flat_map(History::envelopes).collect();
    let outcome = store::apply_batch(&db.pool, &ViewTable::live(), &envelopes)
        .await
        .unwrap();
    assert_eq!(outcome.applied(), envelopes.len());
}

fn ids(items: &[EnvironmentView]) -> Vec<String> {
    items.iter().map(|view| view.id.clone()).collect()
}

/// The ids of `histories` in list order: (created_at, id).
fn expected_order(histories: &[History]) -> Vec<String> {
    let mut keyed: Vec<_> = histories
        .iter()
        .map(|h| (h.start.timestamp_micros(), h.env_id.to_string()))
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, id)| id).collect()
}

#[tokio::test]
async fn get_returns_the_view_or_none() {
    let db = TestDb::new().await;
    let history = History::ready("alpha");
    project(&db, std::slice::from_ref(&history)).await;

    let view = queries::get(&db.pool, history.env_id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.status, "ready");
    assert_eq!(view.name, "alpha");
    // The estimate read back is the one the fold derives from the same spec.
    let folded = projections::environment_view::fold(&history.envelopes())
        .unwrap()
        .unwrap()
        .into_view();
    assert!(view.cost.is_some());
    assert_eq!(view.cost, folded.cost);
    assert_eq!(
        queries::get(&db.pool, "env_01jd0000000000000000000000")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn list_pages_through_every_environment_in_creation_order() {
    let db = TestDb::new().await;
    // Seven environments; three share a creation time, so the id breaks the tie.
    let histories: Vec<History> = [0, 1, 1, 1, 2, 3, 4]
        .into_iter()
        .enumerate()
        .map(|(i, second)| History::requested_with(sandbox_spec(&format!("env-{i}")), at(second)))
        .collect();
    project(&db, &histories).await;

    let mut query = ListQuery {
        limit: 3,
        ..ListQuery::default()
    };
    let first = queries::list(&db.pool, &query, None).await.unwrap();
    assert_eq!(first.items.len(), 3);
    query.cursor = Some(first.next_cursor.clone().expect("a second page"));
    let second = queries::list(&db.pool, &query, None).await.unwrap();
    assert_eq!(second.items.len(), 3);
    query.cursor = Some(second.next_cursor.clone().expect("a third page"));
    let third = queries::list(&db.pool, &query, None).await.unwrap();
    assert_eq!(third.items.len(), 1);
    assert_eq!(third.next_cursor, None);

    let all: Vec<String> = [first.items, second.items, third.items]
        .iter()
        .flat_map(|page| ids(page))
        .collect();
    assert_eq!(all, expected_order(&histories));
}

#[tokio::test]
async fn a_full_last_page_has_no_next_cursor() {
    let db = TestDb::new().await;
    let histories: Vec<History> = (0..4)
        .map(|i| History::requested_with(sandbox_spec(&format!("env-{i}")), at(i)))
        .collect();
    project(&db, &histories).await;

    let page = queries::list(
        &db.pool,
        &ListQuery {
            limit: 4,
            ..ListQuery::default()
        },
        None,
    )
    .await
    .unwrap();

    assert_eq!(ids(&page.items), expected_order(&histories));
    assert_eq!(page.next_cursor, None);
}

#[tokio::test]
async fn list_filters_by_status_and_by_exact_name() {
    let db = TestDb::new().await;
    let ready = History::ready("alpha");
    let failed = History::requested_with(sandbox_spec("alpha-2"), at(10))
        .infra_started(1)
        .infra_failed(1, "boom");
    let queued = History::requested_with(sandbox_spec("beta"), at(20));
    let ready_too = History::requested_with(sandbox_spec("gamma"), at(30))
        .infra_started(1)
        .infra_applied(1, &[])
        .bootstrap_started(2)
        .bootstrap_completed(2, &[]);
    project(
        &db,
        &[
            ready.clone(),
            failed.clone(),
            queued.clone(),
            ready_too.clone(),
        ],
    )
    .await;

    let by_status = |status: &str| ListQuery {
        status: Some(status.to_owned()),
        ..ListQuery::default()
    };
    let page = queries::list(&db.pool, &by_status("ready"), None)
        .await
        .unwrap();
    assert_eq!(
        ids(&page.items),
        expected_order(&[ready.clone(), ready_too.clone()])
    );
    let page = queries::list(&db.pool, &by_status("failed"), None)
        .await
        .unwrap();
    assert_eq!(ids(&page.items), [failed.env_id.to_string()]);
    let page = queries::list(&db.pool, &by_status("destroyed"), None)
        .await
        .unwrap();
    assert!(page.items.is_empty());

    let by_name = ListQuery {
        name: Some("alpha".to_owned()),
        ..ListQuery::default()
    };
    let page = queries::list(&db.pool, &by_name, None).await.unwrap();
    assert_eq!(ids(&page.items), [ready.env_id.to_string()]);

    let both = ListQuery {
        name: Some("gamma".to_owned()),
        status: Some("queued".to_owned()),
        ..ListQuery::default()
    };
    assert!(
        queries::list(&db.pool, &both, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn filters_hold_across_pages() {
    let db = TestDb::new().await;
    let histories: Vec<History> = (0..5)
        .map(|i| {
            let h = History::requested_with(sandbox_spec(&format!("env-{i}")), at(i));
            if i % 2 == 0 { h.infra_started(1) } else { h }
        })
        .collect();
    project(&db, &histories).await;

    let mut query = ListQuery {
        status: Some("provisioning".to_owned()),
        limit: 2,
        ..ListQuery::default()
    };
    let first = queries::list(&db.pool, &query, None).await.unwrap();
    query.cursor = first.next_cursor.clone();
    let second = queries::list(&db.pool, &query, None).await.unwrap();

    let provisioning: Vec<History> = histories.iter().step_by(2).cloned().collect();
    let all: Vec<String> = ids(&first.items)
        .into_iter()
        .chain(ids(&second.items))
        .collect();
    assert_eq!(all, expected_order(&provisioning));
    assert_eq!(second.next_cursor, None);
}

#[tokio::test]
async fn a_garbage_cursor_is_an_invalid_cursor_error() {
    let db = TestDb::new().await;
    for cursor in ["", "not-a-cursor", "zz", "3a3a", "6162633a656e76"] {
        let err = queries::list(
            &db.pool,
            &ListQuery {
                cursor: Some(cursor.to_owned()),
                ..ListQuery::default()
            },
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::InvalidCursor), "{cursor:?}: {err:?}");
    }
}

#[tokio::test]
async fn a_limit_outside_one_to_two_hundred_or_an_unknown_status_is_refused() {
    let db = TestDb::new().await;
    for limit in [0, 201] {
        let err = queries::list(
            &db.pool,
            &ListQuery {
                limit,
                ..ListQuery::default()
            },
            None,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::InvalidLimit { .. }), "{err:?}");
    }
    let err = queries::list(
        &db.pool,
        &ListQuery {
            status: Some("sleeping".to_owned()),
            ..ListQuery::default()
        },
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::InvalidStatus(_)), "{err:?}");
}
