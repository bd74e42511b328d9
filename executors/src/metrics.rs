//! The executor's Prometheus metrics: every name once, their descriptions and fixed label sets,
//! the job timer ([`JobTimer`]: the jobs in flight, each job's outcome and duration) and the
//! tool runs ([`record_tool_run`]). Only the `metrics` facade is used here; the binary installs
//! the process's recorder and [`crate::status`] renders it.

use domain::spec::Step;
use tokio::time::Instant;

pub const JOBS_IN_FLIGHT: &str = "executor_jobs_in_flight";
pub const JOBS_TOTAL: &str = "executor_jobs_total";
pub const JOB_DURATION_SECONDS: &str = "executor_job_duration_seconds";
pub const TOOL_RUNS_TOTAL: &str = "executor_tool_runs_total";

/// Every metric this crate records (the dashboard's and the alert rules' tests check against it).
pub const NAMES: &[&str] = &[
    JOBS_IN_FLIGHT,
    JOBS_TOTAL,
    JOB_DURATION_SECONDS,
    TOOL_RUNS_TOTAL,
];

/// The buckets of this crate's histograms, in seconds (a step may run up to hours).
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[(
    JOB_DURATION_SECONDS,
    &[
        1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
        5400.0, 7200.0,
    ],
)];

/// The tools a step runs, as the `tool` label (the sandbox's stand-ins count as the tool they
/// stand in for).
pub const TOOLS: [&str; 2] = ["terraform", "helm"];

/// How a job that ran its step ended on this executor: the `outcome` label of [`JOBS_TOTAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// The step succeeded and its result was published.
    Succeeded,
    /// The step failed and its failure was published.
    Failed,
    /// Nothing was reported: the job goes back to JetStream for another attempt (shutdown, an
    /// executor error, a result that could not be published, a lease taken over).
    HandedBack,
    /// The operation was cancelled or timed out while the step ran.
    Cancelled,
}

impl JobOutcome {
    pub const ALL: [JobOutcome; 4] = [
        JobOutcome::Succeeded,
        JobOutcome::Failed,
        JobOutcome::HandedBack,
        JobOutcome::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed => "failed",
            JobOutcome::HandedBack => "handed_back",
            JobOutcome::Cancelled => "cancelled",
        }
    }
}

/// How one tool run ended: the `result` label of [`TOOL_RUNS_TOTAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolResult {
    /// Exited 0.
    Succeeded,
    /// Exited otherwise.
    Failed,
    /// Stopped by a cancellation.
    Cancelled,
    /// Could not be run (not found, an I/O error).
    Error,
}

impl ToolResult {
    pub const ALL: [ToolResult; 4] = [
        ToolResult::Succeeded,
        ToolResult::Failed,
        ToolResult::Cancelled,
        ToolResult::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ToolResult::Succeeded => "succeeded",
            ToolResult::Failed => "failed",
            ToolResult::Cancelled => "cancelled",
            ToolResult::Error => "error",
        }
    }
}

/// Describes every metric and creates the counters of every fixed label set at zero (and the
/// in-flight gauge), so they are scraped before the first job. Call once the recorder is
/// installed.
pub fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(JOBS_IN_FLIGHT, "jobs running a step in this process");
    describe_counter!(
        JOBS_TOTAL,
        "jobs that ran their step, by step and outcome (succeeded, failed, handed_back, cancelled)"
    );
    describe_histogram!(
        JOB_DURATION_SECONDS,
        Unit::Seconds,
        "how long a job's step ran on this executor, by step"
    );
    describe_counter!(
        TOOL_RUNS_TOTAL,
        "terraform and helm runs, by tool and result (succeeded, failed, cancelled, error)"
    );
    ::metrics::gauge!(JOBS_IN_FLIGHT).increment(0.0);
    for step in Step::ALL {
        for outcome in JobOutcome::ALL {
            ::metrics::counter!(JOBS_TOTAL, "step" => step.as_str(), "outcome" => outcome.as_str())
                .increment(0);
        }
    }
    for tool in TOOLS {
        for result in ToolResult::ALL {
            ::metrics::counter!(TOOL_RUNS_TOTAL, "tool" => tool, "result" => result.as_str())
                .increment(0);
        }
    }
}

/// Counts one tool run. `tool` is one of [`TOOLS`] (the invocations name it in code).
pub fn record_tool_run(tool: &'static str, result: ToolResult) {
    ::metrics::counter!(TOOL_RUNS_TOTAL, "tool" => tool, "result" => result.as_str()).increment(1);
}

/// One job's step on this executor: in flight from [`JobTimer::start`] until it is finished or
/// dropped; [`JobTimer::finish`] counts its outcome and records how long it ran. Dropped
/// unfinished (its task aborted), it counts as handed back.
pub struct JobTimer {
    step: Step,
    started: Instant,
    finished: bool,
}

impl JobTimer {
    pub fn start(step: Step) -> Self {
        ::metrics::gauge!(JOBS_IN_FLIGHT).increment(1.0);
        Self {
            step,
            started: Instant::now(),
            finished: false,
        }
    }

    pub fn finish(mut self, outcome: JobOutcome) {
        self.record(outcome);
    }

    fn record(&mut self, outcome: JobOutcome) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let step = self.step.as_str();
        ::metrics::counter!(JOBS_TOTAL, "step" => step, "outcome" => outcome.as_str()).increment(1);
        ::metrics::histogram!(JOB_DURATION_SECONDS, "step" => step)
            .record(self.started.elapsed().as_secs_f64());
    }
}

impl Drop for JobTimer {
    fn drop(&mut self) {
        self.record(JobOutcome::HandedBack);
        ::metrics::gauge!(JOBS_IN_FLIGHT).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_the_histogram_reaches_two_hours() {
        let distinct: std::collections::BTreeSet<_> = NAMES.iter().collect();
        assert_eq!(distinct.len(), NAMES.len());
        for (name, buckets) in HISTOGRAM_BUCKETS {
            assert!(NAMES.contains(name), "{name}");
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{name}");
            assert!(buckets.last().copied() >= Some(7200.0), "{name}");
        }
    }

    #[test]
    fn a_job_is_in_flight_until_it_ends_and_one_dropped_unfinished_counts_as_handed_back() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            describe();
            let finished = JobTimer::start(Step::Infra);
            let dropped = JobTimer::start(Step::Destroy);
            assert!(handle.render().contains("executor_jobs_in_flight 2"));
            finished.finish(JobOutcome::Succeeded);
            drop(dropped);
            record_tool_run("helm", ToolResult::Failed);
        });
        let text = handle.render();
        for series in [
            r#"executor_jobs_total{step="infra",outcome="succeeded"} 1"#,
            r#"executor_jobs_total{step="destroy",outcome="handed_back"} 1"#,
            r#"executor_jobs_total{step="bootstrap",outcome="failed"} 0"#,
            r#"executor_job_duration_seconds_count{step="infra"} 1"#,
            r#"executor_tool_runs_total{tool="helm",result="failed"} 1"#,
            r#"executor_tool_runs_total{tool="terraform",result="succeeded"} 0"#,
            "executor_jobs_in_flight 0",
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
    }
}
