//! The valid key paths of Beta9's configuration (`config:` in the chart's values), kept in
//! `bootstrap/beta9/config-keys.txt` with the upstream commit they were taken from, and the
//! check of computed values against them: Beta9 ignores an unknown key silently, so a misspelt
//! one would configure nothing.

use serde_json::Value;

/// The list, one path a line; `#` lines are comments.
const CONFIG_KEYS: &str = include_str!("../beta9/config-keys.txt");

/// Stands for a map key chosen by the configuration (e.g. a worker pool's name).
const ANY_NAME: &str = "<name>";
/// Stands for the items of a list of structs.
const LIST_ITEMS: &str = "[]";

fn known_paths() -> impl Iterator<Item = Vec<&'static str>> {
    CONFIG_KEYS
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split('.').collect())
}

/// Every path of `config` (the value of the chart's `config:`) that Beta9 does not know, in
/// `a.b.c` form; empty when all are valid.
pub fn unknown_paths(config: &Value) -> Vec<String> {
    let known: Vec<Vec<&str>> = known_paths().collect();
    let mut unknown = Vec::new();
    walk(config, &mut Vec::new(), &known, &mut unknown);
    unknown
}

/// Walks `value` at `path` (the concrete segments so far), against `candidates`: the known
/// paths whose first `path.len()` segments match `path`.
fn walk(
    value: &Value,
    path: &mut Vec<String>,
    candidates: &[Vec<&str>],
    unknown: &mut Vec<String>,
) {
    let depth = path.len();
    if depth > 0 && candidates.iter().any(|known| known.len() == depth) {
        return; // a leaf: its value is taken whole
    }
    let children: Vec<(String, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(items) if depth > 0 => items
            .iter()
            .map(|item| (LIST_ITEMS.to_owned(), item))
            .collect(),
        _ => {
            unknown.push(path.join("."));
            return;
        }
    };
    for (key, child) in children {
        let next: Vec<Vec<&str>> = candidates
            .iter()
            .filter(|known| {
                known.get(depth).is_some_and(|segment| {
                    *segment == key || (*segment == ANY_NAME && key != LIST_ITEMS)
                })
            })
            .cloned()
            .collect();
        path.push(key);
        if next.is_empty() {
            unknown.push(path.join("."));
        } else {
            walk(child, path, &next, unknown);
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_list_names_the_keys_the_bootstrap_sets() {
        let config = json!({
            "database": {"postgres": {"host": "db", "port": 5432}, "redis": {"addrs": ["r:6379"]}},
            "storage": {"juicefs": {"awsS3Bucket": "b"}},
            "worker": {"pools": {"gpu": {"gpuType": "A10G", "jobSpec": {"nodeSelector": {"a": "b"}}}}},
            "events": {"callbacks": [{"url": "https://x"}]},
            "cache": {"anything": {"below": "a leaf"}},
        });
        assert_eq!(unknown_paths(&config), Vec::<String>::new());
    }

    #[test]
    fn a_misspelt_or_misplaced_key_is_named() {
        let config = json!({
            "database": {"postgres": {"hostname": "db", "port": 5432}, "host": "x"},
            "worker": {"pools": {"gpu": {"gpu_type": "A10G"}}},
            "events": {"callbacks": [{"uri": "https://x"}]},
            "storage": "juicefs",
        });
        assert_eq!(
            unknown_paths(&config),
            [
                "database.host",
                "database.postgres.hostname",
                "events.callbacks.[].uri",
                "storage",
                "worker.pools.gpu.gpu_type",
            ]
        );
    }

    #[test]
    fn the_list_holds_the_upstream_commit_and_the_paths_the_issue_names() {
        assert!(CONFIG_KEYS.contains("0b79dfebdea251901334303ebc6a3908f3566016"));
        let paths: Vec<String> = known_paths().map(|p| p.join(".")).collect();
        for expected in [
            "database.postgres.encryptionKey",
            "database.redis.enableTLS",
            "storage.juicefs.awsS3Bucket",
            "imageService.registries.s3.bucketName",
            "gateway.http.externalHost",
            "gateway.grpc.externalHost",
            "worker.pools.<name>.gpuType",
            "worker.pools.<name>.jobSpec.nodeSelector",
        ] {
            assert!(paths.iter().any(|p| p == expected), "{expected}");
        }
    }
}
