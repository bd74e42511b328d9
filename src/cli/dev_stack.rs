//! The whole provisioner in one process, for `dev` and `demo`: the API (with relay, process
//! manager and projection) and an executor, on a private PostgreSQL unless `DATABASE_URL` is set
//! and a private nats-server unless `NATS_URL` is set.
//!
//! The data directory (`PROVISIONER_DATA_DIR`) holds the workdirs, the nats store, the
//! PostgreSQL cluster, the PyPI installs and the secrets key (unless `PROVISIONER_SECRETS_KEY`
//! is set); one process at a time may use it. The private
//! servers are supervised: one that dies is started again on the same port and store; one
//! that cannot be started again stops the whole stack, which then exits non-zero.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context;
use domain::sealed::SealingKey;
use executors::settings::ExecutorSettings;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use command_api::app::Application;
use command_api::settings::Settings;
use local_services::postgres::{BinarySource, LocalPostgres};
use local_services::pypi::PypiTools;
use local_services::{DataDirLock, nats::LocalNats};
use metrics_exporter_prometheus::PrometheusHandle;
use secrecy::{ExposeSecret, SecretString};

/// How often a dead private server is started again before the stack gives up.
const RESTART_ATTEMPTS: u32 = 3;
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// Which private servers the stack starts: those whose URL was not given.
#[derive(Clone, Debug)]
pub struct PrivateServers {
    /// A private PostgreSQL from these binaries (`PROVISIONER_POSTGRES_BINARIES`), unless
    /// `DATABASE_URL` is set.
    pub postgres: Option<BinarySource>,
    /// A private nats-server, unless `NATS_URL` is set.
    pub nats: bool,
    /// `PROVISIONER_NATS_SERVER`: the private nats-server's binary.
    pub nats_server: Option<PathBuf>,
}

/// A running dev stack.
pub struct DevStack {
    pub base_url: String,
    pub token: SecretString,
    /// Whether the token was generated here (and so must be shown) rather than given.
    pub token_generated: bool,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// Stops the private servers, after the API and executor are done with them.
    servers_stop: CancellationToken,
    servers: TaskTracker,
    /// Cancelled when a private server died and could not be started again.
    server_lost: CancellationToken,
    _lock: DataDirLock,
}

impl DevStack {
    pub async fn start(
        mut settings: Settings,
        mut executor: ExecutorSettings,
        private: PrivateServers,
        metrics: PrometheusHandle,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let data_dir = executor.data_dir.clone();
        let lock = DataDirLock::acquire(&data_dir)?;
        let tools = PypiTools::new(&data_dir);
        let servers_stop = CancellationToken::new();
        let servers = TaskTracker::new();
        let server_lost = CancellationToken::new();
        let supervise_server = |server| {
            servers.spawn(supervise(
                server,
                servers_stop.clone(),
                shutdown.clone(),
                server_lost.clone(),
            ))
        };
        if let Some(source) = &private.postgres {
            let postgres = LocalPostgres::start(&data_dir, source, &tools)
                .await
                .context("failed to start the private postgresql (or set DATABASE_URL)")?;
            settings.database_url = postgres.database_url().into();
            supervise_server(Server::Postgres(postgres));
        }
        if private.nats {
            // Kept beside the executor's workdirs, so the events stream outlives a restart just
            // as the database does.
            let store = data_dir.join("nats");
            std::fs::create_dir_all(&store)
                .with_context(|| format!("failed to create {}", store.display()))?;
            let nats = LocalNats::start_or_install(&store, &tools, private.nats_server.as_deref())
                .await
                .context("failed to start the private nats-server (or set NATS_URL)")?;
            settings.nats_url = nats.url();
            supervise_server(Server::Nats(nats));
        }
        servers.close();
        if settings.secrets_key.is_none() || executor.secrets_key.is_none() {
            let key = data_dir_secrets_key(&data_dir)?;
            settings.secrets_key.get_or_insert_with(|| key.clone());
            executor.secrets_key.get_or_insert(key);
        }
        let (token, token_generated) = match settings.admin_token.clone() {
            Some(token) => (token, false),
            None => (generate_token(), true),
        };
        // One recorder: the API's /metrics shows the executor's metrics too.
        let app = Application::build(&settings, token.expose_secret(), metrics).await?;
        let base_url = format!("http://{}", app.local_addr());
        executor.nats_url = settings.nats_url.clone();
        executor.subject_prefix = settings.subject_prefix.clone();
        let tasks = TaskTracker::new();
        {
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                if let Err(error) = app.run(shutdown.clone()).await {
                    tracing::error!("api stopped: {error:#}");
                    shutdown.cancel();
                }
            });
        }
        {
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                if let Err(error) = executors::runner::run(executor, shutdown.clone()).await {
                    tracing::error!("executor stopped: {error:#}");
                    shutdown.cancel();
                }
            });
        }
        tasks.close();
        Ok(Self {
            base_url,
            token,
            token_generated,
            shutdown,
            tasks,
            servers_stop,
            servers,
            server_lost,
            _lock: lock,
        })
    }

    /// Stops the API and executor, then the private servers. Returns `false` when a private
    /// server was lost on the way (the stack stopped because of it).
    pub async fn stop(self) -> bool {
        self.shutdown.cancel();
        tracing::info!("stopping the api and the executor");
        self.tasks.wait().await;
        tracing::info!("stopping the private servers");
        self.servers_stop.cancel();
        self.servers.wait().await;
        !self.server_lost.is_cancelled()
    }
}

fn generate_token() -> SecretString {
    use rand::Rng;
    let bytes: [u8; 24] = rand::rng().random();
    format!(
        "pvt_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
    .into()
}

/// A private server of the stack.
enum Server {
    Nats(LocalNats),
    Postgres(LocalPostgres),
}

impl Server {
    fn name(&self) -> &'static str {
        match self {
            Server::Nats(_) => "nats-server",
            Server::Postgres(_) => "postgresql",
        }
    }

    async fn exited(&mut self) -> io::Result<ExitStatus> {
        match self {
            Server::Nats(nats) => nats.exited().await,
            Server::Postgres(postgres) => postgres.exited().await,
        }
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        match self {
            Server::Nats(nats) => nats.restart().await?,
            Server::Postgres(postgres) => postgres.restart().await?,
        }
        Ok(())
    }

    async fn stop(self) {
        match self {
            Server::Nats(nats) => nats.stop().await,
            Server::Postgres(postgres) => postgres.stop().await,
        }
    }
}

/// Keeps `server` running until `stop`: starts it again on the same port and store when it
/// dies; when it cannot, cancels `lost` and `shutdown`, so the whole stack stops.
async fn supervise(
    mut server: Server,
    stop: CancellationToken,
    shutdown: CancellationToken,
    lost: CancellationToken,
) {
    loop {
        let status = tokio::select! {
            () = stop.cancelled() => break,
            status = server.exited() => status,
        };
        let name = server.name();
        tracing::error!(
            server = name,
            ?status,
            "the private {name} died; starting it again"
        );
        let mut restarted = false;
        for attempt in 1..=RESTART_ATTEMPTS {
            match server.restart().await {
                Ok(()) => {
                    tracing::info!(server = name, attempt, "the private {name} runs again");
                    restarted = true;
                    break;
                }
                Err(error) => {
                    tracing::warn!(server = name, attempt, "failed to restart: {error:#}");
                    tokio::time::sleep(RESTART_BACKOFF).await;
                }
            }
        }
        if !restarted {
            tracing::error!(
                server = name,
                "the private {name} could not be started again; stopping"
            );
            lost.cancel();
            shutdown.cancel();
            stop.cancelled().await;
            break;
        }
    }
    server.stop().await;
}

/// The file, in a `dev` data directory, of its secrets key (when `PROVISIONER_SECRETS_KEY` is
/// unset): 32 random bytes, owner-only, made on first start and kept, so the external ids sealed
/// with it open after a restart.
pub const SECRETS_KEY_FILE: &str = "secrets.key";

/// `data_dir`'s secrets key, made on first use.
fn data_dir_secrets_key(data_dir: &std::path::Path) -> anyhow::Result<SealingKey> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = data_dir.join(SECRETS_KEY_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("failed to create {}", data_dir.display()))?;
            let key: [u8; domain::sealed::KEY_LEN] = rand::random();
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut file| file.write_all(&key))
                .with_context(|| format!("failed to write {}", path.display()))?;
            key.to_vec()
        }
        Err(error) => {
            return Err(error).with_context(|| format!("failed to read {}", path.display()));
        }
    };
    SealingKey::from_bytes(&bytes)
        .with_context(|| format!("{} is not a secrets key", path.display()))
}
