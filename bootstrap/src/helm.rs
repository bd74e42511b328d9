//! The Helm command lines of the bootstrap: one `helm upgrade --install` per release, pinned to
//! its chart version, atomic (rolled back if it does not become ready) and bounded in time; and
//! of the destroy: one `helm uninstall` per release, waiting until its resources are gone.
//!
//! Before each install, `helm status` says whether an attempt that did not finish (its helm
//! killed) left the release `pending-…`, which blocks every upgrade of it; [`recovery`] decides
//! what clears it: an uninstall of a pending first install, a rollback of a pending upgrade or
//! rollback.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::plan::Release;

/// Where the per-release values files go, inside the workdir (each removed after its install).
pub const VALUES_DIR: &str = "helm-values";
/// Helm's `--timeout` for each release.
pub const HELM_TIMEOUT: &str = "10m0s";
/// How long `helm status` may take (it has no `--timeout` of its own): the runner stops it then.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(120);
/// What helm says when the release of `helm status` does not exist.
const NOT_FOUND: &str = "Error: release: not found";

/// `helm upgrade --install` of one release at its pinned version, waiting for it to be ready.
/// The values (secrets included) are only in the file at `values`, never in the arguments.
pub fn upgrade_args(release: &Release, values: &Path, kubeconfig: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["upgrade", "--install", &release.name, &release.chart.chart]
        .into_iter()
        .map(OsString::from)
        .collect();
    if let Some(repository) = &release.chart.repository {
        args.extend(["--repo", repository].map(OsString::from));
    }
    args.extend(
        [
            "--version",
            &release.chart.version,
            "--namespace",
            &release.namespace,
            "--create-namespace",
            "--values",
        ]
        .map(OsString::from),
    );
    args.push(values.into());
    args.extend(
        [
            "--atomic",
            "--wait",
            "--timeout",
            HELM_TIMEOUT,
            "--kubeconfig",
        ]
        .map(OsString::from),
    );
    args.push(kubeconfig.into());
    args
}

/// `helm uninstall` of one release, waiting (up to [`HELM_TIMEOUT`]) until its resources are
/// deleted — a `LoadBalancer` Service only once its cloud load balancer is; a release that is
/// not there (never installed, or uninstalled by an earlier attempt) is a success.
pub fn uninstall_args(release: &Release, kubeconfig: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "uninstall",
        &release.name,
        "--namespace",
        &release.namespace,
        "--wait",
        "--timeout",
        HELM_TIMEOUT,
        "--ignore-not-found",
        "--kubeconfig",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.push(kubeconfig.into());
    args
}

/// `helm status` of one release as JSON (captured: it holds the release's values).
pub fn status_args(release: &Release, kubeconfig: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "status",
        &release.name,
        "--namespace",
        &release.namespace,
        "--kubeconfig",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.push(kubeconfig.into());
    args.extend(["-o", "json"].map(OsString::from));
    args
}

/// `helm rollback` of one release to its previous revision, waiting (up to [`HELM_TIMEOUT`]).
pub fn rollback_args(release: &Release, kubeconfig: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "rollback",
        &release.name,
        "--namespace",
        &release.namespace,
        "--wait",
        "--timeout",
        HELM_TIMEOUT,
        "--kubeconfig",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.push(kubeconfig.into());
    args
}

/// A helm run whose standard output was captured.
#[derive(Clone, PartialEq, Eq)]
pub struct HelmOutput {
    pub success: bool,
    /// Never logged nor shown: `helm status -o json` prints the release's values.
    pub stdout: String,
    /// The end of its standard error.
    pub stderr: String,
}

impl std::fmt::Debug for HelmOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelmOutput")
            .field("success", &self.success)
            .field(
                "stdout",
                &format_args!("<{} bytes, not shown>", self.stdout.len()),
            )
            .field("stderr", &self.stderr)
            .finish()
    }
}

/// What clears a release left pending.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// A first install never finished: nothing to go back to.
    Uninstall,
    /// An upgrade or a rollback never finished: back to the revision before it.
    Rollback,
}

/// A release an attempt that did not finish left pending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftPending {
    /// Helm's status: `pending-install`, `pending-upgrade` or `pending-rollback`.
    pub status: String,
    pub recovery: Recovery,
}

/// Why the status of a release could not be told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("helm status of the release {release} failed: {message}")]
    Failed { release: String, message: String },
    #[error("helm status of the release {release} printed no release JSON: {reason}")]
    Unreadable { release: String, reason: String },
    #[error(
        "the release {release} is {status}, which the bootstrap cannot clear; look at it with \
         `helm history {release}` and roll it back or uninstall it by hand"
    )]
    UnknownPending { release: String, status: String },
}

/// Decides from `helm status RELEASE -o json` ([`status_args`]) whether a helm that did not
/// finish left `release` pending, and what clears it; `None` when the release does not exist or
/// is not pending. Only a crashed attempt can have left it so: the step lease lets no other
/// attempt of the environment run.
pub fn recovery(release: &str, status: &HelmOutput) -> Result<Option<LeftPending>, StatusError> {
    if !status.success {
        if status.stderr.lines().any(|line| line.trim() == NOT_FOUND) {
            return Ok(None);
        }
        return Err(StatusError::Failed {
            release: release.to_owned(),
            message: status.stderr.trim().to_owned(),
        });
    }
    let unreadable = |reason: String| StatusError::Unreadable {
        release: release.to_owned(),
        reason,
    };
    // Only syntax errors: a typed parse would quote the values it rejects, secrets included.
    let document: Value =
        serde_json::from_str(&status.stdout).map_err(|e| unreadable(e.to_string()))?;
    let current = document
        .pointer("/info/status")
        .and_then(Value::as_str)
        .ok_or_else(|| unreadable("no info.status".to_owned()))?;
    let recovery = match current {
        "pending-install" => Recovery::Uninstall,
        "pending-upgrade" | "pending-rollback" => Recovery::Rollback,
        other if other.starts_with("pending-") => {
            return Err(StatusError::UnknownPending {
                release: release.to_owned(),
                status: other.to_owned(),
            });
        }
        _ => return Ok(None),
    };
    Ok(Some(LeftPending {
        status: current.to_owned(),
        recovery,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::ChartRef;
    use serde_json::json;

    fn args(chart: ChartRef) -> Vec<String> {
        let release = Release {
            name: "beta9".into(),
            chart,
            namespace: "beta9".into(),
            values: json!({}),
        };
        upgrade_args(
            &release,
            Path::new("/w/helm-values/beta9.json"),
            Path::new("/w/kubeconfig"),
        )
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect()
    }

    #[test]
    fn helm_installs_each_release_pinned_in_its_namespace_atomically_and_waits() {
        let oci = ChartRef::beta9("oci://registry.example.com/charts/beta9-chart", "0.1.762");
        assert_eq!(
            args(oci.unwrap()),
            [
                "upgrade",
                "--install",
                "beta9",
                "oci://registry.example.com/charts/beta9-chart",
                "--version",
                "0.1.762",
                "--namespace",
                "beta9",
                "--create-namespace",
                "--values",
                "/w/helm-values/beta9.json",
                "--atomic",
                "--wait",
                "--timeout",
                "10m0s",
                "--kubeconfig",
                "/w/kubeconfig"
            ]
        );
    }

    #[test]
    fn a_chart_from_a_repository_url_names_it_with_repo() {
        let repo = ChartRef::beta9("https://charts.example.com", "1.0.0").unwrap();
        assert_eq!(
            args(repo)[..8],
            [
                "upgrade",
                "--install",
                "beta9",
                "beta9-chart",
                "--repo",
                "https://charts.example.com",
                "--version",
                "1.0.0"
            ]
        );
    }

    #[test]
    fn helm_uninstalls_a_release_in_its_namespace_waits_and_takes_absence_as_done() {
        let release = Release {
            name: "ingress-nginx".into(),
            chart: ChartRef::beta9("https://charts.example.com", "1.0.0").unwrap(),
            namespace: "ingress-nginx".into(),
            values: json!({"secret": "not-an-argument"}),
        };
        let args: Vec<String> = uninstall_args(&release, Path::new("/w/kubeconfig"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
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
    }

    fn release(name: &str) -> Release {
        Release {
            name: name.into(),
            chart: ChartRef::beta9("https://charts.example.com", "1.0.0").unwrap(),
            namespace: "beta9".into(),
            values: json!({"secret": "not-an-argument"}),
        }
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn helm_reads_a_releases_status_as_json_and_rolls_back_waiting() {
        let kubeconfig = Path::new("/w/kubeconfig");
        assert_eq!(
            strings(status_args(&release("beta9"), kubeconfig)),
            [
                "status",
                "beta9",
                "--namespace",
                "beta9",
                "--kubeconfig",
                "/w/kubeconfig",
                "-o",
                "json"
            ]
        );
        assert_eq!(
            strings(rollback_args(&release("beta9"), kubeconfig)),
            [
                "rollback",
                "beta9",
                "--namespace",
                "beta9",
                "--wait",
                "--timeout",
                "10m0s",
                "--kubeconfig",
                "/w/kubeconfig"
            ]
        );
    }

    fn found(status: &str) -> HelmOutput {
        HelmOutput {
            success: true,
            stdout: json!({"name": "beta9", "info": {"status": status}, "config": {"password": "s3cret"}})
                .to_string(),
            stderr: String::new(),
        }
    }

    fn failed(stderr: &str) -> HelmOutput {
        HelmOutput {
            success: false,
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn a_pending_install_is_uninstalled_a_pending_upgrade_or_rollback_rolled_back() {
        let left = |status: &str| recovery("beta9", &found(status)).unwrap();
        let pending = |status: &str, recovery| {
            Some(LeftPending {
                status: status.into(),
                recovery,
            })
        };
        assert_eq!(
            left("pending-install"),
            pending("pending-install", Recovery::Uninstall)
        );
        assert_eq!(
            left("pending-upgrade"),
            pending("pending-upgrade", Recovery::Rollback)
        );
        assert_eq!(
            left("pending-rollback"),
            pending("pending-rollback", Recovery::Rollback)
        );
        for settled in ["deployed", "failed", "superseded", "uninstalling"] {
            assert_eq!(left(settled), None, "{settled}");
        }
    }

    #[test]
    fn a_missing_release_needs_nothing_and_other_answers_are_errors_that_quote_no_values() {
        let not_found = failed("Error: release: not found\n");
        assert_eq!(recovery("beta9", &not_found), Ok(None));
        let unreachable = failed("Error: Kubernetes cluster unreachable: connection refused");
        assert_eq!(
            recovery("beta9", &unreachable).unwrap_err().to_string(),
            "helm status of the release beta9 failed: \
             Error: Kubernetes cluster unreachable: connection refused"
        );
        let mut garbled = found("deployed");
        garbled.stdout.truncate(40);
        let error = recovery("beta9", &garbled).unwrap_err();
        assert!(matches!(error, StatusError::Unreadable { .. }), "{error}");
        let no_status = HelmOutput {
            stdout: json!({"info": {"status": 3}, "password": "s3cret"}).to_string(),
            ..found("deployed")
        };
        let error = recovery("beta9", &no_status).unwrap_err().to_string();
        assert!(
            error.ends_with("no info.status") && !error.contains("s3cret"),
            "{error}"
        );
        assert!(!format!("{no_status:?}").contains("s3cret"));
        let error = recovery("beta9", &found("pending-delete")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("the release beta9 is pending-delete"),
            "{error}"
        );
    }
}
