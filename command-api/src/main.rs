//! `provisioner`: one binary for the servers, the executor and the client verbs.

use clap::Parser;
use command_api::cli::{Cli, Commands, run};
use command_api::telemetry::init_tracing;

#[tokio::main]
async fn main() {
    command_api::install_tls_provider();
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Commands::Env(_) | Commands::Demo { .. } => "warn",
        _ => "info,sqlx=warn",
    };
    init_tracing(default_filter);
    let code = match run(cli).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            1
        }
    };
    std::process::exit(code);
}
