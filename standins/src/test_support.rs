//! Helpers shared by the stand-ins' unit tests: run a tool's `run` function in-process on a
//! command line and capture what it prints.

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use super::{Console, Error, Interrupt, Result, Tool};

/// A command line split on white space, as the tests write them.
pub(crate) fn args(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

/// Asserts that `parse` (a stand-in's command-line parser) rejects each of `lines` as a usage
/// error.
pub(crate) fn assert_usage_errors<T: Debug>(parse: fn(&[String]) -> Result<T>, lines: &[&str]) {
    for line in lines {
        assert!(
            matches!(parse(&args(line)), Err(Error::Usage(_))),
            "{line:?} should be a usage error"
        );
    }
}

/// What one in-process run of a stand-in returned and printed.
pub(crate) struct Run {
    pub(crate) code: u8,
    pub(crate) out: String,
    pub(crate) err: String,
}

/// Runs `tool` (a stand-in's `run`) on `line` in `dir`, never interrupted.
pub(crate) fn run_in(tool: Tool, dir: &Path, line: &str) -> Run {
    run_with(tool, dir, line, &Interrupt::new())
}

/// Runs `tool` on `line` in `dir` with `interrupt` as its interruption flag.
pub(crate) fn run_with(tool: Tool, dir: &Path, line: &str, interrupt: &Interrupt) -> Run {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = tool(
        &args(line),
        dir,
        interrupt,
        &mut Console::new(&mut out, &mut err),
    );
    Run {
        code,
        out: String::from_utf8(out).unwrap(),
        err: String::from_utf8(err).unwrap(),
    }
}

/// A temporary workdir whose `simulate.json` makes every step instant.
pub(crate) fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    simulate(dir.path(), r#"{"apply_seconds": 0}"#);
    dir
}

/// Replaces the fault injection of the workdir `dir` with `json`.
pub(crate) fn simulate(dir: &Path, json: &str) {
    std::fs::write(dir.join(crate::faults::SIMULATE_FILE), json).unwrap();
}

/// An interruption flag that a background thread triggers after `delay`.
pub(crate) fn interrupt_after(delay: Duration) -> Interrupt {
    let interrupt = Interrupt::new();
    let setter = interrupt.clone();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        setter.trigger();
    });
    interrupt
}

/// The pid of a process that has exited and been reaped.
pub(crate) fn dead_pid() -> i32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id() as i32;
    child.wait().unwrap();
    pid
}
