//! `provisioner`: one binary for the servers, the executor, the sandbox stand-ins and the client
//! verbs; the workspace's composition root. It wires the libraries together ([`cli`]: the
//! subcommands, `dev`'s one-process stack, the verbs; [`settings`]: the one typed settings tree,
//! the only reader of the process environment; [`telemetry`]) and is the only package
//! that links both the command side (`command-api`) and the executors, and the stand-ins.

mod cli;
mod settings;
mod telemetry;

use cli::{Commands, run};
use std::process::ExitCode;
use telemetry::init_tracing;

/// The provisioner's allocator. glibc's malloc kept the memory of closed connections (about
/// 30 KB each) for good: its main arena cannot give back freed memory below live allocations.
/// jemalloc returns freed pages to the system, and its background threads do so while the
/// process is idle.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = settings::parse();
    // The sandbox provider's terraform and helm: synchronous tools with their own signal
    // handling, so they run before (and without) an async runtime.
    if let Commands::Standin { tool, args } = cli.command {
        return standins::run_main(tool.entry(), args);
    }
    command_api::install_tls_provider();
    let default_filter = match cli.command {
        Commands::Env(_)
        | Commands::Plan(_)
        | Commands::Demo { .. }
        | Commands::Completions { .. } => "warn",
        _ => "info,sqlx=warn",
    };
    init_tracing(default_filter, &cli.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{}", cli::output::describe(&error));
            cli::output::Exit::of(&error).code()
        }
    };
    // Exit now, as before: background tasks of the runtime must not hold the process.
    std::process::exit(code);
}
