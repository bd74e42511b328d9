//! Run intervals, a test-tool feature: every run that takes the state lock or changes state
//! (terraform plan, apply and destroy; helm upgrade and uninstall) appends a `started` line to
//! `.standin/runs.jsonl` before it asks for the state lock and a `finished` line after it
//! released it. [`overlaps`] checks the intervals
//! for the two exclusions a workdir relies on:
//!
//! * **Sections** — the part of a run that changes state (terraform: while it holds the state
//!   lock; helm: its whole run, it takes no lock) — never overlap, whoever started the runs. This
//!   is the state lock's promise, across processes and executors.
//! * **Invocations of one parent** (the executor process that spawned the tool) — from before the
//!   lock is asked for to after it is released — never overlap. This is the executor's
//!   per-environment exclusion: a second run that merely waits for the lock still overlaps.
//!
//! The check is honest by construction: every recorded interval lies inside the true one (a
//! start is taken after the process began or the lock was taken, an end before the lock is
//! released or the process exits), so correct exclusion never reports an overlap, and a real one
//! longer than the clock's resolution is always reported. A run killed before it finished has no
//! `finished` line; it is listed by [`RunLog::unfinished`] and not checked.

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::Result;
use super::fsutil::{append_json_line, random_hex, standin_path};

pub const RUNS_FILE: &str = "runs.jsonl";

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
    Interrupted,
}

/// The `started` line of a run, written before it asks for the state lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStarted {
    /// Unique per run; joins the `started` and `finished` lines.
    pub run: String,
    pub operation: String,
    pub pid: i32,
    /// The process that started the tool (the executor).
    pub parent_pid: i32,
    pub invoked_at: DateTime<Utc>,
}

/// The `finished` line of a run, written after it released the state lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(flatten)]
    pub started: RunStarted,
    /// When the run began changing state (lock taken); `None` if it never did.
    pub section_started_at: Option<DateTime<Utc>>,
    /// When it stopped changing state (before the lock was released).
    pub section_ended_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    pub outcome: Outcome,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
enum Line {
    Started(RunStarted),
    Finished(RunRecord),
}

/// One mutating run in progress. [`Run::finish`] writes its `finished` line; dropped without it
/// (a panic or an early error), it is written as failed.
#[derive(Debug)]
pub struct Run {
    path: PathBuf,
    started: RunStarted,
    section_started_at: Option<DateTime<Utc>>,
    section_ended_at: Option<DateTime<Utc>>,
    finished: bool,
}

fn now() -> DateTime<Utc> {
    Utc::now()
}

impl Run {
    /// Records that this process starts `operation` in `workdir`. Call it before asking for the
    /// state lock.
    pub fn start(workdir: &Path, operation: &str) -> Result<Self> {
        let started = RunStarted {
            run: random_hex(16),
            operation: operation.to_owned(),
            pid: std::process::id() as i32,
            parent_pid: std::os::unix::process::parent_id() as i32,
            invoked_at: now(),
        };
        let path = standin_path(workdir, RUNS_FILE)?;
        append_json_line(&path, &Line::Started(started.clone()))?;
        Ok(Run {
            path,
            started,
            section_started_at: None,
            section_ended_at: None,
            finished: false,
        })
    }

    /// The run begins changing state (it holds the lock, or needs none).
    pub fn enter_section(&mut self) {
        self.section_started_at = Some(now());
    }

    /// The run stops changing state; call it before releasing the lock.
    pub fn leave_section(&mut self) {
        if self.section_started_at.is_some() && self.section_ended_at.is_none() {
            self.section_ended_at = Some(now());
        }
    }

    /// Writes the `finished` line; call it after releasing the lock.
    pub fn finish(mut self, outcome: Outcome) -> Result<()> {
        self.finished = true;
        self.write_finished(outcome)
    }

    fn write_finished(&mut self, outcome: Outcome) -> Result<()> {
        self.leave_section();
        append_json_line(
            &self.path,
            &Line::Finished(RunRecord {
                started: self.started.clone(),
                section_started_at: self.section_started_at,
                section_ended_at: self.section_ended_at,
                finished_at: now(),
                outcome,
            }),
        )
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.write_finished(Outcome::Failed);
        }
    }
}

/// Which exclusion two runs broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverlapKind {
    /// Both changed state at once (the state lock did not exclude them).
    Section,
    /// One parent process ran both at once (its per-environment exclusion did not hold).
    SameParent,
}

/// Two finished runs whose intervals overlap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    pub kind: OverlapKind,
    pub first: RunRecord,
    pub second: RunRecord,
}

impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let describe = |run: &RunRecord| {
            let at = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Micros, true);
            format!(
                "{} (pid {}, parent {}, invoked {}, section {}..{}, finished {})",
                run.started.operation,
                run.started.pid,
                run.started.parent_pid,
                at(&run.started.invoked_at),
                run.section_started_at.as_ref().map_or("-".into(), at),
                run.section_ended_at.as_ref().map_or("-".into(), at),
                at(&run.finished_at),
            )
        };
        let kind = match self.kind {
            OverlapKind::Section => "changed state at the same time",
            OverlapKind::SameParent => "ran at the same time under one parent",
        };
        write!(
            f,
            "{} and {} {kind}",
            describe(&self.first),
            describe(&self.second)
        )
    }
}

/// Everything `runs.jsonl` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunLog {
    pub started: Vec<RunStarted>,
    pub finished: Vec<RunRecord>,
}

impl RunLog {
    /// Runs that started and never finished (their process was killed).
    pub fn unfinished(&self) -> Vec<&RunStarted> {
        self.started
            .iter()
            .filter(|s| !self.finished.iter().any(|f| f.started.run == s.run))
            .collect()
    }

    /// Every pair of finished runs that broke an exclusion.
    pub fn overlaps(&self) -> Vec<Overlap> {
        find_overlaps(&self.finished)
    }
}

/// Whether the half-open intervals `[a.0, a.1)` and `[b.0, b.1)` share a moment.
fn intersect<T: PartialOrd>(a: (T, T), b: (T, T)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Every pair of runs that broke an exclusion (see the module docs), in the order given.
pub fn find_overlaps(runs: &[RunRecord]) -> Vec<Overlap> {
    let mut found = Vec::new();
    for (i, first) in runs.iter().enumerate() {
        for second in &runs[i + 1..] {
            let section = |run: &RunRecord| run.section_started_at.zip(run.section_ended_at);
            let invocation = |run: &RunRecord| (run.started.invoked_at, run.finished_at);
            let kind = if let (Some(a), Some(b)) = (section(first), section(second))
                && intersect(a, b)
            {
                Some(OverlapKind::Section)
            } else if first.started.parent_pid == second.started.parent_pid
                && intersect(invocation(first), invocation(second))
            {
                Some(OverlapKind::SameParent)
            } else {
                None
            };
            if let Some(kind) = kind {
                found.push(Overlap {
                    kind,
                    first: first.clone(),
                    second: second.clone(),
                });
            }
        }
    }
    found
}

/// Reads `runs.jsonl` of `workdir` (empty when no run was recorded).
pub fn read(workdir: &Path) -> Result<RunLog> {
    let path = workdir.join(super::STANDIN_DIR).join(RUNS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RunLog::default()),
        Err(e) => return Err(super::Error::io(format!("read {}", path.display()), e)),
    };
    let mut log = RunLog::default();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let line = serde_json::from_str(line).map_err(|source| super::Error::Json {
            path: path.display().to_string(),
            source,
        })?;
        match line {
            Line::Started(started) => log.started.push(started),
            Line::Finished(finished) => log.finished.push(finished),
        }
    }
    Ok(log)
}

/// The finished runs of `workdir`, in the order they finished.
pub fn runs(workdir: &Path) -> Result<Vec<RunRecord>> {
    read(workdir).map(|log| log.finished)
}

/// Every pair of finished runs in `workdir` that broke an exclusion; empty when none did.
pub fn overlaps(workdir: &Path) -> Result<Vec<Overlap>> {
    read(workdir).map(|log| log.overlaps())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::milliseconds(ms)
    }

    /// A run of `parent` invoked at `invoked`, changing state during `section`, done at `done`.
    fn record(parent: i32, invoked: i64, section: Option<(i64, i64)>, done: i64) -> RunRecord {
        RunRecord {
            started: RunStarted {
                run: format!("{parent}-{invoked}"),
                operation: "apply".into(),
                pid: 1000 + invoked as i32,
                parent_pid: parent,
                invoked_at: at(invoked),
            },
            section_started_at: section.map(|s| at(s.0)),
            section_ended_at: section.map(|s| at(s.1)),
            finished_at: at(done),
            outcome: Outcome::Succeeded,
        }
    }

    #[test]
    fn runs_one_after_another_do_not_overlap_even_when_they_touch() {
        let runs = [
            record(7, 0, Some((10, 90)), 100),
            record(7, 100, Some((110, 190)), 200),
        ];
        assert!(find_overlaps(&runs).is_empty());
    }

    #[test]
    fn a_run_of_one_parent_waiting_for_the_lock_of_another_run_of_it_is_an_overlap() {
        // The second run waits for the lock from 50 to 100: the sections are apart, but one
        // parent ran both at once.
        let runs = [
            record(7, 0, Some((10, 90)), 100),
            record(7, 50, Some((100, 150)), 160),
        ];
        let found = find_overlaps(&runs);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, OverlapKind::SameParent);
    }

    #[test]
    fn different_parents_may_wait_for_each_other_but_never_change_state_at_once() {
        let waiting = [
            record(7, 0, Some((10, 90)), 100),
            record(8, 50, Some((100, 150)), 160),
        ];
        assert!(find_overlaps(&waiting).is_empty());
        let both_inside = [
            record(7, 0, Some((10, 90)), 100),
            record(8, 20, Some((30, 60)), 70),
        ];
        let found = find_overlaps(&both_inside);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, OverlapKind::Section);
        assert!(
            found[0]
                .to_string()
                .contains("changed state at the same time")
        );
    }

    #[test]
    fn a_run_that_never_got_the_lock_has_no_section_but_still_counts_for_its_parent() {
        let runs = [record(7, 0, Some((10, 90)), 100), record(8, 20, None, 50)];
        assert!(find_overlaps(&runs).is_empty());
        let same_parent = [record(7, 0, Some((10, 90)), 100), record(7, 20, None, 50)];
        assert_eq!(find_overlaps(&same_parent)[0].kind, OverlapKind::SameParent);
    }

    #[test]
    fn a_run_is_logged_when_it_starts_and_when_it_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = Run::start(dir.path(), "apply").unwrap();
        let log = read(dir.path()).unwrap();
        assert_eq!(log.unfinished().len(), 1, "started, not yet finished");
        run.enter_section();
        run.leave_section();
        run.finish(Outcome::Succeeded).unwrap();
        let log = read(dir.path()).unwrap();
        assert!(log.unfinished().is_empty());
        let finished = &log.finished[0];
        assert_eq!(finished.started, log.started[0]);
        assert_eq!(finished.started.pid, std::process::id() as i32);
        assert_eq!(finished.outcome, Outcome::Succeeded);
        let (start, end) = (
            finished.section_started_at.unwrap(),
            finished.section_ended_at.unwrap(),
        );
        assert!(finished.started.invoked_at <= start && start <= end);
        assert!(end <= finished.finished_at);
    }

    #[test]
    fn a_dropped_run_is_logged_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        drop(Run::start(dir.path(), "destroy").unwrap());
        assert_eq!(runs(dir.path()).unwrap()[0].outcome, Outcome::Failed);
    }

    #[test]
    fn two_runs_of_this_process_at_once_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Run::start(dir.path(), "apply").unwrap();
        first.enter_section();
        let second = Run::start(dir.path(), "helm-upgrade:beta9").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        second.finish(Outcome::Failed).unwrap();
        first.finish(Outcome::Succeeded).unwrap();
        let found = overlaps(dir.path()).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, OverlapKind::SameParent);
    }
}
