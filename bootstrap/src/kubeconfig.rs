//! The kubeconfig helm uses to reach a new cluster. It never embeds a credential: on `aws` it
//! asks `aws eks get-token` for a short-lived token at each use (exec auth); the sandbox cluster
//! has no authentication at all.
//!
//! Kubeconfig is YAML, and JSON is YAML, so it is rendered as JSON.

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

/// An EKS cluster, authenticated by `aws eks get-token` with the executor's (assumed-role)
/// credentials; `ca_data` is the cluster's base64 CA bundle.
pub fn eks(cluster_name: &str, endpoint: &str, ca_data: &str, region: &str) -> Value {
    document(
        cluster_name,
        json!({
            "server": server_url(endpoint),
            "certificate-authority-data": ca_data,
        }),
        json!({
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": "aws",
                "args": [
                    "eks", "get-token",
                    "--cluster-name", cluster_name,
                    "--region", region,
                    "--output", "json",
                ],
                "interactiveMode": "Never",
                "provideClusterInfo": false,
            },
        }),
    )
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
    fn eks_kubeconfig_uses_exec_auth_and_never_a_static_token() {
        let config = eks("c1", "https://c1.eks.amazonaws.com", "Q0E=", "eu-west-1");
        let user = &config["users"][0]["user"];
        assert!(user.get("token").is_none());
        assert!(user.get("client-key-data").is_none());
        assert_eq!(user["exec"]["command"], json!("aws"));
        assert_eq!(
            user["exec"]["args"],
            json!([
                "eks",
                "get-token",
                "--cluster-name",
                "c1",
                "--region",
                "eu-west-1",
                "--output",
                "json"
            ])
        );
        assert_eq!(
            config["clusters"][0]["cluster"]["certificate-authority-data"],
            json!("Q0E=")
        );
    }
}
