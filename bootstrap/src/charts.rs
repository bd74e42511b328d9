//! Where each chart comes from and which version is installed: every release is pinned, its
//! repository and version settings whose defaults are here.

/// Beta9's chart as upstream publishes it (`helm push` of `deploy/charts/beta9` by its
/// release-gateway workflow), and the version the values were checked against: the chart of
/// tag `gateway-0.1.762`, commit 0b79dfebdea251901334303ebc6a3908f3566016.
pub const BETA9_CHART: &str = "oci://public.ecr.aws/n4e0e1y0/beta9-chart";
pub const BETA9_CHART_VERSION: &str = "0.1.762";
/// The chart's name inside a Helm repository given by URL.
pub const BETA9_CHART_NAME: &str = "beta9-chart";

/// Longest chart location or version accepted.
const MAX_LOCATION: usize = 512;
const MAX_VERSION: usize = 64;

/// One chart, pinned: `helm upgrade --install NAME CHART [--repo REPOSITORY] --version VERSION`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChartRef {
    /// The Helm repository's URL, when the chart is not an OCI reference.
    pub repository: Option<String>,
    /// The chart's name in `repository`, or its whole `oci://` reference.
    pub chart: String,
    pub version: String,
}

/// A chart location or version that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChartError {
    #[error(
        "the chart location {0:?} is neither an oci:// reference nor an https:// repository URL \
         (at most {MAX_LOCATION} characters, no spaces)"
    )]
    Location(String),
    #[error(
        "the chart version {0:?} is not a version (1 to {MAX_VERSION} of letters, digits, \
         '.', '-', '+')"
    )]
    Version(String),
}

impl ChartRef {
    /// The chart `name` from `location` — an `oci://` reference to the chart itself, or the
    /// `https://` URL of a Helm repository holding `name` — at `version`.
    pub fn at(location: &str, name: &str, version: &str) -> Result<Self, ChartError> {
        let bad_location = || ChartError::Location(location.chars().take(80).collect());
        if location.len() > MAX_LOCATION || location.chars().any(char::is_whitespace) {
            return Err(bad_location());
        }
        let version_ok = !version.is_empty()
            && version.len() <= MAX_VERSION
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
        if !version_ok {
            return Err(ChartError::Version(version.chars().take(80).collect()));
        }
        let rest = |prefix: &str| location.strip_prefix(prefix).filter(|r| !r.is_empty());
        if rest("oci://").is_some() {
            Ok(ChartRef {
                repository: None,
                chart: location.to_owned(),
                version: version.to_owned(),
            })
        } else if rest("https://").is_some() {
            Ok(ChartRef {
                repository: Some(location.to_owned()),
                chart: name.to_owned(),
                version: version.to_owned(),
            })
        } else {
            Err(bad_location())
        }
    }

    /// Beta9's chart from `location` (see [`ChartRef::at`]; `beta9-chart` in a repository).
    pub fn beta9(location: &str, version: &str) -> Result<Self, ChartError> {
        Self::at(location, BETA9_CHART_NAME, version)
    }

    /// What the operation's log says of the chart.
    pub fn describe(&self) -> String {
        match &self.repository {
            Some(repository) => format!("{} {} from {repository}", self.chart, self.version),
            None => format!("{} {}", self.chart, self.version),
        }
    }
}

/// A chart of the baseline the bootstrap installs before Beta9. Each one's repository and
/// version are settings (the binary's `PROVISIONER_<CHART>_CHART` and `…_CHART_VERSION`), whose
/// defaults are the pins here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BaselineChart {
    IngressNginx,
    CertManager,
    MetricsServer,
    ClusterAutoscaler,
    NvidiaDevicePlugin,
}

impl BaselineChart {
    pub const ALL: [BaselineChart; 5] = [
        BaselineChart::IngressNginx,
        BaselineChart::CertManager,
        BaselineChart::MetricsServer,
        BaselineChart::ClusterAutoscaler,
        BaselineChart::NvidiaDevicePlugin,
    ];

    /// The chart's name in its repository (and the release's name).
    pub const fn name(self) -> &'static str {
        match self {
            BaselineChart::IngressNginx => "ingress-nginx",
            BaselineChart::CertManager => "cert-manager",
            BaselineChart::MetricsServer => "metrics-server",
            BaselineChart::ClusterAutoscaler => "cluster-autoscaler",
            BaselineChart::NvidiaDevicePlugin => "nvidia-device-plugin",
        }
    }

    /// The Helm repository the chart is installed from unless set otherwise.
    pub const fn default_repository(self) -> &'static str {
        match self {
            BaselineChart::IngressNginx => "https://kubernetes.github.io/ingress-nginx",
            BaselineChart::CertManager => "https://charts.jetstack.io",
            BaselineChart::MetricsServer => "https://kubernetes-sigs.github.io/metrics-server/",
            BaselineChart::ClusterAutoscaler => "https://kubernetes.github.io/autoscaler",
            BaselineChart::NvidiaDevicePlugin => "https://nvidia.github.io/k8s-device-plugin",
        }
    }

    /// The version installed unless set otherwise.
    pub const fn default_version(self) -> &'static str {
        match self {
            BaselineChart::IngressNginx => "4.12.1",
            // 1.15 and later: `crds.enabled` (`installCRDs` is deprecated).
            BaselineChart::CertManager => "v1.17.1",
            // metrics-server 0.8.1, for Kubernetes 1.31 and later.
            BaselineChart::MetricsServer => "3.13.1",
            // The last chart of cluster-autoscaler 1.31.0: the autoscaler's minor version
            // follows the cluster's Kubernetes version (1.31, `InfraModel`), so this moves
            // with it, not to the newest chart (9.59.0 runs 1.35).
            BaselineChart::ClusterAutoscaler => "9.44.0",
            BaselineChart::NvidiaDevicePlugin => "0.17.1",
        }
    }

    /// The pinned default.
    pub fn default_ref(self) -> ChartRef {
        ChartRef::at(
            self.default_repository(),
            self.name(),
            self.default_version(),
        )
        .expect("the pinned defaults are valid")
    }
}

/// The charts of the bootstrap: the baseline and Beta9, each from settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charts {
    pub ingress_nginx: ChartRef,
    pub cert_manager: ChartRef,
    pub metrics_server: ChartRef,
    pub cluster_autoscaler: ChartRef,
    pub nvidia_device_plugin: ChartRef,
    pub beta9: ChartRef,
}

impl Charts {
    /// The pinned baseline and Beta9's chart.
    pub fn with_beta9(beta9: ChartRef) -> Self {
        let pinned = BaselineChart::default_ref;
        Charts {
            ingress_nginx: pinned(BaselineChart::IngressNginx),
            cert_manager: pinned(BaselineChart::CertManager),
            metrics_server: pinned(BaselineChart::MetricsServer),
            cluster_autoscaler: pinned(BaselineChart::ClusterAutoscaler),
            nvidia_device_plugin: pinned(BaselineChart::NvidiaDevicePlugin),
            beta9,
        }
    }

    /// The chart of a baseline release.
    pub fn baseline(&self, chart: BaselineChart) -> &ChartRef {
        match chart {
            BaselineChart::IngressNginx => &self.ingress_nginx,
            BaselineChart::CertManager => &self.cert_manager,
            BaselineChart::MetricsServer => &self.metrics_server,
            BaselineChart::ClusterAutoscaler => &self.cluster_autoscaler,
            BaselineChart::NvidiaDevicePlugin => &self.nvidia_device_plugin,
        }
    }

    /// Sets the chart of a baseline release.
    pub fn set_baseline(&mut self, chart: BaselineChart, to: ChartRef) {
        let slot = match chart {
            BaselineChart::IngressNginx => &mut self.ingress_nginx,
            BaselineChart::CertManager => &mut self.cert_manager,
            BaselineChart::MetricsServer => &mut self.metrics_server,
            BaselineChart::ClusterAutoscaler => &mut self.cluster_autoscaler,
            BaselineChart::NvidiaDevicePlugin => &mut self.nvidia_device_plugin,
        };
        *slot = to;
    }
}

impl Default for Charts {
    fn default() -> Self {
        Self::with_beta9(
            ChartRef::beta9(BETA9_CHART, BETA9_CHART_VERSION).expect("the default is valid"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta9_comes_from_an_oci_reference_or_a_repository_url_at_a_pinned_version() {
        let oci = ChartRef::beta9(BETA9_CHART, "0.1.762").unwrap();
        assert_eq!(oci.repository, None);
        assert_eq!(oci.chart, BETA9_CHART);
        let repo = ChartRef::beta9("https://charts.example.com/beta9", "1.2.3").unwrap();
        assert_eq!(
            repo,
            ChartRef {
                repository: Some("https://charts.example.com/beta9".into()),
                chart: "beta9-chart".into(),
                version: "1.2.3".into(),
            }
        );
    }

    #[test]
    fn every_baseline_chart_is_pinned_by_default_and_can_be_set() {
        let mut charts = Charts::default();
        for chart in BaselineChart::ALL {
            let pinned = charts.baseline(chart).clone();
            assert_eq!(pinned.chart, chart.name());
            assert_eq!(
                pinned.repository.as_deref(),
                Some(chart.default_repository())
            );
            assert_eq!(pinned.version, chart.default_version());
            let mirror =
                ChartRef::at("oci://mirror.example.com/charts/x", chart.name(), "1.0.0").unwrap();
            charts.set_baseline(chart, mirror.clone());
            assert_eq!(charts.baseline(chart), &mirror);
        }
        assert_eq!(charts.beta9, Charts::default().beta9);
    }

    #[test]
    fn a_bad_location_or_version_is_named() {
        for location in [
            "beta9/beta9",
            "http://x",
            "oci://",
            "oci://a b",
            &"x".repeat(600),
        ] {
            assert!(
                matches!(
                    ChartRef::beta9(location, "1.0.0"),
                    Err(ChartError::Location(_))
                ),
                "{location}"
            );
        }
        for version in ["", "1.0 ", "1;rm", &"1".repeat(65)] {
            let err = ChartRef::beta9(BETA9_CHART, version).unwrap_err();
            assert!(matches!(err, ChartError::Version(_)), "{version}");
        }
        assert!(
            ChartRef::beta9(BETA9_CHART, "")
                .unwrap_err()
                .to_string()
                .contains("chart version \"\"")
        );
    }
}
