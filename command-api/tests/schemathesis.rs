//! schemathesis (installed from PyPI into `target/test-services/python` on the first run)
//! against the served OpenAPI document of a real API (`system_tests::App`: real Postgres and
//! NATS) with the admin token: every generated request, valid and invalid, must get an answer
//! that is not a server error and that the document describes — status, content type and body.
//!
//! The Server-Sent Events operations are left out of the run (they stay in the document): a
//! stream of a live environment, of all environments, or of its logs with `follow=true` lasts
//! until the client leaves, so a request for it never ends by itself. `tests/openapi.rs` checks
//! that they are served as documented.

use local_services::pypi::{Package, PypiTools};
use nix::sys::signal::Signal;
use std::process::Stdio;
use std::time::Duration;
use system_tests::App;
use system_tests::services::services_dir;

/// The operations whose answer can be an endless stream.
const STREAMS: [&str; 3] = [
    "stream_environment_events",
    "stream_all_events",
    "get_environment_logs",
];
/// Test cases per operation and phase: enough to reach every documented answer, few enough
/// for the run to take about a minute on a busy machine.
const MAX_EXAMPLES: &str = "100";
/// The run's hard limit; the child is killed when it is reached.
const RUN_TIMEOUT: Duration = Duration::from_secs(170);
/// The environment variable the token reaches schemathesis's configuration through (never its
/// arguments).
const TOKEN_VARIABLE: &str = "PROVISIONER_TEST_API_TOKEN";

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let app = App::spawn().await;
    let tools = PypiTools::new(&services_dir());
    tools
        .ensure(Package::Schemathesis)
        .await
        .unwrap_or_else(|e| panic!("schemathesis from PyPI: {e}"));
    let (python, python_path) = tools.python();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!("[headers]\nAuthorization = \"Bearer ${{{TOKEN_VARIABLE}}}\"\n"),
    )
    .unwrap();

    let mut command = child_process::command(&python, Signal::SIGKILL, &[]);
    command
        .current_dir(work.path())
        .env(TOKEN_VARIABLE, app.token())
        .arg("-m")
        .arg("schemathesis.cli")
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .args(["run", &format!("{}/v1/openapi.json", app.base_url)])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,\
             content_type_conformance",
            "--max-examples",
            MAX_EXAMPLES,
            // The same cases on every run, so a failure reproduces.
            "--seed",
            "1",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--suppress-health-check",
            "all",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for operation in STREAMS {
        command.args(["--exclude-operation-id", operation]);
    }
    if let Some(path) = python_path {
        command.env("PYTHONPATH", path);
    }
    let child = command.spawn().expect("start schemathesis");
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ran longer than {RUN_TIMEOUT:?}"))
        .expect("schemathesis ran");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{report}",
        output.status
    );
    assert!(
        !report.contains("No operations"),
        "schemathesis tested nothing:\n{report}"
    );
}
