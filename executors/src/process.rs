//! Runs one CLI (`terraform`, `helm`, or their stand-ins) as a child process.
//!
//! The child gets its own process group, so cancellation reaches everything it started
//! (terraform's provider plugins): SIGINT to the group first, the way a user's Ctrl-C lets
//! terraform release its state lock and save state, then SIGKILL to the group if it has not
//! exited within the grace period. When the executor task is dropped instead (a cancelled
//! future, a panic), the handle ([`child_process::GroupChild`]) kills the whole group.
//!
//! Children start as [`child_process`] says: a minimal, explicit environment and a
//! parent-death signal (SIGTERM: terraform then stops the way it does on Ctrl-C).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use child_process::GroupChild;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio_util::sync::CancellationToken;

use crate::logs::LogSink;
use crate::metrics::{ToolResult, record_tool_run};

/// How many trailing lines of output are kept (for diagnostics such as terraform's lock info):
/// enough for several of terraform's diagnostics, whose first `Error:` lines make the message.
pub const TAIL_LINES: usize = 200;
/// How many of those make an error message.
pub const MESSAGE_LINES: usize = 20;

/// How long the output readers may run on after the child exited (a grandchild that inherited
/// the pipes and lives on must not hold the step).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What to do with the child's standard output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stdout {
    /// Each line goes to the log sink as `<tool>:stdout`.
    Log,
    /// Kept in [`Finished::stdout`] and never logged: for machine-readable output that may hold
    /// sensitive values (`terraform output -json`).
    Capture,
}

/// A tool's executable: its path (or a name looked up on `PATH`), the arguments that come
/// before the tool's own (`standin terraform` for the stand-ins built into `provisioner`), the
/// variables it may take from the executor's environment beyond [`child_process::BASE_ENV`],
/// and what to tell the operator when it is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    pub path: PathBuf,
    pub leading_args: Vec<OsString>,
    pub inherit: Vec<&'static str>,
    pub install_hint: String,
}

impl Program {
    /// A program run as it is, inheriting nothing beyond the base environment.
    pub fn new(path: impl Into<PathBuf>, install_hint: impl Into<String>) -> Self {
        Program {
            path: path.into(),
            leading_args: Vec::new(),
            inherit: Vec::new(),
            install_hint: install_hint.into(),
        }
    }

    pub fn leading_args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.leading_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Adds `names` to what the program takes from the executor's environment.
    pub fn inherit(mut self, names: &[&'static str]) -> Self {
        self.inherit.extend_from_slice(names);
        self
    }
}

/// One command line to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The tool's short name, used to label its log lines (`terraform`, `helm`).
    pub tool: &'static str,
    pub program: PathBuf,
    /// Everything after the program: the program's leading arguments, then the tool's own.
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    /// Variables taken from the executor's environment (see [`Program::inherit`]).
    pub inherit: Vec<&'static str>,
    /// Variables set explicitly.
    pub env: Vec<(OsString, OsString)>,
    pub stdout: Stdout,
    /// Said when the program does not exist.
    pub install_hint: String,
}

impl Invocation {
    pub fn new(tool: &'static str, program: &Program, cwd: &Path) -> Self {
        Invocation {
            tool,
            program: program.path.clone(),
            args: program.leading_args.clone(),
            cwd: cwd.to_owned(),
            inherit: program.inherit.clone(),
            env: Vec::new(),
            stdout: Stdout::Log,
            install_hint: program.install_hint.clone(),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn capture_stdout(mut self) -> Self {
        self.stdout = Stdout::Capture;
        self
    }

    /// The arguments as strings, for logs and tests.
    pub fn arg_strings(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }
}

/// A process that ran to its end (successfully or not).
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Everything on stdout when [`Stdout::Capture`] was asked for; empty otherwise.
    pub stdout: String,
    /// The last [`TAIL_LINES`] lines of stderr.
    pub stderr_tail: Vec<String>,
    /// The last [`TAIL_LINES`] lines of stdout (logged mode only).
    pub stdout_tail: Vec<String>,
}

impl Finished {
    /// The last [`MESSAGE_LINES`] lines of stderr (or of stdout, when stderr was empty),
    /// trimmed, as one message.
    pub fn error_message(&self) -> String {
        let tail = if self.stderr_tail.iter().any(|l| !l.trim().is_empty()) {
            &self.stderr_tail
        } else {
            &self.stdout_tail
        };
        let lines: Vec<&str> = tail.iter().map(|l| l.trim_end()).collect();
        let lines = trim_blank_lines(&lines);
        let message = lines[lines.len().saturating_sub(MESSAGE_LINES)..].join("\n");
        if message.is_empty() {
            format!("exited with {}", self.status)
        } else {
            message
        }
    }

    /// The whole stderr tail as one string, for pattern checks.
    pub fn stderr_text(&self) -> String {
        self.stderr_tail.join("\n")
    }
}

fn trim_blank_lines<'a, 'b>(lines: &'b [&'a str]) -> &'b [&'a str] {
    let start = lines
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(lines.len());
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(start, |i| i + 1);
    &lines[start..end]
}

/// Why a process did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program does not exist (or is not executable) at the given path.
    #[error(
        "{tool} not found at {}: {install_hint}",
        child_process::describe(program)
    )]
    NotFound {
        tool: &'static str,
        program: PathBuf,
        install_hint: String,
    },
    /// The token was cancelled; the process group was interrupted (and killed if it lingered).
    #[error("cancelled")]
    Cancelled,
    #[error("failed to run {}: {source}", program.display())]
    Io {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Runs `invocation` to its end, streaming its output to `logs`, unless `cancel` fires first.
/// Each run is counted (`executor_tool_runs_total`) by its tool and how it ended: its exit
/// status, a cancellation (also when the run is dropped unfinished: a time-out), or an error.
pub async fn run(
    invocation: &Invocation,
    logs: &LogSink,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<Finished, ProcessError> {
    let mut counted = CountedRun {
        tool: invocation.tool,
        result: ToolResult::Cancelled,
    };
    let result = run_to_end(invocation, logs, cancel, grace).await;
    counted.result = match &result {
        Ok(finished) if finished.status.success() => ToolResult::Succeeded,
        Ok(_) => ToolResult::Failed,
        Err(ProcessError::Cancelled) => ToolResult::Cancelled,
        Err(ProcessError::NotFound { .. } | ProcessError::Io { .. }) => ToolResult::Error,
    };
    result
}

/// Counts one tool run when dropped, as cancelled unless it got further.
struct CountedRun {
    tool: &'static str,
    result: ToolResult,
}

impl Drop for CountedRun {
    fn drop(&mut self) {
        record_tool_run(self.tool, self.result);
    }
}

async fn run_to_end(
    invocation: &Invocation,
    logs: &LogSink,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<Finished, ProcessError> {
    if cancel.is_cancelled() {
        return Err(ProcessError::Cancelled);
    }
    let mut child = spawn(invocation)?;
    let stdout = child.stdout.take().map(|pipe| {
        let stream = format!("{}:stdout", invocation.tool);
        let log = (invocation.stdout == Stdout::Log).then(|| logs.clone());
        tokio::spawn(read_lines(pipe, stream, log))
    });
    let stderr = child.stderr.take().map(|pipe| {
        let stream = format!("{}:stderr", invocation.tool);
        tokio::spawn(read_lines(pipe, stream, Some(logs.clone())))
    });

    let status = tokio::select! {
        status = child.wait() => status.map_err(|source| ProcessError::Io {
            program: invocation.program.clone(),
            source,
        })?,
        () = cancel.cancelled() => {
            interrupt_then_kill(&mut child, grace).await;
            return Err(ProcessError::Cancelled);
        }
    };

    let (stdout_all, stdout_tail) = drained(stdout).await;
    let (_, stderr_tail) = drained(stderr).await;
    Ok(Finished {
        status,
        stdout: if invocation.stdout == Stdout::Capture {
            stdout_all
        } else {
            String::new()
        },
        stderr_tail,
        stdout_tail,
    })
}

fn spawn(invocation: &Invocation) -> Result<GroupChild, ProcessError> {
    let mut command =
        child_process::command(&invocation.program, Signal::SIGTERM, &invocation.inherit);
    command
        .args(&invocation.args)
        .envs(invocation.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&invocation.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    child_process::spawn_group(&mut command).map_err(|source| {
        // A missing program and a missing workdir both say NotFound; only the first is "not found".
        if source.kind() == io::ErrorKind::NotFound && !invocation.program.is_file() {
            ProcessError::NotFound {
                tool: invocation.tool,
                program: invocation.program.clone(),
                install_hint: invocation.install_hint.clone(),
            }
        } else {
            ProcessError::Io {
                program: invocation.program.clone(),
                source,
            }
        }
    })
}

/// SIGINT to the child's group; after `grace`, SIGKILL to the group. Returns once the child
/// has exited (and been reaped).
async fn interrupt_then_kill(child: &mut GroupChild, grace: Duration) {
    // The child leads its own group, so its pid is the group id. It is not reaped before we are
    // done signalling, so the id cannot have been reused.
    let Some(group) = child.group() else {
        return; // already reaped
    };
    child.signal_group(Signal::SIGINT);
    if tokio::time::timeout(grace, child.wait()).await.is_ok() {
        return;
    }
    tracing::warn!(
        pid = group.as_raw(),
        "process ignored SIGINT; killing its group"
    );
    child.signal_group(Signal::SIGKILL);
    let _ = child.wait().await;
}

/// Reads lines until EOF: logs them (when `log` is given) and keeps the whole text plus a tail.
async fn read_lines(
    pipe: impl AsyncRead + Unpin,
    stream: String,
    log: Option<LogSink>,
) -> (String, Vec<String>) {
    let mut lines = BufReader::new(pipe).lines();
    let mut all = String::new();
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    while let Ok(Some(line)) = lines.next_line().await {
        match &log {
            Some(sink) => {
                sink.line(&stream, &line);
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            None => {
                all.push_str(&line);
                all.push('\n');
            }
        }
    }
    (all, tail.into())
}

async fn drained(
    reader: Option<tokio::task::JoinHandle<(String, Vec<String>)>>,
) -> (String, Vec<String>) {
    let Some(reader) = reader else {
        return Default::default();
    };
    match tokio::time::timeout(DRAIN_TIMEOUT, reader).await {
        Ok(Ok(output)) => output,
        _ => Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{EnvironmentId, OperationId};
    use std::time::Instant;

    fn sink() -> (LogSink, crate::logs::LogReceiver) {
        LogSink::channel(EnvironmentId::generate(), OperationId::generate())
    }

    fn sh(script: &str) -> Invocation {
        Invocation::new(
            "sh",
            &Program::new("/bin/sh", "install a shell"),
            Path::new("/"),
        )
        .args(["-c", script])
    }

    /// Runs `invocation` with nothing to cancel it (and a grace of one second).
    async fn run_uncancelled(
        invocation: &Invocation,
        logs: &LogSink,
    ) -> Result<Finished, ProcessError> {
        run(
            invocation,
            logs,
            &CancellationToken::new(),
            Duration::from_secs(1),
        )
        .await
    }

    /// A token that a background task cancels after `delay`.
    fn cancelled_after(delay: Duration) -> CancellationToken {
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            trigger.cancel();
        });
        cancel
    }

    fn received(rx: &mut crate::logs::LogReceiver) -> Vec<(String, String)> {
        let mut lines = Vec::new();
        while let Ok(line) = rx.try_recv() {
            lines.push((line.stream, line.line));
        }
        lines
    }

    #[tokio::test]
    async fn output_lines_are_logged_with_their_stream_and_stderr_tail_kept() {
        let (logs, mut rx) = sink();
        let finished = run_uncancelled(&sh("echo out1; echo err1 >&2; echo out2; exit 3"), &logs)
            .await
            .unwrap();
        assert_eq!(finished.status.code(), Some(3));
        assert_eq!(finished.error_message(), "err1");
        let mut lines = received(&mut rx);
        lines.sort();
        assert_eq!(
            lines,
            [
                ("sh:stderr".to_owned(), "err1".to_owned()),
                ("sh:stdout".to_owned(), "out1".to_owned()),
                ("sh:stdout".to_owned(), "out2".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn captured_stdout_is_returned_and_never_logged() {
        let (logs, mut rx) = sink();
        let finished = run_uncancelled(&sh("echo '{\"secret\": 1}'").capture_stdout(), &logs)
            .await
            .unwrap();
        assert!(finished.status.success());
        assert_eq!(finished.stdout, "{\"secret\": 1}\n");
        assert!(received(&mut rx).is_empty());
    }

    #[tokio::test]
    async fn the_error_message_keeps_only_the_last_lines_of_stderr() {
        let (logs, _rx) = sink();
        let finished = run_uncancelled(
            &sh("for i in $(seq 1 50); do echo line$i >&2; done; exit 1"),
            &logs,
        )
        .await
        .unwrap();
        let message = finished.error_message();
        assert_eq!(message.lines().count(), MESSAGE_LINES);
        assert!(message.starts_with("line31") && message.ends_with("line50"));
    }

    #[tokio::test]
    async fn a_missing_program_is_reported_as_not_found_with_its_path() {
        let (logs, _rx) = sink();
        let program = Program::new("/nonexistent/terraform", "set PROVISIONER_TERRAFORM_BIN");
        let invocation = Invocation::new("terraform", &program, Path::new("/"));
        let err = run_uncancelled(&invocation, &logs).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "terraform not found at /nonexistent/terraform: set PROVISIONER_TERRAFORM_BIN"
        );
        let program = Program::new("no-such-tool-here", "install it");
        let invocation = Invocation::new("terraform", &program, Path::new("/"));
        let err = run_uncancelled(&invocation, &logs).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "terraform not found at no-such-tool-here (on PATH): install it"
        );
    }

    #[tokio::test]
    async fn cancelling_interrupts_the_whole_process_group() {
        let (logs, mut rx) = sink();
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("interrupted");
        // The shell runs its trap only once its foreground `sleep` has ended, which happens at
        // once only if the signal reached the whole group, not just the shell.
        let script = format!(
            "trap 'touch {m}; exit 130' INT; echo started; sleep 30",
            m = marker.display()
        );
        let cancel = cancelled_after(Duration::from_millis(300));
        let started = Instant::now();
        let err = run(&sh(&script), &logs, &cancel, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::Cancelled));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert!(marker.exists(), "the shell saw SIGINT");
        assert!(received(&mut rx).iter().any(|(_, l)| l == "started"));
    }

    #[tokio::test]
    async fn dropping_a_running_tool_kills_its_whole_group() {
        let (logs, mut rx) = sink();
        // The tool starts a grandchild in the background, prints its pid and waits.
        let script = "sleep 600 & echo $!; sleep 600";
        let cancel = CancellationToken::new();
        let invocation = sh(script);
        let run = run(&invocation, &logs, &cancel, Duration::from_secs(5));
        let dropped = tokio::time::timeout(Duration::from_secs(2), run).await;
        assert!(dropped.is_err(), "the tool was still running");
        let lines = received(&mut rx);
        let grandchild: i32 = lines
            .iter()
            .find(|(stream, _)| stream == "sh:stdout")
            .and_then(|(_, line)| line.parse().ok())
            .expect("the grandchild's pid");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Gone, or a zombie waiting for its new parent to reap it.
        while std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
            .is_ok_and(|stat| !stat.rsplit(") ").next().unwrap().starts_with('Z'))
        {
            assert!(Instant::now() < deadline, "the grandchild outlived the run");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_process_that_ignores_sigint_is_killed_after_the_grace_period() {
        let (logs, _rx) = sink();
        let cancel = CancellationToken::new();
        cancel.cancel();
        // Cancelled before the start: nothing runs at all.
        let err = run(&sh("sleep 30"), &logs, &cancel, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, ProcessError::Cancelled));

        let cancel = cancelled_after(Duration::from_millis(300));
        let started = Instant::now();
        let err = run(
            &sh("trap '' INT; echo ready; sleep 30"),
            &logs,
            &cancel,
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ProcessError::Cancelled));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(550), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}
