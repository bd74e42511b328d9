//! The bootstrap step, prepared and driven: from the infrastructure's outputs, the Beta9
//! settings and the way to reach the cluster, [`BootstrapStep::actions`] lists everything to do
//! in the environment's workdir, in order — the kubeconfig, then per release its values file and
//! its `helm upgrade --install`. The executor does the I/O through a [`BootstrapRunner`] (its
//! process runner) and [`BootstrapStep::run`] drives it; checks that need to talk to the cluster
//! itself (readiness) belong in `run`, between the installs.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};

use domain::outputs::{BootstrapOutputs, InfraOutputs};
use domain::spec::Beta9Spec;
use serde_json::Value;

use crate::helm::{self, VALUES_DIR};
use crate::kubeconfig::{self, KUBECONFIG_FILE};
use crate::plan::BootstrapPlan;

/// How helm reaches the new cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterAccess {
    /// The sandbox cluster: its endpoint, no credentials.
    Sandbox,
    /// An EKS cluster, trusting the CA bundle of the infrastructure's outputs; the runner puts
    /// the current EKS token into the kubeconfig file (see [`kubeconfig::with_token`]).
    Eks,
}

/// The bootstrap of one environment, decided: what to install and how to reach the cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct BootstrapStep {
    pub plan: BootstrapPlan,
    /// The kubeconfig document (JSON, which is YAML).
    pub kubeconfig: Value,
    /// What the step reports once every release is installed.
    pub outputs: BootstrapOutputs,
}

/// One thing to do, in [`BootstrapStep::actions`] order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Write(FileToWrite),
    Helm(HelmInvocation),
}

/// A file to write (its directory created if missing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileToWrite {
    pub path: PathBuf,
    pub contents: String,
    /// Readable and writable by the owner only (mode 0600).
    pub owner_only: bool,
}

/// One run of `helm`, in the workdir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelmInvocation {
    /// A line for the operation's log, said before the run.
    pub summary: String,
    pub args: Vec<OsString>,
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
}

impl BootstrapStep {
    /// Decides the bootstrap from the typed infrastructure outputs and the Beta9 settings.
    pub fn new(beta9: &Beta9Spec, infra: &InfraOutputs, access: &ClusterAccess) -> Self {
        let kubeconfig = match access {
            ClusterAccess::Sandbox => {
                kubeconfig::sandbox(&infra.cluster_name, &infra.cluster_endpoint)
            }
            ClusterAccess::Eks => kubeconfig::eks(
                &infra.cluster_name,
                &infra.cluster_endpoint,
                &infra.cluster_certificate_authority,
            ),
        };
        BootstrapStep {
            plan: BootstrapPlan::new(beta9, infra),
            kubeconfig,
            outputs: BootstrapOutputs {
                endpoint: format!("https://{}", beta9.domain.as_str()),
            },
        }
    }

    /// Everything to do in `workdir`, in order: the kubeconfig (owner-only), then for each
    /// release of the plan its values file and its install.
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
            actions.push(Action::Write(FileToWrite {
                path: values.clone(),
                contents: json_text(&release.values),
                owner_only: false,
            }));
            actions.push(Action::Helm(HelmInvocation {
                summary: format!(
                    "installing release {} ({}) in namespace {}",
                    release.name, release.chart, release.namespace
                ),
                args: helm::upgrade_args(release, &values, &kubeconfig),
            }));
        }
        actions
    }

    /// Does [`BootstrapStep::actions`] in order through `runner`, stopping at the first error;
    /// returns the step's outputs.
    pub async fn run<R: BootstrapRunner>(
        &self,
        workdir: &Path,
        runner: &R,
    ) -> Result<BootstrapOutputs, R::Error> {
        for action in self.actions(workdir) {
            match action {
                Action::Write(file) => runner.write(&file).await?,
                Action::Helm(invocation) => runner.helm(&invocation).await?,
            }
        }
        Ok(self.outputs.clone())
    }
}

/// Pretty JSON and a final newline, as the files are written.
fn json_text(value: &Value) -> String {
    format!("{value:#}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{beta9, infra};
    use serde_json::json;
    use std::sync::Mutex;

    fn sandbox_step() -> BootstrapStep {
        BootstrapStep::new(&beta9(false), &infra(), &ClusterAccess::Sandbox)
    }

    fn describe(action: &Action) -> String {
        match action {
            Action::Write(file) => format!("write {}", file.path.display()),
            Action::Helm(helm) => format!(
                "helm {}",
                helm.args[2].to_str().unwrap() // the release name
            ),
        }
    }

    #[test]
    fn the_kubeconfig_comes_first_then_each_release_its_values_and_its_install() {
        let actions = sandbox_step().actions(Path::new("/w"));
        let described: Vec<String> = actions.iter().map(describe).collect();
        assert_eq!(
            described,
            [
                "write /w/kubeconfig",
                "write /w/helm-values/ingress-nginx.json",
                "helm ingress-nginx",
                "write /w/helm-values/cert-manager.json",
                "helm cert-manager",
                "write /w/helm-values/beta9.json",
                "helm beta9",
            ]
        );
        let Action::Write(kubeconfig) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert!(kubeconfig.owner_only);
        let Action::Helm(beta9) = &actions[6] else {
            panic!("{actions:?}")
        };
        assert_eq!(
            beta9.summary,
            "installing release beta9 (beta9/beta9) in namespace beta9"
        );
        assert_eq!(
            beta9.args,
            helm::upgrade_args(
                &sandbox_step().plan.releases[2],
                Path::new("/w/helm-values/beta9.json"),
                Path::new("/w/kubeconfig"),
            )
        );
    }

    #[test]
    fn files_are_pretty_json_with_a_final_newline() {
        let step = sandbox_step();
        let Action::Write(values) = &step.actions(Path::new("/w"))[5] else {
            panic!()
        };
        assert!(!values.owner_only);
        assert_eq!(
            values.contents,
            serde_json::to_string_pretty(&step.plan.releases[2].values).unwrap() + "\n"
        );
        let parsed: Value = serde_json::from_str(&values.contents).unwrap();
        assert_eq!(parsed, step.plan.releases[2].values);
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
        let eks = BootstrapStep::new(&beta9(false), &outputs, &ClusterAccess::Eks);
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
                endpoint: "https://api.demo.example.com".into()
            }
        );
    }

    /// Records what it is asked to do; fails the helm run of `fail_release`.
    #[derive(Default)]
    struct Recorder {
        done: Mutex<Vec<String>>,
        fail_release: Option<&'static str>,
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
    fn run_stops_at_the_first_failure() {
        let recorder = Recorder {
            fail_release: Some("cert-manager"),
            ..Recorder::default()
        };
        let result = futures::executor::block_on(sandbox_step().run(Path::new("/w"), &recorder));
        assert_eq!(result, Err("cert-manager failed".to_owned()));
        assert_eq!(
            recorder.done.lock().unwrap().last().unwrap(),
            "helm cert-manager"
        );
        assert_eq!(recorder.done.lock().unwrap().len(), 5);
    }
}
