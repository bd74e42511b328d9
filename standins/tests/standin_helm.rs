//! The helm stand-in binary, run for real in temporary workdirs.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use standins::overlap::{self, Outcome, OverlapKind};
use support::*;

/// A workdir with a kubeconfig, a values file and `simulate.json`.
fn workdir(simulate: Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kubeconfig"),
        "apiVersion: v1\nkind: Config\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("values.json"), r#"{"replicas": 1}"#).unwrap();
    write_json(&dir.path().join("simulate.json"), &simulate);
    dir
}

fn install_beta9(dir: &Path) -> Ran {
    run(
        &mut helm(dir),
        &[
            "upgrade",
            "--install",
            "beta9",
            "beta9/beta9",
            "--namespace",
            "beta9",
            "--create-namespace",
            "--values",
            "values.json",
            "--set",
            "image.tag=1.2.3",
            "--wait",
            "--timeout",
            "10m0s",
            "--kubeconfig",
            "kubeconfig",
        ],
    )
}

#[test]
fn version_short_prints_the_standin_version() {
    let dir = tempfile::tempdir().unwrap();
    let ran = run(&mut helm(dir.path()), &["version", "--short"]);
    assert_eq!((ran.code, ran.stdout.trim()), (Some(0), "v3.16.2+standin"));
}

#[test]
fn install_upgrade_status_list_and_uninstall_round_trip() {
    let dir = workdir(json!({"apply_seconds": 0.2}));
    let installed = install_beta9(dir.path());
    assert_eq!(installed.code, Some(0), "{installed:?}");
    assert!(
        installed
            .stdout
            .contains("Release \"beta9\" does not exist. Installing it now.")
    );
    assert!(installed.stdout.contains("STATUS: deployed"));

    let upgraded = install_beta9(dir.path());
    assert!(
        upgraded
            .stdout
            .contains("Release \"beta9\" has been upgraded. Happy Helming!"),
        "{upgraded:?}"
    );
    assert!(upgraded.stdout.contains("REVISION: 2"));

    let status = run(
        &mut helm(dir.path()),
        &["status", "beta9", "--namespace", "beta9", "-o", "json"],
    );
    assert_eq!(status.code, Some(0), "{status:?}");
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["name"], "beta9");
    assert_eq!(status["namespace"], "beta9");
    assert_eq!(status["version"], 2);
    assert_eq!(status["info"]["status"], "deployed");
    assert_eq!(status["chart"]["metadata"]["name"], "beta9");

    let list = run(
        &mut helm(dir.path()),
        &["list", "-o", "json", "--all-namespaces"],
    );
    let list: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(list[0]["name"], "beta9");
    assert_eq!(list[0]["revision"], "2");

    let uninstalled = run(
        &mut helm(dir.path()),
        &[
            "uninstall",
            "beta9",
            "--namespace",
            "beta9",
            "--kubeconfig",
            "kubeconfig",
            "--wait",
        ],
    );
    assert_eq!(uninstalled.code, Some(0), "{uninstalled:?}");
    assert_eq!(uninstalled.stdout.trim(), "release \"beta9\" uninstalled");
    let gone = run(
        &mut helm(dir.path()),
        &["status", "beta9", "-n", "beta9", "-o", "json"],
    );
    assert_eq!(gone.code, Some(1));
    assert_eq!(gone.stderr.trim(), "Error: release: not found");
    let again = run(
        &mut helm(dir.path()),
        &["uninstall", "beta9", "--namespace", "beta9"],
    );
    assert_eq!(again.code, Some(1));
    assert_eq!(
        again.stderr.trim(),
        "Error: uninstall: Release not loaded: beta9: release: not found"
    );
}

#[test]
fn the_beta9_release_takes_apply_seconds_and_others_are_quick() {
    let dir = workdir(json!({"apply_seconds": 1.0}));
    let started = Instant::now();
    let other = run(
        &mut helm(dir.path()),
        &[
            "upgrade",
            "--install",
            "ingress",
            "ingress-nginx/ingress-nginx",
        ],
    );
    assert_eq!(other.code, Some(0), "{other:?}");
    assert!(started.elapsed() < Duration::from_millis(900));
    let started = Instant::now();
    assert_eq!(install_beta9(dir.path()).code, Some(0));
    assert!(started.elapsed() >= Duration::from_millis(1000));
}

#[test]
fn a_missing_kubeconfig_reports_the_cluster_unreachable() {
    let dir = workdir(json!({}));
    let ran = run(
        &mut helm(dir.path()),
        &["upgrade", "--install", "x", "c", "--kubeconfig", "nope"],
    );
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.stderr
            .starts_with("Error: Kubernetes cluster unreachable"),
        "{ran:?}"
    );
}

#[test]
fn a_missing_values_file_fails_the_upgrade() {
    let dir = workdir(json!({}));
    let ran = run(
        &mut helm(dir.path()),
        &["upgrade", "--install", "x", "c", "-f", "missing.yaml"],
    );
    assert_eq!(ran.code, Some(1));
    assert!(ran.stderr.contains("open missing.yaml"), "{ran:?}");
}

#[test]
fn a_bootstrap_failure_with_fail_times_one_fails_once_then_succeeds() {
    let dir = workdir(json!({"apply_seconds": 0.2, "fail": "bootstrap", "fail_times": 1}));
    let failed = install_beta9(dir.path());
    assert_eq!(failed.code, Some(1));
    assert_eq!(
        failed.stderr.trim(),
        "Error: UPGRADE FAILED: simulated bootstrap failure (attempt 1 of 1)"
    );
    let retried = install_beta9(dir.path());
    assert_eq!(retried.code, Some(0), "{retried:?}");
    assert_eq!(
        read_json(&dir.path().join(".standin/faults.json")),
        json!({"bootstrap": 1})
    );
    let runs: Vec<(String, Outcome)> = finished_runs(dir.path())
        .into_iter()
        .map(|run| (run.started.operation, run.outcome))
        .collect();
    assert_eq!(
        runs,
        [
            ("helm-upgrade:beta9".to_owned(), Outcome::Failed),
            ("helm-upgrade:beta9".to_owned(), Outcome::Succeeded),
        ]
    );
}

#[test]
fn sigterm_during_a_slow_beta9_install_exits_1_quickly_and_marks_it_failed() {
    let dir = workdir(json!({"apply_seconds": 10}));
    let mut child = spawn(
        &mut helm(dir.path()),
        &["upgrade", "--install", "beta9", "beta9/beta9", "--wait"],
    );
    wait_for("the install to start", Duration::from_secs(5), || {
        a_run_started(dir.path())
    });
    let signalled = Instant::now();
    send_signal(&child, Signal::SIGTERM);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(signalled.elapsed() < Duration::from_secs(1));
    assert_eq!(status.code(), Some(1));
    let status = run(&mut helm(dir.path()), &["status", "beta9", "-o", "json"]);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["info"]["status"], "failed");
    assert_eq!(finished_runs(dir.path())[0].outcome, Outcome::Interrupted);
}

#[test]
fn a_helm_install_during_a_terraform_apply_in_the_same_workdir_is_recorded_as_an_overlap() {
    let dir = workdir(json!({"apply_seconds": 1.0}));
    write_json(
        &dir.path().join("main.tf.json"),
        &json!({"resource": {"aws_vpc": {"main": {}}}}),
    );
    assert_eq!(run(&mut terraform(dir.path()), &["init"]).code, Some(0));
    let mut apply = spawn(&mut terraform(dir.path()), &["apply", "-auto-approve"]);
    wait_for("the apply to take the lock", Duration::from_secs(5), || {
        dir.path().join(LOCK_FILE).exists()
    });
    let installed = run(
        &mut helm(dir.path()),
        &["upgrade", "--install", "other", "c"],
    );
    assert_eq!(installed.code, Some(0), "{installed:?}");
    assert!(wait_exit(&mut apply, Duration::from_secs(10)).success());
    let found = overlap::overlaps(dir.path()).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, OverlapKind::Section, "{found:?}");
    let operations = [
        found[0].first.started.operation.as_str(),
        found[0].second.started.operation.as_str(),
    ];
    assert!(operations.contains(&"apply"), "{found:?}");
    assert!(operations.contains(&"helm-upgrade:other"), "{found:?}");
}
