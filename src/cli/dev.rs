//! The process-running subcommands: `serve`, `executor`, `dev`, `demo`, `replay`.

use super::dev_stack::{DevStack, PrivateServers};
use super::say;
use super::verbs::event_line;
use super::{DevCommand, ExecutorCommand, ServeArgs};
use crate::settings::{self, CommonArgs, ExecutorArgs, Secrets};
use crate::telemetry::install_metrics;
use anyhow::Context;
use command_api::app::Application;
use command_api::client::Client;
use command_api::database;
use command_api::settings::{DEFAULT_DATABASE_URL, HttpSettings, Settings};
use domain::wire::Subjects;
use executors::settings::{ExecutorSettings, SandboxTools};
use executors::status::Status;
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The sandbox example the demo walks through when no file is given.
const DEMO_CONFIG: &str = r#"name: NAME
cloud:
  provider: sandbox
  simulate:
    apply_seconds: 1
cluster:
  profile: medium
data:
  postgres: {size: medium, multi_az: true}
  redis: {size: medium, ha: true}
beta9:
  domain: NAME.beta9.example.com
  workers: {gpu_enabled: true}
"#;

/// Cancels the token on Ctrl-C or SIGTERM.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match terminate.as_mut() {
                    Some(signal) => { signal.recv().await; }
                    None => std::future::pending().await,
                }
            } => {}
        }
        tracing::info!("shutting down");
        trigger.cancel();
    });
    token
}

fn require_token(settings: &Settings) -> anyhow::Result<SecretString> {
    settings.admin_token.clone().context(
        "PROVISIONER_ADMIN_TOKEN is not set: `serve` needs the admin bearer token (`dev` generates one)",
    )
}

pub async fn serve(args: ServeArgs, secrets: Secrets) -> anyhow::Result<i32> {
    let settings = settings::api_settings(&args.common, &args.api, &secrets)?;
    let token = require_token(&settings)?;
    let app = Application::build(&settings, token.expose_secret(), install_metrics()?).await?;
    tracing::info!(listen = %app.local_addr(), "serving");
    app.run(shutdown_on_signal()).await?;
    Ok(0)
}

/// The executor's settings, with the sandbox stand-ins built into this binary.
fn executor_settings(
    common: &CommonArgs,
    executor: &ExecutorArgs,
    secrets: &Secrets,
) -> anyhow::Result<ExecutorSettings> {
    let mut settings = settings::executor_settings(common, executor, secrets)?;
    let exe = std::env::current_exe().context("failed to find the provisioner binary")?;
    settings.sandbox_tools = Some(SandboxTools::BuiltIn(exe));
    Ok(settings)
}

/// What `dev` and `demo` run: the API's and the executor's settings, and which private
/// servers to start (those whose URL is not given).
fn dev_settings(
    args: &DevCommand,
    secrets: &Secrets,
) -> anyhow::Result<(Settings, ExecutorSettings, PrivateServers)> {
    let settings = settings::api_settings(&args.common, &args.api, secrets)?;
    let executor = executor_settings(&args.common, &args.executor, secrets)?;
    let private = PrivateServers {
        postgres: secrets
            .database_url
            .is_none()
            .then(|| args.dev.postgres_binaries.clone()),
        nats: args.common.nats_url.is_none(),
        nats_server: args.dev.nats_server.clone(),
    };
    Ok((settings, executor, private))
}

/// How the executor's endpoint serves its scrapes and probes: the API's timeouts, few
/// connections, a short drain.
const EXECUTOR_ENDPOINT_HTTP: HttpSettings = HttpSettings {
    header_timeout: Duration::from_secs(5),
    body_timeout: Duration::from_secs(5),
    idle_timeout: Duration::from_secs(60),
    max_connections: 64,
    drain_timeout: Duration::from_secs(2),
};

/// The executor, with its own endpoint (metrics, health) on `PROVISIONER_EXECUTOR_LISTEN`.
pub async fn executor(args: ExecutorCommand, secrets: Secrets) -> anyhow::Result<i32> {
    let settings = executor_settings(&args.common, &args.executor, &secrets)?;
    let metrics = install_metrics()?;
    let listen = args.executor.executor_listen;
    let listener = command_api::server::bind(listen)
        .with_context(|| format!("failed to bind PROVISIONER_EXECUTOR_LISTEN={listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, "executor endpoint (metrics, health) listening");
    let status = Status::connect(
        metrics,
        &settings.nats_url,
        Subjects::new(settings.subject_prefix.clone()),
    )
    .await
    .context("failed to connect the executor endpoint to nats")?;
    let shutdown = shutdown_on_signal();
    let endpoint_stop = CancellationToken::new();
    let endpoint = tokio::spawn(command_api::server::serve(
        listener,
        executors::status::router(status),
        &EXECUTOR_ENDPOINT_HTTP,
        endpoint_stop.clone(),
    ));
    let result = executors::runner::run(settings, shutdown).await;
    // Answering until the runner has stopped: a scrape sees the last jobs.
    endpoint_stop.cancel();
    if let Err(error) = endpoint.await {
        tracing::warn!(%error, "the executor endpoint stopped");
    }
    result?;
    Ok(0)
}

pub async fn dev(args: DevCommand, secrets: Secrets) -> anyhow::Result<i32> {
    let (settings, executor, private) = dev_settings(&args, &secrets)?;
    let shutdown = shutdown_on_signal();
    let stack = DevStack::start(
        settings,
        executor,
        private,
        install_metrics()?,
        shutdown.clone(),
    )
    .await?;
    say(format!("provisioner dev is running at {}", stack.base_url));
    say(format!("export PROVISIONER_API_URL={}", stack.base_url));
    if stack.token_generated {
        // Shown on purpose: the operator needs the token it generated.
        say(format!(
            "export PROVISIONER_TOKEN={}",
            stack.token.expose_secret()
        ));
    } else {
        say("export PROVISIONER_TOKEN=<the PROVISIONER_ADMIN_TOKEN you set>");
    }
    say("press Ctrl-C to stop");
    shutdown.cancelled().await;
    Ok(if stack.stop().await { 0 } else { 1 })
}

pub async fn demo(
    file: Option<PathBuf>,
    args: DevCommand,
    secrets: Secrets,
) -> anyhow::Result<i32> {
    let (mut settings, executor, private) = dev_settings(&args, &secrets)?;
    settings.listen = "127.0.0.1:0".parse()?;
    let shutdown = shutdown_on_signal();
    let stack = DevStack::start(
        settings,
        executor,
        private,
        install_metrics()?,
        shutdown.clone(),
    )
    .await?;
    let client = Client::new(stack.base_url.clone(), stack.token.clone());
    let result = walk_through(&client, file).await;
    let servers_ok = stack.stop().await;
    match result {
        Ok(code) if servers_ok => Ok(code),
        Ok(_) => Ok(1),
        Err(error) => Err(error),
    }
}

async fn walk_through(client: &Client, file: Option<PathBuf>) -> anyhow::Result<i32> {
    let (document, content_type) = match &file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            let json = path.extension().is_some_and(|e| e == "json");
            (
                text,
                if json {
                    "application/json"
                } else {
                    "application/yaml"
                },
            )
        }
        None => {
            let suffix: u16 = rand::random();
            let name = format!("demo-{suffix:04x}");
            (DEMO_CONFIG.replace("NAME", &name), "application/yaml")
        }
    };
    say("== 1. create a sandbox environment: POST /v1/environments");
    let created = client.create(document, content_type, None).await?;
    say(serde_json::to_string_pretty(&created)?);
    let id = created["id"]
        .as_str()
        .context("no id in the response")?
        .to_owned();

    say("\n== 2. live lifecycle events: GET /v1/environments/{id}/events");
    let mut shown = 0;
    let status = client
        .watch(&id, shown, |envelope, status| {
            shown = envelope.sequence;
            say(event_line(envelope, status));
        })
        .await?;
    say(format!("status: {status}"));
    if status != domain::Status::Ready {
        say("the environment did not become ready; see its history below");
    }

    say("\n== 3. the environment, its conditions and outputs: GET /v1/environments/{id}");
    let view = wait_for_projection(client, &id, status.as_str()).await?;
    say(super::output::environment(&view));

    say("\n== 4. destroy it: DELETE /v1/environments/{id}");
    say(serde_json::to_string_pretty(&client.delete(&id).await?)?);
    let status = client
        .watch(&id, shown, |envelope, status| {
            say(event_line(envelope, status))
        })
        .await?;
    say(format!("status: {status}"));

    say("\n== 5. the audit trail: GET /v1/environments/{id}/history");
    for envelope in client.history(&id).await? {
        say(format!(
            "#{:<3} {:<22} actor={:<24} correlation={} at {}",
            envelope.sequence,
            envelope.event_type,
            envelope.metadata.actor,
            envelope.metadata.correlation_id,
            envelope.recorded_at
        ));
    }
    Ok(if status == domain::Status::Destroyed {
        0
    } else {
        1
    })
}

/// The read model is eventually consistent; wait briefly until it shows `status`.
async fn wait_for_projection(
    client: &Client,
    id: &str,
    status: &str,
) -> anyhow::Result<serde_json::Value> {
    let mut view = client.get(id).await?;
    for _ in 0..50 {
        if view["status"] == status {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        view = client.get(id).await?;
    }
    Ok(view)
}

pub async fn replay(secrets: Secrets) -> anyhow::Result<i32> {
    let database_url = secrets
        .database_url
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
    let pool = database::connect(database_url.expose_secret(), 4).await?;
    event_store::migrate(&pool).await?;
    let report = projections::replay::replay(&pool).await?;
    say(format!(
        "replayed {} events of {} environments into environments_view_replay",
        report.events, report.environments
    ));
    if report.is_consistent() {
        say("read models match the event history");
        Ok(0)
    } else {
        for mismatch in &report.mismatches {
            say(format!("mismatch: {mismatch:?}"));
        }
        say(format!("{} environment(s) differ", report.mismatches.len()));
        Ok(1)
    }
}
