//! `provisioner token create|list|revoke`: the admins' API tokens. `create` prints the token
//! once (it is stored nowhere but as a digest); `list` never shows tokens.

use super::output;
use super::verbs::client;
use crate::settings::{ClientArgs, Secrets};
use clap::{Args, Subcommand};
use serde_json::Value;

/// `provisioner token …`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    verb: TokenVerb,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
enum TokenVerb {
    /// Admin: issue a token of TENANT with ROLE (viewer reads; operator also creates, retries
    /// and destroys the tenant's environments; admin does everything, for every tenant). The
    /// token is printed once: keep it.
    #[command(after_help = "Examples:
  provisioner token create --name ci --tenant acme --role operator --expires-in-days 30
  provisioner token create --name dashboards --tenant acme --role viewer -o json")]
    Create {
        /// What it is for, for people.
        #[arg(long)]
        name: String,
        #[arg(long)]
        tenant: String,
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        /// Days until it expires (1-365; the API's default is 90).
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
    /// Admin: the tokens (of TENANT), revoked and expired ones included; never the tokens.
    #[command(after_help = "Examples:
  provisioner token list
  provisioner token list --tenant acme -o json")]
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Admin: revoke a token; it authenticates nothing from its next request on.
    #[command(after_help = "Examples:
  provisioner token revoke tok_01jd8m3k…")]
    Revoke { id: String },
}

pub async fn run(args: TokenArgs, secrets: Secrets) -> anyhow::Result<i32> {
    let format = args.client.output;
    let client = client(args.client, &secrets)?;
    match args.verb {
        TokenVerb::Create {
            name,
            tenant,
            role,
            expires_in_days,
        } => {
            let created = client
                .create_token(&name, &tenant, &role, expires_in_days)
                .await?;
            output::emit(format, &created, created_token)?;
        }
        TokenVerb::List { tenant } => {
            let tokens = client.list_tokens(tenant.as_deref()).await?;
            output::emit(format, &tokens, output::tokens)?;
        }
        TokenVerb::Revoke { id } => {
            let revoked = client.revoke_token(&id).await?;
            output::emit(format, &revoked, |token| {
                format!("{}: revoked", token["id"].as_str().unwrap_or_default())
            })?;
        }
    }
    Ok(0)
}

/// The new token and what it may do; the token on a line of its own, for copying.
fn created_token(value: &Value) -> String {
    let field = |key: &str| value[key].as_str().unwrap_or_default().to_owned();
    format!(
        "{} ({} of tenant {}, expires {})\n{}\nThe token is shown only now: keep it.",
        field("id"),
        field("role"),
        field("tenant"),
        field("expires_at"),
        field("token"),
    )
}
