//! A stand-in Kubernetes API server at the HTTP boundary, for the bootstrap's readiness checks:
//! the real `kube` client points at it. It serves what those checks read — `/version`, the
//! nodes, the namespaces, one namespace's deployments and LoadBalancer services — as JSON in the API's own shapes, and is
//! told how the cluster behaves: which nodes (of which pool) turn Ready when, or never, and when
//! the Beta9 gateway Deployment becomes available, or never.
//!
//! Plain HTTP on loopback: the client code under test is the same for `http` and `https` (kube's
//! connector takes either), and TLS would need a certificate authority made at test time (a new
//! dependency) while proving only that rustls checks a chain. Every request's `Authorization`
//! header is recorded, so tests see which bearer token the client sent.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::loopback::LoopbackServer;

/// The label the stack's managed node groups put on their nodes (`cpu` or `gpu`).
pub const POOL_LABEL: &str = "beta9.io/pool";

/// One node: its name, its pool, and when (after the server starts) it turns Ready; `None`: never.
#[derive(Clone, Debug)]
pub struct StandinNode {
    pub name: String,
    pub pool: String,
    pub ready_after: Option<Duration>,
}

impl StandinNode {
    pub fn ready_after(name: &str, pool: &str, after: Duration) -> Self {
        StandinNode {
            name: name.to_owned(),
            pool: pool.to_owned(),
            ready_after: Some(after),
        }
    }

    pub fn never_ready(name: &str, pool: &str) -> Self {
        StandinNode {
            name: name.to_owned(),
            pool: pool.to_owned(),
            ready_after: None,
        }
    }
}

/// One Deployment: where, and when it becomes available; `None`: never (it exists, with no
/// available replica).
#[derive(Clone, Debug)]
pub struct StandinDeployment {
    pub namespace: String,
    pub name: String,
    pub available_after: Option<Duration>,
}

/// One Service of type LoadBalancer: where, the hostname its load balancer gets, and when
/// (`None`: never; it exists, pending).
#[derive(Clone, Debug)]
pub struct StandinLoadBalancer {
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub assigned_after: Option<Duration>,
}

/// How the stand-in cluster behaves.
#[derive(Clone, Debug, Default)]
pub struct KubeBehaviour {
    pub nodes: Vec<StandinNode>,
    pub deployments: Vec<StandinDeployment>,
    pub load_balancers: Vec<StandinLoadBalancer>,
    /// Namespaces that exist (besides `default` and `kube-system`).
    pub namespaces: Vec<String>,
}

impl KubeBehaviour {
    /// `cpu` nodes `node-1`…`node-n`, Ready after `after`.
    pub fn cpu_nodes_ready_after(n: usize, after: Duration) -> Self {
        KubeBehaviour {
            nodes: (1..=n)
                .map(|i| StandinNode::ready_after(&format!("node-{i}"), "cpu", after))
                .collect(),
            ..KubeBehaviour::default()
        }
    }

    /// Adds the Beta9 gateway Deployment `namespace/name`, available after `after` (or never).
    pub fn with_deployment(
        mut self,
        namespace: &str,
        name: &str,
        available_after: Option<Duration>,
    ) -> Self {
        self.deployments.push(StandinDeployment {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            available_after,
        });
        if !self.namespaces.iter().any(|ns| ns == namespace) {
            self.namespaces.push(namespace.to_owned());
        }
        self
    }
}

impl KubeBehaviour {
    /// Adds the Service `namespace/name` of type LoadBalancer, whose load balancer gets
    /// `hostname` after `assigned_after` (or never).
    pub fn with_load_balancer(
        mut self,
        namespace: &str,
        name: &str,
        hostname: &str,
        assigned_after: Option<Duration>,
    ) -> Self {
        self.load_balancers.push(StandinLoadBalancer {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            hostname: hostname.to_owned(),
            assigned_after,
        });
        if !self.namespaces.iter().any(|ns| ns == namespace) {
            self.namespaces.push(namespace.to_owned());
        }
        self
    }
}

struct Shared {
    behaviour: KubeBehaviour,
    started: Instant,
    /// Set by [`StandinKubeApi::make_everything_ready`]: every node Ready, every Deployment
    /// available, whatever the behaviour said.
    everything_ready: AtomicBool,
    authorizations: Mutex<Vec<Option<String>>>,
}

/// The stand-in API server on a free loopback port; stopped on drop.
pub struct StandinKubeApi {
    server: LoopbackServer,
    shared: Arc<Shared>,
}

impl StandinKubeApi {
    pub async fn start(behaviour: KubeBehaviour) -> StandinKubeApi {
        let shared = Arc::new(Shared {
            behaviour,
            started: Instant::now(),
            everything_ready: AtomicBool::new(false),
            authorizations: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .route("/version", axum::routing::get(version))
            .route("/api/v1/nodes", axum::routing::get(nodes))
            .route("/api/v1/namespaces", axum::routing::get(namespaces))
            .route("/api/v1/namespaces/{name}", axum::routing::get(namespace))
            .route(
                "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
                axum::routing::get(deployment),
            )
            .route(
                "/api/v1/namespaces/{ns}/services/{name}",
                axum::routing::get(service),
            )
            .fallback(not_found)
            .with_state(shared.clone());
        StandinKubeApi {
            server: LoopbackServer::start(app, "stand-in kube API").await,
            shared,
        }
    }

    /// `http://127.0.0.1:<port>`: the cluster endpoint to hand the client.
    pub fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// From now on every node is Ready and every Deployment available, including those the
    /// behaviour said never would be: the cluster recovered (a test's retry then succeeds).
    pub fn make_everything_ready(&self) {
        self.shared.everything_ready.store(true, Ordering::SeqCst);
    }

    /// The `Authorization` header of every request so far, in order.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.shared.authorizations.lock().unwrap().clone()
    }
}

type SharedState = State<Arc<Shared>>;

fn record(shared: &Shared, headers: &HeaderMap) {
    let auth = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    shared.authorizations.lock().unwrap().push(auth);
}

fn reached(shared: &Shared, after: Option<Duration>) -> bool {
    shared.everything_ready.load(Ordering::SeqCst)
        || after.is_some_and(|after| shared.started.elapsed() >= after)
}

async fn version(State(shared): SharedState, headers: HeaderMap) -> Json<Value> {
    record(&shared, &headers);
    Json(json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-standin",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
}

fn list(kind: &str, items: Vec<Value>) -> Json<Value> {
    Json(json!({
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"resourceVersion": "1"},
        "items": items,
    }))
}

async fn nodes(State(shared): SharedState, headers: HeaderMap) -> Json<Value> {
    record(&shared, &headers);
    let items = shared
        .behaviour
        .nodes
        .iter()
        .map(|node| {
            let ready = reached(&shared, node.ready_after);
            json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": node.name,
                    "labels": BTreeMap::from([(POOL_LABEL, node.pool.as_str())]),
                },
                "status": {"conditions": [{
                    "type": "Ready",
                    "status": if ready { "True" } else { "False" },
                    "reason": if ready { "KubeletReady" } else { "KubeletNotReady" },
                }]},
            })
        })
        .collect();
    list("NodeList", items)
}

fn namespace_names(shared: &Shared) -> Vec<String> {
    let mut names = vec!["default".to_owned(), "kube-system".to_owned()];
    names.extend(shared.behaviour.namespaces.iter().cloned());
    names
}

fn namespace_object(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name},
        "status": {"phase": "Active"},
    })
}

async fn namespaces(State(shared): SharedState, headers: HeaderMap) -> Json<Value> {
    record(&shared, &headers);
    let items = namespace_names(&shared)
        .iter()
        .map(|name| namespace_object(name))
        .collect();
    list("NamespaceList", items)
}

async fn namespace(
    State(shared): SharedState,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(&shared, &headers);
    if namespace_names(&shared).contains(&name) {
        Json(namespace_object(&name)).into_response()
    } else {
        status_not_found("namespaces", &name)
    }
}

async fn deployment(
    State(shared): SharedState,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    record(&shared, &headers);
    let Some(found) = shared
        .behaviour
        .deployments
        .iter()
        .find(|d| d.namespace == ns && d.name == name)
    else {
        return status_not_found("deployments.apps", &name);
    };
    let available = reached(&shared, found.available_after);
    let labels = json!({"app.kubernetes.io/name": name});
    Json(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "generation": 1},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}},
        },
        "status": {
            "observedGeneration": 1,
            "replicas": 1,
            "availableReplicas": if available { 1 } else { 0 },
            "unavailableReplicas": if available { 0 } else { 1 },
            "conditions": [{
                "type": "Available",
                "status": if available { "True" } else { "False" },
                "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
            }],
        },
    }))
    .into_response()
}

async fn service(
    State(shared): SharedState,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    record(&shared, &headers);
    let Some(found) = shared
        .behaviour
        .load_balancers
        .iter()
        .find(|s| s.namespace == ns && s.name == name)
    else {
        return status_not_found("services", &name);
    };
    let ingress = if reached(&shared, found.assigned_after) {
        json!([{"hostname": found.hostname}])
    } else {
        json!([])
    };
    Json(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        "status": {"loadBalancer": {"ingress": ingress}},
    }))
    .into_response()
}

async fn not_found(State(shared): SharedState, headers: HeaderMap) -> Response {
    record(&shared, &headers);
    status_not_found("", "the requested resource")
}

/// The API's `Status` document for a missing object.
fn status_not_found(resource: &str, name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": format!("{resource} \"{name}\" not found"),
            "reason": "NotFound",
            "details": {"name": name, "kind": resource},
            "code": 404,
        })),
    )
        .into_response()
}
