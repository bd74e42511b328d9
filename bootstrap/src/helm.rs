//! The Helm command lines of the bootstrap: one `helm upgrade --install` per release, pinned to
//! its chart version, atomic (rolled back if it does not become ready) and bounded in time; and
//! of the destroy: one `helm uninstall` per release, waiting until its resources are gone.

use std::ffi::OsString;
use std::path::Path;

use crate::plan::Release;

/// Where the per-release values files go, inside the workdir (each removed after its install).
pub const VALUES_DIR: &str = "helm-values";
/// Helm's `--timeout` for each release.
pub const HELM_TIMEOUT: &str = "10m0s";

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
}
