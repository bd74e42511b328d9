//! The state lock: `.terraform.tfstate.lock.info` in the workdir, holding terraform's lock info
//! plus the holder's pid. It plays the part of the S3/DynamoDB lock of production: it outlives a
//! killed holder, and then it is stale and must be removed with `force-unlock`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::fsutil::{hostname, now_rfc3339, pid_alive, random_uuid, sibling_tmp};
use super::interrupt::Interrupt;
use super::{Error, Result};

pub const LOCK_FILE: &str = ".terraform.tfstate.lock.info";
/// How often a waiting process looks at the lock again.
pub const POLL: Duration = Duration::from_millis(100);

/// The lock file's contents: terraform's `LockInfo` fields, plus `Pid`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LockInfo {
    #[serde(rename = "ID")]
    pub id: String,
    pub operation: String,
    #[serde(default)]
    pub info: String,
    pub who: String,
    #[serde(default)]
    pub version: String,
    pub created: String,
    #[serde(default)]
    pub path: String,
    pub pid: i32,
}

impl LockInfo {
    fn mine(operation: &str) -> Self {
        let pid = std::process::id() as i32;
        LockInfo {
            id: random_uuid(),
            operation: operation.to_owned(),
            info: String::new(),
            who: format!("{pid}@{}", hostname()),
            version: super::terraform::VERSION.to_owned(),
            created: now_rfc3339(),
            path: super::tfmodel::STATE_FILE.to_owned(),
            pid,
        }
    }

    /// Whether the holder is known to be gone: it ran on this host and its pid is not alive.
    /// A holder on another host cannot be checked and counts as alive.
    pub fn is_stale(&self) -> bool {
        let same_host = self
            .who
            .split_once('@')
            .is_none_or(|(_, host)| host == hostname());
        same_host && !pid_alive(self.pid)
    }
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Held by a live process past the lock timeout.
    Held {
        info: Box<LockInfo>,
        waited: Duration,
    },
    /// Held by a process that is gone; `force-unlock` it.
    Stale {
        info: Box<LockInfo>,
    },
    /// Interrupted while waiting.
    Interrupted,
    Io(Error),
}

/// A held state lock; dropping it releases the lock (if it is still ours).
#[derive(Debug)]
pub struct StateLock {
    path: PathBuf,
    info: LockInfo,
}

impl StateLock {
    /// Takes the lock, waiting up to `timeout` (polling every [`POLL`]) while a live process
    /// holds it. The file is created complete and atomically: written under a temporary name,
    /// then hard-linked to the lock name, which fails if the lock exists.
    pub fn acquire(
        workdir: &Path,
        operation: &str,
        timeout: Duration,
        interrupt: &Interrupt,
    ) -> Result<Self, LockError> {
        let path = workdir.join(LOCK_FILE);
        let started = Instant::now();
        loop {
            if interrupt.is_set() {
                return Err(LockError::Interrupted);
            }
            let info = LockInfo::mine(operation);
            match create_complete(&path, &info) {
                Ok(()) => return Ok(StateLock { path, info }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(LockError::Io(Error::io(format!("create {LOCK_FILE}"), e))),
            }
            // Held; between its creation and a crash, the file is complete, so unreadable
            // content means it was just removed (or is damaged): look again.
            let holder = match read_lock(workdir) {
                Ok(Some(holder)) => Some(holder),
                Ok(None) => continue,
                Err(_) => None,
            };
            if let Some(holder) = &holder
                && holder.is_stale()
            {
                return Err(LockError::Stale {
                    info: Box::new(holder.clone()),
                });
            }
            let waited = started.elapsed();
            if waited >= timeout {
                let info = holder.unwrap_or_else(|| unreadable_lock(operation));
                return Err(LockError::Held {
                    info: Box::new(info),
                    waited,
                });
            }
            if interrupt.sleep(POLL.min(timeout - waited)).is_err() {
                return Err(LockError::Interrupted);
            }
        }
    }

    pub fn info(&self) -> &LockInfo {
        &self.info
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // After a force-unlock someone else may hold the lock now: remove only our own.
        let ours = fs::read_to_string(&self.path)
            .ok()
            .and_then(|text| serde_json::from_str::<LockInfo>(&text).ok())
            .is_some_and(|info| info.id == self.info.id);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn create_complete(path: &Path, info: &LockInfo) -> io::Result<()> {
    let tmp = sibling_tmp(path);
    let text = serde_json::to_string(info).map_err(io::Error::other)?;
    fs::write(&tmp, text)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked
}

fn unreadable_lock(operation: &str) -> LockInfo {
    LockInfo {
        id: "unknown (unreadable lock file)".to_owned(),
        operation: operation.to_owned(),
        info: String::new(),
        who: "unknown".to_owned(),
        version: String::new(),
        created: String::new(),
        path: super::tfmodel::STATE_FILE.to_owned(),
        pid: 0,
    }
}

/// The current lock, if any.
pub fn read_lock(workdir: &Path) -> Result<Option<LockInfo>> {
    super::fsutil::read_json(&workdir.join(LOCK_FILE))
}

/// Why `force-unlock` refused.
#[derive(Debug, thiserror::Error)]
pub enum UnlockError {
    #[error("no lock file {LOCK_FILE}: the state is not locked")]
    NotLocked,
    #[error("lock ID {given:?} does not match existing lock ID {existing:?}")]
    Mismatch { given: String, existing: String },
    #[error(transparent)]
    Other(#[from] Error),
}

/// Removes the lock if its ID is `id`, whoever holds it (as `terraform force-unlock` does).
pub fn force_unlock(workdir: &Path, id: &str) -> Result<LockInfo, UnlockError> {
    let info = read_lock(workdir)?.ok_or(UnlockError::NotLocked)?;
    if info.id != id {
        return Err(UnlockError::Mismatch {
            given: id.to_owned(),
            existing: info.id,
        });
    }
    match fs::remove_file(workdir.join(LOCK_FILE)) {
        Ok(()) => Ok(info),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(UnlockError::NotLocked),
        Err(e) => Err(Error::io(format!("remove {LOCK_FILE}"), e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{dead_pid, interrupt_after};

    const APPLY: &str = "OperationTypeApply";

    fn write_lock(workdir: &Path, pid: i32) -> LockInfo {
        let mut info = LockInfo::mine(APPLY);
        info.pid = pid;
        info.who = format!("{pid}@{}", hostname());
        fs::write(
            workdir.join(LOCK_FILE),
            serde_json::to_string(&info).unwrap(),
        )
        .unwrap();
        info
    }

    #[test]
    fn acquiring_writes_lock_info_and_dropping_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let lock =
            StateLock::acquire(dir.path(), APPLY, Duration::ZERO, &Interrupt::new()).unwrap();
        let on_disk = read_lock(dir.path()).unwrap().unwrap();
        assert_eq!(&on_disk, lock.info());
        assert_eq!(on_disk.pid, std::process::id() as i32);
        assert_eq!(on_disk.operation, APPLY);
        assert!(chrono::DateTime::parse_from_rfc3339(&on_disk.created).is_ok());
        drop(lock);
        assert!(!dir.path().join(LOCK_FILE).exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "no temporary files remain");
    }

    #[test]
    fn a_live_holder_makes_acquire_wait_for_the_timeout_then_fail() {
        let dir = tempfile::tempdir().unwrap();
        let holder = write_lock(dir.path(), std::process::id() as i32);
        let started = Instant::now();
        let err = StateLock::acquire(
            dir.path(),
            APPLY,
            Duration::from_millis(300),
            &Interrupt::new(),
        )
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        match err {
            LockError::Held { info, .. } => assert_eq!(*info, holder),
            other => panic!("expected Held, got {other:?}"),
        }
        assert!(
            dir.path().join(LOCK_FILE).exists(),
            "someone else's lock stays"
        );
    }

    #[test]
    fn a_lock_released_while_waiting_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        write_lock(dir.path(), std::process::id() as i32);
        let path = dir.path().join(LOCK_FILE);
        let remover = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            fs::remove_file(path).unwrap();
        });
        let lock = StateLock::acquire(dir.path(), APPLY, Duration::from_secs(5), &Interrupt::new());
        remover.join().unwrap();
        assert!(lock.is_ok());
    }

    #[test]
    fn a_dead_holder_fails_at_once_as_stale() {
        let dir = tempfile::tempdir().unwrap();
        let holder = write_lock(dir.path(), dead_pid());
        let started = Instant::now();
        let err = StateLock::acquire(
            dir.path(),
            APPLY,
            Duration::from_secs(10),
            &Interrupt::new(),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        match err {
            LockError::Stale { info } => assert_eq!(*info, holder),
            other => panic!("expected Stale, got {other:?}"),
        }
    }

    #[test]
    fn a_holder_on_another_host_is_never_called_stale() {
        let mut info = LockInfo::mine(APPLY);
        info.pid = dead_pid();
        info.who = format!("{}@some-other-host", info.pid);
        assert!(!info.is_stale());
        info.who = format!("{}@{}", info.pid, hostname());
        assert!(info.is_stale());
    }

    #[test]
    fn waiting_stops_when_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        write_lock(dir.path(), std::process::id() as i32);
        let interrupt = interrupt_after(Duration::from_millis(150));
        let started = Instant::now();
        let err =
            StateLock::acquire(dir.path(), APPLY, Duration::from_secs(10), &interrupt).unwrap_err();
        assert!(matches!(err, LockError::Interrupted));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn force_unlock_removes_only_a_matching_lock() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            force_unlock(dir.path(), "x"),
            Err(UnlockError::NotLocked)
        ));
        let holder = write_lock(dir.path(), dead_pid());
        assert!(matches!(
            force_unlock(dir.path(), "not-the-id"),
            Err(UnlockError::Mismatch { .. })
        ));
        assert!(dir.path().join(LOCK_FILE).exists());
        assert_eq!(force_unlock(dir.path(), &holder.id).unwrap(), holder);
        assert!(!dir.path().join(LOCK_FILE).exists());
    }

    #[test]
    fn releasing_after_a_force_unlock_leaves_the_new_holders_lock() {
        let dir = tempfile::tempdir().unwrap();
        let lock =
            StateLock::acquire(dir.path(), APPLY, Duration::ZERO, &Interrupt::new()).unwrap();
        force_unlock(dir.path(), &lock.info().id).unwrap();
        let newcomer = write_lock(dir.path(), std::process::id() as i32);
        drop(lock);
        assert_eq!(read_lock(dir.path()).unwrap(), Some(newcomer));
    }
}
