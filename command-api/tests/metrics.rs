//! `GET /metrics` of the API in this test's own process (`system_tests::App`): the request
//! metrics by matched route, the sampled gauges, and an operation's end counted with its
//! duration. One test: the process has one recorder, and the gauges are the last sampler's.

use reqwest::{Method, StatusCode};
use std::time::{Duration, Instant};
use system_tests::{App, sandbox_yaml};

const WITHIN: Duration = Duration::from_secs(30);

/// The value of the series `name{labels}` (labels exactly as rendered), if present.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

async fn scrape(app: &App) -> String {
    // No token: Prometheus scrapes without one.
    let response = reqwest::get(format!("{}/metrics", app.base_url))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
    );
    response.text().await.unwrap()
}

/// Scrapes until `series` has a value `accept`s.
async fn wait_for(app: &App, series: &str, accept: impl Fn(f64) -> bool) -> String {
    let deadline = Instant::now() + WITHIN;
    loop {
        let text = scrape(app).await;
        if value(&text, series).is_some_and(&accept) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never right in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_by_matched_route_sample_the_gauges_and_time_operations() {
    // No executor: the infra step times out after a second, which ends its operation.
    let app = App::spawn_with(|settings| {
        settings.step_timeouts.infra = Duration::from_secs(1);
    })
    .await;
    let id = app.create_ok(&sandbox_yaml("measured", "")).await;
    let (status, _) = app.get(&id).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.get("env_01jd0000000000000000000000").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = app
        .request(Method::GET, &format!("/not-here/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let text = scrape(&app).await;
    assert!(!text.contains(&id), "a raw path in a label:\n{text}");
    let got = r#"route="/v1/environments/{id}",method="GET""#;
    assert_eq!(
        value(
            &text,
            &format!(r#"api_requests_total{{{got},status="200"}}"#)
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"api_requests_total{{{got},status="404"}}"#)
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"api_requests_total{route="/v1/environments",method="POST",status="202"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"api_requests_total{route="unmatched",method="GET",status="404"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("api_request_duration_seconds_count{{{got}}}")
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        value(
            &text,
            &format!(r#"api_request_duration_seconds_bucket{{{got},le="+Inf"}}"#)
        )
        .is_some(),
        "{text}"
    );

    // The operation's end: counted once, with how long it ran.
    let text = wait_for(
        &app,
        r#"provisioning_operations_total{phase="infra",outcome="timed_out"}"#,
        |v| v == 1.0,
    )
    .await;
    assert_eq!(
        value(
            &text,
            r#"provisioning_operations_total{phase="infra",outcome="failed"}"#
        ),
        Some(0.0),
        "every outcome is there from the start:\n{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"provisioning_duration_seconds_count{phase="infra"}"#
        ),
        Some(1.0),
        "{text}"
    );
    let ran = value(&text, r#"provisioning_duration_seconds_sum{phase="infra"}"#).unwrap();
    assert!((1.0..WITHIN.as_secs_f64()).contains(&ran), "{ran}");

    // The sampled gauges: every status, the failed environment, the outbox, the consumers.
    let text = wait_for(
        &app,
        r#"provisioning_environments_total{status="failed"}"#,
        |v| v == 1.0,
    )
    .await;
    for status in [
        "queued",
        "provisioning",
        "bootstrapping",
        "ready",
        "updating",
        "destroy_queued",
        "destroying",
        "destroyed",
    ] {
        assert_eq!(
            value(
                &text,
                &format!(r#"provisioning_environments_total{{status="{status}"}}"#)
            ),
            Some(0.0),
            "{status}:\n{text}"
        );
    }
    let created = value(&text, "provisioning_environment_created_at").unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - 60.0..=now + 1.0).contains(&created), "{created}");
    assert_eq!(
        value(&text, "provisioning_operations_past_deadline"),
        Some(0.0)
    );
    assert_eq!(value(&text, "relay_outbox_rows"), Some(0.0), "{text}");
    assert_eq!(value(&text, "relay_lag_seconds"), Some(0.0), "{text}");
    assert_eq!(value(&text, "relay_quarantined_rows"), Some(0.0), "{text}");
    assert!(value(&text, "projection_lag_events").is_some(), "{text}");
    for consumer in [
        "process-manager",
        "process-manager-results",
        "projection-environments",
        "process-manager-operation-ends",
        "process-manager-final",
    ] {
        for name in [
            "jetstream_consumer_pending_messages",
            "jetstream_consumer_ack_pending_messages",
            "jetstream_consumer_redelivered_messages",
        ] {
            assert!(
                value(&text, &format!(r#"{name}{{consumer="{consumer}"}}"#)).is_some(),
                "{name} of {consumer}:\n{text}"
            );
        }
    }
    // The job waits for an executor: the queue depth shows it (no executor made its consumer
    // here, so it has none).
    assert!(
        value(
            &text,
            r#"jetstream_consumer_pending_messages{consumer="executor"}"#
        )
        .is_none()
    );
}
