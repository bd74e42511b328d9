//! The metrics of a real deployment (`serve` and `executor` processes): after a sandbox
//! environment's whole life, the API's and the executor's `/metrics` have every metric of the
//! shared list (the alert rules and the dashboard use these names) with sensible values. The
//! scrapes are written under the target directory for the record, and checked by `promtool
//! check metrics` when it is on PATH.

use reqwest::StatusCode;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use system_tests::{Stack, StackOptions, sandbox_yaml};

const WITHIN: Duration = Duration::from_secs(60);

/// The API process's metrics, as listed in the shared list of names.
const API_METRICS: [&str; 17] = [
    "api_requests_total",
    "api_request_duration_seconds",
    "provisioning_environments_total",
    "provisioning_duration_seconds",
    "provisioning_operations_total",
    "provisioning_environment_created_at",
    "provisioning_operations_past_deadline",
    "relay_lag_seconds",
    "relay_outbox_rows",
    "relay_quarantined_rows",
    "projection_lag_events",
    "jetstream_consumer_pending_messages",
    "jetstream_consumer_ack_pending_messages",
    "jetstream_consumer_redelivered_messages",
    "provisioner_dependency_up",
    "api_auth_failures_total",
    "api_rate_limited_total",
];

/// The executor process's metrics, as listed in the shared list of names.
const EXECUTOR_METRICS: [&str; 4] = [
    "executor_jobs_in_flight",
    "executor_jobs_total",
    "executor_job_duration_seconds",
    "executor_tool_runs_total",
];

/// The value of the series `series` (its labels exactly as rendered), if present.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

/// Whether `scrape` has a sample of the metric `name` (a histogram's by its `_count`).
fn has_metric(scrape: &str, name: &str) -> bool {
    scrape.lines().filter(|l| !l.starts_with('#')).any(|line| {
        let series = line.split([' ', '{']).next().unwrap_or_default();
        series == name || series == format!("{name}_count")
    })
}

async fn get(url: &str) -> (StatusCode, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// Scrapes `url` until `series` has a value `accept`s.
async fn scrape_until(url: &str, series: &str, accept: impl Fn(f64) -> bool) -> String {
    let deadline = Instant::now() + WITHIN;
    loop {
        let (status, text) = get(url).await;
        if status == StatusCode::OK && value(&text, series).is_some_and(&accept) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never right at {url}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Writes `text` to `<target>/tmp/metrics/<name>` and says where.
fn keep(name: &str, text: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("metrics");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    eprintln!("scrape written to {}", path.display());
    path
}

/// `promtool check metrics` of the scrape at `path`, if promtool is on PATH. Its one expected
/// complaint: `provisioning_environments_total` is a gauge with a counter's `_total` suffix (the
/// name is fixed by the shared list the alerts and the dashboard use).
fn promtool_check(path: &Path) {
    let input = std::fs::File::open(path).unwrap();
    let output = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(input)
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("promtool is not on PATH: `promtool check metrics` skipped (CI runs it)");
            return;
        }
        Err(error) => panic!("cannot run promtool: {error}"),
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let known = |line: &str| {
        line.starts_with("provisioning_environments_total")
            && line.contains("non-counter metrics should not have \"_total\" suffix")
    };
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty() && !known(l))
        .collect();
    assert!(
        problems.is_empty(),
        "promtool check metrics {}:\n{report}",
        path.display()
    );
    let noted = if report.lines().any(known) {
        " but for the known `_total` suffix of the gauge provisioning_environments_total"
    } else {
        ""
    };
    eprintln!("promtool check metrics {}: ok{noted}", path.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_and_the_executor_serve_every_listed_metric_after_a_lifecycle() {
    let stack = Stack::start_with(StackOptions {
        api_env: vec![("PROVISIONER_METRICS_INTERVAL_SECS".into(), "1".into())],
        ..StackOptions::default()
    })
    .await;
    let executor = &stack.executor_url;
    let (status, _) = get(&format!("{executor}/healthz")).await;
    assert_eq!(status, StatusCode::OK);
    let deadline = Instant::now() + WITHIN;
    while get(&format!("{executor}/readyz")).await.0 != StatusCode::OK {
        assert!(Instant::now() < deadline, "the executor never became ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let id = stack.create_ok(&sandbox_yaml("observed", "")).await;
    stack.wait_for_status(&id, "ready", WITHIN).await;
    assert_eq!(stack.delete(&id).await.status(), StatusCode::ACCEPTED);
    stack.wait_for_status(&id, "destroyed", WITHIN).await;

    let api = format!("{}/metrics", stack.base_url);
    scrape_until(
        &api,
        r#"provisioning_environments_total{status="destroyed"}"#,
        |v| v == 1.0,
    )
    .await;
    let api_text = scrape_until(
        &api,
        r#"provisioning_operations_total{phase="destroy",outcome="succeeded"}"#,
        |v| v == 1.0,
    )
    .await;
    assert_eq!(
        value(
            &api_text,
            r#"provisioning_environments_total{status="destroyed"}"#
        ),
        Some(1.0)
    );
    let executor_text = scrape_until(
        &format!("{executor}/metrics"),
        r#"executor_jobs_total{step="destroy",outcome="succeeded"}"#,
        |v| v >= 1.0,
    )
    .await;
    let api_path = keep("api.prom", &api_text);
    let executor_path = keep("executor.prom", &executor_text);

    let listed: std::collections::BTreeSet<&str> = API_METRICS
        .iter()
        .chain(&EXECUTOR_METRICS)
        .copied()
        .collect();
    let named: std::collections::BTreeSet<&str> = command_api::metrics::NAMES
        .iter()
        .chain(executors::metrics::NAMES)
        .copied()
        .collect();
    assert_eq!(named, listed, "the crates' NAMES are the shared list");
    for name in API_METRICS {
        assert!(
            has_metric(&api_text, name),
            "{name} missing from the API:\n{api_text}"
        );
    }
    for name in EXECUTOR_METRICS {
        assert!(
            has_metric(&executor_text, name),
            "{name} missing from the executor:\n{executor_text}"
        );
    }

    for (phase, started) in [("infra", 1.0), ("bootstrap", 1.0), ("destroy", 1.0)] {
        let series = format!(r#"provisioning_duration_seconds_count{{phase="{phase}"}}"#);
        assert!(
            value(&api_text, &series).is_some_and(|v| v >= started),
            "{series}:\n{api_text}"
        );
        let series =
            format!(r#"provisioning_operations_total{{phase="{phase}",outcome="succeeded"}}"#);
        assert_eq!(value(&api_text, &series), Some(1.0), "{series}");
        let series = format!(r#"executor_jobs_total{{step="{phase}",outcome="succeeded"}}"#);
        assert!(
            value(&executor_text, &series).is_some_and(|v| v >= 1.0),
            "{series}:\n{executor_text}"
        );
    }
    assert_eq!(
        value(
            &api_text,
            r#"provisioning_operations_total{phase="infra",outcome="failed"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &api_text,
            r#"provisioning_environments_total{status="ready"}"#
        ),
        Some(0.0)
    );
    assert!(value(&api_text, "relay_lag_seconds").is_some_and(|v| v >= 0.0));
    assert!(
        value(
            &api_text,
            r#"jetstream_consumer_pending_messages{consumer="executor"}"#
        )
        .is_some(),
        "the job queue's depth:\n{api_text}"
    );
    assert_eq!(value(&executor_text, "executor_jobs_in_flight"), Some(0.0));
    assert!(
        value(
            &executor_text,
            r#"executor_tool_runs_total{tool="terraform",result="succeeded"}"#
        )
        .is_some_and(|v| v >= 1.0),
        "{executor_text}"
    );
    assert!(
        value(
            &executor_text,
            r#"executor_tool_runs_total{tool="helm",result="succeeded"}"#
        )
        .is_some_and(|v| v >= 1.0),
        "{executor_text}"
    );

    promtool_check(&api_path);
    promtool_check(&executor_path);
}

/// The executor's endpoint is served like the API: a connection that never completes its request
/// head is closed (after the endpoint's 5 s header timeout), so idle sockets cannot hold it.
#[tokio::test(flavor = "multi_thread")]
async fn the_executor_endpoint_closes_a_connection_that_never_finishes_its_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start().await;
    let address = stack.executor_url.trim_start_matches("http://").to_owned();
    // The endpoint answers at all.
    let healthz = reqwest::get(format!("{}/healthz", stack.executor_url))
        .await
        .unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);

    let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut buffer)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "the half-sent request was still open after 20 s: {read:?}"
    );
}
