//! `provisioner env …`: the client verbs.

use super::{output, say, watch};
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
    #[command(after_help = "Examples:
  provisioner env create -f production.yaml
  provisioner env create -f production.yaml --idempotency-key deploy-42 -o json")]
    Create {
        #[arg(short, long)]
        file: PathBuf,
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List environments.
    #[command(after_help = "Examples:
  provisioner env list
  provisioner env list --status failed
  provisioner env list --name production -o json | jq -r '.items[].id'")]
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        name: Option<String>,
    },
    /// Show one environment: its status, operation, error, conditions and outputs.
    #[command(after_help = "Examples:
  provisioner env get env_01jd...
  provisioner env get env_01jd... -o yaml")]
    Get { id: String },
    /// Show an environment's outputs (the non-sensitive ones: endpoints, names, ARNs).
    #[command(after_help = "Examples:
  provisioner env outputs env_01jd...
  provisioner env outputs env_01jd... -o json | jq -r .outputs.endpoint")]
    Outputs { id: String },
    /// Destroy an environment.
    #[command(after_help = "Examples:
  provisioner env delete env_01jd... && provisioner env watch env_01jd...")]
    Delete { id: String },
    /// Resume a failed environment from its failed phase.
    #[command(after_help = "Examples:
  provisioner env retry env_01jd... && provisioner env watch env_01jd...")]
    Retry { id: String },
    /// Follow an environment until it is ready, failed or destroyed.
    ///
    /// On a terminal, a live view: the phases with their elapsed times, the current step and
    /// its last lines of output, the conditions, then the outputs or the error. Else (or with
    /// --plain) one line per event; with -o json or -o yaml, each event in that format. Exits
    /// 0 when it ends ready or destroyed, 7 when it fails, 6 when --timeout passes first.
    #[command(after_help = "Examples:
  provisioner env watch env_01jd...
  provisioner env watch env_01jd... --plain --timeout 3600 || provisioner env logs env_01jd...")]
    Watch(watch::WatchArgs),
    /// Print an environment's complete audit history.
    #[command(after_help = "Examples:
  provisioner env history env_01jd...
  provisioner env history env_01jd... -o json | jq '.[] | select(.type | endswith(\"Failed\"))'")]
    History { id: String },
    /// Print executor output (terraform, helm), optionally of one operation, optionally live.
    #[command(after_help = "Examples:
  provisioner env logs env_01jd...
  provisioner env logs env_01jd... --operation op_01jd... -f")]
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
    let settings = args.settings(secrets)?;
    let token = settings.token.ok_or_else(|| {
        anyhow::anyhow!(
            "no token: set PROVISIONER_TOKEN (or PROVISIONER_ADMIN_TOKEN), or `token:` in the \
             config file"
        )
    })?;
    Ok(Client::new(settings.api_url, token))
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
    let format = args.client.output;
    let client = client(args.client, &secrets)?;
    match args.verb {
        Verb::Create {
            file,
            idempotency_key,
        } => {
            let (document, content_type) = read_document(&file)?;
            let created = client
                .create(document, content_type, idempotency_key.as_deref())
                .await?;
            output::emit(format, &created, output::accepted)?;
        }
        Verb::List { status, name } => {
            let list = client.list(status.as_deref(), name.as_deref()).await?;
            output::emit(format, &list, output::list)?;
        }
        Verb::Get { id } => output::emit(format, &client.get(&id).await?, output::environment)?,
        Verb::Outputs { id } => output::emit(format, &client.outputs(&id).await?, output::outputs)?,
        Verb::Delete { id } => output::emit(format, &client.delete(&id).await?, output::accepted)?,
        Verb::Retry { id } => output::emit(format, &client.retry(&id).await?, output::accepted)?,
        Verb::History { id } => {
            let history = serde_json::to_value(client.history(&id).await?)?;
            output::emit(format, &history, output::history)?;
        }
        Verb::Operation(verb) => super::operations::run(&client, format, verb).await?,
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
        Verb::Watch(args) => return Ok(watch::run(&client, args, format).await?.code()),
    }
    Ok(0)
}
