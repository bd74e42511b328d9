//! The bootstrap's readiness checks, with `kube` against the cluster itself: the API server
//! answers; at least each node pool's minimum of nodes is Ready (before any install); the
//! ingress controller's load balancer has its address, and the Beta9 gateway Deployment is
//! available (after the install). Each wait polls until its timeout,
//! says its progress through `note` (the step's log) whenever it changes, and on timeout fails
//! naming what never became ready and what it last saw.

use std::fmt::Write as _;
use std::time::Duration;

use domain::infra_model::ClusterModel;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::Api;
use kube::api::ListParams;
use tokio::time::Instant;

/// The label the stack's managed node groups give their nodes: the pool's name (`cpu`, `gpu`).
pub const POOL_LABEL: &str = "beta9.io/pool";

/// The Beta9 gateway Deployment: the chart (`beta9-chart`, bjw-s common library, global
/// `nameOverride: beta9`) names each controller's Deployment `<fullname>-<controller>`, and the
/// release is `beta9` in namespace `beta9`.
pub const GATEWAY_NAMESPACE: &str = "beta9";
pub const GATEWAY_DEPLOYMENT: &str = "beta9-gateway";

/// The ingress controller's Service, whose load balancer is Beta9's way in: the chart
/// `ingress-nginx` names it `<fullname>-controller`, and the release is `ingress-nginx` in
/// namespace `ingress-nginx`.
pub const INGRESS_NAMESPACE: &str = "ingress-nginx";
pub const INGRESS_SERVICE: &str = "ingress-nginx-controller";

/// At most this many node names in one message.
const NAMES_SHOWN: usize = 10;

/// How long each wait may take, and how often it looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadinessTimeouts {
    pub api: Duration,
    pub nodes: Duration,
    pub gateway: Duration,
    pub poll: Duration,
}

impl Default for ReadinessTimeouts {
    fn default() -> Self {
        ReadinessTimeouts {
            api: Duration::from_secs(300),
            nodes: Duration::from_secs(900),
            gateway: Duration::from_secs(900),
            poll: Duration::from_secs(5),
        }
    }
}

/// A pool and the fewest Ready nodes it must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeMinimum {
    pub pool: String,
    pub min: u16,
}

/// The pools to wait for: the CPU group's minimum, and the GPU group's when it has one above
/// zero (a GPU group of minimum zero scales up on demand).
pub fn node_minimums(cluster: &ClusterModel) -> Vec<NodeMinimum> {
    let mut minimums = vec![NodeMinimum {
        pool: "cpu".into(),
        min: cluster.cpu_nodes.min_nodes,
    }];
    if let Some(gpu) = &cluster.gpu_nodes
        && gpu.min_nodes > 0
    {
        minimums.push(NodeMinimum {
            pool: "gpu".into(),
            min: gpu.min_nodes,
        });
    }
    minimums
}

/// The minimums as the log says them: `2 cpu, 1 gpu`.
pub fn describe(minimums: &[NodeMinimum]) -> String {
    minimums
        .iter()
        .map(|m| format!("{} {}", m.min, m.pool))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What never became ready.
#[derive(Debug, thiserror::Error)]
#[error("{what} never became ready within {timeout:?}: {last}")]
pub struct NotReady {
    pub what: String,
    pub timeout: Duration,
    /// What the last look saw (or the last error), bounded.
    pub last: String,
}

/// One look at the cluster: ready or not, and what it saw (a line for the log).
struct Look {
    ready: bool,
    state: String,
    /// What a ready look found, when the wait is for a value (a load balancer's hostname).
    found: Option<String>,
}

impl Look {
    fn new(ready: bool, state: String) -> Look {
        Look {
            ready,
            state,
            found: None,
        }
    }

    fn failed(error: impl std::fmt::Display) -> Look {
        Look::new(false, format!("the API server did not answer: {error}"))
    }
}

/// Polls `look` until it says ready or `timeout` passes; notes each new state. Returns what the
/// ready look found.
async fn wait<F, Fut>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    note: &(dyn Fn(&str) + Sync),
    mut look: F,
) -> Result<Option<String>, NotReady>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Look>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let seen = tokio::time::timeout(remaining.max(poll), look())
            .await
            .unwrap_or_else(|_| Look::new(false, "the API server did not answer in time".into()));
        let state = domain::text::truncated(&seen.state, 500).to_owned();
        if seen.ready {
            note(&format!("{what}: ready ({state})"));
            return Ok(seen.found);
        }
        if state != last {
            note(&format!("waiting for {what}: {state}"));
            last = state;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(NotReady {
                what: what.to_owned(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(poll.min(remaining)).await;
    }
}

/// Waits until the API server answers `/version`; returns its Kubernetes version.
pub async fn api_server(
    client: &kube::Client,
    timeouts: &ReadinessTimeouts,
    note: &(dyn Fn(&str) + Sync),
) -> Result<String, NotReady> {
    let version = wait(
        "the cluster's API server",
        timeouts.api,
        timeouts.poll,
        note,
        || async {
            match client.apiserver_version().await {
                Ok(info) => Look {
                    found: Some(info.git_version.clone()),
                    ..Look::new(true, format!("Kubernetes {}", info.git_version))
                },
                Err(error) => Look::failed(error),
            }
        },
    )
    .await?;
    Ok(version.unwrap_or_default())
}

/// Waits until every pool of `minimums` has at least its minimum of Ready nodes.
pub async fn nodes(
    client: &kube::Client,
    minimums: &[NodeMinimum],
    timeouts: &ReadinessTimeouts,
    note: &(dyn Fn(&str) + Sync),
) -> Result<(), NotReady> {
    let what = format!("the cluster's nodes ({} Ready)", describe(minimums));
    let api: Api<Node> = Api::all(client.clone());
    wait(&what, timeouts.nodes, timeouts.poll, note, || async {
        match api.list(&ListParams::default()).await {
            Ok(list) => nodes_look(&list.items, minimums),
            Err(error) => Look::failed(error),
        }
    })
    .await
    .map(drop)
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

fn pool_of(node: &Node) -> Option<&str> {
    node.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(POOL_LABEL))
        .map(String::as_str)
}

fn nodes_look(nodes: &[Node], minimums: &[NodeMinimum]) -> Look {
    let mut ready = true;
    let mut state = String::new();
    for minimum in minimums {
        let in_pool: Vec<&Node> = nodes
            .iter()
            .filter(|node| pool_of(node) == Some(minimum.pool.as_str()))
            .collect();
        let ready_count = in_pool.iter().filter(|node| is_ready(node)).count();
        ready &= ready_count >= usize::from(minimum.min);
        if !state.is_empty() {
            state.push_str("; ");
        }
        let _ = write!(
            state,
            "pool {}: {ready_count} of {} Ready",
            minimum.pool, minimum.min
        );
        let not_ready: Vec<&str> = in_pool
            .iter()
            .filter(|node| !is_ready(node))
            .map(|node| node.metadata.name.as_deref().unwrap_or("(unnamed)"))
            .collect();
        if !not_ready.is_empty() {
            let _ = write!(state, " (not Ready: {})", names(&not_ready));
        }
    }
    Look::new(ready, state)
}

/// Up to [`NAMES_SHOWN`] names, and how many more.
fn names(all: &[&str]) -> String {
    let shown: Vec<&str> = all
        .iter()
        .take(NAMES_SHOWN)
        .map(|name| domain::text::truncated(name, 100))
        .collect();
    let mut text = shown.join(", ");
    if all.len() > NAMES_SHOWN {
        let _ = write!(text, " and {} more", all.len() - NAMES_SHOWN);
    }
    text
}

/// Waits until the Deployment `namespace/name` is available (its `Available` condition true).
pub async fn deployment(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
    poll: Duration,
    note: &(dyn Fn(&str) + Sync),
) -> Result<(), NotReady> {
    let what = format!("the Deployment {namespace}/{name}");
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    wait(&what, timeout, poll, note, || async {
        match api.get_opt(name).await {
            Ok(Some(deployment)) => deployment_look(&deployment),
            Ok(None) => Look::new(false, "it does not exist".to_owned()),
            Err(error) => Look::failed(error),
        }
    })
    .await
    .map(drop)
}

/// Waits for the Beta9 gateway ([`GATEWAY_NAMESPACE`]/[`GATEWAY_DEPLOYMENT`]).
pub async fn gateway(
    client: &kube::Client,
    timeouts: &ReadinessTimeouts,
    note: &(dyn Fn(&str) + Sync),
) -> Result<(), NotReady> {
    deployment(
        client,
        GATEWAY_NAMESPACE,
        GATEWAY_DEPLOYMENT,
        timeouts.gateway,
        timeouts.poll,
        note,
    )
    .await
}

fn deployment_look(deployment: &Deployment) -> Look {
    let status = deployment.status.as_ref();
    let available = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions.iter().any(|c| {
                c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True")
            })
        });
    let replicas = status.and_then(|s| s.replicas).unwrap_or(0);
    let available_replicas = status.and_then(|s| s.available_replicas).unwrap_or(0);
    Look::new(
        available,
        format!("{available_replicas} of {replicas} replicas available"),
    )
}

/// Waits until the ingress controller's Service ([`INGRESS_NAMESPACE`]/[`INGRESS_SERVICE`]) has
/// a load balancer address; returns it (the hostname an AWS load balancer gets, or its IP).
pub async fn load_balancer(
    client: &kube::Client,
    timeouts: &ReadinessTimeouts,
    note: &(dyn Fn(&str) + Sync),
) -> Result<String, NotReady> {
    let what = format!("the load balancer of the Service {INGRESS_NAMESPACE}/{INGRESS_SERVICE}");
    let api: Api<Service> = Api::namespaced(client.clone(), INGRESS_NAMESPACE);
    let found = wait(&what, timeouts.gateway, timeouts.poll, note, || async {
        match api.get_opt(INGRESS_SERVICE).await {
            Ok(Some(service)) => load_balancer_look(&service),
            Ok(None) => Look::new(false, "the Service does not exist".to_owned()),
            Err(error) => Look::failed(error),
        }
    })
    .await?;
    Ok(found.unwrap_or_default())
}

fn load_balancer_look(service: &Service) -> Look {
    let address = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|ingress| ingress.first())
        .and_then(|first| first.hostname.clone().or_else(|| first.ip.clone()))
        .filter(|address| !address.is_empty() && address.len() <= 253);
    match address {
        Some(address) => Look {
            state: address.clone(),
            found: Some(address),
            ready: true,
        },
        None => Look::new(false, "no load balancer address yet".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::infra_model::NodeGroupModel;

    fn cluster(gpu_min: Option<u16>) -> ClusterModel {
        ClusterModel {
            kubernetes_version: "1.33".into(),
            cpu_nodes: NodeGroupModel::new("m6i.large", 2, 2, 4),
            gpu_nodes: gpu_min.map(|min| NodeGroupModel::new("g5.xlarge", min, min, 4)),
        }
    }

    #[test]
    fn gpu_nodes_are_awaited_only_when_their_group_has_a_minimum() {
        let cpu = NodeMinimum {
            pool: "cpu".into(),
            min: 2,
        };
        assert_eq!(node_minimums(&cluster(None)), vec![cpu.clone()]);
        assert_eq!(node_minimums(&cluster(Some(0))), vec![cpu.clone()]);
        assert_eq!(
            node_minimums(&cluster(Some(1))),
            vec![
                cpu,
                NodeMinimum {
                    pool: "gpu".into(),
                    min: 1
                }
            ]
        );
    }

    #[test]
    fn long_name_lists_are_cut() {
        let many: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(
            names(&refs),
            "n0, n1, n2, n3, n4, n5, n6, n7, n8, n9 and 2 more"
        );
    }
}
