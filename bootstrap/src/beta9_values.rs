//! Beta9's Helm values for the chart `beta9-chart`, checked against Beta9 at commit
//! 0b79dfebdea251901334303ebc6a3908f3566016 (chart 0.1.762). `.Values.config` is written
//! verbatim into Beta9's `config.yaml` over its defaults, so every path under `config` is one
//! of `bootstrap/beta9/config-keys.txt` ([`crate::config_keys`]).
//!
//! The values are computed with placeholders (`<secret:db-password>` …) where secrets go:
//! [`Beta9Secrets::fill`] puts the secrets in only when the owner-only values file is written,
//! so the plan (events, logs, snapshots) never holds them.
//!
//! S3 access: the JuiceFS and image-registry keys are left empty. Beta9 then uses the AWS
//! default credential chain (`common.GetAWSConfig` with empty keys; `juicefs format` without
//! `--access-key`), i.e. the node role, which terraform-stack already grants exactly this
//! environment's bucket (`aws_iam_role_policy.node_bucket`). No long-lived key exists to leak,
//! rotate or keep in Secrets Manager.
//!
//! Raw manifests go through the chart's `manifests.resources`: the ClusterIssuer the ingresses
//! ask for ([`crate::cluster_issuer`]) always, and with GPU workers their RuntimeClass.

use std::collections::BTreeMap;

use domain::infra_model::{GPU_POOL, GPU_TAINT_KEY, GPU_TAINT_VALUE, InfraModel, NODE_POOL_LABEL};
use domain::outputs::InfraOutputs;
use domain::spec::Beta9Spec;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::cluster_issuer::{self, CLUSTER_ISSUER, INGRESS_CLASS};

/// The database and user Terraform creates (terraform-stack's `aws_db_instance.main`).
pub const DATABASE_NAME: &str = "beta9";
pub const DATABASE_USER: &str = "beta9";
pub const POSTGRES_PORT: u16 = 5432;
pub const REDIS_PORT: u16 = 6379;
/// Beta9 keeps its state in Redis database 0; JuiceFS's metadata goes to database 1.
const JUICEFS_REDIS_DB: u8 = 1;
/// The RuntimeClass of GPU workers (Beta9's `runtime` of the pool).
const GPU_RUNTIME: &str = "nvidia";

/// Where each secret goes in the computed values until the file is written.
pub const DB_PASSWORD: &str = "<secret:db-password>";
pub const ENCRYPTION_KEY: &str = "<secret:encryption-key>";

/// The secret inputs of Beta9's values, given by the caller (the executor reads them from
/// Secrets Manager; the sandbox makes placeholders).
#[derive(Clone, Debug)]
pub struct Beta9Secrets {
    /// The RDS master user's password (the RDS-managed Secrets Manager secret).
    pub database_password: SecretString,
    /// Beta9's key for the secrets it keeps in Postgres, made once per environment.
    pub encryption_key: SecretString,
}

impl Beta9Secrets {
    /// `values` with each placeholder string replaced by its secret.
    pub fn fill(&self, values: &Value) -> Value {
        match values {
            Value::String(s) if s == DB_PASSWORD => {
                Value::String(self.database_password.expose_secret().to_owned())
            }
            Value::String(s) if s == ENCRYPTION_KEY => {
                Value::String(self.encryption_key.expose_secret().to_owned())
            }
            Value::Array(items) => Value::Array(items.iter().map(|v| self.fill(v)).collect()),
            Value::Object(map) => {
                Value::Object(map.iter().map(|(k, v)| (k.clone(), self.fill(v))).collect())
            }
            other => other.clone(),
        }
    }
}

/// Beta9's GPU type for an EC2 instance type, by its family.
pub fn gpu_type(instance_type: &str) -> Option<&'static str> {
    let family = instance_type.split('.').next()?;
    Some(match family {
        "g4dn" => "T4",
        "g5" => "A10G",
        "g6" => "L4",
        "g6e" => "L40S",
        "p4d" => "A100-40",
        "p4de" => "A100-80",
        "p5" | "p5e" => "H100",
        _ => return None,
    })
}

/// The values of release `beta9`, with placeholders for the secrets.
pub fn values(beta9: &Beta9Spec, infra: &InfraOutputs, model: &InfraModel) -> Value {
    let domain = beta9.domain.as_str();
    let grpc_host = format!("grpc.{domain}");
    let db = infra.database_endpoint.as_str();
    let redis = infra.redis_endpoint.as_str();
    let bucket = infra.bucket_name.as_str();
    let region = model.region.as_str();

    let mut config = json!({
        "database": {
            "postgres": {
                "host": db,
                "port": POSTGRES_PORT,
                "name": DATABASE_NAME,
                "username": DATABASE_USER,
                "password": DB_PASSWORD,
                "enableTLS": true,
                "encryptionKey": ENCRYPTION_KEY,
            },
            // A replication group without cluster mode: one primary endpoint.
            "redis": {
                "mode": "single",
                "addrs": [format!("{redis}:{REDIS_PORT}")],
                "enableTLS": true,
            },
        },
        "storage": {
            "mode": "juicefs",
            "fsName": "beta9-fs",
            "fsPath": "/data",
            "objectPath": "/data/objects",
            "juicefs": {
                "redisURI": format!("rediss://{redis}:{REDIS_PORT}/{JUICEFS_REDIS_DB}"),
                "awsS3Bucket": format!("https://{bucket}.s3.{region}.amazonaws.com"),
                "awsAccessKey": "",
                "awsSecretKey": "",
            },
        },
        "imageService": {
            "registryStore": "s3",
            "registries": {
                "s3": {
                    "bucketName": bucket,
                    "region": region,
                    "accessKey": "",
                    "secretKey": "",
                },
            },
        },
        "gateway": {
            "http": {"externalHost": domain, "externalPort": 443, "tls": true},
            "grpc": {"externalHost": grpc_host, "externalPort": 443, "tls": true},
        },
    });
    // The issuer the ingresses below ask for (see [`cluster_issuer`] for why it is here).
    let mut manifests = vec![cluster_issuer::manifest()];
    if let Some(gpu) = &model.cluster.gpu_nodes {
        let node_selector = BTreeMap::from([(NODE_POOL_LABEL, GPU_POOL)]);
        let mut pool = json!({
            "runtime": GPU_RUNTIME,
            "containerRuntime": "runc",
            "jobSpec": {"nodeSelector": node_selector},
        });
        if let Some(gpu_type) = gpu_type(&gpu.instance_type) {
            pool["gpuType"] = json!(gpu_type);
        }
        config["worker"] = json!({"pools": {GPU_POOL: pool}});
        // Beta9 sets a pool's node selector and RuntimeClass on its workers, but no
        // toleration: the RuntimeClass carries the toleration of the GPU node group's taint
        // (and its node selector), which Kubernetes adds to every pod that uses it.
        manifests.push(json!({
            "apiVersion": "node.k8s.io/v1",
            "kind": "RuntimeClass",
            "metadata": {"name": GPU_RUNTIME},
            "handler": GPU_RUNTIME,
            "scheduling": {
                "nodeSelector": node_selector,
                "tolerations": [{
                    "key": GPU_TAINT_KEY,
                    "operator": "Equal",
                    "value": GPU_TAINT_VALUE,
                    "effect": "NoSchedule",
                }],
            },
        }));
    }
    let wait_on_backends = format!(
        "until nc -z {db} {POSTGRES_PORT}; do echo \"Waiting on PostgreSQL...\"; sleep 2; done;\n\
         until nc -z {redis} {REDIS_PORT}; do echo \"Waiting on Redis...\"; sleep 2; done;\n\
         echo \"All systems ready!\"\n"
    );
    let replicas = model.cluster.cpu_nodes.min_nodes.clamp(1, 3);
    json!({
        "config": config,
        "controllers": {
            "gateway": {
                "replicas": replicas,
                "initContainers": {
                    "wait-on-backends": {"command": ["sh", "-c", wait_on_backends]},
                },
            },
        },
        "ingress": {
            "gateway": {
                "enabled": true,
                "className": INGRESS_CLASS,
                "annotations": {"cert-manager.io/cluster-issuer": CLUSTER_ISSUER},
                "hosts": [{
                    "host": domain,
                    "paths": [{"path": "/", "pathType": "Prefix",
                               "service": {"name": "gateway", "port": 1994}}],
                }],
                "tls": [{"secretName": "beta9-gateway-tls", "hosts": [domain]}],
            },
            "gateway-grpc": {
                "enabled": true,
                "controller": "gateway",
                "className": INGRESS_CLASS,
                "annotations": {
                    "cert-manager.io/cluster-issuer": CLUSTER_ISSUER,
                    "nginx.ingress.kubernetes.io/backend-protocol": "GRPC",
                },
                "hosts": [{
                    "host": grpc_host,
                    "paths": [{"path": "/", "pathType": "Prefix",
                               "service": {"name": "gateway", "port": 1993}}],
                }],
                "tls": [{"secretName": "beta9-gateway-grpc-tls", "hosts": [grpc_host]}],
            },
        },
        "postgresql": {"enabled": false},
        "redis": {"enabled": false},
        "juicefs-redis": {"enabled": false},
        "manifests": {"resources": manifests},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{beta9, infra, model, secrets};
    use domain::spec::Profile;

    #[test]
    fn the_values_of_each_profile_with_and_without_gpus_as_snapshots() {
        for profile in [Profile::Small, Profile::Medium, Profile::Large] {
            for gpu in [false, true] {
                let values = values(&beta9(gpu), &infra(), &model(profile, gpu));
                let name = format!(
                    "beta9_values_{}_{}",
                    format!("{profile:?}").to_lowercase(),
                    if gpu { "gpu" } else { "cpu_only" }
                );
                insta::assert_json_snapshot!(name, values);
            }
        }
    }

    #[test]
    fn fill_puts_each_secret_where_its_placeholder_is_and_nowhere_else() {
        let filled = secrets().fill(&json!({
            "a": [DB_PASSWORD, {"b": ENCRYPTION_KEY}],
            "c": "<secret:db-password> ",
            "d": 5,
        }));
        assert_eq!(
            filled,
            json!({
                "a": ["test-db-password", {"b": "test-encryption-key"}],
                "c": "<secret:db-password> ",
                "d": 5,
            })
        );
    }

    #[test]
    fn gpu_types_follow_the_instance_family() {
        assert_eq!(gpu_type("g5.xlarge"), Some("A10G"));
        assert_eq!(gpu_type("g5.12xlarge"), Some("A10G"));
        assert_eq!(gpu_type("p5.48xlarge"), Some("H100"));
        assert_eq!(gpu_type("m6i.large"), None);
    }
}
