//! The kubeconfig helm (a separate process) uses to reach a new cluster. The provisioner itself
//! reaches the cluster in-process ([`crate::cluster`]); helm needs a file. The document decided
//! here never holds a credential: on `aws` the executor renders it [`with_token`] — the current
//! EKS token — into an owner-only file, rewritten before each helm run (a token lasts ~15
//! minutes, a run of `helm --wait` may be long, so each run starts with a fresh one) and removed
//! when the step ends. The sandbox cluster has no authentication at all. No aws CLI.
//!
//! Kubeconfig is YAML, and JSON is YAML, so it is rendered as JSON.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

/// The file name in the environment's workdir.
pub const KUBECONFIG_FILE: &str = "kubeconfig";

/// `https://<endpoint>`, unless the endpoint already says its scheme (EKS endpoints do).
pub fn server_url(endpoint: &str) -> String {
    if endpoint.starts_with("https://") || endpoint.starts_with("http://") {
        endpoint.to_owned()
    } else {
        format!("https://{endpoint}")
    }
}

/// A kubeconfig with one cluster, one user and one context, all named `cluster_name`.
fn document(cluster_name: &str, cluster: Value, user: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": cluster_name, "user": user}],
        "contexts": [{
            "name": cluster_name,
            "context": {"cluster": cluster_name, "user": cluster_name},
        }],
        "current-context": cluster_name,
        "preferences": {},
    })
}

/// The sandbox cluster: its endpoint, and no credentials.
pub fn sandbox(cluster_name: &str, endpoint: &str) -> Value {
    document(
        cluster_name,
        json!({"server": server_url(endpoint)}),
        json!({}),
    )
}

/// An EKS cluster: its endpoint and its CA bundle (`ca_data`, base64, from the outputs); the
/// user is empty until [`with_token`] fills it.
pub fn eks(cluster_name: &str, endpoint: &str, ca_data: &str) -> Value {
    document(
        cluster_name,
        json!({
            "server": server_url(endpoint),
            "certificate-authority-data": ca_data,
        }),
        json!({}),
    )
}

/// The file's text: `document` with `token` as its user's bearer token. A secret: written only
/// owner-only, never logged.
pub fn with_token(document: &Value, token: &SecretString) -> SecretString {
    let mut document = document.clone();
    if let Some(user) = document
        .get_mut("users")
        .and_then(|users| users.get_mut(0))
        .and_then(|entry| entry.get_mut("user"))
    {
        *user = json!({"token": token.expose_secret()});
    }
    SecretString::from(format!("{document:#}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_kubeconfig_points_at_the_endpoint_and_holds_no_credentials() {
        let config = sandbox("beta9-env-x", "abc.sandbox.invalid");
        assert_eq!(
            config["clusters"][0]["cluster"]["server"],
            json!("https://abc.sandbox.invalid")
        );
        assert_eq!(config["users"][0]["user"], json!({}));
        assert_eq!(config["current-context"], json!("beta9-env-x"));
    }

    #[test]
    fn an_endpoint_with_a_scheme_is_used_as_it_is() {
        assert_eq!(
            server_url("https://x.eks.amazonaws.com"),
            "https://x.eks.amazonaws.com"
        );
        assert_eq!(server_url("x.sandbox.invalid"), "https://x.sandbox.invalid");
    }

    #[test]
    fn eks_kubeconfig_trusts_the_outputs_ca_and_holds_no_credential_until_rendered() {
        let config = eks("c1", "https://c1.eks.amazonaws.com", "Q0E=");
        assert_eq!(config["users"][0]["user"], json!({}));
        assert_eq!(
            config["clusters"][0]["cluster"]["certificate-authority-data"],
            json!("Q0E=")
        );
        let text = with_token(&config, &SecretString::from("k8s-aws-v1.abc"));
        let rendered: Value = serde_json::from_str(text.expose_secret()).unwrap();
        assert_eq!(
            rendered["users"][0]["user"],
            json!({"token": "k8s-aws-v1.abc"})
        );
        assert_eq!(rendered["clusters"], config["clusters"]);
        assert_eq!(rendered["current-context"], json!("c1"));
        assert!(!text.expose_secret().contains("exec"));
    }
}
