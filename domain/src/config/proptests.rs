//! Properties of [`parse`]: it never panics, YAML and JSON agree, and valid configs pass.

use super::{Format, parse};
use crate::spec::{CloudSpec, EnvironmentSpec};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Field names the schema knows, mixed with noise, so generated mappings hit real code paths.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "name", "cloud", "provider", "region", "account_id", "role_arn", "external_id",
            "simulate", "apply_seconds", "fail", "fail_times", "cluster", "profile", "data",
            "postgres", "redis", "size", "multi_az", "ha", "beta9", "domain", "workers",
            "gpu_enabled",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z_.]{0,8}",
    ]
}

/// Fractional numbers with few digits: serde_json (without `float_roundtrip`) may read long
/// ones 1 ulp off, which would make the YAML and JSON results differ for reasons not ours.
fn seconds(millis: std::ops::RangeInclusive<i32>) -> impl Strategy<Value = f64> {
    millis.prop_map(|millis| f64::from(millis) / 1000.0)
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        seconds(-1_000_000..=1_000_000).prop_map(Value::from),
        prop::sample::select(vec![
            "aws",
            "sandbox",
            "gcp",
            "us-east-1",
            "sandbox-local",
            "small",
            "medium",
            "large",
            "infra",
            "bootstrap",
            "yes",
            "no",
            "null",
            "~",
            "1.0",
            "123456789012",
            "demo",
            "arn:aws:iam::123456789012:role/r",
            "api.example.com",
            "",
            "- x",
            "a: b",
            "#",
        ])
        .prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
    ]
}

/// Nested mappings and lists of scalars, a few levels deep.
fn document_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Documents whose top level is always a mapping, as real configs are.
fn document_mapping() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), document_value(), 0..6)
        .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>()))
}

fn valid_config() -> impl Strategy<Value = Value> {
    let name = "[a-z]([a-z0-9-]{0,38}[a-z0-9])?";
    let size = prop::sample::select(vec!["small", "medium", "large"]);
    let aws = (
        prop::sample::select(super::AWS_REGIONS.to_vec()),
        "[0-9]{12}",
        "[A-Za-z0-9+=,.@_-]{1,64}",
        prop::option::of("[A-Za-z0-9+=,.@:/_-]{2,40}"),
    )
        .prop_map(|(region, account, role, external_id)| {
            let mut cloud = json!({
                "provider": "aws",
                "region": region,
                "account_id": account,
                "role_arn": format!("arn:aws:iam::{account}:role/{role}"),
            });
            if let Some(id) = external_id {
                cloud["external_id"] = json!(id);
            }
            cloud
        });
    let sandbox = (
        prop::option::of(seconds(0..=600_000)),
        prop::option::of((
            prop::sample::select(vec!["infra", "bootstrap", "destroy"]),
            prop::option::of(1u32..=1000),
        )),
    )
        .prop_map(|(apply_seconds, fail)| {
            let mut simulate = json!({});
            if let Some(seconds) = apply_seconds {
                simulate["apply_seconds"] = json!(seconds);
            }
            if let Some((step, times)) = fail {
                simulate["fail"] = json!(step);
                if let Some(times) = times {
                    simulate["fail_times"] = json!(times);
                }
            }
            json!({"provider": "sandbox", "simulate": simulate})
        });
    (
        name,
        prop_oneof![aws, sandbox],
        size.clone(),
        size.clone(),
        size,
        any::<[bool; 3]>(),
        "[a-z][a-z0-9]{0,10}\\.[a-z]{2,6}",
    )
        .prop_map(
            |(name, cloud, profile, pg, redis, [multi_az, ha, gpu], domain)| {
                json!({
                    "name": name,
                    "cloud": cloud,
                    "cluster": {"profile": profile},
                    "data": {
                        "postgres": {"size": pg, "multi_az": multi_az},
                        "redis": {"size": redis, "ha": ha},
                    },
                    "beta9": {"domain": domain, "workers": {"gpu_enabled": gpu}},
                })
            },
        )
}

fn as_yaml(value: &Value) -> String {
    serde_saphyr::to_string(value).expect("a json value serializes to yaml")
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_text(text in any::<String>()) {
        let _ = parse(&text, Format::Yaml);
        let _ = parse(&text, Format::Json);
    }

    #[test]
    fn parse_never_panics_on_yaml_like_text(text in "[a-z0-9 :\\-\\[\\]{}&*!|>'\",.#~?\n]{0,200}") {
        let _ = parse(&text, Format::Yaml);
        let _ = parse(&text, Format::Json);
    }

    #[test]
    fn parse_never_panics_on_structured_documents(value in document_value()) {
        let _ = parse(&as_yaml(&value), Format::Yaml);
        let _ = parse(&value.to_string(), Format::Json);
    }

    #[test]
    fn yaml_and_json_of_the_same_mapping_give_the_same_result(value in document_mapping()) {
        let from_yaml = parse(&as_yaml(&value), Format::Yaml);
        let from_json = parse(&value.to_string(), Format::Json);
        prop_assert_eq!(from_yaml, from_json);
    }

    #[test]
    fn valid_configs_are_accepted_in_both_formats(value in valid_config()) {
        let from_json = parse(&value.to_string(), Format::Json);
        prop_assert!(from_json.is_ok(), "{:?} rejected: {:?}", value, from_json);
        let spec: EnvironmentSpec = from_json.unwrap_or_else(|_| unreachable!());
        prop_assert_eq!(spec.name.as_str(), value["name"].as_str().unwrap_or_default());
        if let CloudSpec::Aws(aws) = &spec.cloud {
            prop_assert_eq!(aws.account_id.as_str(), value["cloud"]["account_id"].as_str().unwrap_or_default());
        }
        prop_assert_eq!(parse(&as_yaml(&value), Format::Yaml), Ok(spec));
    }
}
