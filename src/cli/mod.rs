//! The `provisioner` command line: the server processes, `dev` and `demo` (the one-process stack
//! in [`dev_stack`]), the client verbs and the hidden stand-ins. The API's HTTP client they use is
//! `command_api::client`. Every subcommand's settings are groups of [`crate::settings`], which
//! it flattens; the secrets come from [`Secrets::from_env`], read once in [`run`].

mod dev;
mod dev_stack;
mod operations;
pub mod output;
mod plan;
mod tokens;
mod verbs;
mod watch;

use crate::settings::{
    ApiArgs, CLIENT_SECRETS_HELP, CommonArgs, DevArgs, EXECUTOR_SECRETS_HELP, ExecutorArgs,
    LogArgs, SECRETS_HELP, Secrets,
};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "provisioner",
    version,
    about = "Beta9 environments in customer clouds, event-sourced"
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Run the API, relay, process manager and projections.
    #[command(after_help = SECRETS_HELP)]
    Serve(ServeArgs),
    /// Run an executor: consumes jobs, runs terraform and helm, reports results.
    #[command(after_help = EXECUTOR_SECRETS_HELP)]
    Executor(ExecutorCommand),
    /// Run everything in one process for one machine (starts its own nats-server, storing under
    /// PROVISIONER_DATA_DIR, unless NATS_URL is set; prints an admin token unless
    /// PROVISIONER_ADMIN_TOKEN is set).
    #[command(after_help = SECRETS_HELP)]
    Dev(DevCommand),
    /// Walk one sandbox environment through its whole life against a private dev stack:
    /// create, live events, ready with outputs, delete, history.
    #[command(after_help = SECRETS_HELP)]
    Demo {
        /// A MetaConfig file to use instead of the built-in sandbox example.
        #[arg(short, long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        stack: DevCommand,
    },
    /// Rebuild the read models from the event history into fresh tables and compare them with
    /// the live ones; exits 1 when they differ.
    #[command(after_help = SECRETS_HELP)]
    Replay,
    /// Client verbs against a running provisioner.
    #[command(after_help = client_help(ENV_EXAMPLES))]
    Env(verbs::EnvArgs),
    /// Preview a MetaConfig file against a running provisioner, creating nothing: whether it
    /// can be created there, the infrastructure it asks for, its resources by type and a
    /// monthly cost estimate.
    #[command(after_help = client_help(PLAN_EXAMPLES))]
    Plan(plan::PlanArgs),
    /// Admin: start the pending steps the process manager missed and time out the operations
    /// past their deadline that the sweep has not yet; prints the environments it touched.
    #[command(after_help = CLIENT_SECRETS_HELP)]
    RequeueStuck(operations::RequeueArgs),
    /// Admin: API tokens, each with a tenant, a role (viewer, operator, admin) and an expiry.
    #[command(after_help = client_help(TOKEN_EXAMPLES))]
    Token(tokens::TokenArgs),
    /// Print a shell's completion script for `provisioner`.
    #[command(after_help = "Examples:
  provisioner completions bash > ~/.local/share/bash-completion/completions/provisioner
  provisioner completions zsh > \"${fpath[1]}/_provisioner\"
  provisioner completions fish > ~/.config/fish/completions/provisioner.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The sandbox provider's terraform or helm stand-in; the executor runs these. They speak
    /// the real tool's command line over files in the current directory.
    #[command(hide = true, disable_help_flag = true)]
    Standin {
        tool: StandinTool,
        /// The tool's own command line.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

const TOKEN_EXAMPLES: &str = "\
Examples:
  provisioner token create --name ci --tenant acme --role operator --expires-in-days 30
  provisioner token list --tenant acme
  provisioner token revoke tok_01jd8…";

const ENV_EXAMPLES: &str = "\
Examples:
  export PROVISIONER_API_URL=https://provisioner.example.com PROVISIONER_TOKEN=pvt_...
  provisioner env create -f production.yaml
  provisioner env watch env_01jd...
  provisioner env list -o json

Config file (--config, PROVISIONER_CONFIG; default $XDG_CONFIG_HOME/provisioner/config.yaml
or ~/.config/provisioner/config.yaml), chmod 600 when it holds the token:
  api_url: https://provisioner.example.com
  token: pvt_...
A flag beats the environment, which beats the config file.";

const PLAN_EXAMPLES: &str = "\
Examples:
  provisioner plan -f production.yaml
  provisioner plan -f production.yaml -o json | jq .cost.monthly_total";

/// The help after a client command's options: examples, its secrets, the exit codes.
fn client_help(examples: &str) -> String {
    format!(
        "{examples}\n\n{CLIENT_SECRETS_HELP}\n\n{}",
        output::exit_codes_help()
    )
}

/// `serve`'s settings.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `executor`'s settings.
#[derive(Clone, Debug, Args)]
pub struct ExecutorCommand {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub executor: ExecutorArgs,
}

/// The settings of `dev` and `demo`: the API's, the executor's and the private servers'.
#[derive(Clone, Debug, Args)]
pub struct DevCommand {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub executor: ExecutorArgs,
    #[command(flatten)]
    pub dev: DevArgs,
}

/// The tools the sandbox provider runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StandinTool {
    Terraform,
    Helm,
}

impl StandinTool {
    /// The stand-in's entry point.
    pub fn entry(self) -> standins::Tool {
        match self {
            StandinTool::Terraform => standins::terraform::run,
            StandinTool::Helm => standins::helm::run,
        }
    }
}

/// Prints one line of a verb's output on stdout (logs go to stderr). When the reader has gone
/// (`provisioner env list | head -1`), the process ends quietly, as `cat` and `grep` do.
pub(crate) fn say(line: impl AsRef<str>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = writeln!(stdout, "{}", line.as_ref()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        tracing::warn!(%error, "cannot write to stdout");
    }
}

/// Runs the parsed command; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let secrets = Secrets::from_env();
    match cli.command {
        Commands::Serve(args) => dev::serve(args, secrets).await,
        Commands::Executor(args) => dev::executor(args, secrets).await,
        Commands::Dev(args) => dev::dev(args, secrets).await,
        Commands::Demo { file, stack } => dev::demo(file, stack, secrets).await,
        Commands::Replay => dev::replay(secrets).await,
        Commands::Env(args) => verbs::run(args, secrets).await,
        Commands::Plan(args) => plan::run(args, secrets).await,
        Commands::RequeueStuck(args) => operations::requeue_stuck(args, secrets).await,
        Commands::Token(args) => tokens::run(args, secrets).await,
        Commands::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "provisioner", &mut std::io::stdout());
            Ok(0)
        }
        Commands::Standin { .. } => {
            anyhow::bail!("the stand-ins run before the async runtime starts (see main)")
        }
    }
}
