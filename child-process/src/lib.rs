//! How every child process of the provisioner starts (terraform, helm, their stand-ins,
//! nats-server, PostgreSQL, Python's pip):
//!
//! - with an explicit, minimal environment: nothing of the provisioner's own (its admin token,
//!   `DATABASE_URL`, credentials) reaches a child unless the caller names it;
//! - with a parent-death signal, so a child dies with the provisioner even when that is killed
//!   with SIGKILL and no shutdown code runs;
//! - killed when its handle is dropped; a tool that runs in a process group of its own
//!   ([`spawn_group`], [`GroupChild`]) is killed as a whole group (its leader and everything it
//!   started) when its handle is dropped before it was waited for: a cancelled future, a panic.
//!
//! The group kill on drop is a small guard here, not a crate: `process-wrap` (9.1), the
//! maintained successor of `command-group`, kills only the leader on drop on Unix (its
//! `KillOnDrop` sets tokio's `kill_on_drop`, and its process-group child has no `Drop`).
//!
//! Linux delivers the parent-death signal when the *thread* that started the child ends. Children
//! are started from tokio's worker threads or the main thread, which live as long as the process;
//! never start one from `spawn_blocking` (those threads end when idle).

use std::ffi::OsStr;
use std::path::Path;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// The variables every child gets from the provisioner's own environment, when they are set:
/// where programs and home are, temporary files, locale and time zone.
pub const BASE_ENV: &[&str] = &["PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "TZ"];

/// What a child that talks to the network may also need: proxies and CA bundles.
pub const NETWORK_ENV: &[&str] = &[
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// A command for `program` with only [`BASE_ENV`] (plus `inherit`) taken from this process's
/// environment, `signal` as its parent-death signal, and kill-on-drop.
pub fn command(program: impl AsRef<OsStr>, signal: Signal, inherit: &[&str]) -> Command {
    command_with_env(program, signal, inherit, |name| std::env::var_os(name))
}

/// [`command`] with the environment read through `lookup`, for tests.
pub fn command_with_env(
    program: impl AsRef<OsStr>,
    signal: Signal,
    inherit: &[&str],
    lookup: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Command {
    let mut command = Command::new(program);
    command.env_clear();
    for name in BASE_ENV.iter().chain(inherit) {
        if let Some(value) = lookup(name) {
            command.env(name, value);
        }
    }
    set_parent_death_signal(&mut command, signal);
    command.kill_on_drop(true);
    command
}

/// Asks `child` to stop with `signal`; kills it if it has not exited within `grace`. Returns
/// once it has exited.
pub async fn stop(child: &mut tokio::process::Child, signal: Signal, grace: std::time::Duration) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(pid, "a child ignored {signal} for {grace:?}; killing it");
    }
    let _ = child.kill().await;
}

/// Spawns `command` as the leader of a new process group (its pid is the group id).
pub fn spawn_group(command: &mut Command) -> std::io::Result<GroupChild> {
    command.process_group(0);
    command.spawn().map(|child| GroupChild { child })
}

/// A child leading its own process group ([`spawn_group`]). It dereferences to the
/// [`tokio::process::Child`]; dropped before tokio reaped the leader (its `wait` never returned:
/// the future waiting for it was cancelled, or a panic unwound), it kills the whole group with
/// SIGKILL, so nothing the tool started outlives it. After a completed `wait` it signals nothing:
/// the leader's pid, which names the group, may then belong to someone else.
#[derive(Debug)]
pub struct GroupChild {
    child: Child,
}

impl GroupChild {
    /// The process group id: the leader's pid, while it has not been reaped.
    pub fn group(&self) -> Option<Pid> {
        self.child.id().map(|pid| Pid::from_raw(pid as i32))
    }

    /// Sends `signal` to every process of the group; false when the leader was already reaped
    /// (or the group is gone).
    pub fn signal_group(&self, signal: Signal) -> bool {
        self.group()
            .is_some_and(|group| killpg(group, signal).is_ok())
    }
}

impl std::ops::Deref for GroupChild {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for GroupChild {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        // Not reaped yet, so the pid (and with it the group id) cannot have been reused: it is
        // held by the running leader or by its zombie. Tokio reaps the leader after this.
        self.signal_group(Signal::SIGKILL);
    }
}

/// The program's path for messages: a bare name is looked up on `PATH`.
pub fn describe(program: &Path) -> String {
    if program.components().count() == 1 {
        format!("{} (on PATH)", program.display())
    } else {
        program.display().to_string()
    }
}

/// Asks the kernel to send `signal` to the child when the thread that started it ends.
#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut Command, signal: Signal) {
    let parent = nix::unistd::getpid();
    let hook = move || -> std::io::Result<()> {
        nix::sys::prctl::set_pdeathsig(signal)?;
        // The parent may have died between fork and prctl: then nobody will send the signal.
        if nix::unistd::getppid() != parent {
            return Err(std::io::Error::other(
                "the parent exited before the child started",
            ));
        }
        Ok(())
    };
    // SAFETY: the hook runs in the forked child before exec, where only async-signal-safe
    // operations are allowed. It makes two system calls (prctl, getppid) and, only on failure,
    // builds an io::Error from an errno or a static message; it takes no locks and touches no
    // state shared with other threads of the parent.
    unsafe {
        command.pre_exec(hook);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    #[tokio::test]
    async fn a_child_sees_only_the_base_variables_and_those_it_inherits() {
        let parent: HashMap<&str, &str> = HashMap::from([
            ("PATH", "/usr/bin:/bin"),
            ("HOME", "/home/p"),
            ("DATABASE_URL", "postgres://app:hunter2@db/provisioner"),
            ("PROVISIONER_ADMIN_TOKEN", "pvt_secret"),
            ("HTTPS_PROXY", "http://proxy:3128"),
        ]);
        let lookup = |name: &str| parent.get(name).map(OsString::from);
        let output = command_with_env("/usr/bin/env", Signal::SIGTERM, NETWORK_ENV, lookup)
            .output()
            .await
            .unwrap();
        let mut seen: Vec<String> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                "HOME=/home/p",
                "HTTPS_PROXY=http://proxy:3128",
                "PATH=/usr/bin:/bin",
            ]
        );
    }

    /// The state letter of a process (`R`, `S`, `Z`, ...), or `None` once it is gone.
    fn process_state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(") ").next()?.chars().next()
    }

    #[test]
    fn a_child_gets_its_signal_when_the_thread_that_started_it_ends() {
        // A thread starts a long sleep (not killed on drop) and ends; the sleep must end too.
        let pid = std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut command = command("sleep", Signal::SIGTERM, &[]);
                command.arg("30").kill_on_drop(false);
                command.spawn().unwrap().id().unwrap()
            })
        })
        .join()
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Ended means gone or a zombie waiting to be reaped.
        while !matches!(process_state(pid), None | Some('Z')) {
            assert!(
                std::time::Instant::now() < deadline,
                "pid {pid} outlived the thread that started it"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
    }

    /// The pids of the processes in process group `group` that have not ended (zombies count
    /// as ended).
    fn live_members(group: i32) -> Vec<i32> {
        let mut members = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // After the command name: state, ppid, pgrp, ...
            let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
            if fields[2] == group.to_string() && fields[0] != "Z" {
                members.push(pid);
            }
        }
        members
    }

    async fn wait_until_gone(group: i32) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let members = live_members(group);
            if members.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "processes {members:?} of group {group} outlived the dropped handle"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A shell that starts a grandchild in the background and then a foreground sleep: both in
    /// the group; returns the handle once both run.
    async fn tool_with_a_grandchild() -> (GroupChild, i32) {
        let mut command = command("sh", Signal::SIGTERM, &[]);
        command.args(["-c", "sleep 600 & sleep 600"]);
        let child = spawn_group(&mut command).unwrap();
        let group = child.group().unwrap().as_raw();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // The shell and its two sleeps.
        while live_members(group).len() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "the tool did not start"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        (child, group)
    }

    #[tokio::test]
    async fn dropping_the_handle_kills_the_whole_group_grandchildren_included() {
        let (child, group) = tool_with_a_grandchild().await;
        drop(child);
        wait_until_gone(group).await;
    }

    #[tokio::test]
    async fn cancelling_the_future_that_waits_kills_the_whole_group() {
        let (group_tx, group_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let (mut child, group) = tool_with_a_grandchild().await;
            group_tx.send(group).unwrap();
            let _ = child.wait().await;
        });
        let group = group_rx.await.unwrap();
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        wait_until_gone(group).await;
    }

    #[tokio::test]
    async fn a_panic_while_the_tool_runs_kills_the_whole_group() {
        let (group_tx, group_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let (_child, group) = tool_with_a_grandchild().await;
            group_tx.send(group).unwrap();
            panic!("the task running the tool fails");
        });
        let group = group_rx.await.unwrap();
        assert!(task.await.unwrap_err().is_panic());
        wait_until_gone(group).await;
    }

    #[tokio::test]
    async fn a_waited_child_signals_nothing_on_drop() {
        let mut command = command("true", Signal::SIGTERM, &[]);
        let mut child = spawn_group(&mut command).unwrap();
        assert!(child.wait().await.unwrap().success());
        assert_eq!(child.group(), None);
        assert!(!child.signal_group(Signal::SIGKILL));
    }

    #[test]
    fn bare_program_names_are_described_as_looked_up_on_path() {
        assert_eq!(describe(Path::new("terraform")), "terraform (on PATH)");
        assert_eq!(describe(Path::new("/usr/bin/helm")), "/usr/bin/helm");
    }
}
