//! The releases' teardown, first part of a destroy: every release of the bootstrap's plan
//! uninstalled in reverse order — Beta9 first, ingress-nginx, whose `LoadBalancer` Service owns
//! the cloud load balancer, last — so that what the cluster made outside Terraform (load
//! balancers, volumes) is gone before `terraform destroy` deletes the VPC, which such leftovers
//! would hold. Like the bootstrap, decided here ([`Teardown::actions`]: the kubeconfig, then
//! one `helm uninstall` per release) and done by the executor through a [`BootstrapRunner`].

use std::path::Path;

use serde_json::Value;

use crate::helm;
use crate::kubeconfig::KUBECONFIG_FILE;
use crate::plan::{BootstrapPlan, PlanInputs, Release};
use crate::step::{Action, BootstrapRunner, ClusterAccess, FileToWrite, HelmInvocation, json_text};

/// The teardown of one environment's releases, decided.
#[derive(Clone, Debug)]
pub struct Teardown {
    /// In the order they are uninstalled: the plan's, reversed.
    pub releases: Vec<Release>,
    /// The kubeconfig document (JSON, which is YAML), as the bootstrap's.
    pub kubeconfig: Value,
}

/// Why a teardown stopped.
#[derive(Debug, PartialEq)]
pub enum TeardownFailed<E> {
    /// Helm's kubeconfig could not be written.
    Kubeconfig(E),
    /// The uninstall of this release failed.
    Uninstall {
        release: String,
        namespace: String,
        error: E,
    },
}

impl Teardown {
    /// The releases the bootstrap installs for these inputs (the plan is the one list), last
    /// first; the way to the cluster as the bootstrap's.
    pub fn new(inputs: &PlanInputs<'_>, access: &ClusterAccess) -> Self {
        let mut releases = BootstrapPlan::new(inputs).releases;
        releases.reverse();
        Teardown {
            releases,
            kubeconfig: access.kubeconfig(inputs.infra),
        }
    }

    /// Everything to do in `workdir`, in order: the kubeconfig (owner-only), then one
    /// `helm uninstall` per release. No values file: an uninstall needs none.
    pub fn actions(&self, workdir: &Path) -> Vec<Action> {
        let mut actions = vec![Action::Write(self.kubeconfig_file(workdir))];
        actions.extend(
            self.releases
                .iter()
                .map(|release| Action::Helm(uninstall(release, workdir))),
        );
        actions
    }

    /// Does [`Teardown::actions`] in order through `runner`, stopping at the first failure:
    /// a release left installed must not be followed by the destruction of the network under
    /// it.
    pub async fn run<R: BootstrapRunner>(
        &self,
        workdir: &Path,
        runner: &R,
    ) -> Result<(), TeardownFailed<R::Error>> {
        runner
            .write(&self.kubeconfig_file(workdir))
            .await
            .map_err(TeardownFailed::Kubeconfig)?;
        for release in &self.releases {
            runner
                .helm(&uninstall(release, workdir))
                .await
                .map_err(|error| TeardownFailed::Uninstall {
                    release: release.name.clone(),
                    namespace: release.namespace.clone(),
                    error,
                })?;
        }
        Ok(())
    }

    fn kubeconfig_file(&self, workdir: &Path) -> FileToWrite {
        FileToWrite {
            path: workdir.join(KUBECONFIG_FILE),
            contents: json_text(&self.kubeconfig),
            owner_only: true,
        }
    }
}

/// The `helm uninstall` of `release`, with the kubeconfig of `workdir`.
fn uninstall(release: &Release, workdir: &Path) -> HelmInvocation {
    HelmInvocation {
        summary: format!(
            "uninstalling release {} from namespace {}",
            release.name, release.namespace
        ),
        args: helm::uninstall_args(release, &workdir.join(KUBECONFIG_FILE)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::Charts;
    use crate::test_support::{beta9, infra, model};
    use domain::spec::Profile;
    use std::sync::Mutex;

    fn teardown(gpu: bool) -> Teardown {
        let (beta9, model) = (beta9(gpu), model(Profile::Small, gpu));
        Teardown::new(
            &PlanInputs {
                beta9: &beta9,
                infra: &infra(),
                model: &model,
                charts: &Charts::default(),
            },
            &ClusterAccess::Sandbox,
        )
    }

    fn helm_args(actions: &[Action]) -> Vec<Vec<String>> {
        actions
            .iter()
            .filter_map(|action| match action {
                Action::Helm(helm) => Some(
                    helm.args
                        .iter()
                        .map(|a| a.to_str().unwrap().to_owned())
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_releases_are_uninstalled_in_the_reverse_of_the_install_order() {
        for (gpu, expected) in [
            (
                false,
                vec![
                    "beta9",
                    "cluster-autoscaler",
                    "metrics-server",
                    "cert-manager",
                    "ingress-nginx",
                ],
            ),
            (
                true,
                vec![
                    "beta9",
                    "nvidia-device-plugin",
                    "cluster-autoscaler",
                    "metrics-server",
                    "cert-manager",
                    "ingress-nginx",
                ],
            ),
        ] {
            let actions = teardown(gpu).actions(Path::new("/w"));
            let Action::Write(kubeconfig) = &actions[0] else {
                panic!("{actions:?}")
            };
            assert_eq!(kubeconfig.path, Path::new("/w/kubeconfig"));
            assert!(kubeconfig.owner_only);
            let names: Vec<String> = helm_args(&actions)
                .into_iter()
                .map(|args| args[1].clone())
                .collect();
            assert_eq!(names, expected, "gpu: {gpu}");
            assert_eq!(actions.len(), expected.len() + 1);
        }
    }

    #[test]
    fn each_uninstall_names_its_namespace_waits_and_carries_no_values() {
        let teardown = teardown(false);
        let actions = teardown.actions(Path::new("/w"));
        let args = helm_args(&actions);
        assert_eq!(
            args[4],
            [
                "uninstall",
                "ingress-nginx",
                "--namespace",
                "ingress-nginx",
                "--wait",
                "--timeout",
                "10m0s",
                "--ignore-not-found",
                "--kubeconfig",
                "/w/kubeconfig"
            ]
        );
        assert_eq!(args[0][..4], ["uninstall", "beta9", "--namespace", "beta9"]);
        let shown = format!("{args:?}");
        for absent in ["--values", "helm-values", "<secret:", "password"] {
            assert!(!shown.contains(absent), "{absent} in {shown}");
        }
        let Action::Helm(first) = &actions[1] else {
            panic!()
        };
        assert_eq!(
            first.summary,
            "uninstalling release beta9 from namespace beta9"
        );
    }

    /// Records the releases it is asked to uninstall; fails the one named.
    #[derive(Default)]
    struct Recorder {
        done: Mutex<Vec<String>>,
        fail_release: Option<&'static str>,
    }

    impl BootstrapRunner for Recorder {
        type Error = String;

        async fn write(&self, file: &FileToWrite) -> Result<(), String> {
            let line = format!("write {}", file.path.display());
            self.done.lock().unwrap().push(line);
            Ok(())
        }

        async fn helm(&self, invocation: &HelmInvocation) -> Result<(), String> {
            let name = invocation.args[1].to_str().unwrap().to_owned();
            self.done.lock().unwrap().push(format!("uninstall {name}"));
            match self.fail_release {
                Some(failing) if failing == name => Err("timed out".to_owned()),
                _ => Ok(()),
            }
        }

        async fn helm_output(
            &self,
            _: &HelmInvocation,
            _: std::time::Duration,
        ) -> Result<crate::helm::HelmOutput, String> {
            unreachable!("a teardown reads no status")
        }

        async fn remove(&self, path: &Path) -> Result<(), String> {
            let line = format!("remove {}", path.display());
            self.done.lock().unwrap().push(line);
            Ok(())
        }
    }

    #[test]
    fn run_stops_at_the_first_failed_uninstall_and_names_its_release() {
        let recorder = Recorder {
            fail_release: Some("cert-manager"),
            ..Recorder::default()
        };
        let result = futures::executor::block_on(teardown(false).run(Path::new("/w"), &recorder));
        assert_eq!(
            result,
            Err(TeardownFailed::Uninstall {
                release: "cert-manager".into(),
                namespace: "cert-manager".into(),
                error: "timed out".into(),
            })
        );
        assert_eq!(
            *recorder.done.lock().unwrap(),
            [
                "write /w/kubeconfig",
                "uninstall beta9",
                "uninstall cluster-autoscaler",
                "uninstall metrics-server",
                "uninstall cert-manager"
            ]
        );
        let all = Recorder::default();
        futures::executor::block_on(teardown(false).run(Path::new("/w"), &all)).unwrap();
        assert_eq!(all.done.lock().unwrap().len(), 6);
    }
}
