//! The provider seam: a [`StepDriver`] runs one step (infra, bootstrap, destroy) of one
//! operation in the environment's workdir and returns its non-secret outputs.
//!
//! The runner picks a driver per provider ([`Drivers`]); tests can put in their own.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use domain::OperationId;
use domain::aggregate::{OperationJob, Outputs};
use domain::spec::Provider;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::lease::Takeover;
use crate::logs::LogSink;
use crate::process::ProcessError;
use crate::progress::ProgressSink;
use crate::settings::ExecutorSettings;
use crate::terraform_helm::TerraformHelmDriver;

/// Everything a driver needs to run one step.
#[derive(Debug)]
pub struct StepContext {
    pub operation_id: OperationId,
    pub job: OperationJob,
    /// The environment's own directory; it exists, and no other step of this environment runs
    /// in it at the same time (within this process).
    pub workdir: PathBuf,
    /// Fires when the operation is cancelled; the driver stops its tools and returns
    /// [`StepError::Cancelled`].
    pub cancel: CancellationToken,
    pub logs: LogSink,
    /// The conditions the step observes on the way (the bootstrap's milestones).
    pub progress: ProgressSink,
    /// Set when this attempt took over the environment's step lease from a holder that never
    /// let go and whose heartbeat lapsed (presumed dead): only then may a state lock it left be
    /// forced open.
    pub takeover: Option<Takeover>,
}

/// Why a step did not succeed; each variant is a different decision for the runner.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The step failed: reported as the operation's failure, with `message` (the tool's last
    /// lines of stderr) kept on the environment.
    #[error("{message}")]
    Failed { message: String },
    /// The operation was cancelled; nothing is reported.
    #[error("the operation was cancelled")]
    Cancelled,
    /// This executor could not do its part (a file could not be written): the job is handed
    /// back to run again, here or elsewhere.
    #[error("failed to {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl StepError {
    pub fn failed(message: impl Into<String>) -> Self {
        StepError::Failed {
            message: message.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        StepError::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<ProcessError> for StepError {
    fn from(error: ProcessError) -> Self {
        match error {
            ProcessError::Cancelled => StepError::Cancelled,
            // A missing tool is a deployment problem the operator must fix: say so plainly.
            not_found @ ProcessError::NotFound { .. } => StepError::failed(not_found.to_string()),
            ProcessError::Io { program, source } => {
                StepError::io(format!("run {}", program.display()), source)
            }
        }
    }
}

/// A release's status the bootstrap could not tell (helm failed, or printed no release): the
/// step fails, saying so.
impl From<bootstrap::helm::StatusError> for StepError {
    fn from(error: bootstrap::helm::StatusError) -> Self {
        StepError::failed(error.to_string())
    }
}

/// Runs the steps of one provider.
pub trait StepDriver: Send + Sync {
    fn run(&self, ctx: StepContext) -> BoxFuture<'_, Result<Outputs, StepError>>;
}

/// The driver for each provider.
#[derive(Clone)]
pub struct Drivers {
    /// `None` when this executor is not configured for `aws` (no state bucket): aws jobs then
    /// fail with a message saying what to configure.
    pub aws: Option<Arc<dyn StepDriver>>,
    /// `None` when no stand-ins are configured: sandbox jobs then fail with a clear message
    /// instead of silently using anything else.
    pub sandbox: Option<Arc<dyn StepDriver>>,
}

impl Drivers {
    /// Real `terraform`/`helm` for `aws` (when its state bucket is set); the stand-ins for
    /// `sandbox`.
    pub fn from_settings(settings: &ExecutorSettings) -> Self {
        Drivers {
            aws: settings
                .state_bucket
                .as_ref()
                .map(|_| Arc::new(TerraformHelmDriver::aws(settings)) as Arc<dyn StepDriver>),
            sandbox: settings.sandbox_tools.as_ref().map(|tools| {
                Arc::new(TerraformHelmDriver::sandbox(tools, settings)) as Arc<dyn StepDriver>
            }),
        }
    }

    /// The driver for `provider`, or why there is none.
    pub fn for_provider(&self, provider: Provider) -> Result<&dyn StepDriver, StepError> {
        match provider {
            Provider::Aws => self.aws.as_deref().ok_or_else(|| {
                StepError::failed(
                    "this executor is not configured for the aws provider: set \
                     PROVISIONER_TF_STATE_BUCKET (the S3 bucket of Terraform state) on it",
                )
            }),
            Provider::Sandbox => self.sandbox.as_deref().ok_or_else(|| {
                StepError::failed(
                    "the sandbox provider is not available on this executor: it runs \
                     outside the provisioner binary and no stand-ins were given",
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_jobs_need_the_state_bucket_on_this_executor() {
        let mut settings = ExecutorSettings::new("nats://unused", "t");
        let error = Drivers::from_settings(&settings)
            .for_provider(Provider::Aws)
            .err()
            .expect("no aws driver without a bucket");
        assert!(
            error.to_string().contains("PROVISIONER_TF_STATE_BUCKET"),
            "{error}"
        );
        settings.state_bucket = Some("acme-state".into());
        assert!(
            Drivers::from_settings(&settings)
                .for_provider(Provider::Aws)
                .is_ok()
        );
    }
}
