//! [`TerraformHelmDriver`]: runs the steps with the `terraform` and `helm` command lines (the
//! real ones for `aws`, the stand-ins for `sandbox`) in the environment's workdir.
//!
//! - infra: write `main.tf.json` (+ `simulate.json` in the sandbox), `terraform init`,
//!   `terraform plan -out=<PLAN_FILE>`, `terraform apply <PLAN_FILE>` (exactly what was planned;
//!   terraform refuses the plan if the state changed in between), `terraform output -json` → the
//!   non-sensitive string outputs. The plan file is removed when the step ends.
//! - bootstrap: parse the job's infra outputs ([`InfraOutputs`], the cluster's CA bundle
//!   included); the [`BootstrapStep`] decides the files (kubeconfig, values) and the
//!   `helm upgrade --install` runs, in order, which this driver performs. On `aws`, first the
//!   readiness checks in-process with `kube` (the API server answers, each node pool's minimum
//!   of nodes is Ready), authenticated by an EKS token signed with the preflight's assumed
//!   session; helm's kubeconfig carries the current token, owner-only, rewritten before each
//!   helm run and removed when the step ends; after the installs, the Beta9 gateway must be
//!   available. Each wait has its timeout from settings.
//! - destroy: when infra reported a cluster, first uninstall the bootstrap's releases in reverse
//!   order ([`bootstrap::Teardown`]; on `aws` with the bootstrap's way in: an EKS token, helm's
//!   owner-only kubeconfig), so their load balancers and volumes do not hold the VPC; then
//!   write the configuration again, `terraform init`, `terraform destroy`. What happens when
//!   the cluster cannot be reached or an uninstall fails: see `uninstall_releases`.
//!
//! A state lock left by a holder that is gone (an executor killed mid-apply) is taken over
//! once with `terraform force-unlock`; a lock held by a live process is reported as a failure.
//!
//! A terraform command that fails transiently (throttled, a 5xx, the network, a lock still held
//! after `-lock-timeout`: [`terraform_errors::classify`]) runs again within the step, with
//! exponential back-off and jitter, bounded by [`TerraformRetry`]; each retry is noted in the
//! step's logs. Any other failure fails the step at once with terraform's first relevant error
//! lines ([`terraform_errors::relevant_lines`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bootstrap::cluster::{self, ClusterAuth};
use bootstrap::eks_token::{TokenSource, TokenTarget};
use bootstrap::helm::HelmOutput;
use bootstrap::kubeconfig::{self, KUBECONFIG_FILE};
use bootstrap::readiness::{self, NotReady, ReadinessTimeouts};
use bootstrap::{
    Beta9Secrets, BootstrapRunner, BootstrapStep, Charts, ClusterAccess, FileToWrite,
    HelmInvocation, PlanInputs, Teardown, TeardownFailed,
};
use domain::aggregate::Outputs;
use domain::conditions::{ConditionStatus, ConditionType};
use domain::outputs::{InfraOutput, InfraOutputs};
use domain::spec::{ExternalId, Provider, Step};
use domain::wire::Subjects;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::beta9_secrets;
use crate::customer_account::{AssumedSession, CustomerAccounts, session_name};
use crate::driver::{StepContext, StepDriver, StepError};
use crate::external_ids::ExternalIds;
use crate::process::{self, Finished, Invocation, Program};
use crate::settings::{ExecutorSettings, SandboxTools, TerraformRetry};
use crate::terraform_errors::{self, Class};
use child_process::NETWORK_ENV;
use terraform_stack::{CONFIG_FILE, Target, customer_role};

/// The variables the real CLIs may take from the executor's environment beside the network's
/// ([`NETWORK_ENV`]): where the AWS configuration is (never the credentials themselves), and
/// terraform's plugin cache.
pub const CLOUD_TOOL_ENV: &[&str] = &[
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "TF_PLUGIN_CACHE_DIR",
];
/// The sandbox's fault-injection file, read by the stand-ins.
pub use domain::spec::SIMULATE_FILE;

/// Runs every step with `terraform` and `helm` (or their stand-ins).
#[derive(Clone, Debug)]
pub struct TerraformHelmDriver {
    /// Which provider's jobs this driver runs: decides the sandbox-only files and the kind of
    /// kubeconfig.
    pub provider: Provider,
    pub terraform: Program,
    pub helm: Program,
    pub lock_timeout: Duration,
    /// How a terraform command that failed transiently runs again.
    pub retry: TerraformRetry,
    /// Between SIGINT and SIGKILL when a step is cancelled.
    pub cancel_grace: Duration,
    /// `-backend-config=KEY=VALUE` pairs for `terraform init` (the S3 bucket, its region when it
    /// is not the environment's, and the optional lock table); they override the rendering's.
    pub backend_config: Vec<(String, String)>,
    /// The way into customer accounts (`aws` only): checked before any tool runs.
    pub accounts: Option<Arc<CustomerAccounts>>,
    /// Where a job's sealed external id is opened (`aws` only), before the preflight.
    pub external_ids: Option<Arc<ExternalIds>>,
    /// Where the bootstrap's charts come from, each at its pinned version.
    pub charts: Charts,
    /// The bootstrap's readiness waits (`aws` only).
    pub readiness: ReadinessTimeouts,
}

impl TerraformHelmDriver {
    /// The real CLIs, for `aws`.
    pub fn aws(settings: &ExecutorSettings) -> Self {
        let mut backend_config = Vec::new();
        if let Some(bucket) = &settings.state_bucket {
            backend_config.push(("bucket".to_owned(), bucket.clone()));
        }
        if let Some(region) = &settings.state_region {
            backend_config.push(("region".to_owned(), region.clone()));
        }
        if let Some(table) = &settings.state_lock_table {
            backend_config.push(("dynamodb_table".to_owned(), table.clone()));
        }
        TerraformHelmDriver {
            provider: Provider::Aws,
            terraform: Program::new(
                &settings.terraform_bin,
                "install Terraform >= 1.10 (or OpenTofu) on PATH, or set PROVISIONER_TERRAFORM_BIN",
            )
            .inherit(NETWORK_ENV)
            .inherit(CLOUD_TOOL_ENV),
            helm: Program::new(
                &settings.helm_bin,
                "install Helm 3 on PATH, or set PROVISIONER_HELM_BIN",
            )
            .inherit(NETWORK_ENV)
            .inherit(CLOUD_TOOL_ENV),
            lock_timeout: settings.lock_timeout,
            retry: settings.terraform_retry,
            cancel_grace: settings.cancel_grace,
            backend_config,
            accounts: Some(Arc::new(CustomerAccounts::new(settings.aws.clone()))),
            external_ids: Some(Arc::new(ExternalIds::new(
                settings.nats_url.clone(),
                Subjects::new(settings.subject_prefix.clone()),
                settings.secrets_key.clone(),
            ))),
            charts: settings.charts.clone(),
            readiness: settings.readiness,
        }
    }

    /// The stand-ins, for `sandbox`.
    pub fn sandbox(tools: &SandboxTools, settings: &ExecutorSettings) -> Self {
        TerraformHelmDriver {
            provider: Provider::Sandbox,
            terraform: tools.terraform(),
            helm: tools.helm(),
            lock_timeout: settings.lock_timeout,
            retry: settings.terraform_retry,
            cancel_grace: settings.cancel_grace,
            backend_config: Vec::new(),
            accounts: None,
            external_ids: None,
            charts: settings.charts.clone(),
            readiness: settings.readiness,
        }
    }

    async fn run_step(&self, ctx: &StepContext) -> Result<Outputs, StepError> {
        if ctx.job.infra_model.provider != self.provider {
            return Err(StepError::failed(format!(
                "a {} job reached the {} driver",
                ctx.job.infra_model.provider.as_str(),
                self.provider.as_str()
            )));
        }
        // Kept until the step ends: the customer role's variables for Terraform, and the
        // assumed session (memory only) for the bootstrap's EKS tokens.
        let (_customer_vars, session) = match &self.accounts {
            Some(accounts) => {
                let (vars, session) = self.enter_customer_account(accounts, ctx).await?;
                (Some(vars), Some(session))
            }
            None => (None, None),
        };
        match ctx.job.step {
            Step::Infra => self.infra(ctx).await,
            Step::Bootstrap => self.bootstrap(ctx, session.as_ref()).await,
            Step::Destroy => self.destroy(ctx, session.as_ref()).await,
        }
    }

    async fn infra(&self, ctx: &StepContext) -> Result<Outputs, StepError> {
        self.prepare_terraform(ctx).await?;
        // The plan may hold sensitive values: it never outlives the step.
        let _plan = RemovedOnDrop(ctx.workdir.join(PLAN_FILE));
        // Planned again on a retry: an apply that failed midway has changed the state, and
        // terraform refuses a plan made before that.
        self.retrying(ctx, "terraform plan and apply", || async {
            self.terraform_with_lock(ctx, plan_args(self.lock_timeout))
                .await?;
            self.terraform_with_lock(ctx, apply_plan_args(self.lock_timeout))
                .await
        })
        .await?;
        let outputs = self.terraform_outputs(ctx).await?;
        Ok(reportable_outputs(&outputs))
    }

    async fn destroy(
        &self,
        ctx: &StepContext,
        session: Option<&AssumedSession>,
    ) -> Result<Outputs, StepError> {
        self.uninstall_releases(ctx, session).await?;
        self.prepare_terraform(ctx).await?;
        self.retrying(ctx, "terraform destroy", || {
            self.terraform_with_lock(ctx, destroy_args(self.lock_timeout))
        })
        .await?;
        if let (Some(accounts), Some(session)) = (&self.accounts, session) {
            // The one resource the executor made outside Terraform.
            let client = accounts
                .secrets_manager(&ctx.job.infra_model.region, &session.credentials)
                .await;
            beta9_secrets::delete_encryption_key(&client, ctx.job.environment_id.as_str())
                .await
                .map_err(|e| StepError::failed(e.to_string()))?;
        }
        if self.provider == Provider::Aws {
            // Nothing of the environment is left to keep: its state lives in the S3 backend,
            // and a redelivered destroy starts again in a fresh workdir against that state. The
            // sandbox keeps its workdir: it is the simulated cloud (the stand-ins' state and
            // run records), which users and tests inspect.
            remove_dir(&ctx.workdir).await?;
        }
        Ok(Outputs::new())
    }

    /// The first part of a destroy: the bootstrap's releases uninstalled, last installed first
    /// ([`Teardown`]), so that what the cluster made outside Terraform — ingress-nginx's load
    /// balancer, volumes — is gone before `terraform destroy` deletes the VPC they would hold.
    /// Skipped when the infrastructure never reported a cluster.
    ///
    /// When it cannot be done:
    /// - An uninstall fails (the cluster answers, helm does not succeed): the step fails before
    ///   anything is destroyed, naming the release; a retry starts again (releases already gone
    ///   are skipped), and the message says how to remove a release that will not go.
    /// - On `aws`, the cluster's API server does not answer within the readiness timeout (a
    ///   cluster that is broken or gone): nothing could uninstall the releases, now or on a
    ///   retry, so the destroy goes on with `terraform destroy`, saying in its log which
    ///   releases were left and what to do if their load balancers then hold the VPC.
    async fn uninstall_releases(
        &self,
        ctx: &StepContext,
        session: Option<&AssumedSession>,
    ) -> Result<(), StepError> {
        if !ctx
            .job
            .infra_outputs
            .contains_key(InfraOutput::ClusterName.name())
        {
            ctx.logs
                .note("no cluster was created: nothing to uninstall");
            return Ok(());
        }
        write_simulate_file(ctx, self.provider).await?;
        let infra = InfraOutputs::try_from(&ctx.job.infra_outputs).map_err(|missing| {
            StepError::failed(format!("cannot uninstall the releases: {missing}"))
        })?;
        let access = match self.provider {
            Provider::Sandbox => ClusterAccess::Sandbox,
            Provider::Aws => ClusterAccess::Eks,
        };
        let teardown = Teardown::new(
            &PlanInputs {
                beta9: &ctx.job.beta9,
                infra: &infra,
                model: &ctx.job.infra_model,
                charts: &self.charts,
            },
            &access,
        );
        let helm_access = match (self.provider, session) {
            (Provider::Sandbox, _) => None,
            (Provider::Aws, Some(session)) => {
                let (client, helm_access) = eks_access(ctx, &infra, session, &teardown.kubeconfig)?;
                let note = |line: &str| ctx.logs.note(line);
                let answered =
                    cancellable(ctx, readiness::api_server(&client, &self.readiness, &note))
                        .await?;
                if let Err(unreachable) = answered {
                    ctx.logs.note(&cluster_unreachable_note(
                        &unreachable.to_string(),
                        &teardown,
                        &infra.cluster_name,
                    ));
                    return Ok(());
                }
                Some(helm_access)
            }
            (Provider::Aws, None) => {
                return Err(StepError::failed(
                    "cannot uninstall the releases: no assumed customer session to reach the \
                     cluster with",
                ));
            }
        };
        let tools = StepTools::new(self, ctx, helm_access);
        teardown
            .run(&ctx.workdir, &tools)
            .await
            .map_err(|failed| teardown_error(ctx, failed))
    }

    async fn bootstrap(
        &self,
        ctx: &StepContext,
        session: Option<&AssumedSession>,
    ) -> Result<Outputs, StepError> {
        write_simulate_file(ctx, self.provider).await?;
        let infra = InfraOutputs::try_from(&ctx.job.infra_outputs)
            .map_err(|missing| StepError::failed(format!("cannot bootstrap: {missing}")))?;
        let (access, eks) = match (self.provider, session) {
            (Provider::Sandbox, _) => (ClusterAccess::Sandbox, None),
            (Provider::Aws, Some(session)) => (ClusterAccess::Eks, Some(session)),
            (Provider::Aws, None) => {
                return Err(StepError::failed(
                    "cannot bootstrap: no assumed customer session to reach the cluster with",
                ));
            }
        };
        let inputs = PlanInputs {
            beta9: &ctx.job.beta9,
            infra: &infra,
            model: &ctx.job.infra_model,
            charts: &self.charts,
        };
        let secrets = self.beta9_secrets(ctx, eks, &infra).await?;
        let step = BootstrapStep::new(&inputs, &access, secrets);
        for note in &step.plan.notes {
            ctx.logs.note(note);
        }
        let Some(session) = eks else {
            ctx.progress.report(
                ConditionType::ClusterReachable,
                ConditionStatus::True,
                "SandboxCluster",
                "the sandbox's simulated cluster has no API server to check",
            );
            let outputs = step
                .run(&ctx.workdir, &StepTools::new(self, ctx, None))
                .await?;
            return Ok(Outputs::from(&outputs));
        };
        // The token-bearing kubeconfig never outlives the step.
        let (client, helm_access) = eks_access(ctx, &infra, session, &step.kubeconfig)?;
        let note = |line: &str| ctx.logs.note(line);
        let limits = &self.readiness;
        let reachable = ConditionType::ClusterReachable;
        let version = ready(
            ctx,
            (reachable, "ApiServerUnreachable"),
            readiness::api_server(&client, limits, &note),
        )
        .await?;
        let minimums = readiness::node_minimums(&ctx.job.infra_model.cluster);
        ready(
            ctx,
            (reachable, "NodesNotReady"),
            readiness::nodes(&client, &minimums, limits, &note),
        )
        .await?;
        ctx.progress.report(
            reachable,
            ConditionStatus::True,
            "NodesReady",
            format!(
                "Kubernetes {version}; at least {} nodes Ready",
                readiness::describe(&minimums)
            ),
        );
        let mut outputs = step
            .run(&ctx.workdir, &StepTools::new(self, ctx, Some(helm_access)))
            .await?;
        let app = ConditionType::AppReady;
        let hostname = ready(
            ctx,
            (app, "LoadBalancerPending"),
            readiness::load_balancer(&client, limits, &note),
        )
        .await?;
        ready(
            ctx,
            (app, "GatewayUnavailable"),
            readiness::gateway(&client, limits, &note),
        )
        .await?;
        ctx.logs.note(&format!(
            "Beta9 answers at {} once the domain's DNS points at the load balancer {hostname}",
            outputs.endpoint
        ));
        outputs.load_balancer_hostname = Some(hostname);
        Ok(Outputs::from(&outputs))
    }

    /// The secrets of Beta9's values. On `aws`, read with the assumed session: the database
    /// password from the RDS-managed secret, the encryption key kept per environment
    /// ([`beta9_secrets`]). The sandbox has no database to match: fresh values each run.
    async fn beta9_secrets(
        &self,
        ctx: &StepContext,
        session: Option<&AssumedSession>,
        infra: &InfraOutputs,
    ) -> Result<Beta9Secrets, StepError> {
        let (Some(accounts), Some(session)) = (&self.accounts, session) else {
            return Ok(Beta9Secrets {
                database_password: generated_secret().into(),
                encryption_key: generated_secret().into(),
            });
        };
        let client = accounts
            .secrets_manager(&ctx.job.infra_model.region, &session.credentials)
            .await;
        let secrets = beta9_secrets::read(
            &client,
            &infra.database_password_secret_arn,
            ctx.job.environment_id.as_str(),
        )
        .await
        .map_err(|e| StepError::failed(format!("cannot bootstrap: {e}")))?;
        ctx.logs.note(
            "Beta9's database password and encryption key were read from the customer's \
             Secrets Manager",
        );
        Ok(secrets)
    }

    /// The preflight (assume the customer role, check the account), then the variables through
    /// which Terraform's provider assumes the role itself, in an owner-only file removed when
    /// the returned guard drops (at the end of the step, whatever its result).
    async fn enter_customer_account(
        &self,
        accounts: &CustomerAccounts,
        ctx: &StepContext,
    ) -> Result<(RemovedOnDrop, AssumedSession), StepError> {
        let environment_id = ctx.job.environment_id.as_str();
        let role = match (&ctx.job.customer_role, &self.external_ids) {
            (Some(role), Some(external_ids)) => Some(
                external_ids
                    .open(environment_id, role)
                    .await
                    .map_err(|e| StepError::failed(format!("preflight: {e}")))?,
            ),
            (role, _) => role.clone(),
        };
        let role = role.as_ref();
        let session = accounts
            .preflight(environment_id, &ctx.job.infra_model.region, role)
            .await
            .map_err(|e| StepError::failed(format!("preflight: {e}")))?;
        ctx.logs.note(
            "preflight: the customer role was assumed, and its session belongs to the \
             configured account",
        );
        let role = role.expect("the preflight refuses a job without a role");
        let values = customer_role::values(
            role.role_arn.as_str(),
            role.external_id_value().map(ExternalId::expose),
            &session_name(environment_id),
            accounts.settings().session_duration,
        );
        let path = ctx.workdir.join(customer_role::VARS_FILE);
        let guard = RemovedOnDrop(path.clone());
        write_private_json(&path, &values).await?;
        Ok((guard, session))
    }

    /// Writes the configuration (and the sandbox's simulate file), then `terraform init`.
    async fn prepare_terraform(&self, ctx: &StepContext) -> Result<(), StepError> {
        let config = terraform_stack::render(
            Target {
                environment_id: ctx.job.environment_id.as_str(),
                name: ctx.job.name.as_str(),
            },
            &ctx.job.infra_model,
        );
        write_json(&ctx.workdir.join(CONFIG_FILE), &config).await?;
        write_simulate_file(ctx, self.provider).await?;
        let init = self.terraform(ctx).args(init_args(&self.backend_config));
        self.retrying(ctx, "terraform init", || async {
            let finished = self.exec(ctx, &init).await?;
            if finished.status.success() {
                Ok(())
            } else {
                Err(terraform_errors::failure(&finished))
            }
        })
        .await
    }

    /// Runs `run` (terraform commands) again while it fails only transiently, pausing with
    /// exponential back-off and jitter in between: at most `retry.attempts` runs, none starting
    /// later than `retry.max_elapsed` (or the step's timeout) after the first. Each retry is noted
    /// in the step's logs; any other failure, cancellation or success ends it at once.
    async fn retrying<T, F, Fut>(
        &self,
        ctx: &StepContext,
        what: &str,
        mut run: F,
    ) -> Result<T, StepError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StepError>>,
    {
        let started = Instant::now();
        let budget = retry_budget(&self.retry, ctx.job.timeout_seconds);
        let backoff = jetstream_consumer::Backoff::new(self.retry.first_delay, budget);
        let mut attempt: u32 = 1;
        loop {
            let message = match run().await {
                Err(StepError::Failed { message }) => message,
                other => return other,
            };
            let Class::Retryable(cause) = terraform_errors::classify(&message) else {
                return Err(StepError::Failed { message });
            };
            let delay = backoff.delay(u64::from(attempt));
            if attempt >= self.retry.attempts || started.elapsed() + delay > budget {
                ctx.logs.note(&format!(
                    "{what} failed ({}); not retrying after {attempt} attempt(s)",
                    cause.as_str()
                ));
                return Err(StepError::failed(format!(
                    "{message}\n\n(gave up after {attempt} attempt(s): {})",
                    cause.as_str()
                )));
            }
            attempt += 1;
            ctx.logs.note(&format!(
                "{what} failed ({}); retrying in {:.1}s (attempt {attempt} of {})",
                cause.as_str(),
                delay.as_secs_f64(),
                self.retry.attempts
            ));
            tracing::warn!(
                what,
                cause = cause.as_str(),
                attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "retrying a transient terraform failure"
            );
            cancellable(ctx, tokio::time::sleep(delay)).await?;
        }
    }

    /// Runs a locking terraform command. If it fails because the state is locked, and this
    /// attempt took the environment over from a holder presumed dead (its attempt superseded,
    /// its lease lapsed: [`StepContext::takeover`]) or an admin authorised forcing exactly that
    /// lock (the job's `force_unlock`), forces that lock open once and runs the command again;
    /// no other lock is ever forced.
    async fn terraform_with_lock(
        &self,
        ctx: &StepContext,
        args: Vec<String>,
    ) -> Result<(), StepError> {
        let command = self.terraform(ctx).args(&args);
        let finished = self.exec(ctx, &command).await?;
        if finished.status.success() {
            return Ok(());
        }
        let Some(lock_id) = state_lock_id(&finished.stderr_text()) else {
            return Err(terraform_errors::failure(&finished));
        };
        let authorized = ctx
            .job
            .force_unlock
            .as_ref()
            .filter(|authorized| authorized.lock_id.as_str() == lock_id);
        match (&ctx.takeover, authorized) {
            (Some(takeover), _) => {
                ctx.logs.note(&format!(
                    "the state lock {lock_id} was left by attempt {} of an executor whose lease \
                     lapsed; forcing it open and retrying",
                    takeover.previous.attempt
                ));
                tracing::warn!(
                    lock_id,
                    previous = takeover.previous.executor,
                    "taking over the state lock of a holder presumed dead"
                );
            }
            (None, Some(authorized)) => {
                ctx.logs.note(&format!(
                    "forcing the state lock {lock_id} open, as authorised by {}, and retrying",
                    authorized.authorized_by
                ));
                tracing::warn!(
                    lock_id,
                    authorized_by = authorized.authorized_by,
                    "forcing open a state lock an admin authorised"
                );
            }
            (None, None) => {
                return Err(StepError::failed(format!(
                    "the state is locked by another run (lock {lock_id}) that is not known to be \
                     dead; retry once it has finished, or, if it is dead, have an admin \
                     force-unlock lock {lock_id}. {}",
                    finished.error_message()
                )));
            }
        }
        let unlock = self.terraform(ctx).args(force_unlock_args(&lock_id));
        let unlocked = self.exec(ctx, &unlock).await?;
        if !unlocked.status.success() {
            return Err(terraform_errors::failure(&unlocked));
        }
        let retried = self.exec(ctx, &command).await?;
        if retried.status.success() {
            Ok(())
        } else {
            Err(terraform_errors::failure(&retried))
        }
    }

    /// `terraform output -json`, captured (it holds the sensitive outputs too) and parsed.
    async fn terraform_outputs(
        &self,
        ctx: &StepContext,
    ) -> Result<BTreeMap<String, TerraformOutput>, StepError> {
        let command = self.terraform(ctx).args(output_args()).capture_stdout();
        let finished = self.exec(ctx, &command).await?;
        if !finished.status.success() {
            return Err(StepError::failed(finished.error_message()));
        }
        parse_outputs(&finished.stdout)
    }

    fn terraform(&self, ctx: &StepContext) -> Invocation {
        Invocation::new("terraform", &self.terraform, &ctx.workdir)
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
    }

    fn helm(&self, ctx: &StepContext) -> Invocation {
        Invocation::new("helm", &self.helm, &ctx.workdir)
    }

    async fn exec(
        &self,
        ctx: &StepContext,
        invocation: &Invocation,
    ) -> Result<Finished, StepError> {
        ctx.logs.note(&format!(
            "$ {} {}",
            invocation.tool,
            invocation.arg_strings().join(" ")
        ));
        Ok(process::run(invocation, &ctx.logs, &ctx.cancel, self.cancel_grace).await?)
    }
}

impl StepDriver for TerraformHelmDriver {
    fn run(&self, ctx: StepContext) -> BoxFuture<'_, Result<Outputs, StepError>> {
        Box::pin(async move { self.run_step(&ctx).await })
    }
}

/// A readiness wait of the step: a timeout reports `condition` false for `reason`, and fails
/// the step with its message; a cancellation stops it.
async fn ready<T>(
    ctx: &StepContext,
    (condition, reason): (ConditionType, &str),
    wait: impl Future<Output = Result<T, NotReady>>,
) -> Result<T, StepError> {
    cancellable(ctx, wait).await?.map_err(|e| {
        let message = e.to_string();
        ctx.progress
            .report(condition, ConditionStatus::False, reason, message.clone());
        StepError::failed(message)
    })
}

/// `work`, unless the step is cancelled first ([`StepError::Cancelled`]).
async fn cancellable<T>(ctx: &StepContext, work: impl Future<Output = T>) -> Result<T, StepError> {
    tokio::select! {
        done = work => Ok(done),
        () = ctx.cancel.cancelled() => Err(StepError::Cancelled),
    }
}

/// Helm's way into an EKS cluster: the kubeconfig document and the tokens to render into it.
/// The file at `path` holds a token: it is removed when this drops.
struct HelmKubeconfig {
    path: PathBuf,
    document: Value,
    tokens: Arc<TokenSource>,
    _removed: RemovedOnDrop,
}

/// The way into the EKS cluster of `infra` for one step — the bootstrap's and the destroy's:
/// a `kube` client and helm's kubeconfig (`document` at [`KUBECONFIG_FILE`], removed when it
/// drops), both with the EKS tokens made from the assumed customer session.
fn eks_access(
    ctx: &StepContext,
    infra: &InfraOutputs,
    session: &AssumedSession,
    document: &Value,
) -> Result<(cluster::Client, HelmKubeconfig), StepError> {
    let tokens = Arc::new(TokenSource::new(
        TokenTarget {
            cluster_name: infra.cluster_name.clone(),
            region: ctx.job.infra_model.region.clone(),
            // EKS accepts only tokens for STS's own hosts, whatever endpoint the executor
            // calls STS through.
            sts_endpoint: None,
        },
        session.credentials.clone(),
    ));
    let client = cluster::client(
        &infra.cluster_endpoint,
        Some(&infra.cluster_certificate_authority),
        ClusterAuth::Eks(tokens.clone()),
    )
    .map_err(|e| StepError::failed(format!("cannot reach the cluster: {e}")))?;
    let path = ctx.workdir.join(KUBECONFIG_FILE);
    let helm = HelmKubeconfig {
        _removed: RemovedOnDrop(path.clone()),
        path,
        document: document.clone(),
        tokens,
    };
    Ok((client, helm))
}

/// The step's error for a teardown that stopped: a failed uninstall says which release, helm's
/// error and how to go on; a cancellation or an I/O error stays as it is.
fn teardown_error(ctx: &StepContext, failed: TeardownFailed<StepError>) -> StepError {
    match failed {
        TeardownFailed::Uninstall {
            release,
            namespace,
            error: StepError::Failed { message },
        } => StepError::failed(uninstall_failed_message(
            ctx.job.environment_id.as_str(),
            &release,
            &namespace,
            &message,
        )),
        TeardownFailed::Uninstall { error, .. } | TeardownFailed::Kubeconfig(error) => error,
    }
}

/// A failed uninstall: which release, helm's error, and how to go on.
fn uninstall_failed_message(
    environment_id: &str,
    release: &str,
    namespace: &str,
    helm_error: &str,
) -> String {
    format!(
        "could not uninstall the release {release} (namespace {namespace}): {helm_error}\n\n\
         terraform destroy has not run: nothing of the infrastructure is destroyed yet, so that \
         no load balancer or volume of the release is left behind holding the VPC. Retry the \
         destroy (`provisioner env retry {environment_id}`): releases already uninstalled are \
         skipped. If the release will not go, uninstall it by hand (`helm uninstall {release} \
         --namespace {namespace} --no-hooks`), then retry."
    )
}

/// The log note of a destroy that goes on without uninstalling, its cluster unreachable.
fn cluster_unreachable_note(why: &str, teardown: &Teardown, cluster_name: &str) -> String {
    let releases: Vec<&str> = teardown.releases.iter().map(|r| r.name.as_str()).collect();
    format!(
        "cannot uninstall the releases ({}): {why}; going on with terraform destroy. If it \
         fails to delete the VPC, a load balancer of the cluster holds it: delete the load \
         balancers tagged kubernetes.io/cluster/{cluster_name}, then retry the destroy.",
        releases.join(", ")
    )
}

impl HelmKubeconfig {
    /// Writes the kubeconfig with the current token, owner-only from its creation.
    async fn write(&self) -> Result<(), StepError> {
        use secrecy::ExposeSecret;
        let token = self
            .tokens
            .current()
            .map_err(|e| StepError::failed(e.to_string()))?;
        let text = kubeconfig::with_token(&self.document, &token);
        write_private(&self.path, text.expose_secret().as_bytes()).await
    }
}

/// The bootstrap's I/O for one step: files in the workdir, `helm` through the process runner.
struct StepTools<'a> {
    driver: &'a TerraformHelmDriver,
    ctx: &'a StepContext,
    /// On `aws`: the kubeconfig is written with a token, and again before each helm run.
    eks: Option<HelmKubeconfig>,
}

impl<'a> StepTools<'a> {
    fn new(
        driver: &'a TerraformHelmDriver,
        ctx: &'a StepContext,
        eks: Option<HelmKubeconfig>,
    ) -> Self {
        StepTools { driver, ctx, eks }
    }
}

impl BootstrapRunner for StepTools<'_> {
    type Error = StepError;

    async fn write(&self, file: &FileToWrite) -> Result<(), StepError> {
        if let Some(dir) = file.path.parent() {
            create_dir(dir).await?;
        }
        if let Some(eks) = &self.eks
            && file.path == eks.path
        {
            return eks.write().await;
        }
        if file.owner_only {
            write_private(&file.path, file.contents.as_bytes()).await
        } else {
            write_text(&file.path, &file.contents).await
        }
    }

    async fn helm(&self, invocation: &HelmInvocation) -> Result<(), StepError> {
        if let Some(eks) = &self.eks {
            // A fresh token for each run: one lasts ~15 minutes.
            eks.write().await?;
        }
        self.ctx.logs.note(&invocation.summary);
        let helm = self
            .driver
            .helm(self.ctx)
            .args(invocation.args.iter().cloned());
        let finished = self.driver.exec(self.ctx, &helm).await?;
        if finished.status.success() {
            Ok(())
        } else {
            Err(StepError::failed(finished.error_message()))
        }
    }

    async fn helm_output(
        &self,
        invocation: &HelmInvocation,
        timeout: Duration,
    ) -> Result<HelmOutput, StepError> {
        if let Some(eks) = &self.eks {
            eks.write().await?;
        }
        self.ctx.logs.note(&invocation.summary);
        let helm = self
            .driver
            .helm(self.ctx)
            .args(invocation.args.iter().cloned())
            .capture_stdout();
        // Dropping the run on time-out kills helm's process group.
        let finished = tokio::time::timeout(timeout, self.driver.exec(self.ctx, &helm))
            .await
            .map_err(|_| {
                StepError::failed(format!(
                    "{} did not finish within {}s",
                    invocation.summary,
                    timeout.as_secs()
                ))
            })??;
        Ok(HelmOutput {
            success: finished.status.success(),
            stderr: finished.stderr_text(),
            stdout: finished.stdout,
        })
    }

    async fn remove(&self, path: &Path) -> Result<(), StepError> {
        remove_file(path).await
    }

    fn note(&self, line: &str) {
        self.ctx.logs.note(line);
    }

    fn baseline_installed(&self, releases: &[&str]) {
        self.ctx.progress.report(
            ConditionType::BaselineInstalled,
            ConditionStatus::True,
            "ReleasesInstalled",
            format!("installed: {}", releases.join(", ")),
        );
    }
}

/// How long a step keeps retrying: `retry.max_elapsed`, or the step's timeout when shorter.
pub fn retry_budget(retry: &TerraformRetry, step_timeout_seconds: Option<u64>) -> Duration {
    step_timeout_seconds
        .map(Duration::from_secs)
        .map_or(retry.max_elapsed, |timeout| timeout.min(retry.max_elapsed))
}

/// `terraform init`, with the backend settings the rendering leaves to the deployment.
pub fn init_args(backend_config: &[(String, String)]) -> Vec<String> {
    let mut args = vec!["init".into(), "-input=false".into(), "-no-color".into()];
    args.extend(
        backend_config
            .iter()
            .map(|(key, value)| format!("-backend-config={key}={value}")),
    );
    args
}

fn lock_timeout_arg(lock_timeout: Duration) -> String {
    format!("-lock-timeout={}s", lock_timeout.as_secs())
}

/// The saved plan of an infra step, in its workdir (relative: terraform runs there).
pub const PLAN_FILE: &str = "provisioner.tfplan";

/// `terraform plan`, saving the plan to [`PLAN_FILE`].
pub fn plan_args(lock_timeout: Duration) -> Vec<String> {
    vec![
        "plan".into(),
        "-input=false".into(),
        "-no-color".into(),
        lock_timeout_arg(lock_timeout),
        format!("-out={PLAN_FILE}"),
    ]
}

/// `terraform apply` of the saved plan: a plan file is its own approval.
pub fn apply_plan_args(lock_timeout: Duration) -> Vec<String> {
    vec![
        "apply".into(),
        "-input=false".into(),
        "-no-color".into(),
        lock_timeout_arg(lock_timeout),
        PLAN_FILE.into(),
    ]
}

pub fn destroy_args(lock_timeout: Duration) -> Vec<String> {
    vec![
        "destroy".into(),
        "-auto-approve".into(),
        "-input=false".into(),
        "-no-color".into(),
        lock_timeout_arg(lock_timeout),
    ]
}

pub fn output_args() -> Vec<String> {
    vec!["output".into(), "-json".into(), "-no-color".into()]
}

pub fn force_unlock_args(lock_id: &str) -> Vec<String> {
    vec!["force-unlock".into(), "-force".into(), lock_id.into()]
}

/// One entry of `terraform output -json`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
pub struct TerraformOutput {
    #[serde(default)]
    pub sensitive: bool,
    pub value: Value,
}

pub fn parse_outputs(stdout: &str) -> Result<BTreeMap<String, TerraformOutput>, StepError> {
    serde_json::from_str(stdout).map_err(|e| {
        // Never echo the text: it holds sensitive values.
        StepError::failed(format!("terraform output -json printed invalid JSON: {e}"))
    })
}

/// The outputs a result may carry: string values of non-sensitive outputs.
pub fn reportable_outputs(outputs: &BTreeMap<String, TerraformOutput>) -> Outputs {
    outputs
        .iter()
        .filter(|(_, output)| !output.sensitive)
        .filter_map(|(name, output)| Some((name.clone(), output.value.as_str()?.to_owned())))
        .collect()
}

/// The lock ID from terraform's "Error acquiring the state lock" diagnostic (its `Lock Info:`
/// block, `ID:` line), as terraform and OpenTofu print it with or without the diagnostic's
/// `│` frame. Says nothing about whether the holder lives: that is for the caller to know.
pub fn state_lock_id(stderr: &str) -> Option<String> {
    if !stderr.contains("Error acquiring the state lock") {
        return None;
    }
    let mut in_lock_info = false;
    for line in stderr.lines() {
        let line = line.trim_start_matches(['│', '╷', '╵']).trim();
        if line.starts_with("Lock Info:") {
            in_lock_info = true;
        } else if in_lock_info && let Some(id) = line.strip_prefix("ID:") {
            let id = id.trim();
            return (!id.is_empty()).then(|| id.to_owned());
        }
    }
    None
}

/// Writes `simulate.json` for a sandbox job that has a `simulate` block, and removes a stale
/// one otherwise: fault injection exists only in the sandbox.
async fn write_simulate_file(ctx: &StepContext, provider: Provider) -> Result<(), StepError> {
    let path = ctx.workdir.join(SIMULATE_FILE);
    match (&ctx.job.simulate, provider) {
        (Some(simulate), Provider::Sandbox) => {
            let value = serde_json::to_value(simulate)
                .map_err(|e| StepError::io("encode simulate.json", e.into()))?;
            write_json(&path, &value).await
        }
        _ => remove_file(&path).await,
    }
}

/// Removes the file at `path`, if there is one.
async fn remove_file(path: &Path) -> Result<(), StepError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StepError::io(format!("remove {}", path.display()), e)),
    }
}

/// A file of secrets in the workdir, removed when this drops.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!(error = %e, file = %self.0.display(), "could not remove"),
        }
    }
}

/// 40 random letters and digits.
fn generated_secret() -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect()
}

/// Writes `value` to a file only its owner can read, created so from the start.
async fn write_private_json(path: &Path, value: &Value) -> Result<(), StepError> {
    let text = serde_json::to_vec(value)
        .map_err(|e| StepError::io(format!("encode {}", path.display()), e.into()))?;
    write_private(path, &text).await
}

/// Writes `text` to a file only its owner can read, created so from the start.
async fn write_private(path: &Path, text: &[u8]) -> Result<(), StepError> {
    use tokio::io::AsyncWriteExt;
    let write = async {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .await?;
        // An older file may have been made with other permissions.
        restrict_to_owner_now(&file).await?;
        file.write_all(text).await?;
        file.flush().await
    };
    write
        .await
        .map_err(|e| StepError::io(format!("write {}", path.display()), e))
}

async fn restrict_to_owner_now(file: &tokio::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .await
}

async fn write_json(path: &Path, value: &Value) -> Result<(), StepError> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| StepError::io(format!("encode {}", path.display()), e.into()))?;
    text.push('\n');
    write_text(path, &text).await
}

async fn write_text(path: &Path, text: &str) -> Result<(), StepError> {
    tokio::fs::write(path, text)
        .await
        .map_err(|e| StepError::io(format!("write {}", path.display()), e))
}

async fn remove_dir(path: &Path) -> Result<(), StepError> {
    match tokio::fs::remove_dir_all(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StepError::io(format!("remove {}", path.display()), e)),
    }
}

async fn create_dir(path: &Path) -> Result<(), StepError> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(|e| StepError::io(format!("create {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn terraform_commands_never_prompt_and_wait_for_the_lock() {
        assert_eq!(init_args(&[]), ["init", "-input=false", "-no-color"]);
        assert_eq!(
            plan_args(Duration::from_secs(300)),
            [
                "plan",
                "-input=false",
                "-no-color",
                "-lock-timeout=300s",
                "-out=provisioner.tfplan"
            ]
        );
        assert_eq!(
            apply_plan_args(Duration::from_secs(300)),
            [
                "apply",
                "-input=false",
                "-no-color",
                "-lock-timeout=300s",
                "provisioner.tfplan"
            ]
        );
        assert_eq!(
            destroy_args(Duration::from_secs(60)),
            [
                "destroy",
                "-auto-approve",
                "-input=false",
                "-no-color",
                "-lock-timeout=60s"
            ]
        );
        assert_eq!(output_args(), ["output", "-json", "-no-color"]);
        assert_eq!(force_unlock_args("abc"), ["force-unlock", "-force", "abc"]);
    }

    #[test]
    fn retries_stop_at_the_configured_time_or_the_steps_timeout_whichever_is_sooner() {
        let retry = TerraformRetry::DEFAULT;
        assert_eq!(retry_budget(&retry, None), Duration::from_secs(900));
        assert_eq!(retry_budget(&retry, Some(60)), Duration::from_secs(60));
        assert_eq!(retry_budget(&retry, Some(3600)), Duration::from_secs(900));
    }

    #[test]
    fn aws_init_gets_the_state_bucket_and_its_region_and_lock_table_when_set() {
        let mut settings = ExecutorSettings::new("nats://x", "p");
        settings.state_bucket = Some("state-bucket".into());
        let driver = TerraformHelmDriver::aws(&settings);
        assert_eq!(
            init_args(&driver.backend_config),
            [
                "init",
                "-input=false",
                "-no-color",
                "-backend-config=bucket=state-bucket",
            ]
        );
        settings.state_region = Some("eu-central-1".into());
        settings.state_lock_table = Some("locks".into());
        let driver = TerraformHelmDriver::aws(&settings);
        assert_eq!(
            init_args(&driver.backend_config),
            [
                "init",
                "-input=false",
                "-no-color",
                "-backend-config=bucket=state-bucket",
                "-backend-config=region=eu-central-1",
                "-backend-config=dynamodb_table=locks"
            ]
        );
    }

    #[test]
    fn sandbox_uses_the_standins_and_aws_the_configured_binaries() {
        let mut settings = ExecutorSettings::new("nats://x", "p");
        settings.terraform_bin = PathBuf::from("/usr/bin/tofu");
        let sandbox =
            TerraformHelmDriver::sandbox(&SandboxTools::Dir(PathBuf::from("/opt/bin")), &settings);
        assert_eq!(
            sandbox.terraform.path,
            Path::new("/opt/bin/terraform-standin")
        );
        assert_eq!(sandbox.helm.path, Path::new("/opt/bin/helm-standin"));
        assert!(sandbox.terraform.leading_args.is_empty());
        let built_in = TerraformHelmDriver::sandbox(
            &SandboxTools::BuiltIn(PathBuf::from("/usr/local/bin/provisioner")),
            &settings,
        );
        assert_eq!(
            built_in.terraform.path,
            Path::new("/usr/local/bin/provisioner")
        );
        assert_eq!(built_in.terraform.leading_args, ["standin", "terraform"]);
        assert_eq!(built_in.helm.leading_args, ["standin", "helm"]);
        assert!(
            built_in.terraform.inherit.is_empty(),
            "the sandbox needs nothing of ours"
        );
        let aws = TerraformHelmDriver::aws(&settings);
        assert_eq!(aws.terraform.path, Path::new("/usr/bin/tofu"));
        assert_eq!(aws.helm.path, Path::new("helm"));
        assert!(!aws.terraform.inherit.contains(&"AWS_SECRET_ACCESS_KEY"));
    }

    #[test]
    fn reported_outputs_drop_sensitive_and_non_string_values() {
        let outputs = parse_outputs(
            r#"{
                "cluster_name": {"sensitive": false, "type": "string", "value": "c1"},
                "admin_token": {"sensitive": true, "type": "string", "value": "LS0t"},
                "azs": {"sensitive": false, "type": ["tuple", ["string"]], "value": ["a"]}
            }"#,
        )
        .unwrap();
        assert_eq!(
            reportable_outputs(&outputs),
            Outputs::from([("cluster_name".to_owned(), "c1".to_owned())])
        );
    }

    #[test]
    fn invalid_output_json_fails_without_echoing_it() {
        let err = parse_outputs("{\"secret\": ").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    /// Terraform 1.10's diagnostic for an S3 lock file that exists (`-no-color` keeps the frame).
    const S3_LOCKED: &str = "
╷
│ Error: Error acquiring the state lock
│ 
│ Error message: operation error S3: PutObject, https response error StatusCode: 412,
│ RequestID: 3Q9Z, HostID: x, api error PreconditionFailed: At least one of the
│ pre-conditions you specified did not hold
│ Lock Info:
│   ID:        9f1c2d3e-0000-4000-8000-000000000001
│   Path:      acme-state/environments/env_1/terraform.tfstate
│   Operation: OperationTypeApply
│   Who:       provisioner@executor-0
│   Version:   1.10.3
│   Created:   2026-11-30 00:00:00.123456789 +0000 UTC
│   Info:      
│ 
│ 
│ Terraform acquires a state lock to protect the state from being written
│ by multiple users at the same time. Please resolve the issue above and try
│ again. For most commands, you can disable locking with the \"-lock=false\"
│ flag, but this is not recommended.
╵
";

    /// The local backend's, without the frame.
    const LOCAL_LOCKED: &str = "
Error: Error acquiring the state lock

Error message: resource temporarily unavailable
Lock Info:
  ID:        0b7a2a52-5c5d-4f53-9d3a-1e1e6f7d8c9b
  Path:      terraform.tfstate
  Operation: OperationTypeApply
  Who:       root@host
  Version:   1.10.3
  Created:   2026-11-30 00:00:00.1 +0000 UTC
  Info:      
";

    #[test]
    fn the_lock_id_comes_from_terraforms_real_diagnostics() {
        assert_eq!(
            state_lock_id(S3_LOCKED).as_deref(),
            Some("9f1c2d3e-0000-4000-8000-000000000001")
        );
        assert_eq!(
            state_lock_id(LOCAL_LOCKED).as_deref(),
            Some("0b7a2a52-5c5d-4f53-9d3a-1e1e6f7d8c9b")
        );
    }

    #[test]
    fn other_failures_name_no_lock() {
        assert_eq!(state_lock_id("Error: simulated infra failure"), None);
        // An `ID:` outside a lock diagnostic is not a lock.
        assert_eq!(state_lock_id("Error: creating VPC\n  ID: vpc-1"), None);
        // A lock diagnostic cut before its Lock Info names none.
        assert_eq!(
            state_lock_id("Error: Error acquiring the state lock\n\nError message: x"),
            None
        );
    }
}
