//! The executor's settings: one plain typed struct, filled by the `provisioner` binary's
//! settings tree (`src/settings.rs` of the root package), which parses and validates the process
//! environment. This library reads no environment variables itself.

pub use bootstrap::charts::{
    BETA9_CHART, BETA9_CHART_NAME, BETA9_CHART_VERSION, BaselineChart, ChartError, ChartRef, Charts,
};
use std::path::PathBuf;

use bootstrap::readiness::ReadinessTimeouts;
use domain::sealed::SealingKey;

use crate::customer_account::AwsSettings;
use crate::process::Program;
use crate::terraform_version::Flavour;
use std::time::Duration;

/// Everything the executor runtime needs to know about its surroundings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutorSettings {
    /// `NATS_URL`.
    pub nats_url: String,
    /// `PROVISIONER_NATS_PREFIX`: the subject and stream prefix shared with the command side.
    pub subject_prefix: String,
    /// `PROVISIONER_DATA_DIR`: per-environment workdirs live in `<data_dir>/workdirs/<env_id>`.
    pub data_dir: PathBuf,
    /// `PROVISIONER_TERRAFORM_BIN`: the real `terraform` (or `tofu`) for the `aws` provider.
    pub terraform_bin: PathBuf,
    /// `PROVISIONER_TERRAFORM_FLAVOUR`: which Terraform `terraform_bin` is (checked at start-up
    /// when `aws` is configured: >= 1.10).
    pub terraform_flavour: Flavour,
    /// `PROVISIONER_HELM_BIN`: the real `helm` for the `aws` provider.
    pub helm_bin: PathBuf,
    /// The `sandbox` provider's engine: the stand-ins built into the `provisioner` binary (what
    /// the binary sets), or (a seam for tests, set in code) `terraform-standin` and
    /// `helm-standin` in a directory. `None` means the sandbox provider is unavailable.
    pub sandbox_tools: Option<SandboxTools>,
    /// `PROVISIONER_TF_STATE_BUCKET`: the S3 bucket holding `aws` Terraform state, passed to
    /// `terraform init` as `-backend-config=bucket=...`.
    pub state_bucket: Option<String>,
    /// `PROVISIONER_TF_STATE_REGION`: the state bucket's region, passed as
    /// `-backend-config=region=...`; `None`: the environment's own region, as rendered.
    pub state_region: Option<String>,
    /// `PROVISIONER_TF_LOCK_TABLE`: a DynamoDB table for `aws` state locking, besides the S3
    /// lock file (`use_lockfile`, rendered).
    pub state_lock_table: Option<String>,
    /// How the executor reaches AWS (STS endpoint, session length; its own identity).
    pub aws: AwsSettings,
    /// `PROVISIONER_SECRETS_KEY`: the API's key, to open the external ids it sealed apart
    /// (`domain::sealed`); an `aws` job with a sealed one fails without it.
    pub secrets_key: Option<SealingKey>,
    /// `PROVISIONER_EXECUTOR_CONCURRENCY`: jobs run at once by this process.
    pub concurrency: usize,
    /// `PROVISIONER_EXECUTOR_HEARTBEAT_MS`: how often a running job tells JetStream it is alive.
    pub heartbeat: Duration,
    /// `PROVISIONER_EXECUTOR_ACK_WAIT_MS`: how long JetStream waits for a heartbeat before it
    /// redelivers a job.
    pub ack_wait: Duration,
    /// `PROVISIONER_EXECUTOR_MAX_DELIVER`: how many times JetStream delivers a job before giving
    /// up on it.
    pub max_deliver: i64,
    /// Terraform's `-lock-timeout`.
    pub lock_timeout: Duration,
    /// How a step runs terraform again after a transient failure.
    pub terraform_retry: TerraformRetry,
    /// How long a cancelled tool gets between SIGINT and SIGKILL.
    pub cancel_grace: Duration,
    /// How long a graceful shutdown waits for in-flight jobs before handing them back.
    pub shutdown_grace: Duration,
    /// `PROVISIONER_STREAM_REPLICAS`: the copies of the lease bucket `<P>_LEASES`, as of the
    /// streams.
    pub stream_replicas: usize,
    /// Every chart the bootstrap installs, from settings: Beta9's (`PROVISIONER_BETA9_CHART`,
    /// `…_VERSION`) and the baseline's (`PROVISIONER_<CHART>_CHART`, `…_VERSION`; defaults
    /// pinned in `bootstrap::charts`).
    pub charts: Charts,
    /// The bootstrap's readiness waits on `aws` (`PROVISIONER_BOOTSTRAP_API_TIMEOUT_SECS`,
    /// `…_NODES_TIMEOUT_SECS`, `…_GATEWAY_TIMEOUT_SECS`).
    pub readiness: ReadinessTimeouts,
}

impl ExecutorSettings {
    /// Defaults for everything, with the given NATS URL and prefix; the `provisioner` binary's
    /// settings tree starts from these, and so do tests.
    pub fn new(nats_url: impl Into<String>, subject_prefix: impl Into<String>) -> Self {
        ExecutorSettings {
            nats_url: nats_url.into(),
            subject_prefix: subject_prefix.into(),
            data_dir: PathBuf::from("./provisioner-data"),
            terraform_bin: PathBuf::from("terraform"),
            terraform_flavour: Flavour::Terraform,
            helm_bin: PathBuf::from("helm"),
            sandbox_tools: None,
            state_bucket: None,
            state_region: None,
            state_lock_table: None,
            aws: AwsSettings::default(),
            secrets_key: None,
            concurrency: 4,
            heartbeat: Duration::from_secs(5),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            lock_timeout: Duration::from_secs(300),
            terraform_retry: TerraformRetry::DEFAULT,
            cancel_grace: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
            stream_replicas: 1,
            charts: Charts::default(),
            readiness: ReadinessTimeouts::default(),
        }
    }

    /// `<data_dir>/workdirs/<env_id>`, absolute: the tools run inside it and are handed paths
    /// of files in it, so a relative data dir would resolve twice.
    pub fn workdir(&self, environment_id: &str) -> PathBuf {
        let workdir = self.data_dir.join("workdirs").join(environment_id);
        std::path::absolute(&workdir).unwrap_or(workdir)
    }
}

/// How a step retries a terraform run that failed transiently (throttled, a 5xx, the network, a
/// state lock still held: see `terraform_errors`), with exponential back-off and jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TerraformRetry {
    /// `PROVISIONER_TERRAFORM_RETRY_ATTEMPTS`: runs in all, the first included (1: no retry).
    pub attempts: u32,
    /// `PROVISIONER_TERRAFORM_RETRY_DELAY_MS`: the first pause; each next one doubles, each
    /// with a random jitter of up to as much again.
    pub first_delay: Duration,
    /// `PROVISIONER_TERRAFORM_RETRY_MAX_SECS`: no retry starts later than this after the first
    /// run began, nor past the step's own timeout.
    pub max_elapsed: Duration,
}

impl TerraformRetry {
    pub const DEFAULT: TerraformRetry = TerraformRetry {
        attempts: 3,
        first_delay: Duration::from_secs(10),
        max_elapsed: Duration::from_secs(900),
    };
}

/// Where the `sandbox` provider's terraform and helm stand-ins come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxTools {
    /// `<provisioner> standin terraform|helm ...`: built into the `provisioner` binary at this
    /// path, so they exist wherever the binary does.
    BuiltIn(PathBuf),
    /// The separate `terraform-standin` and `helm-standin` binaries in this directory: the
    /// executor's tests build and run these; the `provisioner` binary never selects them.
    Dir(PathBuf),
}

impl SandboxTools {
    pub fn terraform(&self) -> Program {
        self.program("terraform", "terraform-standin")
    }

    pub fn helm(&self) -> Program {
        self.program("helm", "helm-standin")
    }

    fn program(&self, tool: &str, binary: &str) -> Program {
        match self {
            SandboxTools::BuiltIn(exe) => Program::new(
                exe,
                "the provisioner binary that runs this executor is gone; reinstall it",
            )
            .leading_args(["standin", tool]),
            SandboxTools::Dir(dir) => Program::new(
                dir.join(binary),
                "build it with `cargo build -p standins --bins`, or use the stand-ins built \
                 into provisioner",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults() {
        let settings = ExecutorSettings::new("nats://127.0.0.1:4222", "provisioner");
        assert_eq!(settings.data_dir, PathBuf::from("./provisioner-data"));
        assert_eq!(settings.terraform_bin, PathBuf::from("terraform"));
        assert_eq!(settings.helm_bin, PathBuf::from("helm"));
        assert_eq!(settings.sandbox_tools, None);
        assert_eq!(settings.concurrency, 4);
        assert_eq!(settings.heartbeat, Duration::from_secs(5));
        assert_eq!(settings.ack_wait, Duration::from_secs(30));
        assert_eq!(settings.max_deliver, 5);
        assert_eq!(settings.lock_timeout, Duration::from_secs(300));
        assert_eq!(settings.cancel_grace, Duration::from_secs(10));
        assert_eq!(
            settings.terraform_retry,
            TerraformRetry {
                attempts: 3,
                first_delay: Duration::from_secs(10),
                max_elapsed: Duration::from_secs(900),
            }
        );
        assert_eq!(settings.aws.sts_endpoint, None);
        assert_eq!(settings.aws.session_duration, Duration::from_secs(3600));
    }

    #[test]
    fn workdirs_live_under_the_data_dir() {
        let mut settings = ExecutorSettings::new("nats://x", "p");
        settings.data_dir = PathBuf::from("/var/lib/provisioner");
        assert_eq!(
            settings.workdir("env_1"),
            PathBuf::from("/var/lib/provisioner/workdirs/env_1")
        );
    }
}
