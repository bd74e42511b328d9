//! Small file helpers shared by the stand-ins: JSON files written atomically, JSON-lines logs, a
//! workdir-wide mutex, process liveness, ids and hashes.

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{SecondsFormat, Utc};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Error, Result, STANDIN_DIR};

/// Reads and parses a JSON file; `None` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| Error::Json {
            path: path.display().to_string(),
            source,
        })
}

/// Writes `value` as pretty JSON through a temporary file and a rename, so readers never see a
/// half-written file.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.display().to_string(),
        source,
    })?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Writes `bytes` to `path` through a temporary sibling and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = sibling_tmp(path);
    let context = || format!("write {}", path.display());
    let mut file = File::create(&tmp).map_err(|e| Error::io(context(), e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(context(), e))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(context(), e)
    })
}

/// A unique temporary name beside `path` (same filesystem, so a rename is atomic).
pub fn sibling_tmp(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(
        || "standin".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        random_hex(8)
    ))
}

/// Appends one JSON line with a single `write` on an `O_APPEND` file, so concurrent writers'
/// lines do not interleave.
pub fn append_json_line<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut line = serde_json::to_string(value).map_err(|source| Error::Json {
        path: path.display().to_string(),
        source,
    })?;
    line.push('\n');
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| Error::io(format!("append to {}", path.display()), e))
}

/// `<workdir>/.standin/<name>`, creating `.standin/`.
pub fn standin_path(workdir: &Path, name: &str) -> Result<PathBuf> {
    let dir = workdir.join(STANDIN_DIR);
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    Ok(dir.join(name))
}

/// An exclusive lock over the stand-ins' bookkeeping files in one workdir (`.standin/mutex`),
/// held for the few milliseconds of a read-modify-write. It is an OS file lock, so it dies with
/// its process and is never stale. Released on drop.
pub struct WorkdirMutex {
    _file: File,
}

impl WorkdirMutex {
    pub fn lock(workdir: &Path) -> Result<Self> {
        let path = standin_path(workdir, "mutex")?;
        let context = || format!("lock {}", path.display());
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(context(), e))?;
        file.lock().map_err(|e| Error::io(context(), e))?;
        Ok(WorkdirMutex { _file: file })
    }
}

/// Whether a process with this pid exists on this machine and is not a zombie.
///
/// `kill(pid, 0)` answers for existence (EPERM means it exists but is not ours); a zombie (dead
/// but not yet reaped by its parent) also answers, so `/proc` is consulted for that.
pub fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => !is_zombie(pid),
        Err(_) => false,
    }
}

fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state letter follows the command name, which is in parentheses and may contain spaces.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}

/// This machine's host name, as it appears in a lock's `Who`.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Now, RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// FNV-1a, 64 bit: a stable hash (unlike `DefaultHasher`, guaranteed the same on every build),
/// used for the deterministic fake ids.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `len` random lowercase hex digits (at most 16), from the standard library's per-process random
/// hash keys mixed with a counter, the pid and the time.
pub fn random_hex(len: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    hasher.write_i64(Utc::now().timestamp_nanos_opt().unwrap_or_default());
    let hex = format!("{:016x}", hasher.finish());
    hex[..len.min(16)].to_owned()
}

/// A random id shaped like a UUID, as terraform's lock ids are.
pub fn random_uuid() -> String {
    let (a, b) = (random_hex(16), random_hex(16));
    format!(
        "{}-{}-{}-{}-{}",
        &a[..8],
        &a[8..12],
        &a[12..16],
        &b[..4],
        &b[4..16]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::dead_pid;

    #[test]
    fn fnv_hash_is_stable_across_builds() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn random_ids_differ_and_look_like_uuids() {
        let (a, b) = (random_uuid(), random_uuid());
        assert_ne!(a, b);
        let lengths: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(lengths, [8, 4, 4, 4, 12]);
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    }

    #[test]
    fn own_process_is_alive_and_a_reaped_child_is_not() {
        assert!(pid_alive(std::process::id() as i32));
        assert!(!pid_alive(dead_pid()));
        assert!(!pid_alive(0));
        assert!(!pid_alive(-1));
    }

    #[test]
    fn an_unreaped_child_counts_as_dead() {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Not waited for: a zombie until the test process exits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while pid_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!pid_alive(pid));
        drop(child);
    }

    #[test]
    fn atomic_json_round_trips_and_missing_files_read_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.json");
        assert_eq!(read_json::<serde_json::Value>(&path).unwrap(), None);
        write_json_atomic(&path, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(
            read_json::<serde_json::Value>(&path).unwrap(),
            Some(serde_json::json!({"a": 1}))
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn json_lines_append_one_per_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("log.jsonl");
        append_json_line(&path, &serde_json::json!({"n": 1})).unwrap();
        append_json_line(&path, &serde_json::json!({"n": 2})).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"n\":1}\n{\"n\":2}\n");
    }
}
