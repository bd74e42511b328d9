//! Renders the Terraform JSON configuration (`main.tf.json`) of one environment from its
//! [`InfraModel`]: the role CDKTF played in the original design, in plain Rust.
//!
//! The `aws` and `sandbox` providers render the same resources; only how Terraform reaches the
//! cloud and keeps its state differs ([`provider`]: on `aws` the customer's role, assumed by
//! the provider, and an S3 backend; in the sandbox, whose stand-in applies it, a local one).
//! Secrets are never values in the configuration: the database password is generated and kept
//! by RDS in Secrets Manager (`manage_master_user_password`), and only its ARN is an output; the
//! customer's external id is a sensitive variable whose value the executor supplies per step.
//!
//! The outputs are exactly [`InfraOutput::ALL`]: the names and which are sensitive come from
//! `domain::outputs`; this module says only how Terraform computes each.

pub mod cluster_autoscaler;
pub mod customer_role;
pub mod provider;
pub mod summary;

use domain::infra_model::{
    CPU_POOL, GPU_POOL, GPU_TAINT_KEY, GPU_TAINT_VALUE, InfraModel, NODE_POOL_LABEL, NatLayout,
    NodeGroupModel,
};
use domain::outputs::InfraOutput;
use serde_json::{Map, Value, json};

pub use provider::AWS_PROVIDER_VERSION;

/// The file the configuration is written to, in the environment's workdir.
pub const CONFIG_FILE: &str = "main.tf.json";

/// The tag every resource carries, naming the environment it belongs to.
pub const ENVIRONMENT_TAG: &str = "beta9:environment-id";

/// Resource types AWS cannot tag; every other resource carries [`ENVIRONMENT_TAG`].
pub const UNTAGGABLE: [&str; 8] = [
    "aws_route",
    "aws_iam_role_policy",
    "aws_route_table_association",
    "aws_iam_role_policy_attachment",
    "aws_s3_bucket_versioning",
    "aws_s3_bucket_public_access_block",
    "aws_s3_bucket_server_side_encryption_configuration",
    "aws_s3_bucket_lifecycle_configuration",
];

const REDIS_ENGINE_VERSION: &str = "7.1";
/// Days an overwritten or deleted object's old version is kept before it expires.
const NONCURRENT_VERSION_DAYS: u32 = 30;
/// Days after which an unfinished multipart upload is aborted (its parts are billed until then).
const INCOMPLETE_UPLOAD_DAYS: u32 = 7;

/// Who the configuration is for.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub environment_id: &'a str,
    pub name: &'a str,
}

/// The complete configuration as a JSON value, ready to be written to [`CONFIG_FILE`].
pub fn render(target: Target<'_>, model: &InfraModel) -> Value {
    let mut doc = Document::new(target);
    network(&mut doc, model);
    iam(&mut doc);
    cluster(&mut doc, model);
    cluster_autoscaler::irsa(&mut doc, model);
    database(&mut doc, model);
    redis(&mut doc, model);
    bucket(&mut doc, model);
    let mut config = json!({
        "terraform": provider::terraform_block(target, model),
        "provider": provider::provider_block(model, doc.tags(None)),
        "data": {
            "aws_availability_zones": {"available": {"state": "available"}},
        },
        "locals": cluster_autoscaler::locals(),
        "resource": Value::Object(doc.resources),
        "output": outputs(),
    });
    if let Some(variables) = provider::variable_block(model) {
        config["variable"] = variables;
    }
    config
}

/// Resources being collected, plus the names and tags shared by all of them.
struct Document<'a> {
    target: Target<'a>,
    /// `beta9-env-<ulid>`: unique, and valid as an RDS, ElastiCache, EKS and S3 name.
    slug: String,
    resources: Map<String, Value>,
}

impl<'a> Document<'a> {
    fn new(target: Target<'a>) -> Self {
        Document {
            slug: format!("beta9-{}", target.environment_id.replace('_', "-")),
            target,
            resources: Map::new(),
        }
    }

    /// The environment's tags, with a `Name` tag (`production-eks-cluster`) for a resource.
    fn tags(&self, resource: Option<(&str, &str)>) -> Value {
        let mut tags = json!({
            ENVIRONMENT_TAG: self.target.environment_id,
            "beta9:environment-name": self.target.name,
            "managed-by": "beta9-provisioner",
        });
        if let Some((rtype, name)) = resource {
            let kind = rtype
                .strip_prefix("aws_")
                .unwrap_or(rtype)
                .replace('_', "-");
            tags["Name"] = json!(match name {
                "main" => format!("{}-{kind}", self.target.name),
                name => format!("{}-{kind}-{}", self.target.name, name.replace('_', "-")),
            });
        }
        tags
    }

    /// Adds a resource; taggable ones get the environment's tags (plus `extra_tags`).
    fn add(&mut self, rtype: &str, name: &str, mut body: Value) {
        if !UNTAGGABLE.contains(&rtype) {
            let mut tags = self.tags(Some((rtype, name)));
            if let Some(Value::Object(extra)) = body.get_mut("tags").map(Value::take) {
                tags.as_object_mut()
                    .expect("tags are an object")
                    .extend(extra);
            }
            body["tags"] = tags;
        }
        let by_name = self
            .resources
            .entry(rtype)
            .or_insert_with(|| Value::Object(Map::new()));
        by_name[name] = body;
    }
}

fn network(doc: &mut Document<'_>, model: &InfraModel) {
    let azs = u32::from(model.network.availability_zones);
    let nat_gateways = match model.network.nat {
        NatLayout::Single => 1,
        NatLayout::PerAz => azs,
    };
    let nat_for_zone = match model.network.nat {
        NatLayout::Single => "${aws_nat_gateway.main[0].id}",
        NatLayout::PerAz => "${aws_nat_gateway.main[count.index].id}",
    };
    let zone = "${data.aws_availability_zones.available.names[count.index]}";
    doc.add(
        "aws_vpc",
        "main",
        json!({
            "cidr_block": model.network.vpc_cidr,
            "enable_dns_hostnames": true,
            "enable_dns_support": true,
        }),
    );
    doc.add(
        "aws_internet_gateway",
        "main",
        json!({"vpc_id": "${aws_vpc.main.id}"}),
    );
    // Public /24s at the start of the VPC; private /20s after them (pods take VPC addresses).
    doc.add(
        "aws_subnet",
        "public",
        json!({
            "count": azs,
            "vpc_id": "${aws_vpc.main.id}",
            "availability_zone": zone,
            "cidr_block": "${cidrsubnet(aws_vpc.main.cidr_block, 8, count.index)}",
            "map_public_ip_on_launch": true,
            "tags": {"kubernetes.io/role/elb": "1"},
        }),
    );
    doc.add(
        "aws_subnet",
        "private",
        json!({
            "count": azs,
            "vpc_id": "${aws_vpc.main.id}",
            "availability_zone": zone,
            "cidr_block": "${cidrsubnet(aws_vpc.main.cidr_block, 4, count.index + 1)}",
            "tags": {"kubernetes.io/role/internal-elb": "1"},
        }),
    );
    doc.add(
        "aws_eip",
        "nat",
        json!({"count": nat_gateways, "domain": "vpc"}),
    );
    doc.add(
        "aws_nat_gateway",
        "main",
        json!({
            "count": nat_gateways,
            "allocation_id": "${aws_eip.nat[count.index].id}",
            "subnet_id": "${aws_subnet.public[count.index].id}",
            "depends_on": ["aws_internet_gateway.main"],
        }),
    );
    doc.add(
        "aws_route_table",
        "public",
        json!({"vpc_id": "${aws_vpc.main.id}"}),
    );
    doc.add(
        "aws_route",
        "public_internet",
        json!({
            "route_table_id": "${aws_route_table.public.id}",
            "destination_cidr_block": "0.0.0.0/0",
            "gateway_id": "${aws_internet_gateway.main.id}",
        }),
    );
    doc.add(
        "aws_route_table_association",
        "public",
        json!({
            "count": azs,
            "subnet_id": "${aws_subnet.public[count.index].id}",
            "route_table_id": "${aws_route_table.public.id}",
        }),
    );
    doc.add(
        "aws_route_table",
        "private",
        json!({"count": azs, "vpc_id": "${aws_vpc.main.id}"}),
    );
    doc.add(
        "aws_route",
        "private_nat",
        json!({
            "count": azs,
            "route_table_id": "${aws_route_table.private[count.index].id}",
            "destination_cidr_block": "0.0.0.0/0",
            "nat_gateway_id": nat_for_zone,
        }),
    );
    doc.add(
        "aws_route_table_association",
        "private",
        json!({
            "count": azs,
            "subnet_id": "${aws_subnet.private[count.index].id}",
            "route_table_id": "${aws_route_table.private[count.index].id}",
        }),
    );
}

/// An IAM trust policy letting `service` assume the role.
fn trust_policy(service: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole",
        }],
    })
    .to_string()
}

fn iam(doc: &mut Document<'_>) {
    let slug = doc.slug.clone();
    doc.add(
        "aws_iam_role",
        "cluster",
        json!({
            "name": format!("{slug}-cluster"),
            "assume_role_policy": trust_policy("eks.amazonaws.com"),
        }),
    );
    doc.add(
        "aws_iam_role_policy_attachment",
        "cluster",
        json!({
            "role": "${aws_iam_role.cluster.name}",
            "policy_arn": "arn:aws:iam::aws:policy/AmazonEKSClusterPolicy",
        }),
    );
    doc.add(
        "aws_iam_role",
        "node",
        json!({
            "name": format!("{slug}-node"),
            "assume_role_policy": trust_policy("ec2.amazonaws.com"),
        }),
    );
    for (name, policy) in [
        ("node_worker", "AmazonEKSWorkerNodePolicy"),
        ("node_cni", "AmazonEKS_CNI_Policy"),
        ("node_ecr", "AmazonEC2ContainerRegistryReadOnly"),
    ] {
        doc.add(
            "aws_iam_role_policy_attachment",
            name,
            json!({
                "role": "${aws_iam_role.node.name}",
                "policy_arn": format!("arn:aws:iam::aws:policy/{policy}"),
            }),
        );
    }
    // The workers read and write the environment's bucket, and nothing else in S3.
    let bucket_policy = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"],
            "Resource": ["${aws_s3_bucket.artifacts.arn}", "${aws_s3_bucket.artifacts.arn}/*"],
        }],
    });
    doc.add(
        "aws_iam_role_policy",
        "node_bucket",
        json!({
            "name": "bucket-access",
            "role": "${aws_iam_role.node.id}",
            "policy": bucket_policy.to_string(),
        }),
    );
}

const NODE_POLICIES: [&str; 3] = [
    "aws_iam_role_policy_attachment.node_worker",
    "aws_iam_role_policy_attachment.node_cni",
    "aws_iam_role_policy_attachment.node_ecr",
];

fn node_group(pool: &str, nodes: &NodeGroupModel) -> Value {
    json!({
        "cluster_name": "${aws_eks_cluster.main.name}",
        "node_group_name": pool,
        "node_role_arn": "${aws_iam_role.node.arn}",
        "subnet_ids": "${aws_subnet.private[*].id}",
        "instance_types": [nodes.instance_type],
        "scaling_config": {
            "min_size": nodes.min_nodes,
            "desired_size": nodes.desired_nodes,
            "max_size": nodes.max_nodes,
        },
        "labels": {NODE_POOL_LABEL: pool},
        "depends_on": NODE_POLICIES,
    })
}

fn cluster(doc: &mut Document<'_>, model: &InfraModel) {
    let slug = doc.slug.clone();
    doc.add(
        "aws_eks_cluster",
        "main",
        json!({
            "name": slug,
            "version": model.cluster.kubernetes_version,
            "role_arn": "${aws_iam_role.cluster.arn}",
            "vpc_config": {
                "subnet_ids": "${concat(aws_subnet.private[*].id, aws_subnet.public[*].id)}",
                "endpoint_private_access": true,
                "endpoint_public_access": true,
            },
            "access_config": {
                "authentication_mode": "API_AND_CONFIG_MAP",
                "bootstrap_cluster_creator_admin_permissions": true,
            },
            "depends_on": ["aws_iam_role_policy_attachment.cluster"],
        }),
    );
    doc.add(
        "aws_eks_node_group",
        "cpu",
        node_group(CPU_POOL, &model.cluster.cpu_nodes),
    );
    if let Some(gpu) = &model.cluster.gpu_nodes {
        let mut body = node_group(GPU_POOL, gpu);
        body["ami_type"] = json!("AL2023_x86_64_NVIDIA");
        body["taint"] =
            json!([{"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": "NO_SCHEDULE"}]);
        doc.add("aws_eks_node_group", "gpu", body);
    }
}

/// What the cluster's nodes (and so their pods) carry: the security group EKS creates for the
/// cluster. Managed node groups without a launch template attach exactly this group to every
/// node, and with the VPC CNI pods send from their node's interfaces; a separate node group of
/// our own would need a launch template to attach it, for no gain in who is admitted.
const CLUSTER_SECURITY_GROUP: &str =
    "${aws_eks_cluster.main.vpc_config[0].cluster_security_group_id}";

/// A security group admitting `port` from the cluster's nodes only.
fn cluster_only_security_group(doc: &mut Document<'_>, name: &str, port: u16) {
    doc.add(
        "aws_security_group",
        name,
        json!({
            "name": format!("{}-{name}", doc.slug),
            "description": format!("{name} reachable from the environment's cluster nodes only"),
            "vpc_id": "${aws_vpc.main.id}",
        }),
    );
    doc.add(
        "aws_vpc_security_group_ingress_rule",
        &format!("{name}_from_cluster"),
        json!({
            "security_group_id": format!("${{aws_security_group.{name}.id}}"),
            "referenced_security_group_id": CLUSTER_SECURITY_GROUP,
            "ip_protocol": "tcp",
            "from_port": port,
            "to_port": port,
        }),
    );
}

fn database(doc: &mut Document<'_>, model: &InfraModel) {
    let pg = &model.postgres;
    let slug = doc.slug.clone();
    cluster_only_security_group(doc, "database", 5432);
    doc.add(
        "aws_db_subnet_group",
        "main",
        json!({"name": slug, "subnet_ids": "${aws_subnet.private[*].id}"}),
    );
    doc.add(
        "aws_db_instance",
        "main",
        json!({
            "identifier": slug,
            "engine": "postgres",
            "engine_version": pg.engine_version,
            "instance_class": pg.instance_class,
            "allocated_storage": pg.allocated_storage_gb,
            "storage_type": "gp3",
            "storage_encrypted": true,
            "multi_az": pg.multi_az,
            "backup_retention_period": pg.backup_retention_days,
            "db_name": "beta9",
            "username": "beta9",
            // RDS generates the password and keeps it in Secrets Manager: it is never a
            // Terraform value, so it is in neither this file nor the state.
            "manage_master_user_password": true,
            "db_subnet_group_name": "${aws_db_subnet_group.main.name}",
            "vpc_security_group_ids": ["${aws_security_group.database.id}"],
            "publicly_accessible": false,
            "copy_tags_to_snapshot": true,
            "skip_final_snapshot": false,
            "final_snapshot_identifier": format!("{slug}-final"),
        }),
    );
}

fn redis(doc: &mut Document<'_>, model: &InfraModel) {
    let redis = &model.redis;
    let slug = doc.slug.clone();
    cluster_only_security_group(doc, "redis", 6379);
    doc.add(
        "aws_elasticache_subnet_group",
        "main",
        json!({"name": slug, "subnet_ids": "${aws_subnet.private[*].id}"}),
    );
    doc.add(
        "aws_elasticache_replication_group",
        "main",
        json!({
            "replication_group_id": slug,
            "description": format!("Beta9 environment {}", doc.target.name),
            "engine": "redis",
            "engine_version": REDIS_ENGINE_VERSION,
            "node_type": redis.node_type,
            "num_cache_clusters": redis.num_cache_nodes,
            "automatic_failover_enabled": redis.automatic_failover,
            "multi_az_enabled": redis.automatic_failover,
            "port": 6379,
            "subnet_group_name": "${aws_elasticache_subnet_group.main.name}",
            "security_group_ids": ["${aws_security_group.redis.id}"],
            "at_rest_encryption_enabled": true,
            "transit_encryption_enabled": true,
        }),
    );
}

fn bucket(doc: &mut Document<'_>, model: &InfraModel) {
    let name = format!("{}-artifacts", doc.slug);
    // A destroy is the user's explicit request to remove the environment, objects included.
    doc.add(
        "aws_s3_bucket",
        "artifacts",
        json!({"bucket": name, "force_destroy": true}),
    );
    let status = if model.bucket.versioned {
        "Enabled"
    } else {
        "Suspended"
    };
    doc.add(
        "aws_s3_bucket_versioning",
        "artifacts",
        json!({
            "bucket": "${aws_s3_bucket.artifacts.id}",
            "versioning_configuration": {"status": status},
        }),
    );
    doc.add(
        "aws_s3_bucket_public_access_block",
        "artifacts",
        json!({
            "bucket": "${aws_s3_bucket.artifacts.id}",
            "block_public_acls": true,
            "block_public_policy": true,
            "ignore_public_acls": true,
            "restrict_public_buckets": true,
        }),
    );
    doc.add(
        "aws_s3_bucket_server_side_encryption_configuration",
        "artifacts",
        json!({
            "bucket": "${aws_s3_bucket.artifacts.id}",
            "rule": {"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms"}},
        }),
    );
    // Each rule applies to the whole bucket. Provider v5 wants a `filter` (or the deprecated
    // `prefix`) in every rule, and in the filter exactly one condition: an empty prefix, which
    // every key has (an empty `filter {}` draws "will be an error" warnings since 5.90).
    doc.add(
        "aws_s3_bucket_lifecycle_configuration",
        "artifacts",
        json!({
            "bucket": "${aws_s3_bucket.artifacts.id}",
            "rule": [
                {
                    "id": "expire-noncurrent-versions",
                    "status": "Enabled",
                    "filter": {"prefix": ""},
                    "noncurrent_version_expiration": {"noncurrent_days": NONCURRENT_VERSION_DAYS},
                },
                {
                    "id": "abort-incomplete-multipart-uploads",
                    "status": "Enabled",
                    "filter": {"prefix": ""},
                    "abort_incomplete_multipart_upload": {
                        "days_after_initiation": INCOMPLETE_UPLOAD_DAYS,
                    },
                },
            ],
            // AWS applies noncurrent-version rules only once versioning is configured.
            "depends_on": ["aws_s3_bucket_versioning.artifacts"],
        }),
    );
}

/// The `output` block: every [`InfraOutput`], by its name.
fn outputs() -> Value {
    Value::Object(
        InfraOutput::ALL
            .into_iter()
            .map(|output| (output.name().to_owned(), declare(output)))
            .collect(),
    )
}

/// How Terraform computes one output.
fn declare(output: InfraOutput) -> Value {
    let (value, description) = match output {
        InfraOutput::VpcId => ("${aws_vpc.main.id}", "The environment's VPC."),
        InfraOutput::ClusterName => ("${aws_eks_cluster.main.name}", "The EKS cluster's name."),
        InfraOutput::ClusterEndpoint => (
            "${aws_eks_cluster.main.endpoint}",
            "The Kubernetes API endpoint.",
        ),
        InfraOutput::DatabaseEndpoint => {
            ("${aws_db_instance.main.address}", "The Postgres host name.")
        }
        InfraOutput::DatabasePasswordSecretArn => (
            "${aws_db_instance.main.master_user_secret[0].secret_arn}",
            "The Secrets Manager secret holding the Postgres master password (a reference, not the password).",
        ),
        InfraOutput::RedisEndpoint => (
            "${aws_elasticache_replication_group.main.primary_endpoint_address}",
            "The Redis primary host name.",
        ),
        InfraOutput::BucketName => (
            "${aws_s3_bucket.artifacts.bucket}",
            "The object storage bucket.",
        ),
        InfraOutput::ClusterCertificateAuthority => (
            "${aws_eks_cluster.main.certificate_authority[0].data}",
            "The cluster's CA bundle, base64.",
        ),
        InfraOutput::ClusterOidcIssuer => (
            "${aws_eks_cluster.main.identity[0].oidc[0].issuer}",
            "The cluster's OIDC issuer URL (IAM roles for service accounts).",
        ),
        InfraOutput::ClusterAutoscalerRoleArn => (
            "${aws_iam_role.cluster_autoscaler.arn}",
            "The IAM role cluster-autoscaler's service account assumes.",
        ),
    };
    let mut declaration = json!({"value": value, "description": description});
    if output.is_sensitive() {
        declaration["sensitive"] = json!(true);
    }
    declaration
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::infra_model::{BucketModel, ClusterModel, NetworkModel, PostgresModel, RedisModel};
    use domain::spec::Provider;
    use std::collections::BTreeSet;

    const ENV: &str = "env_01jd0000000000000000000000";

    fn target() -> Target<'static> {
        Target {
            environment_id: ENV,
            name: "production",
        }
    }

    /// The medium profile with GPUs, as `InfraModel::for_spec` builds it.
    fn medium(provider: Provider) -> InfraModel {
        InfraModel {
            provider,
            region: "us-east-1".to_owned(),
            network: NetworkModel {
                vpc_cidr: "10.0.0.0/16".to_owned(),
                availability_zones: 3,
                nat: NatLayout::PerAz,
            },
            cluster: ClusterModel {
                kubernetes_version: "1.31".to_owned(),
                cpu_nodes: NodeGroupModel::new("m6i.xlarge", 2, 3, 6),
                gpu_nodes: Some(NodeGroupModel::new("g5.2xlarge", 0, 1, 4)),
            },
            postgres: PostgresModel {
                engine_version: "16.4".to_owned(),
                instance_class: "db.r6g.large".to_owned(),
                allocated_storage_gb: 100,
                multi_az: true,
                backup_retention_days: 7,
            },
            redis: RedisModel {
                node_type: "cache.r6g.large".to_owned(),
                num_cache_nodes: 2,
                automatic_failover: true,
            },
            bucket: BucketModel { versioned: true },
        }
    }

    fn small_without_gpu(provider: Provider) -> InfraModel {
        let mut model = medium(provider);
        model.network.availability_zones = 2;
        model.network.nat = NatLayout::Single;
        model.cluster.gpu_nodes = None;
        model
    }

    fn resource<'v>(config: &'v Value, rtype: &str, name: &str) -> &'v Value {
        &config["resource"][rtype][name]
    }

    #[test]
    fn aws_state_lives_in_s3_under_the_environment_key() {
        let config = render(target(), &medium(Provider::Aws));
        let s3 = &config["terraform"]["backend"]["s3"];
        assert_eq!(
            s3["key"],
            json!(format!("environments/{ENV}/terraform.tfstate"))
        );
        assert_eq!(s3["region"], json!("us-east-1"));
        assert_eq!(s3["encrypt"], json!(true));
        assert_eq!(s3["use_lockfile"], json!(true));
        // The bucket and a DynamoDB table are settings, given at `terraform init`.
        assert!(s3.get("bucket").is_none() && s3.get("dynamodb_table").is_none());
        assert_eq!(config["terraform"]["backend"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn aws_assumes_the_customers_role_through_variables_never_their_values() {
        let config = render(target(), &medium(Provider::Aws));
        assert_eq!(
            config["provider"]["aws"]["assume_role"],
            json!({
                "role_arn": "${var.customer_role_arn}",
                "external_id": "${var.customer_external_id}",
                "session_name": "${var.customer_session_name}",
                "duration": "${var.customer_session_duration}",
            })
        );
        let declared: Vec<&str> = config["variable"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = customer_role::ALL.to_vec();
        expected.sort_unstable();
        assert_eq!(declared, expected);
        let external_id = &config["variable"][customer_role::EXTERNAL_ID];
        assert_eq!(external_id["sensitive"], json!(true));
        for name in customer_role::ALL {
            let variable = &config["variable"][name];
            assert_eq!(variable["type"], json!("string"), "{name}");
            // No value is written, only declared (the external id may be null: none).
            assert!(
                variable.get("default").is_none_or(Value::is_null),
                "{name}: {variable}"
            );
            assert_eq!(
                variable.get("sensitive") == Some(&json!(true)),
                name == customer_role::EXTERNAL_ID,
                "{name}"
            );
        }
    }

    #[test]
    fn sandbox_renders_the_same_resources_with_a_local_backend() {
        let aws = render(target(), &medium(Provider::Aws));
        let sandbox = render(target(), &medium(Provider::Sandbox));
        assert_eq!(sandbox["terraform"]["backend"], json!({"local": {}}));
        assert!(sandbox["provider"]["aws"].get("assume_role").is_none());
        assert!(sandbox.get("variable").is_none());
        assert_eq!(sandbox["resource"], aws["resource"]);
        assert_eq!(sandbox["output"], aws["output"]);
    }

    #[test]
    fn per_az_layout_builds_one_nat_gateway_per_zone() {
        let config = render(target(), &medium(Provider::Aws));
        assert_eq!(
            resource(&config, "aws_nat_gateway", "main")["count"],
            json!(3)
        );
        assert_eq!(resource(&config, "aws_eip", "nat")["count"], json!(3));
        let route = resource(&config, "aws_route", "private_nat");
        assert_eq!(route["count"], json!(3));
        assert_eq!(
            route["nat_gateway_id"],
            json!("${aws_nat_gateway.main[count.index].id}")
        );
        assert_eq!(
            resource(&config, "aws_subnet", "private")["count"],
            json!(3)
        );
        assert_eq!(resource(&config, "aws_subnet", "public")["count"], json!(3));
    }

    #[test]
    fn single_layout_routes_every_zone_through_one_nat_gateway() {
        let config = render(target(), &small_without_gpu(Provider::Aws));
        assert_eq!(
            resource(&config, "aws_nat_gateway", "main")["count"],
            json!(1)
        );
        assert_eq!(resource(&config, "aws_eip", "nat")["count"], json!(1));
        let route = resource(&config, "aws_route", "private_nat");
        assert_eq!(route["count"], json!(2));
        assert_eq!(
            route["nat_gateway_id"],
            json!("${aws_nat_gateway.main[0].id}")
        );
    }

    #[test]
    fn gpu_node_group_exists_only_when_the_model_has_gpu_nodes() {
        let with = render(target(), &medium(Provider::Aws));
        let gpu = resource(&with, "aws_eks_node_group", "gpu");
        assert_eq!(gpu["instance_types"], json!(["g5.2xlarge"]));
        assert_eq!(
            gpu["scaling_config"],
            json!({"min_size": 0, "desired_size": 1, "max_size": 4})
        );
        assert_eq!(gpu["taint"][0]["key"], json!("nvidia.com/gpu"));

        let without = render(target(), &small_without_gpu(Provider::Aws));
        assert!(resource(&without, "aws_eks_node_group", "gpu").is_null());
        assert!(!resource(&without, "aws_eks_node_group", "cpu").is_null());
    }

    #[test]
    fn every_taggable_resource_is_tagged_with_the_environment_id() {
        let config = render(target(), &medium(Provider::Aws));
        let mut checked = 0;
        for (rtype, by_name) in config["resource"].as_object().unwrap() {
            if UNTAGGABLE.contains(&rtype.as_str()) {
                continue;
            }
            for (name, body) in by_name.as_object().unwrap() {
                assert_eq!(body["tags"][ENVIRONMENT_TAG], json!(ENV), "{rtype}.{name}");
                checked += 1;
            }
        }
        assert!(checked > 20, "{checked}");
        assert_eq!(
            config["provider"]["aws"]["default_tags"]["tags"][ENVIRONMENT_TAG],
            json!(ENV)
        );
    }

    #[test]
    fn database_is_encrypted_backed_up_and_its_password_never_a_terraform_value() {
        let config = render(target(), &medium(Provider::Aws));
        let db = resource(&config, "aws_db_instance", "main");
        assert_eq!(db["instance_class"], json!("db.r6g.large"));
        assert_eq!(db["allocated_storage"], json!(100));
        assert_eq!(db["multi_az"], json!(true));
        assert_eq!(db["backup_retention_period"], json!(7));
        assert_eq!(db["storage_encrypted"], json!(true));
        assert_eq!(db["manage_master_user_password"], json!(true));
        assert!(db.get("password").is_none());
        assert!(!config.to_string().contains("\"password\""));
        assert_eq!(
            config["output"]["database_password_secret_arn"]["value"],
            json!("${aws_db_instance.main.master_user_secret[0].secret_arn}")
        );
    }

    #[test]
    fn the_declared_outputs_are_exactly_the_infra_outputs() {
        let config = render(target(), &medium(Provider::Aws));
        let declared: BTreeSet<&str> = config["output"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let named: BTreeSet<&str> = InfraOutput::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(declared, named);
        for output in InfraOutput::ALL {
            assert_eq!(
                config["output"][output.name()].get("sensitive") == Some(&json!(true)),
                output.is_sensitive(),
                "{output}"
            );
        }
    }

    #[test]
    fn outputs_the_bootstrap_plan_reads_are_present_and_not_sensitive() {
        let config = render(target(), &medium(Provider::Aws));
        let outputs = config["output"].as_object().unwrap();
        for name in InfraOutput::reported().map(InfraOutput::name) {
            let value = outputs[name]["value"].as_str().unwrap();
            assert!(
                value.starts_with("${") && value.ends_with('}'),
                "{name}: {value}"
            );
            assert!(outputs[name].get("sensitive").is_none(), "{name}");
        }
        for name in ["cluster_certificate_authority", "cluster_oidc_issuer"] {
            assert!(outputs[name].get("sensitive").is_none(), "{name}");
        }
    }

    #[test]
    fn database_and_redis_admit_only_the_cluster_security_group() {
        let config = render(target(), &medium(Provider::Aws));
        for (name, port) in [("database", 5432), ("redis", 6379)] {
            let rules: Vec<&Value> = config["resource"]["aws_vpc_security_group_ingress_rule"]
                .as_object()
                .unwrap()
                .values()
                .filter(|rule| {
                    rule["security_group_id"] == json!(format!("${{aws_security_group.{name}.id}}"))
                })
                .collect();
            assert_eq!(rules.len(), 1, "{name}: {rules:?}");
            let rule = rules[0];
            assert_eq!(
                rule["referenced_security_group_id"],
                json!("${aws_eks_cluster.main.vpc_config[0].cluster_security_group_id}"),
                "{name}"
            );
            assert!(rule.get("cidr_ipv4").is_none(), "{name}: {rule}");
            assert_eq!(rule["from_port"], json!(port));
            assert_eq!(rule["to_port"], json!(port));
        }
        for rule in config["resource"]["aws_vpc_security_group_ingress_rule"]
            .as_object()
            .unwrap()
            .values()
        {
            assert!(rule.get("cidr_ipv4").is_none(), "{rule}");
        }
    }

    /// A JSON document held in a string attribute (an IAM policy).
    fn document(body: &Value, attribute: &str) -> Value {
        serde_json::from_str(body[attribute].as_str().unwrap()).unwrap()
    }

    #[test]
    fn only_the_autoscalers_service_account_assumes_its_role_through_the_clusters_oidc_provider() {
        let config = render(target(), &medium(Provider::Aws));
        let provider = resource(&config, "aws_iam_openid_connect_provider", "cluster");
        assert_eq!(
            provider["url"],
            json!("${aws_eks_cluster.main.identity[0].oidc[0].issuer}")
        );
        assert_eq!(provider["client_id_list"], json!(["sts.amazonaws.com"]));
        assert!(provider.get("thumbprint_list").is_none());
        assert_eq!(
            config["locals"]["cluster_oidc_issuer_host"],
            json!("${trimprefix(aws_eks_cluster.main.identity[0].oidc[0].issuer, \"https://\")}")
        );

        let role = resource(&config, "aws_iam_role", "cluster_autoscaler");
        let trust = document(role, "assume_role_policy");
        let statements = trust["Statement"].as_array().unwrap();
        assert_eq!(statements.len(), 1);
        let statement = &statements[0];
        assert_eq!(statement["Effect"], json!("Allow"));
        assert_eq!(statement["Action"], json!("sts:AssumeRoleWithWebIdentity"));
        assert_eq!(
            statement["Principal"],
            json!({"Federated": "${aws_iam_openid_connect_provider.cluster.arn}"})
        );
        assert_eq!(
            statement["Condition"],
            json!({"StringEquals": {
                "${local.cluster_oidc_issuer_host}:sub":
                    "system:serviceaccount:kube-system:cluster-autoscaler",
                "${local.cluster_oidc_issuer_host}:aud": "sts.amazonaws.com",
            }})
        );
        assert_eq!(
            config["output"]["cluster_autoscaler_role_arn"]["value"],
            json!("${aws_iam_role.cluster_autoscaler.arn}")
        );
    }

    #[test]
    fn the_autoscaler_may_scale_only_this_clusters_groups_and_read_its_node_groups() {
        for (model, groups) in [
            (medium(Provider::Aws), vec!["cpu", "gpu"]),
            (small_without_gpu(Provider::Aws), vec!["cpu"]),
        ] {
            let config = render(target(), &model);
            let policy = document(
                resource(&config, "aws_iam_role_policy", "cluster_autoscaler"),
                "policy",
            );
            let statements = policy["Statement"].as_array().unwrap();
            let with = |action: &str| {
                statements
                    .iter()
                    .find(|s| {
                        s["Action"] == json!(action)
                            || s["Action"]
                                .as_array()
                                .is_some_and(|a| a.contains(&json!(action)))
                    })
                    .unwrap_or_else(|| panic!("no statement allows {action}"))
            };
            let scale = with("autoscaling:SetDesiredCapacity");
            assert_eq!(
                scale,
                with("autoscaling:TerminateInstanceInAutoScalingGroup")
            );
            assert_eq!(
                scale["Condition"],
                json!({"StringEquals": {
                    "aws:ResourceTag/k8s.io/cluster-autoscaler/${aws_eks_cluster.main.name}":
                        "owned",
                }})
            );
            let node_groups: Vec<String> = groups
                .iter()
                .map(|g| format!("${{aws_eks_node_group.{g}.arn}}"))
                .collect();
            assert_eq!(
                with("eks:DescribeNodegroup")["Resource"],
                json!(node_groups)
            );
            for statement in statements {
                let actions = statement["Action"].as_array().cloned().unwrap_or_default();
                let mutating = actions.iter().any(|a| {
                    !a.as_str().unwrap().contains(":Describe")
                        && !a.as_str().unwrap().contains(":Get")
                });
                assert!(
                    !mutating || statement.get("Condition").is_some(),
                    "unconditioned change: {statement}"
                );
            }
        }
    }

    #[test]
    fn bucket_is_versioned_and_private() {
        let config = render(target(), &medium(Provider::Aws));
        assert_eq!(
            resource(&config, "aws_s3_bucket_versioning", "artifacts")["versioning_configuration"]
                ["status"],
            json!("Enabled")
        );
        assert_eq!(
            resource(&config, "aws_s3_bucket", "artifacts")["bucket"],
            json!("beta9-env-01jd0000000000000000000000-artifacts")
        );
        let block = resource(&config, "aws_s3_bucket_public_access_block", "artifacts");
        assert_eq!(block["block_public_acls"], json!(true));
    }

    #[test]
    fn old_versions_expire_and_incomplete_uploads_are_aborted_bucket_wide() {
        let config = render(target(), &small_without_gpu(Provider::Aws));
        let lifecycle = resource(
            &config,
            "aws_s3_bucket_lifecycle_configuration",
            "artifacts",
        );
        assert_eq!(lifecycle["bucket"], json!("${aws_s3_bucket.artifacts.id}"));
        let rules = lifecycle["rule"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        for rule in rules {
            assert_eq!(rule["status"], json!("Enabled"), "{rule}");
            assert_eq!(rule["filter"], json!({"prefix": ""}), "{rule}");
        }
        assert_eq!(
            rules[0]["noncurrent_version_expiration"],
            json!({"noncurrent_days": 30})
        );
        assert_eq!(
            rules[1]["abort_incomplete_multipart_upload"],
            json!({"days_after_initiation": 7})
        );
    }
}
