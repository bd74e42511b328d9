//! `terraform-standin`: speaks terraform's command-line contract over files in the working
//! directory. See `standins::terraform`.

fn main() -> std::process::ExitCode {
    standins::run_main(standins::terraform::run, standins::process_args())
}
