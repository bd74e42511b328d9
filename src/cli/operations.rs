//! The runbook's operations, admin only: `provisioner env cancel|force-unlock|mark-destroyed|
//! mark-failed ID …` and `provisioner requeue-stuck`. Each prints the API's answer.

use super::output::{self, Format};
use super::verbs::client;
use crate::settings::{ClientArgs, Secrets};
use clap::{Args, Subcommand};
use command_api::client::Client;
use serde_json::Value;

/// The environment verbs of the runbook (flattened into `provisioner env`).
#[derive(Debug, Subcommand)]
pub enum OperationVerb {
    /// Admin: cancel the operation in flight; the environment ends failed, and `retry` resumes
    /// its phase.
    Cancel { id: String },
    /// Admin: let the next run of the step force open Terraform state lock LOCK_ID (the ID
    /// terraform printed under "Lock Info"); a failed environment is retried with it. Refused
    /// while the executor running the step is alive.
    ForceUnlock {
        id: String,
        #[arg(long)]
        lock_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Admin: declare the environment's resources removed by hand: it becomes destroyed and its
    /// name is freed. Refused while an operation is in flight (cancel or mark-failed first).
    MarkDestroyed {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Admin: declare the in-flight or stuck environment failed (e.g. its executor is gone for
    /// good); a late result of its operation is ignored.
    MarkFailed {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

/// `provisioner requeue-stuck`'s arguments.
#[derive(Debug, Args)]
pub struct RequeueArgs {
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(client: &Client, format: Format, verb: OperationVerb) -> anyhow::Result<()> {
    let answer = match verb {
        OperationVerb::Cancel { id } => client.cancel(&id).await?,
        OperationVerb::ForceUnlock {
            id,
            lock_id,
            reason,
        } => {
            client
                .force_unlock(&id, &lock_id, reason.as_deref())
                .await?
        }
        OperationVerb::MarkDestroyed { id, reason } => client.mark_destroyed(&id, &reason).await?,
        OperationVerb::MarkFailed { id, reason } => client.mark_failed(&id, &reason).await?,
    };
    output::emit(format, &answer, output::accepted)?;
    Ok(())
}

/// Admin: start the pending steps the process manager missed and time out the operations past
/// their deadline; prints the environments it touched.
pub async fn requeue_stuck(args: RequeueArgs, secrets: Secrets) -> anyhow::Result<i32> {
    let format = args.client.output;
    let client = client(args.client, &secrets)?;
    output::emit(format, &client.requeue_stuck().await?, requeued)?;
    Ok(0)
}

/// The environments `requeue-stuck` touched, one line per environment and what was done.
fn requeued(answer: &Value) -> String {
    let mut lines = Vec::new();
    for (key, done) in [
        ("started", "pending step started"),
        ("timed_out", "timed out"),
    ] {
        for id in answer[key].as_array().into_iter().flatten() {
            lines.push(format!("{}: {done}", id.as_str().unwrap_or_default()));
        }
    }
    if lines.is_empty() {
        lines.push("nothing was stuck".to_owned());
    }
    lines.join("\n")
}
