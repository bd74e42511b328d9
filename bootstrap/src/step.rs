//! The bootstrap step, prepared and driven: from the infrastructure's outputs, the Beta9
//! settings and the way to reach the cluster, [`BootstrapStep::actions`] lists everything to do
//! in the environment's workdir, in order — the kubeconfig, then per release the check that no
//! attempt which did not finish left it pending (cleared if one did), its values file
//! (owner-only: it holds secrets), its `helm upgrade --install`, and the file's removal. The executor does the I/O through a [`BootstrapRunner`] (its
//! process runner) and [`BootstrapStep::run`] drives it; checks that need to talk to the cluster
//! itself (readiness) belong in `run`, between the installs.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use domain::outputs::{BootstrapOutputs, InfraOutputs};
use serde_json::Value;

use crate::beta9_values::Beta9Secrets;

use crate::helm::{self, HelmOutput, Recovery, STATUS_TIMEOUT, StatusError, VALUES_DIR};
use crate::kubeconfig::{self, KUBECONFIG_FILE};
use crate::plan::{BootstrapPlan, PlanInputs};

/// How helm reaches the new cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterAccess {
    /// The sandbox cluster: its endpoint, no credentials.
    Sandbox,
    /// An EKS cluster, trusting the CA bundle of the infrastructure's outputs; the runner puts
    /// the current EKS token into the kubeconfig file (see [`kubeconfig::with_token`]).
    Eks,
}

impl ClusterAccess {
    /// Helm's kubeconfig document for the cluster of `infra` (JSON, which is YAML).
    pub fn kubeconfig(&self, infra: &InfraOutputs) -> Value {
        match self {
            ClusterAccess::Sandbox => {
                kubeconfig::sandbox(&infra.cluster_name, &infra.cluster_endpoint)
            }
            ClusterAccess::Eks => kubeconfig::eks(
                &infra.cluster_name,
                &infra.cluster_endpoint,
                &infra.cluster_certificate_authority,
            ),
        }
    }
}

/// The bootstrap of one environment, decided: what to install and how to reach the cluster.
#[derive(Clone, Debug)]
pub struct BootstrapStep {
    /// With placeholders where secrets go.
    pub plan: BootstrapPlan,
    /// What fills the placeholders, in the values files only.
    pub secrets: Beta9Secrets,
    /// The kubeconfig document (JSON, which is YAML).
    pub kubeconfig: Value,
    /// What the step reports once every release is installed.
    pub outputs: BootstrapOutputs,
}

/// One thing to do, in [`BootstrapStep::actions`] order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Before a release's install: clears what an attempt that did not finish left pending.
    Recover(RecoverCheck),
    Write(FileToWrite),
    Helm(HelmInvocation),
    /// Removes a file written before (missing already is fine).
    Remove(PathBuf),
}

/// A file to write (its directory created if missing).
#[derive(Clone, PartialEq, Eq)]
pub struct FileToWrite {
    pub path: PathBuf,
    pub contents: String,
    /// Readable and writable by the owner only (mode 0600).
    pub owner_only: bool,
}

/// An owner-only file's contents are not shown: they may be secret.
impl std::fmt::Debug for FileToWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let contents: &dyn std::fmt::Debug = if self.owner_only {
            &"<owner only, not shown>"
        } else {
            &self.contents
        };
        f.debug_struct("FileToWrite")
            .field("path", &self.path)
            .field("contents", contents)
            .field("owner_only", &self.owner_only)
            .finish()
    }
}

/// One run of `helm`, in the workdir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelmInvocation {
    /// A line for the operation's log, said before the run.
    pub summary: String,
    pub args: Vec<OsString>,
}

/// The `helm status` of a release and the runs that clear it when it was left pending
/// ([`helm::recovery`] decides which).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoverCheck {
    pub release: String,
    pub namespace: String,
    pub status: HelmInvocation,
    pub uninstall: HelmInvocation,
    pub rollback: HelmInvocation,
}

impl RecoverCheck {
    fn clearing(&self, recovery: Recovery) -> &HelmInvocation {
        match recovery {
            Recovery::Uninstall => &self.uninstall,
            Recovery::Rollback => &self.rollback,
        }
    }
}

/// Does the bootstrap's I/O: the executor writes the files and runs `helm` with its process
/// runner (logs, cancellation, the child's environment).
pub trait BootstrapRunner {
    type Error;

    /// Writes `file`, creating its directory, with the permissions it asks for.
    fn write(&self, file: &FileToWrite) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Runs `helm` with the invocation's arguments; `Err` unless it succeeds.
    fn helm(
        &self,
        invocation: &HelmInvocation,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Runs `helm` with the invocation's arguments, stopped after `timeout`, capturing its
    /// standard output (never logged); `Err` only when it could not run or finish.
    fn helm_output(
        &self,
        invocation: &HelmInvocation,
        timeout: Duration,
    ) -> impl Future<Output = Result<HelmOutput, Self::Error>> + Send;

    /// Removes the file at `path`; a missing file is not an error.
    fn remove(&self, path: &Path) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// A line for the operation's log.
    fn note(&self, line: &str) {
        let _ = line;
    }

    /// Every release of the baseline (all but Beta9, the last) is installed: `releases`.
    fn baseline_installed(&self, releases: &[&str]) {
        let _ = releases;
    }
}

impl BootstrapStep {
    /// Decides the bootstrap from the plan's inputs, the way to the cluster and the secrets.
    pub fn new(inputs: &PlanInputs<'_>, access: &ClusterAccess, secrets: Beta9Secrets) -> Self {
        BootstrapStep {
            plan: BootstrapPlan::new(inputs),
            secrets,
            kubeconfig: access.kubeconfig(inputs.infra),
            outputs: BootstrapOutputs {
                endpoint: format!("https://{}", inputs.beta9.domain.as_str()),
                // Known once the ingress controller's Service has its load balancer.
                load_balancer_hostname: None,
            },
        }
    }

    /// Everything to do in `workdir`, in order: the kubeconfig (owner-only), then for each
    /// release of the plan its values file (owner-only, secrets filled in), its install, and
    /// the values file's removal.
    pub fn actions(&self, workdir: &Path) -> Vec<Action> {
        let kubeconfig = workdir.join(KUBECONFIG_FILE);
        let values_dir = workdir.join(VALUES_DIR);
        let mut actions = vec![Action::Write(FileToWrite {
            path: kubeconfig.clone(),
            contents: json_text(&self.kubeconfig),
            owner_only: true,
        })];
        for release in &self.plan.releases {
            let values = values_dir.join(format!("{}.json", release.name));
            let (name, namespace) = (&release.name, &release.namespace);
            actions.push(Action::Recover(RecoverCheck {
                release: name.clone(),
                namespace: namespace.clone(),
                status: HelmInvocation {
                    summary: format!("checking release {name} in namespace {namespace}"),
                    args: helm::status_args(release, &kubeconfig),
                },
                uninstall: HelmInvocation {
                    summary: format!("uninstalling release {name} from namespace {namespace}"),
                    args: helm::uninstall_args(release, &kubeconfig),
                },
                rollback: HelmInvocation {
                    summary: format!(
                        "rolling release {name} in namespace {namespace} back to its previous \
                         revision"
                    ),
                    args: helm::rollback_args(release, &kubeconfig),
                },
            }));
            actions.push(Action::Write(FileToWrite {
                path: values.clone(),
                contents: json_text(&self.secrets.fill(&release.values)),
                owner_only: true,
            }));
            actions.push(Action::Helm(HelmInvocation {
                summary: format!(
                    "installing release {} ({}) in namespace {}",
                    release.name,
                    release.chart.describe(),
                    release.namespace
                ),
                args: helm::upgrade_args(release, &values, &kubeconfig),
            }));
            actions.push(Action::Remove(values));
        }
        actions
    }

    /// Does [`BootstrapStep::actions`] in order through `runner`, stopping at the first error
    /// — after which it still does the removals of the files written so far; returns the
    /// step's outputs.
    pub async fn run<R>(&self, workdir: &Path, runner: &R) -> Result<BootstrapOutputs, R::Error>
    where
        R: BootstrapRunner,
        R::Error: From<StatusError>,
    {
        let actions = self.actions(workdir);
        let baseline: Vec<&str> = self.plan.releases[..self.plan.releases.len().saturating_sub(1)]
            .iter()
            .map(|release| release.name.as_str())
            .collect();
        let mut installed = 0;
        let mut written: Vec<&Path> = Vec::new();
        for action in &actions {
            let done = match action {
                Action::Recover(check) => recover(check, runner).await,
                Action::Write(file) => {
                    written.push(&file.path);
                    runner.write(file).await
                }
                Action::Helm(invocation) => {
                    let done = runner.helm(invocation).await;
                    installed += 1;
                    if done.is_ok() && installed == baseline.len() {
                        runner.baseline_installed(&baseline);
                    }
                    done
                }
                Action::Remove(path) => runner.remove(path).await,
            };
            if let Err(error) = done {
                for action in &actions {
                    if let Action::Remove(path) = action
                        && written.contains(&path.as_path())
                    {
                        // Best effort: the step has failed already, with `error`.
                        let _ = runner.remove(path).await;
                    }
                }
                return Err(error);
            }
        }
        Ok(self.outputs.clone())
    }
}

/// Clears `check`'s release if an attempt that did not finish left it pending (the step lease
/// lets no other attempt of the environment run), saying what it found and did.
async fn recover<R>(check: &RecoverCheck, runner: &R) -> Result<(), R::Error>
where
    R: BootstrapRunner,
    R::Error: From<StatusError>,
{
    let status = runner.helm_output(&check.status, STATUS_TIMEOUT).await?;
    let Some(left) = helm::recovery(&check.release, &status)? else {
        return Ok(());
    };
    let clearing = check.clearing(left.recovery);
    runner.note(&format!(
        "the release {} (namespace {}) is {}: an earlier attempt's helm did not finish; {} \
         before installing it again",
        check.release, check.namespace, left.status, clearing.summary
    ));
    runner.helm(clearing).await
}

/// Pretty JSON and a final newline, as the files are written.
pub(crate) fn json_text(value: &Value) -> String {
    format!("{value:#}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::Charts;
    use crate::test_support::{beta9, infra, model, secrets};
    use domain::outputs::InfraOutputs;
    use domain::spec::Profile;
    use serde_json::json;
    use std::sync::Mutex;

    fn step_with(infra: &InfraOutputs, access: &ClusterAccess) -> BootstrapStep {
        let (beta9, model) = (beta9(false), model(Profile::Small, false));
        let inputs = PlanInputs {
            beta9: &beta9,
            infra,
            model: &model,
            charts: &Charts::default(),
        };
        BootstrapStep::new(&inputs, access, secrets())
    }

    fn sandbox_step() -> BootstrapStep {
        step_with(&infra(), &ClusterAccess::Sandbox)
    }

    fn describe(action: &Action) -> String {
        match action {
            Action::Recover(check) => format!("check {}", check.release),
            Action::Write(file) => format!("write {}", file.path.display()),
            Action::Helm(helm) => describe_helm(helm),
            Action::Remove(path) => format!("remove {}", path.display()),
        }
    }

    /// `helm RELEASE` for an install, `helm COMMAND RELEASE` for the others.
    fn describe_helm(helm: &HelmInvocation) -> String {
        let args: Vec<&str> = helm.args.iter().map(|a| a.to_str().unwrap()).collect();
        match args[..] {
            ["upgrade", "--install", release, ..] => format!("helm {release}"),
            [command, release, ..] => format!("helm {command} {release}"),
            _ => panic!("{args:?}"),
        }
    }

    #[test]
    fn the_kubeconfig_comes_first_then_each_release_its_values_its_install_and_the_removal() {
        let actions = sandbox_step().actions(Path::new("/w"));
        let described: Vec<String> = actions.iter().map(describe).collect();
        assert_eq!(
            described,
            [
                "write /w/kubeconfig",
                "check ingress-nginx",
                "write /w/helm-values/ingress-nginx.json",
                "helm ingress-nginx",
                "remove /w/helm-values/ingress-nginx.json",
                "check cert-manager",
                "write /w/helm-values/cert-manager.json",
                "helm cert-manager",
                "remove /w/helm-values/cert-manager.json",
                "check metrics-server",
                "write /w/helm-values/metrics-server.json",
                "helm metrics-server",
                "remove /w/helm-values/metrics-server.json",
                "check cluster-autoscaler",
                "write /w/helm-values/cluster-autoscaler.json",
                "helm cluster-autoscaler",
                "remove /w/helm-values/cluster-autoscaler.json",
                "check beta9",
                "write /w/helm-values/beta9.json",
                "helm beta9",
                "remove /w/helm-values/beta9.json",
            ]
        );
        for action in &actions {
            if let Action::Write(file) = action {
                assert!(file.owner_only, "{}", file.path.display());
            }
        }
        let Action::Recover(check) = &actions[17] else {
            panic!("{actions:?}")
        };
        let beta9_release = sandbox_step().plan.releases.last().unwrap().clone();
        let kubeconfig = Path::new("/w/kubeconfig");
        assert_eq!(
            (
                &check.status.args,
                &check.uninstall.args,
                &check.rollback.args
            ),
            (
                &helm::status_args(&beta9_release, kubeconfig),
                &helm::uninstall_args(&beta9_release, kubeconfig),
                &helm::rollback_args(&beta9_release, kubeconfig)
            )
        );
        let Action::Helm(beta9) = &actions[19] else {
            panic!("{actions:?}")
        };
        assert_eq!(
            beta9.summary,
            "installing release beta9 (oci://public.ecr.aws/n4e0e1y0/beta9-chart 0.1.762) \
             in namespace beta9"
        );
        assert_eq!(
            beta9.args,
            helm::upgrade_args(
                sandbox_step().plan.releases.last().unwrap(),
                Path::new("/w/helm-values/beta9.json"),
                Path::new("/w/kubeconfig"),
            )
        );
    }

    #[test]
    fn values_files_are_pretty_json_with_the_secrets_filled_in_and_only_there() {
        let step = sandbox_step();
        let actions = step.actions(Path::new("/w"));
        let Action::Write(values) = &actions[18] else {
            panic!()
        };
        assert!(values.contents.ends_with("}\n"));
        let parsed: Value = serde_json::from_str(&values.contents).unwrap();
        let postgres = &parsed["config"]["database"]["postgres"];
        assert_eq!(postgres["password"], json!("test-db-password"));
        assert_eq!(postgres["encryptionKey"], json!("test-encryption-key"));
        assert_eq!(
            parsed["config"]["gateway"],
            step.plan.releases.last().unwrap().values["config"]["gateway"]
        );
        assert!(!values.contents.contains("<secret:"));

        let shown = format!("{step:?} {actions:?}");
        for secret in ["test-db-password", "test-encryption-key"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
            assert!(!serde_json::to_string(&step.plan).unwrap().contains(secret));
            for action in &actions {
                if let Action::Helm(helm) = action {
                    assert!(!format!("{:?}", helm.args).contains(secret));
                }
            }
        }
    }

    #[test]
    fn the_kubeconfig_reaches_the_clusters_endpoint_as_its_access_says() {
        let sandbox = sandbox_step();
        assert_eq!(
            sandbox.kubeconfig["clusters"][0]["cluster"]["server"],
            json!("https://c1.sandbox.invalid")
        );
        assert_eq!(sandbox.kubeconfig["users"][0]["user"], json!({}));
        assert_eq!(sandbox.kubeconfig["current-context"], json!("beta9-env-x"));

        let mut outputs = infra();
        outputs.cluster_certificate_authority = "Y2EtZnJvbS1vdXRwdXRz".into();
        let eks = step_with(&outputs, &ClusterAccess::Eks);
        assert_eq!(
            eks.kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"],
            json!("Y2EtZnJvbS1vdXRwdXRz")
        );
        assert_eq!(eks.kubeconfig["users"][0]["user"], json!({}));
    }

    #[test]
    fn the_step_reports_the_beta9_endpoint() {
        assert_eq!(
            sandbox_step().outputs,
            BootstrapOutputs {
                endpoint: "https://api.demo.example.com".into(),
                load_balancer_hostname: None,
            }
        );
    }

    /// Records what it is asked to do; fails the helm run of `fail_release`; `helm status`
    /// finds the release `left` in its status, and no other.
    #[derive(Default)]
    struct Recorder {
        done: Mutex<Vec<String>>,
        fail_release: Option<&'static str>,
        left: Option<(&'static str, &'static str)>,
    }

    impl From<StatusError> for String {
        fn from(error: StatusError) -> String {
            error.to_string()
        }
    }

    impl BootstrapRunner for Recorder {
        type Error = String;

        async fn write(&self, file: &FileToWrite) -> Result<(), String> {
            self.done
                .lock()
                .unwrap()
                .push(describe(&Action::Write(file.clone())));
            Ok(())
        }

        async fn helm(&self, invocation: &HelmInvocation) -> Result<(), String> {
            let line = describe(&Action::Helm(invocation.clone()));
            self.done.lock().unwrap().push(line.clone());
            match self.fail_release {
                Some(name) if line == format!("helm {name}") => Err(format!("{name} failed")),
                _ => Ok(()),
            }
        }

        async fn helm_output(
            &self,
            invocation: &HelmInvocation,
            timeout: Duration,
        ) -> Result<HelmOutput, String> {
            assert_eq!(timeout, STATUS_TIMEOUT);
            let release = invocation.args[1].to_str().unwrap();
            self.done.lock().unwrap().push(format!("check {release}"));
            Ok(match self.left {
                Some((left, status)) if left == release => HelmOutput {
                    success: true,
                    stdout: json!({"info": {"status": status}}).to_string(),
                    stderr: String::new(),
                },
                _ => HelmOutput {
                    success: false,
                    stdout: String::new(),
                    stderr: "Error: release: not found".into(),
                },
            })
        }

        async fn remove(&self, path: &Path) -> Result<(), String> {
            let line = describe(&Action::Remove(path.to_owned()));
            self.done.lock().unwrap().push(line);
            Ok(())
        }

        fn note(&self, line: &str) {
            self.done.lock().unwrap().push(format!("note {line}"));
        }
    }

    #[test]
    fn a_release_left_pending_is_cleared_before_its_install_and_the_log_says_so() {
        for (status, clearing) in [
            ("pending-install", "helm uninstall cert-manager"),
            ("pending-upgrade", "helm rollback cert-manager"),
            ("pending-rollback", "helm rollback cert-manager"),
        ] {
            let recorder = Recorder {
                left: Some(("cert-manager", status)),
                ..Recorder::default()
            };
            futures::executor::block_on(sandbox_step().run(Path::new("/w"), &recorder)).unwrap();
            let done = recorder.done.lock().unwrap();
            assert_eq!(done[5], "check cert-manager");
            assert!(
                done[6].starts_with(&format!(
                    "note the release cert-manager (namespace cert-manager) is {status}: "
                )),
                "{}",
                done[6]
            );
            assert_eq!(
                done[7..9],
                [clearing, "write /w/helm-values/cert-manager.json"]
            );
            assert_eq!(done.iter().filter(|d| d.starts_with("note")).count(), 1);
        }
    }

    #[test]
    fn a_status_that_cannot_be_told_fails_the_step_before_the_install() {
        let recorder = Recorder {
            left: Some(("ingress-nginx", "pending-delete")),
            ..Recorder::default()
        };
        let error = futures::executor::block_on(sandbox_step().run(Path::new("/w"), &recorder))
            .unwrap_err();
        assert!(
            error.starts_with("the release ingress-nginx is pending-delete"),
            "{error}"
        );
        assert_eq!(
            *recorder.done.lock().unwrap(),
            ["write /w/kubeconfig", "check ingress-nginx"]
        );
    }

    #[test]
    fn run_does_every_action_in_order_and_reports_the_outputs() {
        let step = sandbox_step();
        let recorder = Recorder::default();
        let outputs = futures::executor::block_on(step.run(Path::new("/w"), &recorder)).unwrap();
        assert_eq!(outputs, step.outputs);
        let expected: Vec<String> = step.actions(Path::new("/w")).iter().map(describe).collect();
        assert_eq!(*recorder.done.lock().unwrap(), expected);
    }

    #[test]
    fn run_stops_at_the_first_failure_and_still_removes_the_values_file_it_wrote() {
        let recorder = Recorder {
            fail_release: Some("cert-manager"),
            ..Recorder::default()
        };
        let result = futures::executor::block_on(sandbox_step().run(Path::new("/w"), &recorder));
        assert_eq!(result, Err("cert-manager failed".to_owned()));
        let done = recorder.done.lock().unwrap();
        assert_eq!(
            done[5..],
            [
                "check cert-manager",
                "write /w/helm-values/cert-manager.json",
                "helm cert-manager",
                "remove /w/helm-values/ingress-nginx.json",
                "remove /w/helm-values/cert-manager.json",
            ]
        );
    }
}
