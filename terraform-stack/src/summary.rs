//! What a rendered configuration declares, summarised: how many resources of each type
//! ([`summarise`]). The command side shows it in a plan's preview (`POST /v1/plans`).
//!
//! A resource block with a literal `count` stands for that many resources (0 for none), one with
//! a literal `for_each` for one per key or element, any other block for one. A `count` or
//! `for_each` Terraform computes at plan time cannot be known here: such a block counts as one
//! and is named in [`ResourceSummary::uncertain`]. Data sources, outputs and providers are not
//! resources and are not counted. Reads the object form of `resource` that [`crate::render`]
//! writes (`{"type": {"name": {...}}}`).

use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// The resources of one configuration by type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ResourceSummary {
    /// Resource type (`aws_subnet`) → how many resources of it.
    pub by_type: BTreeMap<String, u64>,
    /// The sum of `by_type`.
    pub total: u64,
    /// The blocks (`type.name`) whose number Terraform decides at plan time, counted as one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub uncertain: Vec<String>,
}

/// Counts the resources `config` (a rendered `main.tf.json`) declares, by type.
pub fn summarise(config: &Value) -> ResourceSummary {
    let mut summary = ResourceSummary::default();
    let Some(types) = config.get("resource").and_then(Value::as_object) else {
        return summary;
    };
    for (rtype, blocks) in types {
        let Some(blocks) = blocks.as_object() else {
            continue;
        };
        let mut of_type = 0;
        for (name, body) in blocks {
            let instances = instances(body).unwrap_or_else(|| {
                summary.uncertain.push(format!("{rtype}.{name}"));
                1
            });
            of_type += instances;
        }
        summary.total += of_type;
        summary.by_type.insert(rtype.clone(), of_type);
    }
    summary
}

/// How many resources one block stands for; `None` when Terraform computes it.
fn instances(body: &Value) -> Option<u64> {
    if let Some(count) = body.get("count") {
        return count.as_u64();
    }
    match body.get("for_each") {
        None => Some(1),
        Some(Value::Object(keys)) => Some(keys.len() as u64),
        Some(Value::Array(elements)) => Some(elements.len() as u64),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Target, render};
    use domain::config::{self, Format};
    use domain::infra_model::InfraModel;
    use serde_json::json;

    #[test]
    fn literal_counts_and_for_each_are_honoured_and_expressions_are_flagged() {
        let config = json!({
            "data": {"aws_availability_zones": {"available": {}}},
            "resource": {
                "aws_subnet": {
                    "public": {"count": 3},
                    "private": {"count": 3},
                    "spare": {"count": 0},
                },
                "aws_vpc": {"main": {"cidr_block": "10.0.0.0/16"}},
                "aws_iam_role_policy_attachment": {
                    "node": {"for_each": {"a": "x", "b": "y"}},
                    "cluster": {"for_each": ["p"]},
                },
                "aws_eip": {"nat": {"count": "${length(var.azs)}"}},
            },
            "output": {"vpc_id": {"value": "${aws_vpc.main.id}"}},
        });
        let summary = summarise(&config);
        let expected: BTreeMap<String, u64> = [
            ("aws_eip", 1),
            ("aws_iam_role_policy_attachment", 3),
            ("aws_subnet", 6),
            ("aws_vpc", 1),
        ]
        .into_iter()
        .map(|(t, n)| (t.to_owned(), n))
        .collect();
        assert_eq!(summary.by_type, expected);
        assert_eq!(summary.total, 11);
        assert_eq!(summary.uncertain, ["aws_eip.nat"]);
    }

    #[test]
    fn a_document_without_resources_has_none() {
        assert_eq!(
            summarise(&json!({"output": {}})),
            ResourceSummary::default()
        );
    }

    fn rendered(profile: &str, gpu: bool) -> ResourceSummary {
        let yaml = format!(
            "name: combo\ncloud:\n  provider: sandbox\ncluster:\n  profile: {profile}\n\
             beta9:\n  domain: api.example.com\n  workers: {{gpu_enabled: {gpu}}}\n"
        );
        let spec = config::parse(&yaml, Format::Yaml).expect("a valid document");
        let model = InfraModel::for_spec(&spec);
        let target = Target {
            environment_id: "env_01jd0000000000000000000000",
            name: "combo",
        };
        summarise(&render(target, &model))
    }

    #[test]
    fn the_rendered_stack_counts_the_models_node_groups_and_nat_gateways() {
        let small = rendered("small", false);
        assert_eq!(small.by_type["aws_eks_cluster"], 1);
        assert_eq!(small.by_type["aws_eks_node_group"], 1);
        assert_eq!(small.by_type["aws_nat_gateway"], 1);
        assert!(small.uncertain.is_empty(), "{:?}", small.uncertain);
        assert_eq!(small.total, small.by_type.values().sum::<u64>());

        let medium = rendered("medium", true);
        assert_eq!(medium.by_type["aws_eks_node_group"], 2);
        assert_eq!(medium.by_type["aws_nat_gateway"], 3);
        assert!(medium.total > small.total);
    }
}
