//! Fault injection: `simulate.json` in the workdir says how long a step takes and which step
//! fails how often; `.standin/faults.json` counts the failures so far, e.g. `{"infra": 1}`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use super::fsutil::{WorkdirMutex, read_json, standin_path, write_json_atomic};
use super::{Error, Result};

/// The input file, written by the executor from the environment's `cloud.simulate` block.
pub use domain::spec::SIMULATE_FILE;
/// Its contents, and the step that [`Simulation::fail`] names: the domain's types, so the
/// executor and the stand-ins share one contract.
pub use domain::spec::{Simulation, Step};
/// The failure counts, kept by the stand-ins.
pub const FAULTS_FILE: &str = "faults.json";
/// How long a step takes when `apply_seconds` is not given.
pub const DEFAULT_STEP: Duration = Duration::from_millis(200);

/// Reads `simulate.json` from the workdir; no file means no faults and default timing. Every
/// field is optional and unknown fields are ignored.
pub fn load(workdir: &Path) -> Result<Simulation> {
    let path = workdir.join(SIMULATE_FILE);
    let simulate: Simulation = read_json(&path)?.unwrap_or_default();
    if let Some(seconds) = simulate.apply_seconds
        && !(seconds.is_finite() && seconds >= 0.0)
    {
        return Err(Error::failed(format!(
            "invalid {SIMULATE_FILE}: apply_seconds must be a non-negative number, got {seconds}"
        )));
    }
    Ok(simulate)
}

/// The duration of a simulated step.
pub fn step_duration(simulate: &Simulation) -> Duration {
    simulate
        .apply_seconds
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(DEFAULT_STEP)
}

/// A failure the stand-in was told to inject; its `Display` is the error message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedFailure {
    pub step: Step,
    /// 1 for the first failure of this step in this workdir.
    pub attempt: u32,
    pub fail_times: Option<u32>,
}

impl fmt::Display for InjectedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = self.step.as_str();
        match self.fail_times {
            Some(times) => write!(
                f,
                "simulated {step} failure (attempt {} of {times})",
                self.attempt
            ),
            None => write!(
                f,
                "simulated {step} failure (attempt {}; fails every time)",
                self.attempt
            ),
        }
    }
}

/// Decides, at the end of a step, whether it fails: when `simulate.fail` names the step and the
/// failures counted so far are fewer than `fail_times`. A failure is counted before it is
/// returned, under the workdir mutex, so concurrent processes count each failure once.
pub fn take_failure(
    workdir: &Path,
    simulate: &Simulation,
    step: Step,
) -> Result<Option<InjectedFailure>> {
    if simulate.fail != Some(step) {
        return Ok(None);
    }
    let _mutex = WorkdirMutex::lock(workdir)?;
    let path = standin_path(workdir, FAULTS_FILE)?;
    let mut counts: BTreeMap<String, u32> = read_json(&path)?.unwrap_or_default();
    let count = counts.entry(step.as_str().to_owned()).or_default();
    if simulate.fail_times.is_some_and(|times| *count >= times) {
        return Ok(None);
    }
    *count += 1;
    let attempt = *count;
    write_json_atomic(&path, &counts)?;
    Ok(Some(InjectedFailure {
        step,
        attempt,
        fail_times: simulate.fail_times,
    }))
}

/// The key of [`FAULTS_FILE`] that counts the transient failures injected so far.
const TRANSIENT_KEY: &str = "transient";

/// A transient failure the stand-in was told to inject: the first
/// [`Simulation::transient_failures`] terraform runs of a workdir fail with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransientFailure {
    /// 1 for the first one in this workdir.
    pub attempt: u32,
    pub of: u32,
}

impl TransientFailure {
    /// The `Error:` summary: the AWS provider's wording for a throttled call (an AWS SDK for Go
    /// v2 operation error with the service's `Throttling: Rate exceeded`), marked simulated.
    pub fn summary(&self) -> String {
        format!(
            "reading EC2 VPCs (simulated transient failure {} of {}): operation error EC2: \
             DescribeVpcs, https response error StatusCode: 400, RequestID: \
             00000000-0000-4000-8000-{:012}, api error Throttling: Rate exceeded",
            self.attempt, self.of, self.attempt
        )
    }
}

/// Decides, at the start of a terraform run that talks to the cloud (`plan`, `apply`,
/// `destroy`), whether it fails transiently: while the runs failed so far are fewer than
/// `transient_failures`. Counted like [`take_failure`], under the workdir mutex.
pub fn take_transient(workdir: &Path, simulate: &Simulation) -> Result<Option<TransientFailure>> {
    let Some(of) = simulate.transient_failures.filter(|n| *n > 0) else {
        return Ok(None);
    };
    let _mutex = WorkdirMutex::lock(workdir)?;
    let path = standin_path(workdir, FAULTS_FILE)?;
    let mut counts: BTreeMap<String, u32> = read_json(&path)?.unwrap_or_default();
    let count = counts.entry(TRANSIENT_KEY.to_owned()).or_default();
    if *count >= of {
        return Ok(None);
    }
    *count += 1;
    let attempt = *count;
    write_json_atomic(&path, &counts)?;
    Ok(Some(TransientFailure { attempt, of }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simulate(json: &str) -> Simulation {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn missing_simulate_file_means_default_timing_and_no_faults() {
        let dir = tempfile::tempdir().unwrap();
        let sim = load(dir.path()).unwrap();
        assert_eq!(sim, Simulation::default());
        assert_eq!(step_duration(&sim), DEFAULT_STEP);
        assert_eq!(take_failure(dir.path(), &sim, Step::Infra).unwrap(), None);
    }

    #[test]
    fn simulate_file_ignores_unknown_fields_and_rejects_negative_durations() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SIMULATE_FILE),
            r#"{"apply_seconds": 2, "fail": "bootstrap", "extra": true}"#,
        )
        .unwrap();
        let sim = load(dir.path()).unwrap();
        assert_eq!(step_duration(&sim), Duration::from_secs(2));
        assert_eq!(sim.fail, Some(Step::Bootstrap));

        std::fs::write(dir.path().join(SIMULATE_FILE), r#"{"apply_seconds": -1}"#).unwrap();
        assert!(load(dir.path()).is_err());
        std::fs::write(dir.path().join(SIMULATE_FILE), r#"{"fail": "hang"}"#).unwrap();
        assert!(load(dir.path()).is_err());
    }

    #[test]
    fn a_step_fails_fail_times_then_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let sim = simulate(r#"{"fail": "infra", "fail_times": 2}"#);
        let first = take_failure(dir.path(), &sim, Step::Infra)
            .unwrap()
            .unwrap();
        assert_eq!(
            first.to_string(),
            "simulated infra failure (attempt 1 of 2)"
        );
        let second = take_failure(dir.path(), &sim, Step::Infra)
            .unwrap()
            .unwrap();
        assert_eq!(second.attempt, 2);
        assert_eq!(take_failure(dir.path(), &sim, Step::Infra).unwrap(), None);
        assert_eq!(take_failure(dir.path(), &sim, Step::Infra).unwrap(), None);
    }

    #[test]
    fn the_first_transient_failures_runs_fail_with_a_throttling_error() {
        let dir = tempfile::tempdir().unwrap();
        let sim = simulate(r#"{"transient_failures": 2}"#);
        let first = take_transient(dir.path(), &sim).unwrap().unwrap();
        assert_eq!(first, TransientFailure { attempt: 1, of: 2 });
        assert!(
            first
                .summary()
                .contains("api error Throttling: Rate exceeded"),
            "{}",
            first.summary()
        );
        assert_eq!(
            take_transient(dir.path(), &sim).unwrap().unwrap().attempt,
            2
        );
        assert_eq!(take_transient(dir.path(), &sim).unwrap(), None);
        // Counted apart from the step failures.
        assert_eq!(take_failure(dir.path(), &sim, Step::Infra).unwrap(), None);
        let none = Simulation::default();
        assert_eq!(
            take_transient(tempfile::tempdir().unwrap().path(), &none).unwrap(),
            None
        );
    }

    #[test]
    fn other_steps_never_fail_and_absent_fail_times_fails_always() {
        let dir = tempfile::tempdir().unwrap();
        let sim = simulate(r#"{"fail": "destroy"}"#);
        assert_eq!(take_failure(dir.path(), &sim, Step::Infra).unwrap(), None);
        for attempt in 1..=3 {
            let failure = take_failure(dir.path(), &sim, Step::Destroy)
                .unwrap()
                .unwrap();
            assert_eq!(failure.attempt, attempt);
        }
        let counts: BTreeMap<String, u32> =
            read_json(&dir.path().join(".standin").join(FAULTS_FILE))
                .unwrap()
                .unwrap();
        assert_eq!(counts, BTreeMap::from([("destroy".to_owned(), 3)]));
    }
}
