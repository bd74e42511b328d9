//! The `provisioner` binary as a child process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::process::{Child, Command};

/// Where cargo put the workspace's binaries (`target/debug`), found from this test executable
/// (`target/debug/deps/<test>`).
pub fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir")
        .to_path_buf();
    let binary = dir.join("provisioner");
    assert!(
        binary.is_file(),
        "{} is missing: the system tests are integration tests of the root `provisioner` \
         package; run them with `cargo test` (which builds the binary), not from the \
         system-tests crate",
        binary.display()
    );
    dir
}

/// One running `provisioner <subcommand>`; killed with SIGKILL when dropped.
pub struct ProviderProcess {
    child: Child,
    subcommand: &'static str,
    env: BTreeMap<String, String>,
    log: Option<PathBuf>,
}

impl ProviderProcess {
    pub fn spawn(subcommand: &'static str, env: BTreeMap<String, String>) -> Self {
        Self::spawn_logging(subcommand, env, None)
    }

    /// Like [`Self::spawn`]; with `log`, the process's stdout and stderr (its log lines) are
    /// appended to that file (whether or not `TEST_LOG` is set).
    pub fn spawn_logging(
        subcommand: &'static str,
        env: BTreeMap<String, String>,
        log: Option<PathBuf>,
    ) -> Self {
        let mut command = Command::new(binary_dir().join("provisioner"));
        command
            .arg(subcommand)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&env)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(path) = &log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            let stderr = file.try_clone().expect("clone the log file");
            command.stdout(file).stderr(stderr);
        } else if std::env::var("TEST_LOG").is_ok() {
            command.env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        } else {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("failed to start provisioner {subcommand}: {e}"));
        Self {
            child,
            subcommand,
            env,
            log,
        }
    }

    /// SIGKILL: no shutdown code runs, exactly like a crash.
    pub async fn kill9(&mut self) {
        self.child.start_kill().expect("kill");
        let _ = self.child.wait().await;
    }

    /// Starts the same subcommand again with the same settings plus `extra`/minus `remove`.
    pub fn respawn(&self, extra: &[(&str, &str)], remove: &[&str]) -> Self {
        let mut env = self.env.clone();
        for key in remove {
            env.remove(*key);
        }
        for (key, value) in extra {
            env.insert((*key).to_owned(), (*value).to_owned());
        }
        Self::spawn_logging(self.subcommand, env, self.log.clone())
    }

    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }
}
