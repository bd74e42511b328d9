//! Helpers for the integration tests, which run this crate's real built stand-ins in temporary
//! workdirs. Included with `mod support;`; each test binary uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Terraform's state lock in a workdir.
pub const LOCK_FILE: &str = ".terraform.tfstate.lock.info";

pub fn terraform(workdir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_terraform-standin"));
    command.current_dir(workdir);
    command
}

pub fn helm(workdir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_helm-standin"));
    command.current_dir(workdir).env_remove("KUBECONFIG");
    command
}

/// A finished command.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(command: &mut Command, args: &[&str]) -> Ran {
    let output = command.args(args).output().expect("the stand-in starts");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Starts a command in the background with its output discarded.
pub fn spawn(command: &mut Command, args: &[&str]) -> Child {
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the stand-in starts")
}

/// Waits for `child` to exit, at most `limit`; kills it and panics if it does not.
pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pid {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `condition` every 10ms for at most `limit`; panics naming `what` if it never holds.
pub fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn write_json(path: &Path, value: &Value) {
    std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The JSON lines of a `.jsonl` file; empty when it does not exist.
pub fn json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .map(|text| {
            text.lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// The finished mutating runs recorded in a workdir, in the order they finished.
pub fn finished_runs(workdir: &Path) -> Vec<standins::overlap::RunRecord> {
    standins::overlap::runs(workdir).unwrap()
}

/// Whether a mutating run has started in the workdir (it may still wait for the lock).
pub fn a_run_started(workdir: &Path) -> bool {
    standins::overlap::read(workdir).is_ok_and(|log| !log.started.is_empty())
}

/// The pid of a process that has exited and been reaped.
pub fn dead_pid() -> i32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    pid
}

pub fn send_signal(child: &Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}
