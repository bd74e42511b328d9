//! The runtime stays small: its normal (non-dev) dependency graph reaches neither the database
//! nor the domain, so every consumer can use it and none drags the others' layers in.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const FORBIDDEN: [&str; 6] = [
    "sqlx",
    "postgres-es",
    "cqrs-es",
    "domain",
    "command-api",
    "executors",
];

#[test]
fn the_runtime_depends_on_neither_the_database_nor_the_domain() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();

    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    // Package id → its normal dependencies.
    let mut normal: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in metadata["resolve"]["nodes"].as_array().unwrap() {
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|dep| {
                dep["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|kind| kind["kind"].is_null())
            })
            .map(|dep| dep["pkg"].as_str().unwrap())
            .collect();
        normal.insert(node["id"].as_str().unwrap(), deps);
    }

    let root = names
        .iter()
        .find(|(_, name)| **name == "jetstream-consumer")
        .map(|(id, _)| *id)
        .expect("jetstream-consumer in the workspace");
    // Walk the graph, remembering how each package was reached.
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut seen = BTreeSet::from([root]);
    let mut queue = vec![root];
    while let Some(id) = queue.pop() {
        for &dep in normal.get(id).into_iter().flatten() {
            if seen.insert(dep) {
                parent.insert(dep, id);
                queue.push(dep);
            }
        }
    }
    for id in &seen {
        let name = names[id];
        if FORBIDDEN.contains(&name) {
            let mut path = vec![name];
            let mut at = *id;
            while let Some(&up) = parent.get(at) {
                path.push(names[up]);
                at = up;
            }
            path.reverse();
            panic!("jetstream-consumer reaches {name}: {}", path.join(" → "));
        }
    }
}
