//! The terraform stand-in binary, run for real in temporary workdirs.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use standins::overlap::{self, Outcome, OverlapKind};
use support::*;

const APPLY: &[&str] = &["apply", "-auto-approve", "-input=false", "-no-color"];

/// A workdir with a small AWS-like configuration, `simulate.json` and `init` done.
fn workdir(simulate: Value) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_json(
        &dir.path().join("main.tf.json"),
        &json!({
            "resource": {
                "aws_vpc": {"main": {"cidr_block": "10.0.0.0/16"}},
                "aws_subnet": {"private": {"vpc_id": "${aws_vpc.main.id}"}}
            },
            "output": {
                "vpc_id": {"value": "${aws_vpc.main.id}"},
                "region": {"value": "us-east-1"},
                "db_password": {"value": "s3cret", "sensitive": true}
            }
        }),
    );
    write_json(&dir.path().join("simulate.json"), &simulate);
    let init = run(
        &mut terraform(dir.path()),
        &["init", "-input=false", "-no-color"],
    );
    assert_eq!(init.code, Some(0), "{init:?}");
    assert!(
        init.stdout
            .contains("Terraform has been successfully initialized!")
    );
    dir
}

fn apply_with(dir: &Path, extra: &[&str]) -> Ran {
    let args: Vec<&str> = APPLY.iter().chain(extra).copied().collect();
    run(&mut terraform(dir), &args)
}

fn lock_id(dir: &Path) -> String {
    read_json(&dir.join(LOCK_FILE))["ID"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn version_prints_the_standin_version() {
    let dir = tempfile::tempdir().unwrap();
    let ran = run(&mut terraform(dir.path()), &["version"]);
    assert_eq!(ran.code, Some(0));
    assert_eq!(ran.stdout.trim(), "Terraform v1.10.5 (standin)");
}

#[test]
fn init_fails_without_main_tf_json() {
    let dir = tempfile::tempdir().unwrap();
    let ran = run(&mut terraform(dir.path()), &["init", "-input=false"]);
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.stderr.contains("Error: No configuration files"),
        "{ran:?}"
    );
}

#[test]
fn apply_then_output_json_shows_resolved_and_sensitive_outputs() {
    let dir = workdir(json!({"apply_seconds": 0.2}));
    let applied = apply_with(dir.path(), &["-lock-timeout=60s"]);
    assert_eq!(applied.code, Some(0), "{applied:?}");
    assert!(applied.stdout.contains("aws_vpc.main: Creating..."));
    assert!(
        applied
            .stdout
            .contains("aws_vpc.main: Creation complete after 0s [id=vpc-")
    );
    assert!(
        applied
            .stdout
            .contains("Apply complete! Resources: 2 added, 0 changed, 0 destroyed.")
    );

    let output = run(
        &mut terraform(dir.path()),
        &["output", "-json", "-no-color"],
    );
    assert_eq!(output.code, Some(0));
    let outputs: Value = serde_json::from_str(&output.stdout).unwrap();
    let vpc_id = outputs["vpc_id"]["value"].as_str().unwrap();
    assert!(vpc_id.starts_with("vpc-") && vpc_id.len() == 12, "{vpc_id}");
    assert_eq!(outputs["vpc_id"]["type"], "string");
    assert_eq!(outputs["region"]["value"], "us-east-1");
    assert_eq!(
        outputs["db_password"],
        json!({"sensitive": true, "type": "string", "value": "s3cret"})
    );
    let state = read_json(&dir.path().join("terraform.tfstate"));
    assert_eq!(state["version"], 4);
    assert_eq!(
        state["resources"][0]["instances"][0]["attributes"]["vpc_id"],
        vpc_id
    );
    assert!(!dir.path().join(LOCK_FILE).exists());
}

#[test]
fn a_second_apply_with_the_same_configuration_changes_nothing_and_succeeds() {
    let dir = workdir(json!({"apply_seconds": 0.2}));
    assert_eq!(apply_with(dir.path(), &[]).code, Some(0));
    let state_before = read_json(&dir.path().join("terraform.tfstate"));
    let again = apply_with(dir.path(), &[]);
    assert_eq!(again.code, Some(0), "{again:?}");
    assert!(
        again
            .stdout
            .contains("Apply complete! Resources: 0 added, 0 changed, 0 destroyed.")
    );
    assert!(
        again
            .stdout
            .contains("aws_vpc.main: Refreshing state... [id=vpc-")
    );
    let state_after = read_json(&dir.path().join("terraform.tfstate"));
    assert_eq!(state_before["resources"], state_after["resources"]);
    assert_eq!(state_before["outputs"], state_after["outputs"]);
}

#[test]
fn destroy_removes_every_resource_and_output() {
    let dir = workdir(json!({"apply_seconds": 0.2}));
    assert_eq!(apply_with(dir.path(), &[]).code, Some(0));
    let destroyed = run(
        &mut terraform(dir.path()),
        &[
            "destroy",
            "-auto-approve",
            "-input=false",
            "-no-color",
            "-lock-timeout=60s",
        ],
    );
    assert_eq!(destroyed.code, Some(0), "{destroyed:?}");
    assert!(
        destroyed
            .stdout
            .contains("Destroy complete! Resources: 2 destroyed.")
    );
    let state = read_json(&dir.path().join("terraform.tfstate"));
    assert_eq!(state["resources"], json!([]));
    assert_eq!(state["outputs"], json!({}));
    let output = run(&mut terraform(dir.path()), &["output", "-json"]);
    assert_eq!(output.stdout.trim(), "{}");
}

#[test]
fn an_infra_failure_with_fail_times_one_fails_once_then_succeeds() {
    let dir = workdir(json!({"apply_seconds": 0.2, "fail": "infra", "fail_times": 1}));
    let started = Instant::now();
    let failed = apply_with(dir.path(), &[]);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "fails at the end of the step"
    );
    assert_eq!(failed.code, Some(1));
    assert!(
        failed
            .stderr
            .contains("Error: simulated infra failure (attempt 1 of 1)"),
        "{failed:?}"
    );
    assert!(!dir.path().join(LOCK_FILE).exists());
    assert_eq!(
        read_json(&dir.path().join(".standin/faults.json")),
        json!({"infra": 1})
    );

    let retried = apply_with(dir.path(), &[]);
    assert_eq!(retried.code, Some(0), "{retried:?}");
    let outcomes: Vec<Outcome> = finished_runs(dir.path())
        .into_iter()
        .map(|run| run.outcome)
        .collect();
    assert_eq!(outcomes, [Outcome::Failed, Outcome::Succeeded]);
}

#[test]
fn a_destroy_failure_without_fail_times_fails_every_time() {
    let dir = workdir(json!({"apply_seconds": 0.05, "fail": "destroy"}));
    assert_eq!(apply_with(dir.path(), &[]).code, Some(0));
    for attempt in 1..=2 {
        let ran = run(&mut terraform(dir.path()), &["destroy", "-auto-approve"]);
        assert_eq!(ran.code, Some(1));
        assert!(
            ran.stderr
                .contains(&format!("simulated destroy failure (attempt {attempt};")),
            "{ran:?}"
        );
    }
}

#[test]
fn an_apply_waits_for_a_live_lock_holder_and_fails_after_its_lock_timeout() {
    let dir = workdir(json!({"apply_seconds": 1.5}));
    let mut holder = spawn(&mut terraform(dir.path()), APPLY);
    wait_for(
        "the first apply to take the lock",
        Duration::from_secs(5),
        || dir.path().join(LOCK_FILE).exists(),
    );
    let id = lock_id(dir.path());

    let started = Instant::now();
    let blocked = apply_with(dir.path(), &["-lock-timeout=300ms"]);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(blocked.code, Some(1));
    assert!(
        blocked
            .stderr
            .contains("Error: Error acquiring the state lock"),
        "{blocked:?}"
    );
    assert!(
        blocked.stderr.contains(&format!("ID:        {id}")),
        "{blocked:?}"
    );
    assert!(!blocked.stderr.contains("stale"));

    let patient = apply_with(dir.path(), &["-lock-timeout=30s"]);
    assert_eq!(patient.code, Some(0), "{patient:?}");
    assert!(wait_exit(&mut holder, Duration::from_secs(10)).success());
    assert!(!dir.path().join(LOCK_FILE).exists());
}

#[test]
fn a_lock_left_by_a_dead_process_fails_at_once_naming_its_id_and_force_unlock_clears_it() {
    let dir = workdir(json!({"apply_seconds": 0.1}));
    let pid = dead_pid();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    let id = "0badc0de-0000-4000-8000-000000000001";
    write_json(
        &dir.path().join(LOCK_FILE),
        &json!({
            "ID": id, "Operation": "OperationTypeApply", "Info": "", "Who": format!("{pid}@{host}"),
            "Version": "1.9.8", "Created": "2024-01-01T00:00:00Z", "Path": "terraform.tfstate",
            "Pid": pid
        }),
    );

    let started = Instant::now();
    let blocked = apply_with(dir.path(), &["-lock-timeout=60s"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a stale lock is not waited for"
    );
    assert_eq!(blocked.code, Some(1));
    assert!(
        blocked
            .stderr
            .contains("Error: Error acquiring the state lock")
    );
    assert!(
        blocked.stderr.contains(&format!("ID:        {id}")),
        "{blocked:?}"
    );
    // Terraform's own wording, which says nothing of the holder's fate.
    assert!(
        blocked
            .stderr
            .contains("Error message: resource temporarily unavailable\nLock Info:\n"),
        "{blocked:?}"
    );
    assert!(!blocked.stderr.contains("stale"), "{blocked:?}");

    let wrong = run(
        &mut terraform(dir.path()),
        &["force-unlock", "-force", "not-the-id"],
    );
    assert_eq!(wrong.code, Some(1));
    assert!(
        wrong.stderr.contains("does not match existing lock ID"),
        "{wrong:?}"
    );
    assert!(dir.path().join(LOCK_FILE).exists());

    let unlocked = run(&mut terraform(dir.path()), &["force-unlock", "-force", id]);
    assert_eq!(unlocked.code, Some(0), "{unlocked:?}");
    assert!(
        unlocked
            .stdout
            .contains("Terraform state has been successfully unlocked!")
    );
    assert_eq!(apply_with(dir.path(), &[]).code, Some(0));
}

#[test]
fn sigint_during_a_slow_apply_exits_1_within_a_second_and_releases_the_lock() {
    interrupting_a_slow_apply_stops_it(Signal::SIGINT);
}

#[test]
fn sigterm_during_a_slow_apply_exits_1_within_a_second_and_releases_the_lock() {
    interrupting_a_slow_apply_stops_it(Signal::SIGTERM);
}

fn interrupting_a_slow_apply_stops_it(signal: Signal) {
    let dir = workdir(json!({"apply_seconds": 10}));
    let mut child = spawn(&mut terraform(dir.path()), APPLY);
    wait_for("the apply to start", Duration::from_secs(5), || {
        a_run_started(dir.path())
    });
    std::thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    send_signal(&child, signal);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "took {:?}",
        signalled.elapsed()
    );
    assert_eq!(status.code(), Some(1));
    assert!(!dir.path().join(LOCK_FILE).exists(), "the lock is released");
    let log = overlap::read(dir.path()).unwrap();
    assert_eq!(log.finished.len(), 1);
    assert_eq!(log.finished[0].outcome, Outcome::Interrupted);
    assert!(log.unfinished().is_empty(), "the run recorded its end");
    // The next apply resumes from the state the interrupted one left.
    write_json(
        &dir.path().join("simulate.json"),
        &json!({"apply_seconds": 0}),
    );
    let resumed = apply_with(dir.path(), &[]);
    assert_eq!(resumed.code, Some(0), "{resumed:?}");
}

#[test]
fn concurrent_applies_with_a_lock_timeout_take_turns_on_the_lock() {
    let dir = workdir(json!({"apply_seconds": 0.4}));
    let mut children: Vec<_> = (0..3)
        .map(|_| {
            spawn(
                &mut terraform(dir.path()),
                &[APPLY, &["-lock-timeout=30s"][..]].concat(),
            )
        })
        .collect();
    for child in &mut children {
        assert!(wait_exit(child, Duration::from_secs(20)).success());
    }
    let mut runs = finished_runs(dir.path());
    assert_eq!(runs.len(), 3);
    // The state lock kept their changes apart...
    runs.sort_by_key(|run| run.section_started_at);
    for pair in runs.windows(2) {
        assert!(
            pair[0].section_ended_at <= pair[1].section_started_at,
            "sections overlap in time: {pair:?}"
        );
    }
    let found = overlap::find_overlaps(&runs);
    assert!(
        found.iter().all(|o| o.kind != OverlapKind::Section),
        "{found:?}"
    );
    // ...but one parent (this test) ran them at once, with no exclusion of its own: seen.
    assert!(
        found.iter().any(|o| o.kind == OverlapKind::SameParent),
        "the runs waited for each other's lock: {runs:?}"
    );
}

#[test]
fn deleting_the_lock_under_a_running_apply_lets_a_second_in_and_the_overlap_is_recorded() {
    let dir = workdir(json!({"apply_seconds": 1.0}));
    let mut first = spawn(&mut terraform(dir.path()), APPLY);
    wait_for(
        "the first apply to take the lock",
        Duration::from_secs(5),
        || {
            std::fs::read_to_string(dir.path().join(LOCK_FILE))
                .is_ok_and(|text| text.contains(&format!("\"Pid\":{}", first.id())))
        },
    );
    std::fs::remove_file(dir.path().join(LOCK_FILE)).unwrap();

    let second = apply_with(dir.path(), &[]);
    assert_eq!(second.code, Some(0), "{second:?}");
    assert!(wait_exit(&mut first, Duration::from_secs(10)).success());

    let found = overlap::overlaps(dir.path()).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].kind, OverlapKind::Section, "{found:?}");
    let pids = [found[0].first.started.pid, found[0].second.started.pid];
    assert!(pids.contains(&(first.id() as i32)), "{found:?}");
}

#[test]
fn unknown_commands_and_flags_exit_1_with_usage() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["frobnicate"][..],
        &["apply", "-auto-approve", "-turbo"],
        &[],
    ] {
        let ran = run(&mut terraform(dir.path()), args);
        assert_eq!(ran.code, Some(1), "{args:?}");
        assert!(ran.stderr.contains("Usage: terraform-standin"), "{ran:?}");
    }
}

#[test]
fn chdir_points_every_command_at_another_workdir() {
    let dir = workdir(json!({"apply_seconds": 0}));
    let parent = dir.path().parent().unwrap();
    let chdir = format!("-chdir={}", dir.path().display());
    let ran = run(
        &mut terraform(parent),
        &[&chdir, "apply", "-auto-approve", "-no-color"],
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(dir.path().join("terraform.tfstate").exists());
}

#[test]
fn a_saved_plan_that_failed_midway_is_stale_and_a_fresh_plan_finishes_the_job() {
    let dir = workdir(json!({"apply_seconds": 0.2, "fail": "infra", "fail_times": 1}));
    let plan = run(
        &mut terraform(dir.path()),
        &[
            "plan",
            "-input=false",
            "-no-color",
            "-lock-timeout=5s",
            "-out=tfplan",
        ],
    );
    assert_eq!(plan.code, Some(0), "{plan:?}");
    assert!(
        plan.stdout
            .contains("Plan: 2 to add, 0 to change, 0 to destroy.")
    );
    let apply_plan = [
        "apply",
        "-input=false",
        "-no-color",
        "-lock-timeout=5s",
        "tfplan",
    ];
    let failed = run(&mut terraform(dir.path()), &apply_plan);
    assert_eq!(failed.code, Some(1));
    assert!(
        failed
            .stderr
            .contains("simulated infra failure (attempt 1 of 1)"),
        "{failed:?}"
    );
    // The failed apply saved what it created: the plan no longer matches the state.
    let again = run(&mut terraform(dir.path()), &apply_plan);
    assert_eq!(again.code, Some(1));
    assert!(
        again.stderr.contains("Error: Saved plan is stale"),
        "{again:?}"
    );

    let replan = run(&mut terraform(dir.path()), &["plan", "-out=tfplan"]);
    assert!(replan.stdout.contains("Plan: 1 to add"), "{replan:?}");
    let applied = run(&mut terraform(dir.path()), &apply_plan);
    assert_eq!(applied.code, Some(0), "{applied:?}");
    assert!(
        applied
            .stdout
            .contains("Apply complete! Resources: 1 added, 0 changed, 0 destroyed."),
        "{applied:?}"
    );
    // Plans take the state lock too: they are runs of their own.
    let runs: Vec<(String, Outcome)> = finished_runs(dir.path())
        .into_iter()
        .map(|run| (run.started.operation, run.outcome))
        .collect();
    let run = |operation: &str, outcome| (operation.to_owned(), outcome);
    assert_eq!(
        runs,
        [
            run("plan", Outcome::Succeeded),
            run("apply", Outcome::Failed),
            run("apply", Outcome::Failed),
            run("plan", Outcome::Succeeded),
            run("apply", Outcome::Succeeded),
        ]
    );
    assert!(overlap::overlaps(dir.path()).unwrap().is_empty());
}

#[test]
fn sigint_during_a_saved_plans_apply_stops_it_and_releases_the_lock() {
    let dir = workdir(json!({"apply_seconds": 10}));
    assert_eq!(
        run(&mut terraform(dir.path()), &["plan", "-out=tfplan"]).code,
        Some(0)
    );
    let mut child = spawn(
        &mut terraform(dir.path()),
        &["apply", "-input=false", "tfplan"],
    );
    wait_for("the apply to take the lock", Duration::from_secs(5), || {
        dir.path().join(LOCK_FILE).exists()
    });
    std::thread::sleep(Duration::from_millis(200));
    send_signal(&child, Signal::SIGINT);
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(1));
    assert!(!dir.path().join(LOCK_FILE).exists());
    let log = overlap::read(dir.path()).unwrap();
    let outcomes: Vec<(&str, Outcome)> = log
        .finished
        .iter()
        .map(|run| (run.started.operation.as_str(), run.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("plan", Outcome::Succeeded),
            ("apply", Outcome::Interrupted)
        ]
    );
}
