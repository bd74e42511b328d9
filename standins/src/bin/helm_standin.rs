//! `helm-standin`: speaks helm's command-line contract over files in the working directory.
//! See `standins::helm`.

fn main() -> std::process::ExitCode {
    standins::run_main(standins::helm::run, standins::process_args())
}
