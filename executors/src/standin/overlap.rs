//! Overlap detection, a test-tool feature: every apply, destroy and helm change registers in
//! `.standin/active.json` while it runs. Registering while another live process is registered
//! appends a line to `.standin/overlaps.jsonl`, so a test proves that at most one operation ran
//! in a workdir at a time by that file's absence. Every finished run appends a line to
//! `.standin/runs.jsonl`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Result;
use super::fsutil::{
    WorkdirMutex, append_json_line, now_rfc3339, pid_alive, read_json, standin_path,
    write_json_atomic,
};

pub const ACTIVE_FILE: &str = "active.json";
pub const OVERLAPS_FILE: &str = "overlaps.jsonl";
pub const RUNS_FILE: &str = "runs.jsonl";

/// One registered run in `active.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRun {
    pub pid: i32,
    pub operation: String,
    pub started_at: String,
}

/// A line of `overlaps.jsonl`: the run that registered and the live runs it found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overlap {
    pub detected_at: String,
    pub run: ActiveRun,
    pub already_active: Vec<ActiveRun>,
}

/// How a run ended, as written to `runs.jsonl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
    Interrupted,
}

/// A line of `runs.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub operation: String,
    pub pid: i32,
    pub started_at: String,
    pub finished_at: String,
    pub outcome: Outcome,
}

/// This process's entry in `active.json`; [`Registration::finish`] removes it and logs the run.
/// Dropped without `finish` (a panic), it still removes the entry and logs the run as failed.
#[derive(Debug)]
pub struct Registration {
    workdir: PathBuf,
    run: ActiveRun,
    finished: bool,
}

impl Registration {
    /// Registers this process as running `operation` in `workdir`.
    pub fn register(workdir: &Path, operation: &str) -> Result<Self> {
        Self::register_pid(workdir, operation, std::process::id() as i32)
    }

    fn register_pid(workdir: &Path, operation: &str, pid: i32) -> Result<Self> {
        let run = ActiveRun {
            pid,
            operation: operation.to_owned(),
            started_at: now_rfc3339(),
        };
        let _mutex = WorkdirMutex::lock(workdir)?;
        let path = standin_path(workdir, ACTIVE_FILE)?;
        let mut active: Vec<ActiveRun> = read_json(&path)?.unwrap_or_default();
        // Entries of processes that died without deregistering (SIGKILL) are not overlaps.
        active.retain(|other| other.pid != pid && pid_alive(other.pid));
        if !active.is_empty() {
            append_json_line(
                &standin_path(workdir, OVERLAPS_FILE)?,
                &Overlap {
                    detected_at: now_rfc3339(),
                    run: run.clone(),
                    already_active: active.clone(),
                },
            )?;
        }
        active.push(run.clone());
        write_json_atomic(&path, &active)?;
        Ok(Registration {
            workdir: workdir.to_owned(),
            run,
            finished: false,
        })
    }

    /// Deregisters and appends the run to `runs.jsonl`.
    pub fn finish(mut self, outcome: Outcome) -> Result<()> {
        self.finished = true;
        self.deregister(outcome)
    }

    fn deregister(&self, outcome: Outcome) -> Result<()> {
        {
            let _mutex = WorkdirMutex::lock(&self.workdir)?;
            let path = standin_path(&self.workdir, ACTIVE_FILE)?;
            let mut active: Vec<ActiveRun> = read_json(&path)?.unwrap_or_default();
            active.retain(|other| other.pid != self.run.pid);
            write_json_atomic(&path, &active)?;
        }
        append_json_line(
            &standin_path(&self.workdir, RUNS_FILE)?,
            &RunRecord {
                operation: self.run.operation.clone(),
                pid: self.run.pid,
                started_at: self.run.started_at.clone(),
                finished_at: now_rfc3339(),
                outcome,
            },
        )
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.deregister(Outcome::Failed);
        }
    }
}

/// The lines of `overlaps.jsonl`; empty when there were none.
pub fn overlaps(workdir: &Path) -> Result<Vec<Overlap>> {
    read_lines(&workdir.join(super::STANDIN_DIR).join(OVERLAPS_FILE))
}

/// The lines of `runs.jsonl`.
pub fn runs(workdir: &Path) -> Result<Vec<RunRecord>> {
    read_lines(&workdir.join(super::STANDIN_DIR).join(RUNS_FILE))
}

fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(super::Error::io(format!("read {}", path.display()), e)),
    };
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).map_err(|source| super::Error::Json {
                path: path.display().to_string(),
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standin::test_support::dead_pid;

    fn active(workdir: &Path) -> Vec<ActiveRun> {
        read_json(&workdir.join(".standin").join(ACTIVE_FILE))
            .unwrap()
            .unwrap_or_default()
    }

    #[test]
    fn a_lone_run_registers_finishes_and_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let registration = Registration::register(dir.path(), "apply").unwrap();
        assert_eq!(active(dir.path()).len(), 1);
        registration.finish(Outcome::Succeeded).unwrap();
        assert!(active(dir.path()).is_empty());
        assert!(overlaps(dir.path()).unwrap().is_empty());
        let runs = runs(dir.path()).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].operation, "apply");
        assert_eq!(runs[0].outcome, Outcome::Succeeded);
        assert!(runs[0].started_at <= runs[0].finished_at);
    }

    #[test]
    fn registering_beside_a_live_process_records_an_overlap() {
        let dir = tempfile::tempdir().unwrap();
        // Our parent (the test harness's launcher) is alive and is not us.
        let other_pid = std::os::unix::process::parent_id() as i32;
        let other = Registration::register_pid(dir.path(), "destroy", other_pid).unwrap();
        let me = Registration::register(dir.path(), "apply").unwrap();
        let overlaps = overlaps(dir.path()).unwrap();
        assert_eq!(overlaps.len(), 1);
        assert_eq!(overlaps[0].run.operation, "apply");
        assert_eq!(overlaps[0].already_active[0].operation, "destroy");
        me.finish(Outcome::Failed).unwrap();
        other.finish(Outcome::Succeeded).unwrap();
    }

    #[test]
    fn entries_of_dead_processes_are_pruned_not_reported() {
        let dir = tempfile::tempdir().unwrap();
        let ghost = Registration::register_pid(dir.path(), "apply", dead_pid()).unwrap();
        std::mem::forget(ghost); // as if SIGKILLed: never deregisters
        let me = Registration::register(dir.path(), "apply").unwrap();
        assert!(overlaps(dir.path()).unwrap().is_empty());
        assert_eq!(active(dir.path()).len(), 1);
        me.finish(Outcome::Succeeded).unwrap();
    }

    #[test]
    fn a_dropped_registration_deregisters_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        drop(Registration::register(dir.path(), "destroy").unwrap());
        assert!(active(dir.path()).is_empty());
        assert_eq!(runs(dir.path()).unwrap()[0].outcome, Outcome::Failed);
    }
}
