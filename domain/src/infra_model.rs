//! What gets built: the one table from profile/size to concrete cloud resources.
//!
//! `aws` and `sandbox` share the same model (the sandbox renders the same plan, it just applies
//! it with the stand-ins), so a sandbox run exercises exactly what production would ask for.

use crate::spec::{EnvironmentSpec, Profile, Provider, Size};
use serde::{Deserialize, Serialize};

/// Concrete infrastructure for one environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InfraModel {
    pub provider: Provider,
    pub region: String,
    pub network: NetworkModel,
    pub cluster: ClusterModel,
    pub postgres: PostgresModel,
    pub redis: RedisModel,
    pub bucket: BucketModel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NatLayout {
    /// One NAT gateway shared by all private subnets (cheaper, one AZ is a single point of failure).
    Single,
    /// One NAT gateway per availability zone.
    PerAz,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkModel {
    pub vpc_cidr: String,
    pub availability_zones: u8,
    pub nat: NatLayout,
}

/// The label each node group puts on its nodes, naming its pool (`cpu`, `gpu`): Terraform sets
/// it, and Beta9's worker pools select their nodes by it.
pub const NODE_POOL_LABEL: &str = "beta9.io/pool";
/// The pool name of the CPU node group.
pub const CPU_POOL: &str = "cpu";
/// The pool name of the GPU node group.
pub const GPU_POOL: &str = "gpu";
/// The GPU node group's taint (effect NoSchedule): only pods that tolerate it land there.
pub const GPU_TAINT_KEY: &str = "nvidia.com/gpu";
pub const GPU_TAINT_VALUE: &str = "true";
/// cluster-autoscaler's namespace and service account: Terraform lets exactly this account
/// assume the autoscaler's IAM role, and the bootstrap's release creates it under this name.
pub const CLUSTER_AUTOSCALER_NAMESPACE: &str = "kube-system";
pub const CLUSTER_AUTOSCALER_SERVICE_ACCOUNT: &str = "cluster-autoscaler";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeGroupModel {
    pub instance_type: String,
    pub min_nodes: u16,
    pub desired_nodes: u16,
    pub max_nodes: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterModel {
    pub kubernetes_version: String,
    pub cpu_nodes: NodeGroupModel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_nodes: Option<NodeGroupModel>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PostgresModel {
    pub engine_version: String,
    pub instance_class: String,
    pub allocated_storage_gb: u32,
    pub multi_az: bool,
    pub backup_retention_days: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RedisModel {
    pub node_type: String,
    pub num_cache_nodes: u8,
    pub automatic_failover: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BucketModel {
    pub versioned: bool,
}

const KUBERNETES_VERSION: &str = "1.31";
const POSTGRES_ENGINE_VERSION: &str = "16.4";

impl NodeGroupModel {
    /// A group of `instance_type` nodes: at least `min`, `desired` to start, at most `max`.
    pub fn new(instance_type: &str, min: u16, desired: u16, max: u16) -> Self {
        Self {
            instance_type: instance_type.to_owned(),
            min_nodes: min,
            desired_nodes: desired,
            max_nodes: max,
        }
    }
}

/// The table. Change sizes here and nowhere else.
fn cluster_row(profile: Profile) -> (NetworkModel, NodeGroupModel, NodeGroupModel) {
    let network = |azs, nat| NetworkModel {
        vpc_cidr: "10.0.0.0/16".to_owned(),
        availability_zones: azs,
        nat,
    };
    match profile {
        Profile::Small => (
            network(2, NatLayout::Single),
            NodeGroupModel::new("m6i.large", 1, 2, 3),
            NodeGroupModel::new("g5.xlarge", 0, 0, 2),
        ),
        Profile::Medium => (
            network(3, NatLayout::PerAz),
            NodeGroupModel::new("m6i.xlarge", 2, 3, 6),
            NodeGroupModel::new("g5.2xlarge", 0, 1, 4),
        ),
        Profile::Large => (
            network(3, NatLayout::PerAz),
            NodeGroupModel::new("m6i.2xlarge", 3, 5, 12),
            NodeGroupModel::new("g5.12xlarge", 0, 2, 8),
        ),
    }
}

fn postgres_row(size: Size) -> (&'static str, u32) {
    match size {
        Size::Small => ("db.t4g.medium", 20),
        Size::Medium => ("db.r6g.large", 100),
        Size::Large => ("db.r6g.2xlarge", 500),
    }
}

fn redis_row(size: Size) -> &'static str {
    match size {
        Size::Small => "cache.t4g.small",
        Size::Medium => "cache.r6g.large",
        Size::Large => "cache.r6g.xlarge",
    }
}

impl InfraModel {
    /// Maps a validated spec to the resources to build.
    pub fn for_spec(spec: &EnvironmentSpec) -> Self {
        let (network, cpu_nodes, gpu_nodes) = cluster_row(spec.cluster.profile);
        let (instance_class, allocated_storage_gb) = postgres_row(spec.data.postgres.size);
        let redis = &spec.data.redis;
        InfraModel {
            provider: spec.cloud.provider(),
            region: spec.cloud.region().as_str().to_owned(),
            network,
            cluster: ClusterModel {
                kubernetes_version: KUBERNETES_VERSION.to_owned(),
                cpu_nodes,
                gpu_nodes: spec.beta9.workers.gpu_enabled.then_some(gpu_nodes),
            },
            postgres: PostgresModel {
                engine_version: POSTGRES_ENGINE_VERSION.to_owned(),
                instance_class: instance_class.to_owned(),
                allocated_storage_gb,
                multi_az: spec.data.postgres.multi_az,
                backup_retention_days: 7,
            },
            redis: RedisModel {
                node_type: redis_row(redis.size).to_owned(),
                num_cache_nodes: if redis.ha { 2 } else { 1 },
                automatic_failover: redis.ha,
            },
            bucket: BucketModel { versioned: true },
        }
    }
}
