//! What the API answers to good and bad requests: status codes, error bodies, idempotency,
//! name conflicts, authentication and request ids.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use system_tests::{Stack, StackOptions, sandbox_yaml};

async fn error_body(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A stack without an executor: nothing here needs a step to run.
async fn api_only() -> Stack {
    Stack::start_with(StackOptions {
        executor: false,
        ..Default::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn create_returns_422_naming_every_bad_field_and_records_nothing() {
    let stack = api_only().await;
    let yaml =
        "name: 9lives\ncloud:\n  provider: sandbox\ncluster:\n  profile: huge\n  colour: red\n";
    let (status, body) = error_body(stack.create(yaml).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "validation_failed");
    let paths: Vec<&str> = body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    for expected in ["name", "cluster.profile", "cluster.colour"] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(events, 0, "a rejected request must change nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn create_rejects_gcp_other_content_types_oversized_and_malformed_bodies() {
    let stack = api_only().await;
    let gcp = "name: later\ncloud:\n  provider: gcp\n  region: us-east-1\n";
    let (status, body) = error_body(stack.create(gcp).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["details"][0]["path"], "cloud.provider");

    let response = stack
        .request(Method::POST, "/v1/environments")
        .header("content-type", "text/plain")
        .body(sandbox_yaml("plain", ""))
        .send()
        .await
        .unwrap();
    let (status, body) = error_body(response).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error"]["code"], "unsupported_media_type");

    let huge = format!(
        "{}# {}\n",
        sandbox_yaml("huge", ""),
        "x".repeat(1024 * 1024)
    );
    let (status, body) = error_body(stack.create(&huge).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"]["code"], "payload_too_large");

    let (status, body) = error_body(stack.create("name: [unclosed").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "malformed_document");

    let json = stack
        .request(Method::POST, "/v1/environments")
        .header("content-type", "application/json")
        .body(r#"{"name": "json-env", "cloud": {"provider": "sandbox"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), StatusCode::ACCEPTED, "JSON is accepted too");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_valid_token_get_401_and_every_response_has_a_request_id() {
    let stack = api_only().await;
    let anonymous = stack
        .http
        .get(format!("{}/v1/environments", stack.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers().contains_key("x-request-id"));
    let wrong = stack
        .http
        .get(format!("{}/v1/environments", stack.base_url))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let echoed = stack
        .request(Method::GET, "/v1/environments")
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "client-chosen-42");

    let missing = stack
        .request(
            Method::GET,
            "/v1/environments/env_01jd0000000000000000000000",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let health = stack
        .http
        .get(format!("{}/healthz", stack.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_idempotency_key_returns_the_same_environment_and_creates_it_once() {
    let stack = api_only().await;
    let post = |key: &'static str, name: &'static str| {
        stack
            .request(Method::POST, "/v1/environments")
            .header("content-type", "application/yaml")
            .header("idempotency-key", key)
            .body(sandbox_yaml(name, ""))
            .send()
    };
    let first: Value = post("key-1", "once").await.unwrap().json().await.unwrap();
    let again = post("key-1", "once").await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    let requested: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'EnvironmentRequested'")
            .fetch_one(&stack.pool)
            .await
            .unwrap();
    assert_eq!(requested, 1);

    let (status, body) = error_body(post("key-1", "different").await.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "idempotency_key_reused");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_active_name_cannot_be_taken_twice_but_is_free_again_after_destroy() {
    let stack = Stack::start().await;
    let id = stack.create_ok(&sandbox_yaml("unique", "")).await;
    let (status, body) = error_body(stack.create(&sandbox_yaml("unique", "")).await).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "name_taken");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unique")
    );

    stack
        .wait_for_status(&id, "ready", Duration::from_secs(60))
        .await;
    let response = stack.delete(&id).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    stack
        .wait_for_status(&id, "destroyed", Duration::from_secs(60))
        .await;
    let reused = stack.create_ok(&sandbox_yaml("unique", "")).await;
    assert_ne!(reused, id);
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_is_refused_with_409_unless_the_environment_failed() {
    let stack = api_only().await;
    let id = stack.create_ok(&sandbox_yaml("healthy", "")).await;
    let response = stack.retry(&id).await;
    let (status, body) = error_body(response).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "not_failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_environments_are_404_everywhere_and_a_repeated_delete_changes_nothing() {
    let stack = api_only().await;
    let unknown = "env_01jd0000000000000000000000";
    for (method, path) in [
        (Method::GET, format!("/v1/environments/{unknown}/history")),
        (Method::GET, format!("/v1/environments/{unknown}/events")),
        (Method::GET, format!("/v1/environments/{unknown}/logs")),
        (Method::DELETE, format!("/v1/environments/{unknown}")),
        (Method::POST, format!("/v1/environments/{unknown}/retry")),
        (Method::GET, "/v1/environments/not-an-id".to_owned()),
    ] {
        let response = stack.request(method.clone(), &path).send().await.unwrap();
        let (status, body) = error_body(response).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(body["error"]["code"], "not_found", "{method} {path}");
    }

    // Without an executor the destroy never finishes: a second DELETE answers 202 with where
    // the destroy is, and records nothing more.
    let id = stack.create_ok(&sandbox_yaml("twice-deleted", "")).await;
    let first: Value = stack.delete(&id).await.json().await.unwrap();
    let second = stack.delete(&id).await;
    assert_eq!(second.status(), StatusCode::ACCEPTED);
    let second: Value = second.json().await.unwrap();
    for answer in [&first, &second] {
        let status = answer["status"].as_str().unwrap();
        assert!(
            ["destroy_queued", "destroying"].contains(&status),
            "{answer}"
        );
    }
    let destroy_requests: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE aggregate_id = $1 AND event_type = 'DestroyRequested'",
    )
    .bind(&id)
    .fetch_one(&stack.pool)
    .await
    .unwrap();
    assert_eq!(destroy_requests, 1);
}
