//! The runbook's admin operations at the HTTP edge (cancel, mark-failed, mark-destroyed,
//! force-unlock: 202/409/404/400/422, bounds, the actor recorded) against the API in this
//! test's own process, with no executor: a created environment's infra step starts and stays in
//! flight. `requeue-stuck` against the library, where no process manager starts steps first.

mod support;

use command_api::environments::{Caller, Environments, Providers};
use command_api::runbook::Runbook;
use domain::aggregate::StepTimeouts;
use domain::ids::EnvironmentId;
use domain::spec::Provider;
use domain::wire::{StepLease, Subjects};
use event_store::EventStore;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use system_tests::{App, sandbox_yaml};

const WAIT: Duration = Duration::from_secs(30);

async fn post(app: &App, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = app.request(Method::POST, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn operation(app: &App, id: &str, verb: &str, body: Option<Value>) -> (StatusCode, Value) {
    post(app, &format!("/v1/environments/{id}/{verb}"), body).await
}

/// A new environment whose infra step is in flight (no executor runs it).
async fn provisioning(app: &App, name: &str) -> (String, String) {
    let id = app.create_ok(&sandbox_yaml(name, "")).await;
    let view = app.wait_for_status(&id, "provisioning", WAIT).await;
    let operation_id = view["operation"]["id"].as_str().unwrap().to_owned();
    (id, operation_id)
}

async fn event_count(app: &App) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// The last event of `event_type` in the environment's history.
async fn last_of(app: &App, id: &str, event_type: &str) -> Value {
    app.history(id)
        .await
        .into_iter()
        .rev()
        .find(|e| e["type"] == event_type)
        .unwrap_or_else(|| panic!("no {event_type} in the history"))
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_fails_the_step_in_flight_naming_the_admin_and_retry_resumes_it() {
    let app = App::spawn().await;
    let (id, operation_id) = provisioning(&app, "cancelled").await;

    let (status, body) = operation(&app, &id, "cancel", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "failed");
    let cancelled = last_of(&app, &id, "OperationCancelled").await;
    assert_eq!(cancelled["metadata"]["actor"], "token:admin");
    assert_eq!(cancelled["payload"]["operation_id"], operation_id.as_str());
    assert_eq!(cancelled["payload"]["failed_phase"], "infra");
    app.wait_for_failure(&id, "infra", "cancelled by token:admin", WAIT)
        .await;

    // Nothing is in flight any more: 409, naming the status and why.
    let before = event_count(&app).await;
    let (status, body) = operation(&app, &id, "cancel", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "invalid_state");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("failed") && message.contains("nothing to cancel"),
        "{message}"
    );
    assert_eq!(event_count(&app).await, before);

    let retried = app.retry(&id).await;
    assert_eq!(retried.status(), StatusCode::ACCEPTED);
    app.wait_for(&id, WAIT, |view| {
        view["status"] == "provisioning"
            && view["operation"]["id"].is_string()
            && view["operation"]["id"] != operation_id.as_str()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_environments_are_404_for_every_operation() {
    let app = App::spawn().await;
    for id in ["env_01jd0000000000000000000000", "not-an-id"] {
        for (verb, body) in [
            ("cancel", None),
            ("mark-failed", Some(json!({"reason": "gone"}))),
            ("mark-destroyed", Some(json!({"reason": "gone"}))),
            ("force-unlock", Some(json!({"lock_id": "abc"}))),
        ] {
            let (status, body) = operation(&app, id, verb, body).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{verb} {id}: {body}");
            assert_eq!(body["error"]["code"], "not_found");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bodies_are_refused_naming_the_field_and_change_nothing() {
    let app = App::spawn().await;
    let (id, _) = provisioning(&app, "bounded").await;
    let before = event_count(&app).await;
    for (verb, body, expected, field) in [
        ("mark-failed", None, StatusCode::BAD_REQUEST, None),
        (
            "mark-failed",
            Some(json!({"why": "x"})),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "mark-failed",
            Some(json!({"reason": "x", "extra": 1})),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "mark-failed",
            Some(json!({"reason": "  "})),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("reason"),
        ),
        (
            "mark-failed",
            Some(json!({"reason": "x".repeat(1001)})),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("reason"),
        ),
        (
            "mark-destroyed",
            Some(json!({"reason": "line\nbreak"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("reason"),
        ),
        (
            "force-unlock",
            Some(json!({"lock_id": "abc; rm -rf /"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("lock_id"),
        ),
        (
            "force-unlock",
            Some(json!({"lock_id": "a".repeat(65)})),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("lock_id"),
        ),
        (
            "force-unlock",
            Some(json!({"lock_id": "abc", "reason": "\u{1b}[31m"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("reason"),
        ),
    ] {
        let (status, answer) = operation(&app, &id, verb, body.clone()).await;
        assert_eq!(status, expected, "{verb} {body:?}: {answer}");
        if let Some(field) = field {
            assert_eq!(answer["error"]["details"][0]["path"], field, "{answer}");
        }
        let message = answer.to_string();
        assert!(
            message.len() < 1000,
            "the answer echoes too much: {message}"
        );
    }
    assert_eq!(
        event_count(&app).await,
        before,
        "a refused request changed something"
    );
    // A reason of exactly the limit is accepted.
    let (status, body) = operation(
        &app,
        &id,
        "mark-failed",
        Some(json!({"reason": "é".repeat(1000)})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mark_failed_then_mark_destroyed_frees_the_name_with_actor_and_reason_in_the_history() {
    let app = App::spawn().await;
    let (id, operation_id) = provisioning(&app, "by-hand").await;

    // Refused while the apply is in flight.
    let (status, body) = operation(
        &app,
        &id,
        "mark-destroyed",
        Some(json!({"reason": "deleted in the console"})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("provisioning") && message.contains("cancel"),
        "{message}"
    );

    let (status, body) = operation(
        &app,
        &id,
        "mark-failed",
        Some(json!({"reason": "the executor's node is gone"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "failed");
    let marked = last_of(&app, &id, "MarkedFailed").await;
    assert_eq!(marked["metadata"]["actor"], "token:admin");
    assert_eq!(marked["payload"]["operation_id"], operation_id.as_str());
    assert_eq!(marked["payload"]["reason"], "the executor's node is gone");
    app.wait_for_failure(&id, "infra", "the executor's node is gone", WAIT)
        .await;

    // The name is still taken.
    let taken = app.create(&sandbox_yaml("by-hand", "")).await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);

    let (status, body) = operation(
        &app,
        &id,
        "mark-destroyed",
        Some(json!({"reason": "deleted in the console"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "destroyed");
    let destroyed = last_of(&app, &id, "MarkedDestroyed").await;
    assert_eq!(destroyed["metadata"]["actor"], "token:admin");
    assert_eq!(destroyed["payload"]["reason"], "deleted in the console");
    app.wait_for_status(&id, "destroyed", WAIT).await;
    // The environment's live stream ends with it, as with `InfraDestroyed`.
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        app.get_text(&format!("/v1/environments/{id}/events")),
    )
    .await
    .expect("the event stream ended after MarkedDestroyed");
    assert!(stream.contains("event: MarkedDestroyed"), "{stream}");

    // The name is free again; the destroyed environment refuses everything more.
    let again = app.create(&sandbox_yaml("by-hand", "")).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let (status, _) = operation(&app, &id, "mark-destroyed", Some(json!({"reason": "x"}))).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = operation(&app, &id, "force-unlock", Some(json!({"lock_id": "abc"}))).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

async fn put_lease(app: &App, id: &str, lease: &StepLease) {
    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let bucket = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: app.subjects.leases_bucket(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    bucket
        .put(id, serde_json::to_vec(lease).unwrap().into())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn force_unlock_is_refused_while_the_executor_lives_and_queues_the_retry_of_a_failed_one() {
    let app = App::spawn().await;
    let (id, operation_id) = provisioning(&app, "locked").await;
    let unlock =
        json!({"lock_id": "4c1a1d5e-0b7a-4f4e-9d7c-2b8e6f0a1c3d", "reason": "crashed run"});
    // No executor ever ran here (the executors create the lease bucket): no lease, accepted.
    let (status, body) = operation(&app, &id, "force-unlock", Some(unlock.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "provisioning");
    let now_ms = chrono::Utc::now().timestamp_millis();
    let live = StepLease {
        operation_id: domain::OperationId::parse(&operation_id).unwrap(),
        attempt: 1,
        executor: "host-a:42:0001".into(),
        renewed_at_ms: now_ms,
        released: false,
        ttl_ms: Some(60_000),
    };
    put_lease(&app, &id, &live).await;
    let (status, body) = operation(&app, &id, "force-unlock", Some(unlock.clone())).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "executor_alive");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("host-a:42:0001"),
        "{body}"
    );

    // Its lease lapsed: the executor is presumed gone. Accepted; the authorisation waits for
    // the next run of a step (nothing is retried while the apply is in flight).
    let lapsed = StepLease {
        renewed_at_ms: now_ms - 120_000,
        ..live
    };
    put_lease(&app, &id, &lapsed).await;
    let (status, body) = operation(&app, &id, "force-unlock", Some(unlock.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "provisioning");

    // The usual flow: the step failed on the lock, then force-unlock queues its retry.
    let (status, _) = operation(&app, &id, "cancel", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = operation(&app, &id, "force-unlock", Some(unlock)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "provisioning");
    let types = app.history_types(&id).await;
    let at = types
        .iter()
        .rposition(|t| t == "ForceUnlockAuthorized")
        .unwrap();
    assert_eq!(types[at + 1], "RetryRequested", "{types:?}");
    let authorized = last_of(&app, &id, "ForceUnlockAuthorized").await;
    assert_eq!(authorized["metadata"]["actor"], "token:admin");
    assert_eq!(
        authorized["payload"]["lock_id"],
        "4c1a1d5e-0b7a-4f4e-9d7c-2b8e6f0a1c3d"
    );
    assert_eq!(authorized["payload"]["reason"], "crashed run");
    // The next run's job carries exactly that lock and who authorised it.
    let view = app
        .wait_for(&id, WAIT, |view| {
            // A retry is `provisioning` before its step starts: wait for the new operation.
            view["status"] == "provisioning"
                && view["operation"]["id"].is_string()
                && view["operation"]["id"] != operation_id.as_str()
        })
        .await;
    let started = last_of(&app, &id, "InfraApplyStarted").await;
    assert_eq!(started["payload"]["operation_id"], view["operation"]["id"]);
    assert_eq!(
        started["payload"]["job"]["force_unlock"],
        json!({"lock_id": "4c1a1d5e-0b7a-4f4e-9d7c-2b8e6f0a1c3d", "authorized_by": "token:admin"})
    );
}

/// `requeue-stuck` over a store no process manager or sweep watches: an environment whose first
/// step was never started, and one whose step is long past its deadline.
#[tokio::test]
async fn requeue_stuck_starts_missed_steps_and_times_out_overdue_ones_once() {
    let db = support::test_db().await;
    let nats = system_tests::services::nats().await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let store = EventStore::new(db.pool.clone());
    let environments = Environments::new(
        store.clone(),
        Providers {
            enabled: vec![Provider::Sandbox],
            tf_state_bucket_set: false,
            external_ids: None,
        },
        Default::default(),
    );
    let tiny = StepTimeouts {
        infra: Duration::from_millis(1),
        ..StepTimeouts::DEFAULT
    };
    let runbook = Runbook::new(
        environments,
        async_nats::jetstream::new(client),
        Subjects::new("requeue"),
        tiny,
    );

    let missed = EnvironmentId::generate();
    store
        .request(
            &missed,
            system_tests::fixtures::sandbox_spec("missed"),
            domain::tenant::TenantId::default(),
            &system_tests::fixtures::admin_request("req_missed"),
        )
        .await
        .unwrap();
    let (overdue, _) = system_tests::fixtures::started_environment(&store, "overdue").await;

    let caller = Caller {
        actor: "token:admin".into(),
        tenant: domain::tenant::TenantId::default(),
        all_tenants: true,
        request_id: "req_requeue".into(),
    };
    let first = runbook.requeue_stuck(&caller).await.unwrap();
    assert_eq!(first.started, [missed.as_str()]);
    // The overdue one (started with the default 90 minutes) is not overdue yet.
    assert!(first.timed_out.is_empty(), "{first:?}");

    let history = store.history(missed.as_str()).await.unwrap();
    let started = history.last().unwrap();
    assert_eq!(started.event_type, "InfraApplyStarted");
    assert_eq!(started.metadata.actor.as_str(), "token:admin");
    assert_eq!(started.metadata.request_id.as_str(), "req_requeue");

    // The step it started has the shortest deadline a job carries (1 s, whole seconds): the
    // next requeue after it times the step out, once.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let second = runbook.requeue_stuck(&caller).await.unwrap();
    assert!(second.started.is_empty(), "{second:?}");
    assert_eq!(second.timed_out, [missed.as_str()]);
    let timed_out = store.history(missed.as_str()).await.unwrap();
    let timed_out = timed_out.last().unwrap();
    assert_eq!(timed_out.event_type, "OperationTimedOut");
    assert_eq!(timed_out.metadata.actor.as_str(), "token:admin");
    assert_eq!(
        store.history(overdue.as_str()).await.unwrap().len(),
        2,
        "the step in time was left alone"
    );

    let third = runbook.requeue_stuck(&caller).await.unwrap();
    assert_eq!(third, Default::default(), "requeue-stuck is idempotent");
}
