//! `helm-standin`: speaks helm's command-line contract over files in the working directory.
//! See `executors::standin::helm`.

fn main() -> std::process::ExitCode {
    executors::standin::run_main(
        executors::standin::helm::run,
        executors::standin::process_args(),
    )
}
