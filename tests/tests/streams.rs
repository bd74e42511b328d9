//! Live lifecycle streams over SSE: order, resume, the all-environments stream, and that a
//! client that does not read does not hold anyone else up.

use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::Method;
use std::time::Duration;
use system_tests::{Stack, sandbox_yaml};

const WITHIN: Duration = Duration::from_secs(60);

/// Reads SSE events (id, type) until `until` appears.
async fn read_until(response: reqwest::Response, until: &str) -> Vec<(String, String)> {
    let mut events = response.bytes_stream().eventsource();
    let mut seen = Vec::new();
    let read = async {
        while let Some(Ok(event)) = events.next().await {
            let done = event.event == until;
            seen.push((event.id.clone(), event.event.clone()));
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(WITHIN, read)
        .await
        .unwrap_or_else(|_| panic!("no {until} within {WITHIN:?}; saw {seen:?}"));
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_delivers_an_environments_events_in_order_and_resumes_after_last_event_id() {
    let stack = Stack::start().await;
    let id = stack.create_ok(&sandbox_yaml("streamed", "")).await;
    let path = format!("/v1/environments/{id}/events");
    let response = stack.request(Method::GET, &path).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let seen = read_until(response, "BootstrapCompleted").await;
    let ids: Vec<&str> = seen.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5"]);
    let types: Vec<&str> = seen.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "EnvironmentRequested",
            "InfraApplyStarted",
            "InfraApplied",
            "BootstrapStarted",
            "BootstrapCompleted"
        ]
    );

    let resumed = stack
        .request(Method::GET, &path)
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap();
    let seen = read_until(resumed, "BootstrapCompleted").await;
    assert_eq!(seen[0], ("4".to_owned(), "BootstrapStarted".to_owned()));

    let after = stack
        .request(Method::GET, &format!("{path}?after=4"))
        .send()
        .await
        .unwrap();
    let seen = read_until(after, "BootstrapCompleted").await;
    assert_eq!(seen.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_never_reads_does_not_stall_other_subscribers() {
    let stack = Stack::start().await;
    // This client subscribes to everything and then never reads.
    let stalled = stack
        .request(Method::GET, "/v1/events?after=0")
        .send()
        .await
        .unwrap();
    let all = stack
        .request(Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();
    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        ids.push(stack.create_ok(&sandbox_yaml(name, "")).await);
    }
    // The reading client sees every environment's lifecycle, in stream order.
    let mut events = all.bytes_stream().eventsource();
    let mut completed = 0;
    let mut last_position = 0u64;
    let read = async {
        while let Some(Ok(event)) = events.next().await {
            let position: u64 = event.id.parse().unwrap();
            assert!(position > last_position, "stream positions increase");
            last_position = position;
            if event.event == "BootstrapCompleted" {
                completed += 1;
                if completed == ids.len() {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(WITHIN, read)
        .await
        .expect("the reading client saw all three environments become ready");
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_stream_sends_keep_alive_comments() {
    let stack = Stack::start().await;
    // The harness sets PROVISIONER_SSE_KEEPALIVE_MS=1000; nothing happens on this stream.
    let mut response = stack
        .request(Method::GET, "/v1/events")
        .send()
        .await
        .unwrap();
    let mut received = Vec::new();
    let read = async {
        while let Some(chunk) = response.chunk().await.unwrap() {
            received.extend_from_slice(&chunk);
            if received.starts_with(b":") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a keep-alive comment within 5s");
    assert!(String::from_utf8_lossy(&received).starts_with(':'));
}

/// Reads a whole SSE response; panics if it does not end within `WITHIN`.
async fn read_to_end(response: reqwest::Response) -> Vec<(String, String)> {
    let mut events = response.bytes_stream().eventsource();
    let mut seen = Vec::new();
    let read = async {
        while let Some(Ok(event)) = events.next().await {
            seen.push((event.id.clone(), event.event.clone()));
        }
    };
    tokio::time::timeout(WITHIN, read)
        .await
        .unwrap_or_else(|_| panic!("the stream did not end within {WITHIN:?}; saw {seen:?}"));
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destroyed_environments_stream_ends_even_when_resumed_after_its_last_event() {
    let stack = Stack::start().await;
    let id = stack.create_ok(&sandbox_yaml("ended", "")).await;
    stack.wait_for_status(&id, "ready", WITHIN).await;
    stack.delete(&id).await;
    stack.wait_for_status(&id, "destroyed", WITHIN).await;
    let last = stack.history(&id).await.len();
    let path = format!("/v1/environments/{id}/events");

    let whole = stack.request(Method::GET, &path).send().await.unwrap();
    let seen = read_to_end(whole).await;
    assert_eq!(seen.len(), last);
    assert_eq!(seen.last().unwrap().1, "InfraDestroyed");

    let after_last = format!("{path}?after={last}");
    let resumed = stack
        .request(Method::GET, &after_last)
        .send()
        .await
        .unwrap();
    assert_eq!(read_to_end(resumed).await, Vec::new());
    let resumed = stack
        .request(Method::GET, &path)
        .header("last-event-id", last.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(read_to_end(resumed).await, Vec::new());
    let beyond = format!("{path}?after={}", u64::MAX);
    let resumed = stack.request(Method::GET, &beyond).send().await.unwrap();
    assert_eq!(read_to_end(resumed).await, Vec::new());
}
