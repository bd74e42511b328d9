//! `provisioner env …`: the client verbs.

use super::say;
use crate::settings::{ClientArgs, Secrets};
use clap::{Args, Subcommand};
use command_api::client::Client;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct EnvArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Request an environment from a MetaConfig file (YAML or JSON).
    Create {
        #[arg(short, long)]
        file: PathBuf,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List environments.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Show one environment.
    Get { id: String },
    /// Show an environment's outputs (the non-sensitive ones: endpoints, names, ARNs).
    Outputs { id: String },
    /// Destroy an environment.
    Delete { id: String },
    /// Resume a failed environment from its failed phase.
    Retry { id: String },
    /// Follow an environment's events until its status settles.
    Watch { id: String },
    /// Print an environment's complete audit history.
    History { id: String },
    /// Print executor output (terraform, helm), optionally of one operation, optionally live.
    Logs {
        id: String,
        #[arg(long)]
        operation: Option<String>,
        /// Keep following new output (Ctrl-C to stop).
        #[arg(short, long)]
        follow: bool,
    },
    #[command(flatten)]
    Operation(super::operations::OperationVerb),
}

pub(super) fn print_json(value: &impl serde::Serialize) {
    say(serde_json::to_string_pretty(value).unwrap_or_default());
}

/// One line per event, for humans.
pub fn event_line(envelope: &domain::wire::EventEnvelope, status: domain::Status) -> String {
    let operation = envelope
        .payload
        .get("operation_id")
        .and_then(|v| v.as_str())
        .map(|op| format!(" {op}"))
        .unwrap_or_default();
    let error = envelope
        .payload
        .get("error")
        .and_then(|v| v.as_str())
        .map(|e| format!(" error={e:?}"))
        .unwrap_or_default();
    format!(
        "#{:<3} {:<22} -> {:<14}{operation}{error}",
        envelope.sequence, envelope.event_type, status
    )
}

/// The API's client with the verbs' token.
pub(super) fn client(args: ClientArgs, secrets: &Secrets) -> anyhow::Result<Client> {
    let token = secrets.client_token().ok_or_else(|| {
        anyhow::anyhow!("no token: set PROVISIONER_TOKEN (or PROVISIONER_ADMIN_TOKEN)")
    })?;
    Ok(Client::new(args.api_url, token))
}

/// A MetaConfig file and its content type (JSON when it ends in `.json`, else YAML).
pub(super) fn read_document(file: &Path) -> anyhow::Result<(String, &'static str)> {
    let document = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let content_type = if file.extension().is_some_and(|e| e == "json") {
        "application/json"
    } else {
        "application/yaml"
    };
    Ok((document, content_type))
}

pub async fn run(args: EnvArgs, secrets: Secrets) -> anyhow::Result<i32> {
    let client = client(args.client, &secrets)?;
    match args.verb {
        Verb::Create {
            file,
            idempotency_key,
        } => {
            let (document, content_type) = read_document(&file)?;
            print_json(
                &client
                    .create(document, content_type, idempotency_key.as_deref())
                    .await?,
            );
        }
        Verb::List { status, name } => {
            print_json(&client.list(status.as_deref(), name.as_deref()).await?)
        }
        Verb::Get { id } => print_json(&client.get(&id).await?),
        Verb::Outputs { id } => print_json(&client.outputs(&id).await?),
        Verb::Delete { id } => print_json(&client.delete(&id).await?),
        Verb::Retry { id } => print_json(&client.retry(&id).await?),
        Verb::History { id } => print_json(&client.history(&id).await?),
        Verb::Operation(verb) => super::operations::run(&client, verb).await?,
        Verb::Logs {
            id,
            operation,
            follow,
        } => {
            let print =
                |line: &domain::wire::LogLine| say(format!("{} {}", line.stream, line.line));
            if follow {
                client.follow_logs(&id, operation.as_deref(), print).await?;
            } else {
                client
                    .logs(&id, operation.as_deref())
                    .await?
                    .iter()
                    .for_each(print);
            }
        }
        Verb::Watch { id } => {
            let status = client
                .watch(&id, 0, |envelope, status| say(event_line(envelope, status)))
                .await?;
            return Ok(if status == domain::Status::Failed {
                2
            } else {
                0
            });
        }
    }
    Ok(0)
}
