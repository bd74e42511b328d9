//! Where a step's output lines go: a channel of [`LogLine`]s that the runner forwards to the
//! operation's log subject. Sending never blocks and never fails the step: logs are best effort.

use domain::wire::LogLine;
use domain::{EnvironmentId, OperationId};
use tokio::sync::mpsc;

/// The sending end, cloned into every process a step runs.
#[derive(Clone, Debug)]
pub struct LogSink {
    environment_id: EnvironmentId,
    operation_id: OperationId,
    tx: mpsc::UnboundedSender<LogLine>,
}

/// The receiving end, drained by whoever publishes (or, in tests, inspects) the lines.
pub type LogReceiver = mpsc::UnboundedReceiver<LogLine>;

impl LogSink {
    /// A sink for one operation, and the receiver of its lines.
    pub fn channel(
        environment_id: EnvironmentId,
        operation_id: OperationId,
    ) -> (Self, LogReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sink = LogSink {
            environment_id,
            operation_id,
            tx,
        };
        (sink, rx)
    }

    /// Records one line; `stream` is `<tool>:stdout`, `<tool>:stderr` or `executor`.
    pub fn line(&self, stream: &str, line: &str) {
        tracing::debug!(target: "executors::tool_output", stream, line);
        let _ = self.tx.send(LogLine {
            environment_id: self.environment_id.clone(),
            operation_id: self.operation_id.clone(),
            stream: stream.to_owned(),
            line: line.to_owned(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        });
    }

    /// A line from the executor itself (what it is about to run, why it retries).
    pub fn note(&self, line: &str) {
        self.line("executor", line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_the_operation_and_stream() {
        let env = EnvironmentId::generate();
        let op = OperationId::generate();
        let (sink, mut rx) = LogSink::channel(env.clone(), op.clone());
        sink.line("terraform:stdout", "Apply complete!");
        drop(sink);
        let line = rx.try_recv().unwrap();
        assert_eq!(line.environment_id, env);
        assert_eq!(line.operation_id, op);
        assert_eq!(line.stream, "terraform:stdout");
        assert_eq!(line.line, "Apply complete!");
        assert!(chrono::DateTime::parse_from_rfc3339(&line.at).is_ok());
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_closed_receiver_does_not_fail_the_sender() {
        let (sink, rx) = LogSink::channel(EnvironmentId::generate(), OperationId::generate());
        drop(rx);
        sink.note("still fine");
    }
}
