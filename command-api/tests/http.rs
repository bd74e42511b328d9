//! What the API answers to good and bad requests: status codes, error bodies, idempotency,
//! authentication, request ids and limits — against the API in this test's own process
//! (`system_tests::App`). What needs the executor or real processes is in the root package's
//! `tests/tests/requests.rs`.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use system_tests::{App, sandbox_yaml};

async fn error_body(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The API in this test's process: nothing here needs a step to run or a process to kill.
async fn api_only() -> App {
    App::spawn().await
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

/// The same wedge one level down: a step whose result (its outputs) would make an event too
/// large to publish fails the step, visibly and retryably, instead of leaving it in flight.
#[tokio::test(flavor = "multi_thread")]
async fn a_step_result_too_large_to_record_fails_the_step() {
    let stack = api_only().await;
    let id = stack.create_ok(&sandbox_yaml("bulky", "")).await;
    let started = stack
        .wait_for_status(&id, "provisioning", Duration::from_secs(30))
        .await;
    let operation_id = started["operation"]["id"].as_str().unwrap().to_owned();
    let outputs = [("bulk".to_owned(), "x".repeat(domain::wire::MAX_EVENT_BYTES))].into();
    let result = domain::wire::OperationResult {
        environment_id: domain::EnvironmentId::parse(&id).unwrap(),
        operation_id: domain::OperationId::parse(&operation_id).unwrap(),
        outcome: domain::aggregate::OperationOutcome::Succeeded { outputs },
        attempt: None,
        request_id: None,
    };
    let client = async_nats::connect(stack.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let payload = serde_json::to_vec(&result).unwrap();
    let ack = js
        .publish(stack.subjects.result(&id), payload.into())
        .await
        .unwrap();
    ack.await.unwrap();
    stack
        .wait_for_failure(&id, "infra", "too large to record", Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn query_string_route_and_method_errors_answer_the_error_body() {
    let stack = api_only().await;
    for (method, path, status, code) in [
        (
            Method::GET,
            "/v1/environments?limit=x",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            Method::GET,
            "/v1/events?after=-1",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (Method::GET, "/nope", StatusCode::NOT_FOUND, "not_found"),
        (Method::GET, "/v1/nope", StatusCode::NOT_FOUND, "not_found"),
        (
            Method::PUT,
            "/v1/environments",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::DELETE,
            "/healthz",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ] {
        let response = stack.request(method.clone(), path).send().await.unwrap();
        assert!(response.headers().contains_key("x-request-id"));
        let allow = response.headers().get("allow").cloned();
        let (got, body) = error_body(response).await;
        assert_eq!(got, status, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{method} {path}: {body}");
        assert!(!message.contains("Failed to deserialize"), "{message}");
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(allow.is_some(), "{method} {path} lists the allowed methods");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_echo_at_most_a_short_prefix_of_client_values() {
    let stack = api_only().await;
    let long_id = "x".repeat(60_000);
    let response = stack
        .request(Method::GET, &format!("/v1/environments/{long_id}"))
        .send()
        .await
        .unwrap();
    let (status, body) = error_body(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.len() < 100,
        "{} bytes: {message:.100}",
        message.len()
    );
    assert!(message.contains("xxxxxxxxxx"), "{message}");

    let response = stack
        .request(Method::GET, &format!("/{long_id}"))
        .send()
        .await
        .unwrap();
    let (status, body) = error_body(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let body = body.to_string();
    assert!(body.len() < 300, "{} bytes: {body:.100}", body.len());

    let response = stack
        .request(Method::POST, "/v1/environments")
        .header("content-type", format!("text/{}", "x".repeat(10_000)))
        .body(sandbox_yaml("typed", ""))
        .send()
        .await
        .unwrap();
    let (status, body) = error_body(response).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.len() < 150,
        "{} bytes: {message:.100}",
        message.len()
    );
    assert!(
        message.starts_with("unsupported content type \"text/xxx"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn resume_positions_beyond_the_last_possible_one_answer_400() {
    let stack = api_only().await;
    let id = stack.create_ok(&sandbox_yaml("resumed", "")).await;
    let max = u64::MAX.to_string();
    for (path, last_event_id) in [
        (format!("/v1/events?after={max}"), None),
        ("/v1/events".to_owned(), Some(max.as_str())),
        (format!("/v1/environments/{id}/logs?after={max}"), None),
        (
            format!("/v1/environments/{id}/logs?follow=true"),
            Some(max.as_str()),
        ),
    ] {
        let mut request = stack.request(Method::GET, &path);
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last);
        }
        let (status, body) = error_body(request.send().await.unwrap()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_document_limit_answered_413_and_a_document_just_under_it_is_accepted() {
    let stack = api_only().await;
    let limit = domain::config::MAX_DOCUMENT_BYTES;
    let padded = |name: &str, size: usize| {
        let head = sandbox_yaml(name, "");
        format!("{head}#{}\n", "x".repeat(size - head.len() - 2))
    };
    // Just over the limit, and 1 MiB (what the API used to buffer, then refuse with 400): a
    // clean 413 both times, the client still sending when the answer comes.
    for size in [limit + 1, 1024 * 1024] {
        let over = padded("over", size);
        assert_eq!(over.len(), size);
        let (status, body) = error_body(stack.create(&over).await).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{size}: {body}");
        assert_eq!(body["error"]["code"], "payload_too_large");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&limit.to_string()),
            "{body}"
        );
    }
    let at_limit = padded("at-limit", limit);
    assert_eq!(at_limit.len(), limit);
    let response = stack.create(&at_limit).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bearer_scheme_is_case_insensitive_and_the_header_is_bounded() {
    let stack = api_only().await;
    let with_authorization = |value: String| {
        stack
            .http
            .get(format!("{}/v1/environments", stack.base_url))
            .header("authorization", value)
            .send()
    };
    let token = stack.token();
    for value in [
        format!("bearer {token}"),
        format!("BEARER {token}"),
        format!("Bearer   {token}  "),
    ] {
        let response = with_authorization(value.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{value:?}");
    }
    for value in [
        format!("Basic {token}"),
        format!("Bearer{token}"),
        format!("Bearer {}", "x".repeat(8 * 1024)),
    ] {
        let (status, body) = error_body(with_authorization(value).await.unwrap()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["code"], "unauthorized");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn error_messages_speak_to_users_not_rust_programmers() {
    let stack = api_only().await;
    let (status, body) = error_body(
        stack
            .request(Method::GET, "/v1/environments?status=bogus")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = body["error"]["message"].as_str().unwrap();
    for status in ["queued", "ready", "destroy_queued", "destroyed"] {
        assert!(message.contains(status), "{message}");
    }

    let simulate = |value: &str| sandbox_yaml("words", &format!("    apply_seconds: {value}\n"));
    for (document, expected) in [
        (simulate("1e308"), "got 1e308"),
        (simulate(".nan"), "not a finite number"),
        (simulate("-.inf"), "not a finite number"),
        (
            format!("{}~: 1\n", sandbox_yaml("words", "")),
            "a key is empty or null",
        ),
    ] {
        let (_, body) = error_body(stack.create(&document).await).await;
        let text = body["error"].to_string();
        assert!(text.contains(expected), "{document:?}: {text}");
        assert!(text.len() < 500, "{text}");
        assert!(!text.contains("Option<"), "{text}");
    }
}

/// A name filter with a NUL in it reached Postgres, which refused it (500); found while checking
/// the document's parameters against what the API accepts. A name no environment can have is
/// bad input.
#[tokio::test(flavor = "multi_thread")]
async fn list_refuses_a_name_no_environment_can_have() {
    let stack = api_only().await;
    let long = "a".repeat(41);
    for name in ["%00", "a%00b", "Upper", long.as_str(), "ends-"] {
        let (status, body) = error_body(
            stack
                .request(Method::GET, &format!("/v1/environments?name={name}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("name "), "{message}");
    }
    let response = stack
        .request(Method::GET, "/v1/environments?name=some-name-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Everything the API in this test process logs, for the tests that read its spans.
mod captured_logs {
    use std::io::Write;
    use std::sync::{Mutex, Once};

    static LINES: Mutex<Vec<u8>> = Mutex::new(Vec::new());

    struct Sink;

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            LINES.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Installs the capturing subscriber (once per test binary).
    pub fn install() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            tracing_subscriber::fmt()
                .with_env_filter("tower_http=debug,command_api=info")
                .with_ansi(false)
                .with_writer(|| Sink)
                .init();
        });
    }

    /// The captured lines that contain `needle`.
    pub fn lines_with(needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&LINES.lock().unwrap()).into_owned();
        text.lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn request_spans_name_the_matched_route_never_the_raw_path() {
    captured_logs::install();
    let app = api_only().await;
    let unknown = "env_01hzzzzzzzzzzzzzzzzzzzzzzz";
    for (path, request_id, route) in [
        (
            format!("/v1/environments/{unknown}"),
            "span-label-known-route",
            "route=/v1/environments/{id}",
        ),
        (
            format!("/v1/no-such-route/{unknown}"),
            "span-label-unmatched",
            "route=unmatched",
        ),
    ] {
        let response = app
            .request(Method::GET, &path)
            .header("x-request-id", request_id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let lines = captured_logs::lines_with(request_id);
        assert!(!lines.is_empty(), "no log line of request {request_id}");
        for line in lines {
            assert!(line.contains(route), "{line}");
            assert!(!line.contains(unknown), "the raw path is logged: {line}");
        }
    }
}

/// The error body of every kind of refusal, pinned: clients parse these, so a change to one
/// shows up here as a snapshot diff to review.
#[tokio::test(flavor = "multi_thread")]
async fn error_bodies_keep_their_contract_shape() {
    let app = api_only().await;
    let mut bodies = serde_json::Map::new();
    let anonymous = app
        .http
        .get(format!("{}/v1/environments", app.base_url))
        .send()
        .await
        .unwrap();
    bodies.insert("401".into(), error_body(anonymous).await.1);
    let invalid = "name: 9lives\ncloud:\n  provider: sandbox\ncluster:\n  profile: huge\n";
    bodies.insert(
        "422 invalid".into(),
        error_body(app.create(invalid).await).await.1,
    );
    let aws = "name: later\ncloud:\n  provider: aws\n  region: us-east-1\n  account_id: \"123456789012\"\n  role_arn: arn:aws:iam::123456789012:role/provisioner\n  external_id: ext-123456\n";
    bodies.insert(
        "422 provider not enabled".into(),
        error_body(app.create(aws).await).await.1,
    );
    let missing = app
        .request(
            Method::GET,
            "/v1/environments/env_01jd0000000000000000000000",
        )
        .send()
        .await
        .unwrap();
    bodies.insert("404".into(), error_body(missing).await.1);
    let wrong_method = app
        .request(Method::PUT, "/v1/environments")
        .send()
        .await
        .unwrap();
    bodies.insert("405".into(), error_body(wrong_method).await.1);
    insta::assert_json_snapshot!(bodies);
}

/// `GET /v1/environments/{id}` without a read-model row folds the history through the same
/// function as the projection: the body is the one the projection's row gives.
#[tokio::test(flavor = "multi_thread")]
async fn get_without_a_projected_row_answers_the_fold_of_the_history() {
    let app = api_only().await;
    let id = app.create_ok(&sandbox_yaml("fallback", "")).await;
    // Without an executor the environment stays provisioning: wait until the row has every
    // event of it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (projected, recorded): (Option<i64>, i64) = sqlx::query_as(
            "SELECT (SELECT version FROM environments_view WHERE id = $1 AND status = 'provisioning'), \
                    (SELECT count(*) FROM events WHERE aggregate_id = $1)",
        )
        .bind(&id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if projected == Some(recorded) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the row never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, from_row) = app.get(&id).await;
    assert_eq!(status, StatusCode::OK);

    sqlx::query("DELETE FROM environments_view WHERE id = $1")
        .bind(&id)
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, folded) = app.get(&id).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(folded, from_row);
    assert_eq!(folded["status"], "provisioning");
    assert_eq!(folded["operation"]["step"], "infra");
}

/// A valid aws document (the contract's example, minus the external id).
const AWS_MEDIUM_GPU: &str = "name: production\ncloud:\n  provider: aws\n  region: eu-west-1\n  account_id: \"123456789012\"\n  role_arn: arn:aws:iam::123456789012:role/provisioner\ncluster:\n  profile: medium\ndata:\n  postgres: {size: medium, multi_az: true}\n  redis: {size: medium, ha: true}\nbeta9:\n  domain: api.beta9.example.com\n  workers: {gpu_enabled: true}\n";

async fn event_count(app: &App) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_previews_resources_model_and_cost_and_records_nothing() {
    let app = api_only().await;
    let yaml = "name: preview\ncloud:\n  provider: sandbox\ncluster:\n  profile: medium\nbeta9:\n  workers: {gpu_enabled: true}\n";
    let response = app.plan(yaml).await;
    assert_eq!(response.status(), StatusCode::OK);
    let plan: Value = response.json().await.unwrap();
    assert_eq!(plan["name"], "preview");
    assert_eq!(plan["provider"], "sandbox");
    assert_eq!(plan["creatable"], true);
    assert_eq!(plan["refusals"], serde_json::json!([]));
    assert_eq!(
        plan["infra_model"]["cluster"]["gpu_nodes"]["instance_type"],
        "g5.2xlarge"
    );
    let resources = &plan["resources"];
    assert_eq!(resources["by_type"]["aws_eks_node_group"], 2);
    assert_eq!(resources["by_type"]["aws_nat_gateway"], 3);
    let counted: u64 = resources["by_type"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(resources["total"], counted);
    let cost = &plan["cost"];
    assert!(cost["monthly_total_cents"].as_u64() > Some(0), "{cost}");
    assert!(
        cost["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|item| item["item"] == "EKS nodes (gpu): g5.2xlarge"),
        "{cost}"
    );

    // JSON is accepted too, and an aws document is previewed even where aws is not enabled,
    // saying why creating it would be refused.
    let response = app
        .request(Method::POST, "/v1/plans")
        .header("content-type", "application/json")
        .body(r#"{"name": "json-plan", "cloud": {"provider": "sandbox"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let plan: Value = app.plan(AWS_MEDIUM_GPU).await.json().await.unwrap();
    assert_eq!(plan["creatable"], false);
    assert_eq!(plan["refusals"][0]["path"], "cloud.provider");
    assert_eq!(plan["cost"]["basis"]["region"], "eu-west-1");
    assert_eq!(plan["cost"]["basis"]["prices_region"], "us-east-1");

    assert_eq!(event_count(&app).await, 0, "a plan records no event");
    let (status, list) = error_body(
        app.request(Method::GET, "/v1/environments")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["items"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_refuses_bad_documents_with_the_same_errors_as_create() {
    let app = api_only().await;
    let invalid =
        "name: 9lives\ncloud:\n  provider: sandbox\ncluster:\n  profile: huge\n  colour: red\n";
    let huge = format!(
        "{}# {}\n",
        sandbox_yaml("huge", ""),
        "x".repeat(1024 * 1024)
    );
    for (document, content_type, expected) in [
        (
            invalid,
            "application/yaml",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "name: [unclosed",
            "application/yaml",
            StatusCode::BAD_REQUEST,
        ),
        (
            huge.as_str(),
            "application/yaml",
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "name: plain\n",
            "text/plain",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ] {
        let send = |path: &'static str| {
            app.request(Method::POST, path)
                .header("content-type", content_type)
                .body(document.to_owned())
                .send()
        };
        let (plan_status, plan_body) = error_body(send("/v1/plans").await.unwrap()).await;
        let (create_status, create_body) =
            error_body(send("/v1/environments").await.unwrap()).await;
        assert_eq!(plan_status, expected, "{plan_body}");
        assert_eq!((plan_status, &plan_body), (create_status, &create_body));
    }
    assert_eq!(event_count(&app).await, 0);

    let anonymous = app
        .http
        .post(format!("{}/v1/plans", app.base_url))
        .header("content-type", "application/yaml")
        .body(sandbox_yaml("anon", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn outputs_answers_the_read_models_outputs_and_404_for_an_unknown_id() {
    let app = api_only().await;
    let id = app.create_ok(&sandbox_yaml("outputs", "")).await;
    let response = app
        .request(Method::GET, &format!("/v1/environments/{id}/outputs"))
        .send()
        .await
        .unwrap();
    let (status, body) = error_body(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], id.as_str());
    assert_eq!(body["name"], "outputs");
    let (_, view) = app.get(&id).await;
    assert_eq!(body["outputs"], view["outputs"]);
    assert!(
        view["cost"]["monthly_total_cents"].as_u64() > Some(0),
        "{view}"
    );
    // The estimate is in the list's items too, once the projection has the row.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let (_, list) = error_body(
            app.request(Method::GET, "/v1/environments?name=outputs")
                .send()
                .await
                .unwrap(),
        )
        .await;
        if list["items"][0].is_object() {
            break list["items"][0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "never listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(listed["cost"], view["cost"]);

    for unknown in ["env_01jd0000000000000000000000", "not-an-id"] {
        let response = app
            .request(Method::GET, &format!("/v1/environments/{unknown}/outputs"))
            .send()
            .await
            .unwrap();
        let (status, body) = error_body(response).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
        assert_eq!(body["error"]["code"], "not_found");
    }
    let anonymous = app
        .http
        .get(format!("{}/v1/environments/{id}/outputs", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_is_refused_without_the_state_bucket_or_the_secrets_key_and_accepted_with_both() {
    use domain::spec::Provider;
    let unconfigured = App::spawn_with(|settings| {
        settings.enabled_providers = vec![Provider::Sandbox, Provider::Aws];
    })
    .await;
    let (status, body) = error_body(unconfigured.create(AWS_MEDIUM_GPU).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["path"], "cloud.provider");
    let message = detail["message"].as_str().unwrap();
    assert!(message.contains("PROVISIONER_TF_STATE_BUCKET"), "{message}");
    assert_eq!(event_count(&unconfigured).await, 0);
    // The preview is still answered, with the same refusal.
    let plan: Value = unconfigured
        .plan(AWS_MEDIUM_GPU)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plan["creatable"], false);
    assert_eq!(plan["refusals"][0], *detail);
    drop(unconfigured);

    let keyless = App::spawn_with(|settings| {
        settings.enabled_providers = vec![Provider::Sandbox, Provider::Aws];
        settings.tf_state_bucket_set = true;
    })
    .await;
    let (status, body) = error_body(keyless.create(AWS_MEDIUM_GPU).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let detail = &body["error"]["details"][0];
    assert_eq!(detail["path"], "cloud.provider");
    let message = detail["message"].as_str().unwrap();
    assert!(message.contains("PROVISIONER_SECRETS_KEY"), "{message}");
    assert_eq!(event_count(&keyless).await, 0);
    drop(keyless);

    let configured = App::spawn_with(|settings| {
        settings.enabled_providers = vec![Provider::Sandbox, Provider::Aws];
        settings.tf_state_bucket_set = true;
        settings.secrets_key = Some(system_tests::aws_stack::sealing_key());
    })
    .await;
    let plan: Value = configured.plan(AWS_MEDIUM_GPU).await.json().await.unwrap();
    assert_eq!(plan["creatable"], true);
    configured.create_ok(AWS_MEDIUM_GPU).await;
}

/// Issue 10: the external id is sealed apart, under the environment's id, before anything is
/// recorded; the events and the read model say only that it is.
#[tokio::test(flavor = "multi_thread")]
async fn an_external_id_is_sealed_apart_and_events_and_views_hold_only_the_marker() {
    use domain::spec::Provider;
    const EXTERNAL_ID: &str = "canary-http-external-id-5e1";
    let app = App::spawn_with(|settings| {
        settings.enabled_providers = vec![Provider::Sandbox, Provider::Aws];
        settings.tf_state_bucket_set = true;
        settings.secrets_key = Some(system_tests::aws_stack::sealing_key());
    })
    .await;
    let document = AWS_MEDIUM_GPU.replace(
        "role/provisioner\n",
        &format!("role/provisioner\n  external_id: {EXTERNAL_ID}\n"),
    );
    let id = app.create_ok(&document).await;

    let payloads: Vec<String> = sqlx::query_scalar("SELECT payload::text FROM events")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(!payloads.is_empty());
    for payload in &payloads {
        assert!(!payload.contains(EXTERNAL_ID), "{payload}");
    }
    let requested: Value = serde_json::from_str(&payloads[0]).unwrap();
    assert_eq!(
        requested["data"]["spec"]["cloud"]["external_id"],
        serde_json::json!({"sealed": true}),
        "{requested}"
    );
    let (_, view) = app.get(&id).await;
    assert_eq!(
        view["spec"]["cloud"]["external_id"],
        serde_json::json!({"sealed": true}),
        "{view}"
    );

    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let bucket = async_nats::jetstream::new(client)
        .get_key_value(app.subjects.secrets_bucket())
        .await
        .unwrap();
    let sealed = bucket.get(&id).await.unwrap().expect("the sealed value");
    assert!(!String::from_utf8_lossy(&sealed).contains(EXTERNAL_ID));
    let opened =
        domain::sealed::open(&system_tests::aws_stack::sealing_key(), &id, &sealed).unwrap();
    assert_eq!(opened.expose(), EXTERNAL_ID);
}
