//! Executor settings, read from the environment once at startup.

use std::path::PathBuf;

use crate::process::Program;
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
    /// `PROVISIONER_HELM_BIN`: the real `helm` for the `aws` provider.
    pub helm_bin: PathBuf,
    /// The `sandbox` provider's engine: the stand-ins built into the `provisioner` binary (what
    /// the binary sets), or `terraform-standin` and `helm-standin` in `PROVISIONER_STANDIN_DIR`.
    /// `None` means the sandbox provider is unavailable.
    pub sandbox_tools: Option<SandboxTools>,
    /// `PROVISIONER_TF_STATE_BUCKET`: the S3 bucket holding `aws` Terraform state, passed to
    /// `terraform init` as `-backend-config=bucket=...`.
    pub state_bucket: Option<String>,
    /// `PROVISIONER_TF_LOCK_TABLE`: the DynamoDB table for `aws` state locking.
    pub state_lock_table: Option<String>,
    /// `PROVISIONER_EXECUTOR_CONCURRENCY`: jobs run at once by this process.
    pub concurrency: usize,
    /// `PROVISIONER_EXECUTOR_HEARTBEAT_MS`: how often a running job tells JetStream it is alive.
    pub heartbeat: Duration,
    /// `PROVISIONER_EXECUTOR_ACK_WAIT_MS`: how long JetStream waits for a heartbeat before it
    /// redelivers a job.
    pub ack_wait: Duration,
    /// How many times JetStream delivers a job before giving up on it.
    pub max_deliver: i64,
    /// Terraform's `-lock-timeout`.
    pub lock_timeout: Duration,
    /// How long a cancelled tool gets between SIGINT and SIGKILL.
    pub cancel_grace: Duration,
    /// How long a graceful shutdown waits for in-flight jobs before handing them back.
    pub shutdown_grace: Duration,
}

/// A setting that is present but unusable; names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}={value:?}: {reason}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl ExecutorSettings {
    /// Defaults for everything, with the given NATS URL and prefix; for tests and `dev`.
    pub fn new(nats_url: impl Into<String>, subject_prefix: impl Into<String>) -> Self {
        ExecutorSettings {
            nats_url: nats_url.into(),
            subject_prefix: subject_prefix.into(),
            data_dir: PathBuf::from("./provisioner-data"),
            terraform_bin: PathBuf::from("terraform"),
            helm_bin: PathBuf::from("helm"),
            sandbox_tools: None,
            state_bucket: None,
            state_lock_table: None,
            concurrency: 4,
            heartbeat: Duration::from_secs(5),
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            lock_timeout: Duration::from_secs(300),
            cancel_grace: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (a variable name to its value), so tests need not
    /// touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut settings = Self::new(
            get("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned()),
            "provisioner",
        );
        if let Some(prefix) = get("PROVISIONER_NATS_PREFIX") {
            settings.subject_prefix = parse_prefix(prefix)?;
        }
        if let Some(dir) = get("PROVISIONER_DATA_DIR") {
            settings.data_dir = PathBuf::from(dir);
        }
        if let Some(bin) = get("PROVISIONER_TERRAFORM_BIN") {
            settings.terraform_bin = PathBuf::from(bin);
        }
        if let Some(bin) = get("PROVISIONER_HELM_BIN") {
            settings.helm_bin = PathBuf::from(bin);
        }
        if let Some(dir) = get("PROVISIONER_STANDIN_DIR") {
            settings.sandbox_tools = Some(SandboxTools::Dir(PathBuf::from(dir)));
        }
        settings.state_bucket = get("PROVISIONER_TF_STATE_BUCKET");
        settings.state_lock_table = get("PROVISIONER_TF_LOCK_TABLE");
        if let Some(value) = get("PROVISIONER_EXECUTOR_CONCURRENCY") {
            settings.concurrency = parse_positive("PROVISIONER_EXECUTOR_CONCURRENCY", value)?;
        }
        if let Some(value) = get("PROVISIONER_EXECUTOR_HEARTBEAT_MS") {
            settings.heartbeat = parse_millis("PROVISIONER_EXECUTOR_HEARTBEAT_MS", value)?;
        }
        if let Some(value) = get("PROVISIONER_EXECUTOR_ACK_WAIT_MS") {
            settings.ack_wait = parse_millis("PROVISIONER_EXECUTOR_ACK_WAIT_MS", value)?;
        }
        if let Some(value) = get("PROVISIONER_EXECUTOR_MAX_DELIVER") {
            let max = parse_positive("PROVISIONER_EXECUTOR_MAX_DELIVER", value)?;
            settings.max_deliver = i64::try_from(max).unwrap_or(i64::MAX);
        }
        if settings.heartbeat >= settings.ack_wait {
            return Err(SettingsError {
                variable: "PROVISIONER_EXECUTOR_HEARTBEAT_MS",
                value: settings.heartbeat.as_millis().to_string(),
                reason: "must be shorter than the ack wait",
            });
        }
        Ok(settings)
    }

    /// `<data_dir>/workdirs/<env_id>`, absolute: the tools run inside it and are handed paths
    /// of files in it, so a relative data dir would resolve twice.
    pub fn workdir(&self, environment_id: &str) -> PathBuf {
        let workdir = self.data_dir.join("workdirs").join(environment_id);
        std::path::absolute(&workdir).unwrap_or(workdir)
    }
}

/// Where the `sandbox` provider's terraform and helm stand-ins come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SandboxTools {
    /// `<provisioner> standin terraform|helm ...`: built into the `provisioner` binary at this
    /// path, so they exist wherever the binary does.
    BuiltIn(PathBuf),
    /// The separate `terraform-standin` and `helm-standin` binaries in this directory.
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
                "build it with `cargo build -p executors --bins`, or unset \
                 PROVISIONER_STANDIN_DIR to use the stand-ins built into provisioner",
            ),
        }
    }
}

fn parse_prefix(value: String) -> Result<String, SettingsError> {
    let valid = value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if valid {
        Ok(value)
    } else {
        Err(SettingsError {
            variable: "PROVISIONER_NATS_PREFIX",
            value,
            reason: "must be a NATS token of [a-z0-9_-]",
        })
    }
}

fn parse_positive(variable: &'static str, value: String) -> Result<usize, SettingsError> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(SettingsError {
            variable,
            value,
            reason: "must be a whole number above zero",
        }),
    }
}

fn parse_millis(variable: &'static str, value: String) -> Result<Duration, SettingsError> {
    parse_positive(variable, value).map(|ms| Duration::from_millis(ms as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<ExecutorSettings, SettingsError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExecutorSettings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let settings = from(&[]).unwrap();
        assert_eq!(settings.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(settings.subject_prefix, "provisioner");
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
    }

    #[test]
    fn variables_override_the_defaults() {
        let settings = from(&[
            ("NATS_URL", "nats://nats:4222"),
            ("PROVISIONER_NATS_PREFIX", "beta9-prov"),
            ("PROVISIONER_DATA_DIR", "/var/lib/provisioner"),
            ("PROVISIONER_TERRAFORM_BIN", "/usr/bin/tofu"),
            ("PROVISIONER_HELM_BIN", "/usr/bin/helm"),
            ("PROVISIONER_STANDIN_DIR", "/opt/standins"),
            ("PROVISIONER_EXECUTOR_CONCURRENCY", "8"),
            ("PROVISIONER_EXECUTOR_HEARTBEAT_MS", "250"),
            ("PROVISIONER_EXECUTOR_ACK_WAIT_MS", "2000"),
        ])
        .unwrap();
        assert_eq!(settings.nats_url, "nats://nats:4222");
        assert_eq!(settings.subject_prefix, "beta9-prov");
        assert_eq!(
            settings.workdir("env_1"),
            PathBuf::from("/var/lib/provisioner/workdirs/env_1")
        );
        assert_eq!(settings.terraform_bin, PathBuf::from("/usr/bin/tofu"));
        assert_eq!(
            settings.sandbox_tools,
            Some(SandboxTools::Dir(PathBuf::from("/opt/standins")))
        );
        assert_eq!(settings.concurrency, 8);
        assert_eq!(settings.heartbeat, Duration::from_millis(250));
        assert_eq!(settings.ack_wait, Duration::from_secs(2));
    }

    #[test]
    fn a_bad_number_names_its_variable() {
        let err = from(&[("PROVISIONER_EXECUTOR_CONCURRENCY", "many")]).unwrap_err();
        assert_eq!(err.variable, "PROVISIONER_EXECUTOR_CONCURRENCY");
        assert!(
            err.to_string()
                .contains("PROVISIONER_EXECUTOR_CONCURRENCY=\"many\"")
        );
        let err = from(&[("PROVISIONER_EXECUTOR_HEARTBEAT_MS", "0")]).unwrap_err();
        assert_eq!(err.variable, "PROVISIONER_EXECUTOR_HEARTBEAT_MS");
    }

    #[test]
    fn a_heartbeat_not_shorter_than_the_ack_wait_is_rejected() {
        let err = from(&[
            ("PROVISIONER_EXECUTOR_HEARTBEAT_MS", "30000"),
            ("PROVISIONER_EXECUTOR_ACK_WAIT_MS", "30000"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "PROVISIONER_EXECUTOR_HEARTBEAT_MS");
    }

    #[test]
    fn a_prefix_that_is_not_a_nats_token_is_rejected() {
        let err = from(&[("PROVISIONER_NATS_PREFIX", "a.b")]).unwrap_err();
        assert_eq!(err.variable, "PROVISIONER_NATS_PREFIX");
    }
}
