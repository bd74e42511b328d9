//! The Helm command lines of the bootstrap: one `helm upgrade --install` per release.

use std::ffi::OsString;
use std::path::Path;

use crate::plan::Release;

/// Where the per-release values files go, inside the workdir.
pub const VALUES_DIR: &str = "helm-values";
/// Helm's `--timeout` for each release.
pub const HELM_TIMEOUT: &str = "10m0s";

/// `helm upgrade --install` of one release, waiting for it to be ready.
pub fn upgrade_args(release: &Release, values: &Path, kubeconfig: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "upgrade",
        "--install",
        &release.name,
        &release.chart,
        "--namespace",
        &release.namespace,
        "--create-namespace",
        "--values",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.push(values.into());
    args.extend(["--wait", "--timeout", HELM_TIMEOUT, "--kubeconfig"].map(OsString::from));
    args.push(kubeconfig.into());
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn helm_installs_each_release_in_its_namespace_and_waits() {
        let release = Release {
            name: "beta9".into(),
            chart: "beta9/beta9".into(),
            namespace: "beta9".into(),
            values: json!({}),
        };
        let args: Vec<String> = upgrade_args(
            &release,
            Path::new("/w/helm-values/beta9.json"),
            Path::new("/w/kubeconfig"),
        )
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect();
        assert_eq!(
            args,
            [
                "upgrade",
                "--install",
                "beta9",
                "beta9/beta9",
                "--namespace",
                "beta9",
                "--create-namespace",
                "--values",
                "/w/helm-values/beta9.json",
                "--wait",
                "--timeout",
                "10m0s",
                "--kubeconfig",
                "/w/kubeconfig"
            ]
        );
    }
}
