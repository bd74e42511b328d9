//! The ClusterIssuer Beta9's ingresses name (`cert-manager.io/cluster-issuer`): Let's
//! Encrypt's ACME, proving each host over HTTP-01 through the ingress-nginx controller.
//!
//! How it is installed: as a raw manifest of Beta9's own release, through the chart's
//! `manifests.resources` hook (the one the GPU RuntimeClass already uses; the chart adds only
//! its labels). That is the one place where all of these hold:
//! - cert-manager's CRDs and webhook exist: its release, with `--atomic --wait`, came before,
//!   whereas a manifest in cert-manager's own release would be checked against a kind not yet
//!   known (Helm maps every kind before it installs anything);
//! - it lives and is upgraded and uninstalled with what uses it, in the same helm invocation,
//!   so the sandbox and the real cloud run the same plan and the plan's snapshots show it;
//! - no second way into the cluster (the `kube` client writing objects, or a chart of our own
//!   with no helm here to render it) has to be kept.
//!
//! No account e-mail is given: the spec has none, and cert-manager's ACME account needs none
//! (Let's Encrypt no longer sends expiry mail); renewal is cert-manager's.

use serde_json::{Value, json};

/// The issuer's name, which Beta9's ingress annotations ask for.
pub const CLUSTER_ISSUER: &str = "letsencrypt";
/// Let's Encrypt's production ACME directory.
pub const ACME_SERVER: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// The ingress class the HTTP-01 solver's temporary ingresses use: ingress-nginx's.
pub const INGRESS_CLASS: &str = "nginx";

/// The ClusterIssuer manifest.
pub fn manifest() -> Value {
    json!({
        "apiVersion": "cert-manager.io/v1",
        "kind": "ClusterIssuer",
        "metadata": {"name": CLUSTER_ISSUER},
        "spec": {
            "acme": {
                "server": ACME_SERVER,
                // The ACME account's key, kept by cert-manager in this Secret.
                "privateKeySecretRef": {"name": format!("{CLUSTER_ISSUER}-account-key")},
                "solvers": [{"http01": {"ingress": {"ingressClassName": INGRESS_CLASS}}}],
            },
        },
    })
}
