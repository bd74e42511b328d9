//! `provisioner dev` as a child process: the whole stack in one process, with its own private
//! servers under a data directory, as a user runs it.

use crate::processes::binary_dir;
use crate::procfs;
use crate::services;
use command_api::client::Client;
use local_services::nats::free_port;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `provisioner dev`; killed with SIGKILL when dropped.
pub struct DevProcess {
    child: Child,
    pub base_url: String,
    pub data_dir: PathBuf,
    /// Everything it printed on stdout so far.
    stdout: Arc<Mutex<String>>,
}

impl DevProcess {
    /// Starts `provisioner dev` on `data_dir` with only `PATH`, `HOME`, the tests' nats-server and
    /// PostgreSQL binaries (`PROVISIONER_NATS_SERVER`, `PROVISIONER_POSTGRES_BINARIES`), and `env`
    /// (which may override them).
    pub async fn spawn(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        command_api::install_tls_provider();
        let port = free_port().expect("free port");
        let mut command = Command::new(binary_dir().join("provisioner"));
        command
            .arg("dev")
            .env_clear()
            .env("PROVISIONER_DATA_DIR", data_dir)
            .env("PROVISIONER_LISTEN", format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        for name in ["PATH", "HOME"] {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        command
            .env("PROVISIONER_NATS_SERVER", services::nats_binary().await)
            .env(
                "PROVISIONER_POSTGRES_BINARIES",
                services::postgres_bin_dir().await,
            )
            .envs(env.iter().copied());
        if std::env::var_os("TEST_LOG").is_some() {
            command.env("RUST_LOG", "info");
        } else {
            command.stderr(Stdio::null());
        }
        let mut child = command.spawn().expect("start provisioner dev");
        let stdout = Arc::new(Mutex::new(String::new()));
        let pipe = child.stdout.take().expect("stdout is piped");
        let sink = stdout.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_owned(),
            stdout,
        }
    }

    /// [`Self::spawn`], then waits until `/readyz` answers 200 (a first start makes a
    /// PostgreSQL cluster: allow for it).
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut dev = Self::spawn(data_dir, env).await;
        dev.wait_ready(Duration::from_secs(120)).await;
        dev
    }

    /// Waits until `/readyz` answers 200; panics if `dev` exits or `within` passes first.
    pub async fn wait_ready(&mut self, within: Duration) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("provisioner dev exited with {status}: {}", self.stdout());
            }
            let ready = http
                .get(format!("{}/readyz", self.base_url))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("provisioner dev was not ready within {within:?}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("dev runs")
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// An API client with `token`.
    pub fn client(&self, token: &str) -> Client {
        Client::new(self.base_url.clone(), token.to_owned().into())
    }

    /// The running processes below `dev` whose command line contains `needle`.
    pub fn children_matching(&self, needle: &str) -> Vec<u32> {
        procfs::descendants(self.pid())
            .into_iter()
            .filter(|&pid| procfs::cmdline(pid).is_some_and(|c| c.contains(needle)))
            .collect()
    }

    /// Waits (bounded) until a process below `dev` matches `needle`; returns its pid.
    pub async fn wait_for_child(&self, needle: &str, within: Duration) -> u32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(&pid) = self.children_matching(needle).first() {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "no child of dev matching {needle:?} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown code runs, exactly like a crash.
    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }

    /// SIGTERM, as a user's Ctrl-C or a service manager's stop.
    pub fn terminate(&self) {
        signal(self.pid(), Signal::SIGTERM);
    }

    /// Waits for `dev` to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("provisioner dev did not exit within {within:?}"))
            .expect("wait")
    }
}

/// Sends `signal` to `pid`; panics if it cannot be sent.
pub fn signal(pid: u32, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(pid).expect("a pid"));
    nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
}

/// Waits (bounded) until none of `pids` runs; returns those still running at the deadline.
pub async fn wait_gone(pids: &[u32], within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|&pid| procfs::running(pid))
            .collect();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
