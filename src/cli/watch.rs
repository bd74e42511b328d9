//! `provisioner env watch ID`: follows an environment until it settles (ready, failed,
//! destroyed). On a terminal, a live view ([`View`], drawn with `indicatif`): each phase with
//! its state and elapsed time, the current step, the last lines of its executor output, the
//! conditions, and at the end the outputs or the error. Otherwise (or with `--plain`), one line
//! per event. A dropped event stream is resumed from the last sequence seen (`Last-Event-ID`),
//! a bounded number of times with back-off; `--timeout` bounds the whole watch.

use super::output::{Exit, Format};
use super::say;
use super::verbs::event_line;
use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use clap::Args;
use command_api::client::{Client, ClientError};
use domain::Status;
use domain::aggregate::{Environment, Event};
use domain::conditions::{ConditionStatus, Conditions};
use domain::spec::Step;
use domain::wire::{EventEnvelope, LogLine};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::VecDeque;
use std::fmt::Write;
use std::io::IsTerminal;
use std::time::Duration;
use tokio::sync::mpsc;

/// The longest `--timeout`: a week.
const MAX_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// Executor output lines kept for the view (it shows the last [`LOG_LINES_SHOWN`]).
const LOG_LINES_KEPT: usize = 200;
const LOG_LINES_SHOWN: usize = 5;
/// How often the live view redraws (elapsed times move on).
const REDRAW: Duration = Duration::from_millis(200);

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The environment's id.
    id: String,
    /// One line per event instead of the live view (the default when stdout is no terminal).
    #[arg(long)]
    plain: bool,
    /// Give up after this many seconds (exit 6) [default: wait until the environment settles].
    #[arg(long, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    timeout: Option<u64>,
}

/// Follows the environment; returns how the process exits.
pub async fn run(client: &Client, args: WatchArgs, format: Format) -> anyhow::Result<Exit> {
    let live = format == Format::Table && !args.plain && std::io::stdout().is_terminal();
    let mut view = View::new(&args.id);
    let screen = match format {
        Format::Table if live => Screen::Live(live_bar()?),
        Format::Table => Screen::Plain,
        format => Screen::Events(format),
    };
    let (log_tx, mut log_rx) = mpsc::channel(256);
    let logs = live.then(|| tokio::spawn(follow_logs(client.clone(), args.id.clone(), log_tx)));

    let follow = follow(client, &args.id, &mut view, &screen, &mut log_rx);
    let outcome = match args.timeout {
        Some(seconds) => tokio::time::timeout(Duration::from_secs(seconds), follow)
            .await
            .map_err(|_| seconds),
        None => Ok(follow.await),
    };
    if let Some(logs) = logs {
        logs.abort();
    }
    if let Screen::Live(bar) = &screen {
        bar.finish_and_clear();
        say(view.render(Utc::now(), None));
    }
    match outcome {
        Err(seconds) => {
            eprintln!(
                "error: gave up after --timeout {seconds}s; the environment is {}",
                view.state.status
            );
            Ok(Exit::Unreachable)
        }
        Ok(Err(error)) => Err(error.into()),
        Ok(Ok(())) => Ok(match view.state.status {
            Status::Failed => {
                eprintln!("error: {}", view.failure());
                Exit::EnvironmentFailed
            }
            _ => Exit::Ok,
        }),
    }
}

/// Where the watch draws.
enum Screen {
    /// The live view, on a terminal.
    Live(ProgressBar),
    /// One line per event.
    Plain,
    /// Each event as JSON (one line) or YAML (one document).
    Events(Format),
}

impl Screen {
    fn event(&self, view: &View, envelope: &EventEnvelope) {
        match self {
            Screen::Live(bar) => bar.set_message(view.render(Utc::now(), Some(width()))),
            Screen::Plain => say(event_line(envelope, view.state.status)),
            Screen::Events(Format::Yaml) => match serde_saphyr::to_string(envelope) {
                Ok(yaml) => say(format!("---\n{}", yaml.trim_end())),
                Err(error) => tracing::warn!(%error, "cannot write an event as YAML"),
            },
            Screen::Events(_) => match serde_json::to_string(envelope) {
                Ok(json) => say(json),
                Err(error) => tracing::warn!(%error, "cannot write an event as JSON"),
            },
        }
    }

    fn redraw(&self, view: &View) {
        if let Screen::Live(bar) = self {
            bar.set_message(view.render(Utc::now(), Some(width())));
        }
    }
}

fn live_bar() -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
    bar.set_style(ProgressStyle::with_template("{spinner:.cyan} {msg}")?);
    bar.enable_steady_tick(Duration::from_millis(120));
    Ok(bar)
}

/// The terminal's width, so no line of the view wraps (a wrapped line would break redrawing).
fn width() -> usize {
    usize::from(console::Term::stdout().size().1).saturating_sub(2)
}

/// The back-off between reconnects: bounded, with jitter.
fn reconnects() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(250))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(8)
        .with_jitter()
        .build()
}

/// Whether a reconnect may help.
fn transient(error: &ClientError) -> bool {
    match error {
        ClientError::Connect { .. } | ClientError::Stream(_) => true,
        ClientError::Api { status, .. } => status.is_server_error(),
        ClientError::Decode(_) => false,
    }
}

/// The history, then the live events until the environment settles.
async fn follow(
    client: &Client,
    id: &str,
    view: &mut View,
    screen: &Screen,
    log_rx: &mut mpsc::Receiver<LogLine>,
) -> Result<(), ClientError> {
    for envelope in client.history(id).await? {
        if view.observe(&envelope) {
            screen.event(view, &envelope);
        }
    }
    let mut backoff = reconnects();
    let mut ticker = tokio::time::interval(REDRAW);
    let live = matches!(screen, Screen::Live(_));
    while !view.settled() {
        let dropped = match client.event_stream(id, view.last_sequence).await {
            Err(error) => error,
            Ok(mut events) => loop {
                tokio::select! {
                    item = events.next() => match item {
                        Some(Ok(envelope)) => {
                            if view.observe(&envelope) {
                                screen.event(view, &envelope);
                                backoff = reconnects();
                            }
                            if view.settled() {
                                return Ok(());
                            }
                        }
                        Some(Err(error)) => break error,
                        None => break ClientError::Stream("the event stream ended".into()),
                    },
                    Some(line) = log_rx.recv(), if live => {
                        view.observe_log(line);
                        screen.redraw(view);
                    }
                    _ = ticker.tick(), if live => screen.redraw(view),
                }
            },
        };
        match backoff.next() {
            Some(pause) if transient(&dropped) => {
                tracing::debug!(error = %dropped, ?pause, "reconnecting to the event stream");
                tokio::time::sleep(pause).await;
            }
            _ => return Err(dropped),
        }
    }
    Ok(())
}

/// The executor output, live, for the view: best effort (bounded reconnects, then nothing).
async fn follow_logs(client: Client, id: String, lines: mpsc::Sender<LogLine>) {
    let mut after = None;
    let mut backoff = reconnects();
    loop {
        if let Ok(mut stream) = client.log_stream(&id, after).await {
            while let Some(Ok((position, line))) = stream.next().await {
                after = position.or(after);
                backoff = reconnects();
                if lines.send(line).await.is_err() {
                    return;
                }
            }
        }
        match backoff.next() {
            Some(pause) => tokio::time::sleep(pause).await,
            None => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The view: a pure fold of the events and log lines, drawn as text.

/// Where one phase stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PhaseState {
    NotStarted,
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl PhaseState {
    fn label(self) -> (&'static str, &'static str) {
        match self {
            PhaseState::NotStarted => ("·", "-"),
            PhaseState::Queued => ("…", "queued"),
            PhaseState::Running => ("▶", "running"),
            PhaseState::Done => ("✔", "done"),
            PhaseState::Failed => ("✘", "failed"),
            PhaseState::Cancelled => ("■", "cancelled"),
        }
    }
}

#[derive(Clone, Debug)]
struct Phase {
    step: Step,
    state: PhaseState,
    started: Option<DateTime<Utc>>,
    ended: Option<DateTime<Utc>>,
    operation: Option<String>,
}

impl Phase {
    fn start(&mut self, at: DateTime<Utc>, operation: &str) {
        self.state = PhaseState::Running;
        self.started = Some(at);
        self.ended = None;
        self.operation = Some(operation.to_owned());
    }

    fn end(&mut self, at: DateTime<Utc>, state: PhaseState) {
        self.state = state;
        self.ended = Some(at);
    }

    fn elapsed(&self, now: DateTime<Utc>) -> Option<Duration> {
        let started = self.started?;
        (self.ended.unwrap_or(now) - started).to_std().ok()
    }
}

/// What the watch knows of the environment: the domain's own fold of its events, the
/// conditions, each phase's times, and the last executor output.
pub struct View {
    id: String,
    name: String,
    state: Environment,
    conditions: Conditions,
    phases: [Phase; 3],
    logs: VecDeque<LogLine>,
    last_sequence: u64,
    last_event: Option<(String, DateTime<Utc>)>,
}

impl View {
    pub fn new(id: &str) -> Self {
        let phase = |step| Phase {
            step,
            state: PhaseState::NotStarted,
            started: None,
            ended: None,
            operation: None,
        };
        View {
            id: id.to_owned(),
            name: String::new(),
            state: Environment::default(),
            conditions: Conditions::requested(DateTime::<Utc>::UNIX_EPOCH),
            phases: [
                phase(Step::Infra),
                phase(Step::Bootstrap),
                phase(Step::Destroy),
            ],
            logs: VecDeque::new(),
            last_sequence: 0,
            last_event: None,
        }
    }

    fn phase(&mut self, step: Step) -> &mut Phase {
        let index = match step {
            Step::Infra => 0,
            Step::Bootstrap => 1,
            Step::Destroy => 2,
        };
        &mut self.phases[index]
    }

    /// Folds one event; false when it was seen already (a resumed stream may repeat one).
    pub fn observe(&mut self, envelope: &EventEnvelope) -> bool {
        if envelope.sequence <= self.last_sequence {
            return false;
        }
        self.last_sequence = envelope.sequence;
        self.last_event = Some((envelope.event_type.clone(), envelope.recorded_at));
        let Ok(event) = envelope.event() else {
            return true;
        };
        let at = envelope.recorded_at;
        let running = self.state.in_flight.as_ref().map(|f| f.step);
        match &event {
            Event::EnvironmentRequested { spec, .. } => self.name = spec.name.as_ref().to_owned(),
            Event::InfraApplyStarted { operation_id, .. } => {
                self.phase(Step::Infra).start(at, operation_id.as_str())
            }
            Event::BootstrapStarted { operation_id, .. } => {
                self.phase(Step::Bootstrap).start(at, operation_id.as_str())
            }
            Event::DestroyStarted { operation_id, .. } => {
                self.phase(Step::Destroy).start(at, operation_id.as_str())
            }
            Event::InfraApplied { .. } => self.phase(Step::Infra).end(at, PhaseState::Done),
            Event::BootstrapCompleted { .. } => {
                self.phase(Step::Bootstrap).end(at, PhaseState::Done)
            }
            Event::InfraDestroyed { .. } => self.phase(Step::Destroy).end(at, PhaseState::Done),
            Event::InfraApplyFailed { .. } => self.phase(Step::Infra).end(at, PhaseState::Failed),
            Event::BootstrapFailed { .. } => {
                self.phase(Step::Bootstrap).end(at, PhaseState::Failed)
            }
            Event::DestroyFailed { .. } => self.phase(Step::Destroy).end(at, PhaseState::Failed),
            Event::OperationTimedOut { phase, .. } => {
                self.phase(*phase).end(at, PhaseState::Failed)
            }
            Event::OperationCancelled { .. } => {
                if let Some(step) = running {
                    self.phase(step).end(at, PhaseState::Cancelled);
                }
            }
            _ => {}
        }
        self.state.apply(&event);
        self.conditions.observe(&event, at);
        if let Some(step) = self.state.pending {
            let phase = self.phase(step);
            if phase.state != PhaseState::Running {
                phase.state = PhaseState::Queued;
            }
        }
        true
    }

    /// Keeps one line of executor output.
    pub fn observe_log(&mut self, line: LogLine) {
        if self.logs.len() == LOG_LINES_KEPT {
            self.logs.pop_front();
        }
        self.logs.push_back(line);
    }

    /// Nothing more happens without a new command (as `Client::watch` decides).
    pub fn settled(&self) -> bool {
        self.last_sequence > 0
            && self.state.status.is_settled()
            && self.state.in_flight.is_none()
            && self.state.pending.is_none()
    }

    /// The failure, in words.
    fn failure(&self) -> String {
        match &self.state.failure {
            Some(failure) => format!(
                "the environment failed in its {} step: {}",
                failure.phase.as_str(),
                failure.message
            ),
            None => "the environment failed".to_owned(),
        }
    }

    /// The view at `now`, each line cut to `width` characters when given.
    pub fn render(&self, now: DateTime<Utc>, width: Option<usize>) -> String {
        let mut out = String::new();
        let name = if self.name.is_empty() {
            "?"
        } else {
            &self.name
        };
        let _ = writeln!(out, "{name} ({})  {}", self.id, self.state.status);
        let _ = writeln!(out, "\nPhases");
        for phase in &self.phases {
            let (mark, label) = phase.state.label();
            let elapsed = phase.elapsed(now).map(elapsed).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {mark} {:<10} {label:<9} {elapsed:>7}  {}",
                phase.step.as_str(),
                phase.operation.as_deref().unwrap_or("")
            );
        }
        match (&self.state.in_flight, self.state.pending) {
            (Some(in_flight), _) => {
                let _ = writeln!(
                    out,
                    "\nStep: {} ({}), last event {}",
                    in_flight.step.as_str(),
                    in_flight.operation_id.as_str(),
                    self.last_event
                        .as_ref()
                        .map(|(event, _)| event.as_str())
                        .unwrap_or("-")
                );
                let lines: Vec<&LogLine> = self
                    .logs
                    .iter()
                    .filter(|line| line.operation_id == in_flight.operation_id)
                    .collect();
                for line in &lines[lines.len().saturating_sub(LOG_LINES_SHOWN)..] {
                    let _ = writeln!(out, "  │ {:<16} {}", line.stream, line.line.trim_end());
                }
            }
            (None, Some(step)) => {
                let _ = writeln!(
                    out,
                    "\nStep: {} queued, waiting for an executor",
                    step.as_str()
                );
            }
            (None, None) => {}
        }
        let _ = writeln!(out, "\nConditions");
        for condition in self.conditions.as_slice() {
            let mark = match condition.status {
                ConditionStatus::True => "✔",
                ConditionStatus::False => "✘",
                ConditionStatus::Unknown => "?",
            };
            let _ = writeln!(
                out,
                "  {mark} {:<18} {:<8} {:<20} {}",
                format!("{:?}", condition.condition),
                format!("{:?}", condition.status),
                condition.reason,
                condition.message.lines().next().unwrap_or("")
            );
        }
        if self.settled() {
            match self.state.status {
                Status::Ready => {
                    let _ = writeln!(out, "\nOutputs");
                    let names = self.state.outputs.keys().map(String::len).max();
                    for (name, value) in &self.state.outputs {
                        let _ =
                            writeln!(out, "  {name:<width$}  {value}", width = names.unwrap_or(0));
                    }
                }
                Status::Failed => {
                    let _ = writeln!(out, "\nError: {}", self.failure());
                }
                _ => {}
            }
        }
        out.trim_end()
            .lines()
            .map(|line| match width {
                Some(width) => console::truncate_str(line.trim_end(), width, "…").into_owned(),
                None => line.trim_end().to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `4s`, `2m05s`, `1h03m`.
fn elapsed(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::aggregate::{Command, OperationOutcome, StepTimeouts};
    use domain::conditions::{ConditionReport, ConditionType};
    use domain::{EnvironmentId, OperationId};
    use serde_json::json;

    const ID: &str = "env_01jd0000000000000000000000";

    fn at(second: u64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_796_022_000 + second as i64, 0).unwrap()
    }

    fn op(n: u8) -> OperationId {
        OperationId::parse(&format!("op_01jd00000000000000000000{n:02}")).unwrap()
    }

    fn start(n: u8) -> Command {
        Command::StartPendingOperation {
            operation_id: op(n),
            timeouts: StepTimeouts::DEFAULT,
        }
    }

    fn complete(n: u8, outcome: OperationOutcome) -> Command {
        Command::CompleteOperation {
            operation_id: op(n),
            outcome,
        }
    }

    /// The envelopes the commands record, one second apart, as the API serves them.
    fn history(commands: Vec<Command>) -> Vec<EventEnvelope> {
        let mut state = Environment::default();
        let mut envelopes = Vec::new();
        for command in commands {
            for event in state.handle(command).expect("accepted") {
                state.apply(&event);
                let tagged = serde_json::to_value(&event).unwrap();
                let sequence = envelopes.len() as u64 + 1;
                envelopes.push(
                    serde_json::from_value(json!({
                        "environment_id": ID,
                        "sequence": sequence,
                        "type": tagged["type"],
                        "version": "1",
                        "payload": tagged["data"],
                        "metadata": {"actor": "test", "request_id": "r", "correlation_id": "c",
                                     "causation_id": "c", "recorded_at": at(sequence)},
                        "recorded_at": at(sequence),
                    }))
                    .expect("an envelope"),
                );
            }
        }
        envelopes
    }

    fn requested() -> Command {
        let spec = domain::config::parse(
            "name: production\ncloud:\n  provider: sandbox\n",
            domain::config::Format::Yaml,
        )
        .unwrap();
        Command::Request {
            id: EnvironmentId::parse(ID).unwrap(),
            spec,
            tenant: domain::tenant::TenantId::default(),
        }
    }

    fn succeeded(outputs: &[(&str, &str)]) -> OperationOutcome {
        OperationOutcome::Succeeded {
            outputs: outputs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn view_of(commands: Vec<Command>) -> View {
        let mut view = View::new(ID);
        for envelope in history(commands) {
            assert!(view.observe(&envelope));
            assert!(!view.observe(&envelope), "a repeated event counts once");
        }
        view
    }

    #[test]
    fn elapsed_times_read_as_people_write_them() {
        assert_eq!(elapsed(Duration::from_secs(4)), "4s");
        assert_eq!(elapsed(Duration::from_secs(125)), "2m05s");
        assert_eq!(elapsed(Duration::from_secs(3780)), "1h03m");
    }

    #[test]
    fn while_bootstrapping_the_view_shows_phases_step_logs_and_conditions() {
        let mut view = view_of(vec![
            requested(),
            start(1),
            complete(1, succeeded(&[("cluster_name", "production")])),
            start(2),
            complete(
                2,
                OperationOutcome::Progressed {
                    report: ConditionReport {
                        condition: ConditionType::ClusterReachable,
                        status: ConditionStatus::True,
                        reason: "SandboxCluster".into(),
                        message: "the sandbox has no API server".into(),
                    },
                },
            ),
        ]);
        for (operation, n) in [(op(1), 0), (op(2), 1), (op(2), 2), (op(2), 3)] {
            view.observe_log(LogLine {
                environment_id: EnvironmentId::parse(ID).unwrap(),
                operation_id: operation,
                stream: "helm:stdout".into(),
                line: format!("line {n} of {}", if n == 0 { "infra" } else { "bootstrap" }),
                at: String::new(),
            });
        }
        assert!(!view.settled());
        insta::assert_snapshot!(view.render(at(30), Some(100)));
    }

    #[test]
    fn a_ready_environment_ends_with_its_outputs_and_a_failed_one_with_its_error() {
        let ready = view_of(vec![
            requested(),
            start(1),
            complete(1, succeeded(&[("cluster_name", "production")])),
            start(2),
            complete(
                2,
                succeeded(&[("endpoint", "https://production.example.com")]),
            ),
        ]);
        assert!(ready.settled());
        insta::assert_snapshot!("ready", ready.render(at(30), None));

        let failed = view_of(vec![
            requested(),
            start(1),
            complete(
                1,
                OperationOutcome::Failed {
                    error: "simulated infra failure".into(),
                },
            ),
        ]);
        assert!(failed.settled());
        insta::assert_snapshot!("failed", failed.render(at(30), None));
        assert_eq!(
            failed.failure(),
            "the environment failed in its infra step: simulated infra failure"
        );
    }
}
