//! Where each chart comes from and which version is installed: every release is pinned.

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
    fn repository(repository: &str, chart: &str, version: &str) -> Self {
        ChartRef {
            repository: Some(repository.to_owned()),
            chart: chart.to_owned(),
            version: version.to_owned(),
        }
    }

    /// Beta9's chart from `location` — an `oci://` reference to the chart itself, or the
    /// `https://` URL of a Helm repository holding `beta9-chart` — at `version`.
    pub fn beta9(location: &str, version: &str) -> Result<Self, ChartError> {
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
            Ok(Self::repository(location, BETA9_CHART_NAME, version))
        } else {
            Err(bad_location())
        }
    }

    /// What the operation's log says of the chart.
    pub fn describe(&self) -> String {
        match &self.repository {
            Some(repository) => format!("{} {} from {repository}", self.chart, self.version),
            None => format!("{} {}", self.chart, self.version),
        }
    }
}

/// The charts of the bootstrap: the baseline (pinned here) and Beta9 (from settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charts {
    pub ingress_nginx: ChartRef,
    pub cert_manager: ChartRef,
    pub nvidia_device_plugin: ChartRef,
    pub beta9: ChartRef,
}

impl Charts {
    /// The pinned baseline and Beta9's chart.
    pub fn with_beta9(beta9: ChartRef) -> Self {
        Charts {
            ingress_nginx: ChartRef::repository(
                "https://kubernetes.github.io/ingress-nginx",
                "ingress-nginx",
                "4.12.1",
            ),
            // 1.15 and later: `crds.enabled` (`installCRDs` is deprecated).
            cert_manager: ChartRef::repository(
                "https://charts.jetstack.io",
                "cert-manager",
                "v1.17.1",
            ),
            nvidia_device_plugin: ChartRef::repository(
                "https://nvidia.github.io/k8s-device-plugin",
                "nvidia-device-plugin",
                "0.17.1",
            ),
            beta9,
        }
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
