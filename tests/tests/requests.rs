//! Requests whose answer depends on steps running: name conflicts across a destroy, and a
//! request id that must not stop an environment. The HTTP edge itself is tested in process, in
//! `command-api/tests/http.rs`.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use system_tests::{Stack, sandbox_yaml};

async fn error_body(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
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

/// The probe that wedged an environment: a 360,000-character `X-Request-ID` was stored in the
/// event's metadata, the event outgrew NATS's max payload and the relay retried it forever. Now
/// a head that large is refused whole (431), and an over-long id within the head limit is
/// replaced by a generated one.
#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_request_id_is_replaced_by_a_generated_one_and_the_environment_proceeds() {
    let stack = Stack::start().await;
    let create = |name: &str, request_id: reqwest::header::HeaderValue| {
        stack
            .request(Method::POST, "/v1/environments")
            .header("content-type", "application/yaml")
            .header("x-request-id", request_id)
            .body(sandbox_yaml(name, ""))
            .send()
    };
    // Far beyond the limit, hyper refuses the head before it is parsed (431, no body); just
    // beyond it, the router does, with the error body.
    let huge = reqwest::header::HeaderValue::from_str(&"r".repeat(360_000)).unwrap();
    let response = create("wedged", huge).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    let over = reqwest::header::HeaderValue::from_str(&"r".repeat(70_000)).unwrap();
    let response = create("wedged", over).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["code"],
        "request_header_fields_too_large"
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(events, 0, "a refused request changes nothing");

    let long = reqwest::header::HeaderValue::from_str(&"r".repeat(60_000)).unwrap();
    let response = create("wedged", long).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let echoed = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        echoed.starts_with("req_") && echoed.len() == 30,
        "echoed {} bytes: {echoed:.80}",
        echoed.len()
    );
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    stack
        .wait_for_status(&id, "ready", Duration::from_secs(60))
        .await;
    let history = stack.history(&id).await;
    assert_eq!(history[0]["metadata"]["request_id"], echoed.as_str());
    assert_eq!(stack.delete(&id).await.status(), StatusCode::ACCEPTED);
    stack
        .wait_for_status(&id, "destroyed", Duration::from_secs(60))
        .await;

    // Not visible ASCII, or empty: replaced too, and never echoed back.
    for invalid in [&b"caf\xe9"[..], b"", b"two words"] {
        let value = reqwest::header::HeaderValue::from_bytes(invalid).unwrap();
        let response = stack
            .http
            .get(format!("{}/healthz", stack.base_url))
            .header("x-request-id", value)
            .send()
            .await
            .unwrap();
        let echoed = response.headers()["x-request-id"].as_bytes();
        assert!(echoed.starts_with(b"req_"), "{invalid:?} -> {echoed:?}");
    }
}
