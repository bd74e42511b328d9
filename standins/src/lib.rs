//! Stand-ins for the `terraform` and `helm` command-line tools.
//!
//! They speak the subset of each tool's command-line contract that the executors use, keep their
//! state in files in the working directory (the environment's workdir), and support fault
//! injection through `simulate.json`. They are the `sandbox` provider's engine and the test tools;
//! they are never a silent fallback for the real CLIs.
//!
//! No product library links this crate: the `provisioner` binary runs it as the hidden
//! `provisioner standin terraform|helm`, `src/bin/*` builds it as separate binaries for tests,
//! and tests read its files ([`overlap`], [`state_lock`]). The `simulate.json` contract is
//! `domain::spec::Simulation`, at `domain::spec::SIMULATE_FILE` (the executor writes it, the
//! stand-ins read it). `tests/tests/architecture.rs` checks who depends on it.
//!
//! Files in a workdir:
//!
//! | file | owner | what |
//! |---|---|---|
//! | `main.tf.json` | executor | the rendered Terraform configuration (input) |
//! | `simulate.json` | executor | fault injection: `{apply_seconds, fail, fail_times, transient_failures}` (input) |
//! | `.terraform/` | `init` | marks the workdir as initialized |
//! | `.terraform.tfstate.lock.info` | apply/destroy/plan | the state lock ([`state_lock`]) |
//! | `terraform.tfstate` | apply/destroy | Terraform state, format version 4 |
//! | `<FILE>` of `plan -out=FILE` | plan | a saved plan: actions, configuration, prior state ([`planfile`]) |
//! | `.standin/faults.json` | both | how often each step has failed so far ([`faults`]) |
//! | `.standin/runs.jsonl` | both | start and end of every run that locks or changes state (plan too), checked for overlaps ([`overlap`]) |
//! | `.standin/helm-releases.json` | helm | installed releases and namespaces ([`helm`]) |
//! | `.standin/helm-invocations.json` | helm | every run: its arguments, each values file's path, mode and hashed values ([`helm_invocations`]) |

pub mod faults;
pub mod fsutil;
pub mod helm;
pub mod helm_invocations;
pub mod interrupt;
pub mod overlap;
pub mod planfile;
pub mod state_lock;
pub mod terraform;
#[cfg(test)]
pub(crate) mod test_support;
pub mod tfmodel;

use std::fmt::Display;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

pub use interrupt::Interrupt;

/// Folder in the workdir where the stand-ins keep their own bookkeeping.
pub const STANDIN_DIR: &str = ".standin";

/// Errors of the stand-ins. Each tool renders them in its own style (`Error: ...` on stderr) and
/// exits 1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is not one the stand-in understands; usage goes to stderr.
    #[error("{0}")]
    Usage(String),
    /// The operation failed; `summary` is the `Error: ...` line, `detail` the lines after it.
    #[error("{summary}")]
    Failed {
        summary: String,
        detail: Vec<String>,
    },
    /// SIGINT or SIGTERM arrived and the operation stopped early.
    #[error("operation interrupted")]
    Interrupted,
    #[error("failed to {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid JSON in {path}: {source}")]
    Json {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failure with only a summary line.
    pub fn failed(summary: impl Into<String>) -> Self {
        Error::Failed {
            summary: summary.into(),
            detail: Vec::new(),
        }
    }

    /// An I/O error with what was being attempted (`"read terraform.tfstate"`).
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Where a command writes: stdout and stderr in the binaries, buffers in unit tests.
///
/// Write errors (a closed pipe) are ignored: the stand-in's work matters more than its log.
pub struct Console<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
}

impl<'a> Console<'a> {
    pub fn new(out: &'a mut dyn Write, err: &'a mut dyn Write) -> Self {
        Console { out, err }
    }

    /// One line on stdout, flushed so a log streamer sees it at once.
    pub fn out(&mut self, line: impl Display) {
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    /// One line on stderr.
    pub fn err(&mut self, line: impl Display) {
        let _ = writeln!(self.err, "{line}");
        let _ = self.err.flush();
    }
}

/// The command line of a stand-in binary, after the program name.
pub fn process_args() -> Vec<String> {
    std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// A stand-in command: arguments (without the program name), the current directory, the
/// interruption flag and where to write; returns the process exit code.
pub type Tool = fn(&[String], &Path, &Interrupt, &mut Console<'_>) -> u8;

/// The whole `main` of a stand-in: install the SIGINT/SIGTERM handlers first, then run `tool`
/// with `args` (the command line after the program name).
pub fn run_main(tool: Tool, args: Vec<String>) -> ExitCode {
    let interrupt = match Interrupt::install_signal_handlers() {
        Ok(interrupt) => interrupt,
        Err(e) => {
            let _ = writeln!(
                io::stderr(),
                "Error: failed to install signal handlers: {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let (mut out, mut err) = (io::stdout().lock(), io::stderr().lock());
    let mut console = Console::new(&mut out, &mut err);
    ExitCode::from(tool(&args, &cwd, &interrupt, &mut console))
}

/// Parses a Go duration as terraform's `-lock-timeout` and helm's `--timeout` take it:
/// `0`, `500ms`, `60s`, `10m0s`, `1h30m`, `1.5s`.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_like_go() {
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_go_duration("10m0s"), Some(Duration::from_secs(600)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn go_durations_reject_missing_or_unknown_units() {
        for bad in ["", "60", "5x", "s", "1m-2s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
    }
}
