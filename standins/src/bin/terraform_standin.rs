//! `terraform-standin`: speaks terraform's command-line contract over files in the working
//! directory. See `executors::standin::terraform`.

fn main() -> std::process::ExitCode {
    executors::standin::run_main(
        executors::standin::terraform::run,
        executors::standin::process_args(),
    )
}
