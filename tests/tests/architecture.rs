//! The workspace's dependency rules, checked on the graph cargo resolves (`cargo metadata`),
//! over *normal* dependencies only (dev-dependencies of tests may cross the lines; build
//! dependencies do not end up in a product):
//!
//! - `domain` reaches no async runtime, database, HTTP or NATS client, nor kube;
//! - `command-api` reaches neither `executors` nor `standins`;
//! - `executors` reaches neither `command-api` nor `standins`;
//! - `event-store` reaches `domain` and the database, and nothing of HTTP, NATS or the other
//!   sides; `projections` reaches neither the command side nor the executors; `bootstrap`
//!   reaches neither the executors nor either store; `jetstream-consumer` (the one consumer
//!   runtime) reaches neither the database nor the domain;
//! - `terraform-stack` (the rendering, shared by the executors and the command side's previews)
//!   reaches only `domain` and JSON: no runtime, client or other side;
//! - no package reaches `system-tests` (the test support, only ever a dev-dependency);
//! - only the root `provisioner` package links `standins` (and `system-tests`, which tests only
//!   ever use).
//!
//! A violation fails with the offending path, e.g. `command-api -> executors`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::Value;

/// The normal-dependency graph of the workspace: package name -> the names it depends on.
/// `cargo metadata --format-version 1` of this workspace.
fn workspace_metadata() -> Value {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--manifest-path",
            manifest,
        ])
        .output()
        .expect("cargo metadata starts");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("metadata JSON")
}

#[derive(Debug, Default)]
struct Graph {
    edges: BTreeMap<String, BTreeSet<String>>,
    members: BTreeSet<String>,
    root: String,
}

impl Graph {
    /// The graph of this workspace.
    fn of_workspace() -> Graph {
        Graph::from_metadata(&workspace_metadata())
    }

    fn from_metadata(metadata: &Value) -> Graph {
        let names: BTreeMap<&str, &str> = metadata["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
            .collect();
        let name = |id: &Value| names[id.as_str().expect("package id")].to_owned();
        let resolve = &metadata["resolve"];
        let mut graph = Graph {
            root: name(&resolve["root"]),
            members: metadata["workspace_members"]
                .as_array()
                .expect("workspace members")
                .iter()
                .map(name)
                .collect(),
            ..Graph::default()
        };
        for node in resolve["nodes"].as_array().expect("resolve nodes") {
            let deps = graph.edges.entry(name(&node["id"])).or_default();
            for dep in node["deps"].as_array().expect("deps") {
                let normal = dep["dep_kinds"]
                    .as_array()
                    .expect("dep kinds")
                    .iter()
                    .any(|kind| kind["kind"].is_null());
                if normal {
                    deps.insert(name(&dep["pkg"]));
                }
            }
        }
        graph
    }

    /// The shortest path of normal dependencies from `from` to `to`, if there is one.
    fn path(&self, from: &str, to: &str) -> Option<Vec<String>> {
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        while let Some(package) = queue.pop_front() {
            if package == to {
                let mut path = vec![to.to_owned()];
                let mut at = to;
                while at != from {
                    at = came_from[at];
                    path.push(at.to_owned());
                }
                path.reverse();
                return Some(path);
            }
            for dep in self.edges.get(package).into_iter().flatten() {
                if dep != from && !came_from.contains_key(dep.as_str()) {
                    came_from.insert(dep, package);
                    queue.push_back(dep);
                }
            }
        }
        None
    }

    /// One message per package of `forbidden` that `from` reaches, naming the path.
    fn violations(&self, from: &str, forbidden: &[&str]) -> Vec<String> {
        assert!(
            self.edges.contains_key(from),
            "no package {from} in the graph"
        );
        forbidden
            .iter()
            .filter_map(|to| self.path(from, to))
            .map(|path| {
                format!(
                    "{from} must not depend on {}: {}",
                    path.last().unwrap(),
                    path.join(" -> ")
                )
            })
            .collect()
    }
}

fn assert_none(violations: Vec<String>) {
    assert!(
        violations.is_empty(),
        "dependency rules broken:\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn domain_depends_on_no_runtime_and_no_client() {
    let graph = Graph::of_workspace();
    assert_none(graph.violations(
        "domain",
        &[
            "tokio",
            "sqlx",
            "axum",
            "hyper",
            "async-nats",
            "reqwest",
            "kube",
        ],
    ));
}

#[test]
fn the_command_side_and_the_executors_do_not_depend_on_each_other_or_on_the_standins() {
    let graph = Graph::of_workspace();
    let mut violations = graph.violations("command-api", &["executors", "standins"]);
    violations.extend(graph.violations("executors", &["command-api", "standins"]));
    assert_none(violations);
}

#[test]
fn the_event_store_depends_on_the_domain_and_the_database_only() {
    let graph = Graph::of_workspace();
    for needed in ["domain", "sqlx"] {
        assert!(
            graph.path("event-store", needed).is_some(),
            "event-store should reach {needed}"
        );
    }
    assert_none(graph.violations(
        "event-store",
        &[
            "command-api",
            "projections",
            "executors",
            "async-nats",
            "axum",
            "hyper",
        ],
    ));
}

#[test]
fn the_read_side_and_the_bootstrap_stay_on_their_side() {
    let graph = Graph::of_workspace();
    let mut violations = graph.violations("projections", &["command-api", "executors"]);
    violations.extend(graph.violations("bootstrap", &["executors", "command-api", "event-store"]));
    assert_none(violations);
}

#[test]
fn the_consumer_runtime_knows_neither_the_database_nor_the_domain() {
    let graph = Graph::of_workspace();
    assert_none(graph.violations(
        "jetstream-consumer",
        &[
            "sqlx",
            "postgres-es",
            "cqrs-es",
            "domain",
            "event-store",
            "command-api",
            "executors",
        ],
    ));
}

#[test]
fn the_terraform_rendering_is_pure() {
    let graph = Graph::of_workspace();
    assert!(graph.path("executors", "terraform-stack").is_some());
    assert_none(graph.violations(
        "terraform-stack",
        &[
            "tokio",
            "sqlx",
            "async-nats",
            "axum",
            "hyper",
            "reqwest",
            "event-store",
            "command-api",
            "executors",
            "bootstrap",
        ],
    ));
}

#[test]
fn no_package_depends_on_the_system_tests() {
    let graph = Graph::of_workspace();
    let violations = graph
        .members
        .iter()
        .filter(|member| *member != "system-tests")
        .flat_map(|member| graph.violations(member, &["system-tests"]))
        .collect();
    assert_none(violations);
}

#[test]
fn only_the_binary_links_the_standins() {
    let graph = Graph::of_workspace();
    assert_eq!(graph.root, "provisioner");
    assert!(graph.path(&graph.root, "standins").is_some());
    let allowed = [graph.root.as_str(), "system-tests", "standins"];
    let violations = graph
        .members
        .iter()
        .filter(|member| !allowed.contains(&member.as_str()))
        .flat_map(|member| graph.violations(member, &["standins"]))
        .collect();
    assert_none(violations);
}

#[test]
fn a_violation_names_the_path_that_breaks_the_rule() {
    let metadata = serde_json::json!({
        "packages": [
            {"id": "a 1", "name": "a"}, {"id": "b 1", "name": "b"},
            {"id": "c 1", "name": "c"}, {"id": "d 1", "name": "d"},
        ],
        "workspace_members": ["a 1", "b 1"],
        "resolve": {
            "root": "a 1",
            "nodes": [
                {"id": "a 1", "deps": [
                    {"pkg": "b 1", "dep_kinds": [{"kind": null, "target": null}]},
                    {"pkg": "d 1", "dep_kinds": [{"kind": "dev", "target": null}]},
                ]},
                {"id": "b 1", "deps": [
                    {"pkg": "c 1", "dep_kinds": [{"kind": null, "target": null}]},
                ]},
                {"id": "c 1", "deps": []},
                {"id": "d 1", "deps": []},
            ],
        },
    });
    let graph = Graph::from_metadata(&metadata);
    assert_eq!(
        graph.violations("a", &["c", "d"]),
        ["a must not depend on c: a -> b -> c"],
        "a dev-dependency is no violation"
    );
    assert!(graph.violations("c", &["a"]).is_empty());
}

/// `1.94.1` as a comparable triple (a missing part is 0).
fn rust_version(text: &str) -> (u32, u32, u32) {
    let mut parts = text
        .split('.')
        .map(|part| part.parse::<u32>().expect("a version number"));
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

/// The toolchain the workspace declares (`rust-version`) builds every locked dependency (none
/// asks for a newer one), and the image's builder (deploy/Dockerfile) is that toolchain: a
/// dependency that needs a newer compiler fails here, not in a release build.
#[test]
fn the_declared_toolchain_builds_every_dependency_and_the_image_uses_it() {
    let metadata = workspace_metadata();
    let packages = metadata["packages"].as_array().expect("packages");
    let declared = packages
        .iter()
        .find(|p| p["name"] == "provisioner")
        .and_then(|p| p["rust_version"].as_str())
        .expect("the workspace declares its rust-version");
    let newer: Vec<String> = packages
        .iter()
        .filter_map(|p| {
            let needs = p["rust_version"].as_str()?;
            (rust_version(needs) > rust_version(declared))
                .then(|| format!("{} {} needs rust {needs}", p["name"], p["version"]))
        })
        .collect();
    assert!(
        newer.is_empty(),
        "rust-version is {declared}, but: {newer:?}; raise it (and the Dockerfile's builder)"
    );
    let dockerfile = include_str!("../../deploy/Dockerfile");
    let builder = format!("FROM rust:{declared}-");
    assert!(
        dockerfile.lines().any(|line| line.starts_with(&builder)),
        "deploy/Dockerfile's builder is not `{builder}…` (the workspace's rust-version)"
    );
}
