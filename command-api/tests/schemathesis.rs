//! schemathesis (installed from PyPI into `target/test-services/python` on the first run)
//! against the served OpenAPI document of a real API (`system_tests::App`: real Postgres and
//! NATS) with the admin token, and with a viewer's and an operator's token of one tenant while
//! another tenant has an environment: every generated request, valid and invalid, must get an answer
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
const RUN_TIMEOUT: Duration = Duration::from_secs(240);
/// The environment variable the token reaches schemathesis's configuration through (never its
/// arguments).
const TOKEN_VARIABLE: &str = "PROVISIONER_TEST_API_TOKEN";

/// Runs schemathesis against `app`'s document with `token`, `max_examples` cases per operation,
/// `extra` arguments and `extra_config` added to its configuration file; answers the report.
/// Panics when it finds a problem or tests nothing.
async fn schemathesis(
    app: &App,
    token: &str,
    max_examples: &str,
    extra: &[String],
    extra_config: &str,
) -> String {
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
        format!("{extra_config}\n[headers]\nAuthorization = \"Bearer ${{{TOKEN_VARIABLE}}}\"\n"),
    )
    .unwrap();

    let mut command = child_process::command(&python, Signal::SIGKILL, &[]);
    command
        .current_dir(work.path())
        .env(TOKEN_VARIABLE, token)
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
            max_examples,
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
        .args(extra)
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
    report
}

/// With the admin token; then with a viewer's and an operator's token of tenant `acme`, while
/// tenant `globex` has an environment: no server error, nothing outside the document, and no
/// answer (every one is recorded in a HAR file) carries anything of globex's — its
/// environment's name, its tenant — even when every generated path id is globex's own
/// environment id. One run after the other (a run takes most of the machine).
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_as_admin_viewer_and_operator_finds_no_problem_and_no_leak() {
    let app = App::spawn().await;
    schemathesis(&app, app.token(), MAX_EXAMPLES, &[], "").await;

    let globex = app.issue_token("globex", "operator").await;
    let secret_name = "globex-private-env";
    let theirs = globex
        .create_ok(&system_tests::sandbox_yaml(secret_name, ""))
        .await;
    let acme_env = app
        .issue_token("acme", "operator")
        .await
        .create_ok(&system_tests::sandbox_yaml("acme-env", ""))
        .await;
    for role in ["viewer", "operator"] {
        let client = app.issue_token("acme", role).await;
        let har = tempfile::tempdir().unwrap();
        let har_path = har.path().join("answers.har");
        let extra = [
            "--report".to_owned(),
            "har".to_owned(),
            "--report-har-path".to_owned(),
            har_path.display().to_string(),
        ];
        // Every path id is another tenant's real environment id.
        let parameters = format!("[parameters]\n\"path.id\" = \"{theirs}\"\n");
        let report = schemathesis(&app, client.token(), "50", &extra, &parameters).await;
        let answers = std::fs::read_to_string(&har_path)
            .unwrap_or_else(|e| panic!("no HAR file ({e}):\n{report}"));
        assert!(answers.len() > 1000, "{role}: the HAR file is nearly empty");
        for leak in [secret_name, "globex"] {
            assert!(
                !answers.contains(leak),
                "{role}: an answer carries {leak:?} of another tenant"
            );
        }
    }
    // The other tenant's environment is as it was: nothing of acme's touched it.
    let history = app.history(&theirs).await;
    assert!(
        history
            .iter()
            .all(|event| event["metadata"]["actor"] != "token:admin"
                && event["metadata"]["tenant"] == "globex"),
        "{history:?}"
    );
    let _ = acme_env;
}
