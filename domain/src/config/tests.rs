//! Behaviour of [`parse`]: what is accepted, the defaults, and where each rejection points.

use super::{ConfigError, FieldError, Format, MAX_DEPTH, MAX_DOCUMENT_BYTES, parse};
use crate::spec::*;
use std::time::{Duration, Instant};

const CONTRACT_EXAMPLE: &str = r#"
name: production                 # 1-40 chars, [a-z0-9-], starts with a letter
cloud:
  provider: aws                  # aws | gcp (not yet: clear 422) | sandbox (local, no cloud)
  region: us-east-1              # must be in the allowed regions
  account_id: "123456789012"     # 12 digits for aws
  role_arn: "arn:aws:iam::123456789012:role/Beta9Provisioner"
  external_id: "optional-string"
cluster:
  profile: medium                # small | medium | large
data:
  postgres: {size: medium, multi_az: true}
  redis: {size: medium, ha: true}
beta9:
  domain: api.beta9.example.com
  workers: {gpu_enabled: true}
"#;

const MINIMAL_SANDBOX: &str = "name: demo\ncloud:\n  provider: sandbox\n";

/// A valid AWS `cloud` section, to which a test appends or swaps lines.
const AWS_CLOUD: &str = r#"cloud:
  provider: aws
  region: eu-west-1
  account_id: "123456789012"
  role_arn: arn:aws:iam::123456789012:role/Beta9Provisioner
"#;

fn contract_spec() -> EnvironmentSpec {
    EnvironmentSpec {
        name: EnvironmentName::new_unchecked("production"),
        cloud: CloudSpec::Aws(AwsCloud {
            region: Region::new_unchecked("us-east-1"),
            account_id: AwsAccountId::new_unchecked("123456789012"),
            role_arn: RoleArn::new_unchecked("arn:aws:iam::123456789012:role/Beta9Provisioner"),
            external_id: Some(ExternalIdRef::Plain(ExternalId::new_unchecked(
                "optional-string",
            ))),
        }),
        cluster: ClusterSpec {
            profile: Profile::Medium,
        },
        data: DataSpec {
            postgres: PostgresSpec {
                size: Size::Medium,
                multi_az: true,
            },
            redis: RedisSpec {
                size: Size::Medium,
                ha: true,
            },
        },
        beta9: Beta9Spec {
            domain: DomainName::new_unchecked("api.beta9.example.com"),
            workers: WorkersSpec { gpu_enabled: true },
        },
    }
}

fn yaml(document: &str) -> Result<EnvironmentSpec, ConfigError> {
    parse(document, Format::Yaml)
}

fn json(document: &str) -> Result<EnvironmentSpec, ConfigError> {
    parse(document, Format::Json)
}

fn field_errors(result: Result<EnvironmentSpec, ConfigError>) -> Vec<FieldError> {
    match result {
        Err(ConfigError::Invalid(errors)) => errors,
        other => panic!("expected field errors, got {other:?}"),
    }
}

fn syntax_error(result: Result<EnvironmentSpec, ConfigError>) -> String {
    match result {
        Err(ConfigError::Syntax(message)) => message,
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

/// The message of the only error a YAML document has, asserting it is at `path`.
fn only_error(document: &str, path: &str) -> String {
    let errors = field_errors(yaml(document));
    assert_eq!(errors.len(), 1, "expected one error at {path}: {errors:?}");
    assert_eq!(errors[0].path, path, "{errors:?}");
    errors[0].message.clone()
}

fn sandbox_with(cloud_extra: &str) -> String {
    format!("{MINIMAL_SANDBOX}{cloud_extra}")
}

fn aws_with(extra: &str) -> String {
    format!("name: prod\n{AWS_CLOUD}{extra}")
}

// --- accepted documents -------------------------------------------------------------------

#[test]
fn parses_the_contract_yaml_example_into_the_expected_spec() {
    assert_eq!(yaml(CONTRACT_EXAMPLE), Ok(contract_spec()));
}

#[test]
fn parses_the_same_config_given_as_json() {
    let document = r#"{
        "name": "production",
        "cloud": {
            "provider": "aws",
            "region": "us-east-1",
            "account_id": "123456789012",
            "role_arn": "arn:aws:iam::123456789012:role/Beta9Provisioner",
            "external_id": "optional-string"
        },
        "cluster": {"profile": "medium"},
        "data": {
            "postgres": {"size": "medium", "multi_az": true},
            "redis": {"size": "medium", "ha": true}
        },
        "beta9": {"domain": "api.beta9.example.com", "workers": {"gpu_enabled": true}}
    }"#;
    assert_eq!(json(document), Ok(contract_spec()));
}

#[test]
fn fills_every_default_for_a_minimal_sandbox_config() {
    let expected = EnvironmentSpec {
        name: EnvironmentName::new_unchecked("demo"),
        cloud: CloudSpec::Sandbox(SandboxCloud {
            region: Region::new_unchecked("sandbox-local"),
            simulate: Simulation::default(),
        }),
        cluster: ClusterSpec {
            profile: Profile::Small,
        },
        data: DataSpec {
            postgres: PostgresSpec {
                size: Size::Small,
                multi_az: false,
            },
            redis: RedisSpec {
                size: Size::Small,
                ha: false,
            },
        },
        beta9: Beta9Spec {
            domain: DomainName::new_unchecked("demo.beta9.local"),
            workers: WorkersSpec { gpu_enabled: false },
        },
    };
    assert_eq!(yaml(MINIMAL_SANDBOX), Ok(expected.clone()));
    assert_eq!(
        json(r#"{"name": "demo", "cloud": {"provider": "sandbox"}}"#),
        Ok(expected)
    );
}

#[test]
fn treats_null_optional_fields_as_absent() {
    let document = r#"
name: demo
cloud: {provider: sandbox, region: null, simulate: ~}
cluster:
data: {postgres: null, redis: {size: null, ha: null}}
beta9: {domain: null, workers: {gpu_enabled: null}}
"#;
    assert_eq!(yaml(document), yaml(MINIMAL_SANDBOX));
}

#[test]
fn accepts_sandbox_fault_injection_settings() {
    let spec = yaml(&sandbox_with(
        "  region: us-west-2\n  simulate: {apply_seconds: 0.5, fail: bootstrap, fail_times: 2, \
         transient_failures: 1}\n",
    ))
    .expect("valid sandbox config");
    let CloudSpec::Sandbox(sandbox) = spec.cloud else {
        panic!("expected a sandbox cloud");
    };
    assert_eq!(sandbox.region.as_str(), "us-west-2");
    assert_eq!(
        sandbox.simulate,
        Simulation {
            apply_seconds: Some(0.5),
            fail: Some(Step::Bootstrap),
            fail_times: Some(2),
            transient_failures: Some(1),
        }
    );
}

#[test]
fn accepts_a_failing_step_without_a_count_meaning_always() {
    let spec = yaml(&sandbox_with("  simulate: {fail: destroy}\n")).expect("valid");
    let simulation = spec.cloud.simulation().cloned().unwrap_or_default();
    assert_eq!(simulation.fail, Some(Step::Destroy));
    assert_eq!(simulation.fail_times, None);
}

#[test]
fn accepts_role_arns_with_a_path_and_no_external_id() {
    let document = aws_with("").replace(
        "role/Beta9Provisioner",
        "role/service-role/beta9/Provisioner+=,.@_-",
    );
    let spec = yaml(&document).expect("valid aws config");
    let CloudSpec::Aws(aws) = spec.cloud else {
        panic!("expected an aws cloud");
    };
    assert_eq!(aws.external_id, None);
    assert!(
        aws.role_arn
            .as_str()
            .ends_with("service-role/beta9/Provisioner+=,.@_-")
    );
}

#[test]
fn accepts_names_at_the_length_limits() {
    for name in ["a", "a1-b", &format!("a{}", "b".repeat(39))] {
        let document = MINIMAL_SANDBOX.replace("demo", name);
        assert!(yaml(&document).is_ok(), "{name} should be accepted");
    }
}

// --- field rules ----------------------------------------------------------------------------

#[test]
fn rejects_invalid_names_at_path_name() {
    let too_long = format!("a{}", "b".repeat(40));
    for name in [
        "\"\"", "Prod", "1prod", "-prod", "prod-", "pro_d", "pröd", &too_long,
    ] {
        let document = MINIMAL_SANDBOX.replace("demo", name);
        let message = only_error(&document, "name");
        assert!(!message.is_empty(), "{name}");
    }
    assert!(only_error(&MINIMAL_SANDBOX.replace("demo", "prod-"), "name").contains("end with"));
    assert!(only_error(&MINIMAL_SANDBOX.replace("demo", "9x"), "name").contains("start with"));
}

#[test]
fn rejects_a_document_without_name_or_cloud() {
    let errors = field_errors(yaml("cluster: {profile: small}\n"));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["name", "cloud"]);
    assert!(errors.iter().all(|e| e.message == "missing required field"));
}

#[test]
fn rejects_gcp_as_not_supported_yet() {
    let message = only_error("name: prod\ncloud: {provider: gcp}\n", "cloud.provider");
    assert!(message.contains("gcp is not supported yet"), "{message}");
}

#[test]
fn rejects_an_unknown_provider_listing_the_allowed_ones() {
    let message = only_error("name: prod\ncloud: {provider: azure}\n", "cloud.provider");
    assert!(message.contains("aws, sandbox"), "{message}");
    assert!(message.contains("azure"), "{message}");
}

#[test]
fn still_reports_unknown_cloud_fields_when_the_provider_is_invalid() {
    let errors = field_errors(yaml("name: prod\ncloud: {provider: gcp, regoin: x}\n"));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["cloud.provider", "cloud.regoin"]);
}

#[test]
fn rejects_aws_without_its_required_fields() {
    let errors = field_errors(yaml("name: prod\ncloud: {provider: aws}\n"));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["cloud.region", "cloud.account_id", "cloud.role_arn"]
    );
}

#[test]
fn rejects_an_aws_region_outside_the_allowed_list() {
    let document = aws_with("").replace("eu-west-1", "mars-north-1");
    let message = only_error(&document, "cloud.region");
    assert!(
        message.contains("mars-north-1") && message.contains("us-east-1"),
        "{message}"
    );
    let message = only_error(
        &aws_with("").replace("eu-west-1", "sandbox-local"),
        "cloud.region",
    );
    assert!(message.contains("not a supported aws region"), "{message}");
}

#[test]
fn rejects_an_account_id_given_as_a_number_asking_to_quote_it() {
    let document = aws_with("").replace("\"123456789012\"", "123456789012");
    let message = only_error(&document, "cloud.account_id");
    assert!(message.contains("quoted string"), "{message}");

    let document = r#"{"name": "prod", "cloud": {"provider": "aws", "region": "us-east-1",
        "account_id": 123456789012, "role_arn": "arn:aws:iam::123456789012:role/r"}}"#;
    let errors = field_errors(json(document));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "cloud.account_id");
}

#[test]
fn rejects_an_account_id_that_is_not_twelve_digits() {
    for account in ["\"12345678901\"", "\"1234567890123\"", "\"12345678901a\""] {
        let document = aws_with("").replace("\"123456789012\"", account);
        let message = only_error(&document, "cloud.account_id");
        assert!(message.contains("12 digits"), "{message}");
    }
}

#[test]
fn rejects_a_role_arn_from_another_account() {
    let document = aws_with("").replace("iam::123456789012", "iam::210987654321");
    let message = only_error(&document, "cloud.role_arn");
    assert!(
        message.contains("210987654321") && message.contains("123456789012"),
        "{message}"
    );
}

#[test]
fn rejects_malformed_role_arns() {
    let bad = [
        "arn:aws:iam::123456789012:user/someone",
        "arn:aws-cn:iam::123456789012:role/r",
        "arn:aws:iam::12345:role/r",
        "arn:aws:iam::123456789012:role/",
        "arn:aws:iam::123456789012:role//r",
        "arn:aws:iam::123456789012:role/has space",
        "arn:aws:iam::123456789012",
        "Beta9Provisioner",
    ];
    for arn in bad {
        let document = aws_with("").replace(
            "arn:aws:iam::123456789012:role/Beta9Provisioner",
            &format!("\"{arn}\""),
        );
        only_error(&document, "cloud.role_arn");
    }
    let long_name = format!("arn:aws:iam::123456789012:role/{}", "r".repeat(65));
    let document = aws_with("").replace(
        "arn:aws:iam::123456789012:role/Beta9Provisioner",
        &long_name,
    );
    only_error(&document, "cloud.role_arn");
}

#[test]
fn rejects_an_invalid_external_id() {
    for id in ["x", "has space", &"x".repeat(1225)] {
        let document = aws_with(&format!("  external_id: \"{id}\"\n"));
        only_error(&document, "cloud.external_id");
    }
    let document = aws_with("  external_id: \"a:b/c@d=e,f.g+h_i-j\"\n");
    assert!(yaml(&document).is_ok());
}

#[test]
fn rejects_simulate_under_aws() {
    let message = only_error(&aws_with("  simulate: {fail: infra}\n"), "cloud.simulate");
    assert!(message.contains("sandbox"), "{message}");
}

#[test]
fn rejects_aws_only_fields_under_sandbox() {
    let document = sandbox_with(
        "  account_id: \"123456789012\"\n  role_arn: arn:aws:iam::123456789012:role/r\n  external_id: abc\n",
    );
    let errors = field_errors(yaml(&document));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["cloud.account_id", "cloud.role_arn", "cloud.external_id"]
    );
    assert!(
        errors
            .iter()
            .all(|e| e.message.contains("only allowed when provider is aws"))
    );
}

#[test]
fn rejects_a_sandbox_region_outside_the_list() {
    let message = only_error(&sandbox_with("  region: local\n"), "cloud.region");
    assert!(message.contains("sandbox-local"), "{message}");
}

#[test]
fn rejects_simulation_values_out_of_range() {
    let cases = [
        ("apply_seconds: 601", "cloud.simulate.apply_seconds"),
        ("apply_seconds: -1", "cloud.simulate.apply_seconds"),
        ("apply_seconds: \"5\"", "cloud.simulate.apply_seconds"),
        ("apply_seconds: .inf", "cloud.simulate.apply_seconds"),
        ("fail: network", "cloud.simulate.fail"),
        ("{fail: infra, fail_times: 0}", "cloud.simulate.fail_times"),
        (
            "{fail: infra, fail_times: 1001}",
            "cloud.simulate.fail_times",
        ),
        (
            "{fail: infra, fail_times: 1.5}",
            "cloud.simulate.fail_times",
        ),
        (
            "{fail: infra, fail_times: \"2\"}",
            "cloud.simulate.fail_times",
        ),
        ("transient_failures: 0", "cloud.simulate.transient_failures"),
        (
            "transient_failures: 1001",
            "cloud.simulate.transient_failures",
        ),
    ];
    for (simulate, path) in cases {
        let simulate = if simulate.starts_with('{') {
            simulate.to_owned()
        } else {
            format!("{{{simulate}}}")
        };
        only_error(&sandbox_with(&format!("  simulate: {simulate}\n")), path);
    }
    assert!(yaml(&sandbox_with("  simulate: {apply_seconds: 600}\n")).is_ok());
    assert!(yaml(&sandbox_with("  simulate: {apply_seconds: 0}\n")).is_ok());
}

#[test]
fn rejects_fail_times_without_fail() {
    let message = only_error(
        &sandbox_with("  simulate: {fail_times: 3}\n"),
        "cloud.simulate.fail_times",
    );
    assert!(message.contains("fail"), "{message}");
}

#[test]
fn rejects_unknown_profiles_and_sizes_listing_the_choices() {
    let errors = field_errors(yaml(&format!(
        "{MINIMAL_SANDBOX}cluster: {{profile: huge}}\ndata: {{postgres: {{size: tiny}}, redis: {{size: 3}}}}\n"
    )));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["cluster.profile", "data.postgres.size", "data.redis.size"]
    );
    assert!(
        errors[0].message.contains("small, medium, large"),
        "{errors:?}"
    );
    assert!(
        errors[2]
            .message
            .contains("expected a string, found a number"),
        "{errors:?}"
    );
}

#[test]
fn rejects_booleans_written_as_words_or_strings() {
    let errors = field_errors(yaml(&format!(
        "{MINIMAL_SANDBOX}data: {{postgres: {{multi_az: yes}}, redis: {{ha: \"true\"}}}}\nbeta9: {{workers: {{gpu_enabled: 1}}}}\n"
    )));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "data.postgres.multi_az",
            "data.redis.ha",
            "beta9.workers.gpu_enabled"
        ]
    );
    assert!(
        errors
            .iter()
            .all(|e| e.message.starts_with("expected a boolean"))
    );
}

#[test]
fn rejects_invalid_domains() {
    let long_label = format!("{}.com", "a".repeat(64));
    let too_long = format!("{}.com", vec!["a".repeat(60); 5].join("."));
    for domain in [
        "Api.Example.com",
        "localhost",
        "-api.example.com",
        "api-.example.com",
        "api..example.com",
        "api.example.com.",
        "api_1.example.com",
        &long_label,
        &too_long,
    ] {
        let document = format!("{MINIMAL_SANDBOX}beta9: {{domain: \"{domain}\"}}\n");
        only_error(&document, "beta9.domain");
    }
    let message = only_error(
        &format!("{MINIMAL_SANDBOX}beta9: {{domain: API.example.com}}\n"),
        "beta9.domain",
    );
    assert!(message.contains("lowercase"), "{message}");
}

#[test]
fn rejects_wrong_types_with_their_path() {
    let document = "name: [prod]\ncloud: sandbox\ncluster: big\ndata: {redis: [1]}\n";
    let errors = field_errors(yaml(document));
    let found: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("name", "expected a string, found a list"),
            ("cloud", "expected a mapping, found a string"),
            ("cluster", "expected a mapping, found a string"),
            ("data.redis", "expected a mapping, found a list"),
        ]
    );
}

// --- unknown fields and error collection ----------------------------------------------------

#[test]
fn rejects_unknown_nested_field_with_its_path() {
    let document =
        format!("{MINIMAL_SANDBOX}data:\n  postgres:\n    size: small\n    colour: blue\n");
    let message = only_error(&document, "data.postgres.colour");
    assert_eq!(message, "unknown field, expected one of: size, multi_az");
}

#[test]
fn rejects_unknown_top_level_and_cloud_fields_listing_the_allowed_names() {
    let document = format!("{MINIMAL_SANDBOX}  colour: red\nregion: us-east-1\n");
    let errors = field_errors(yaml(&document));
    let found: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.path.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "cloud.colour",
                "unknown field, expected one of: provider, region, simulate"
            ),
            (
                "region",
                "unknown field, expected one of: name, cloud, cluster, data, beta9"
            ),
        ]
    );
}

#[test]
fn quotes_odd_unknown_keys_in_the_path() {
    let errors = field_errors(json(
        r#"{"name": "demo", "cloud": {"provider": "sandbox"}, "cluster": {"a.b": 1}}"#,
    ));
    assert_eq!(errors[0].path, "cluster.\"a.b\"");
}

#[test]
fn reports_every_bad_field_in_one_pass() {
    let document = r#"
name: Prod
cloud:
  provider: aws
  region: us-east-9
  account_id: 123456789012
  role_arn: not-an-arn
  simulate: {}
cluster: {profile: xl, size: 3}
data:
  postgres: {multi_az: "no"}
  mysql: {}
beta9: {domain: localhost, workers: {gpu_enabled: maybe}}
"#;
    let errors = field_errors(yaml(document));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "name",
            "cloud.region",
            "cloud.account_id",
            "cloud.role_arn",
            "cloud.simulate",
            "cluster.profile",
            "cluster.size",
            "data.postgres.multi_az",
            "data.mysql",
            "beta9.domain",
            "beta9.workers.gpu_enabled",
        ]
    );
}

#[test]
fn error_messages_are_lowercase_without_a_trailing_period() {
    let document =
        "name: Prod\ncloud: {provider: aws, account_id: 1, role_arn: x}\ncluster: 1\nx: 1\n";
    for error in field_errors(yaml(document)) {
        let first = error.message.chars().next().unwrap_or('a');
        assert!(!first.is_uppercase(), "{error:?}");
        assert!(!error.message.ends_with('.'), "{error:?}");
    }
}

// --- document level -------------------------------------------------------------------------

#[test]
fn rejects_an_empty_document_in_both_formats() {
    for result in [
        yaml(""),
        yaml("# only a comment\n"),
        json(""),
        json("  \n"),
        json("null"),
    ] {
        let errors = field_errors(result);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "");
        assert!(errors[0].message.contains("empty"), "{errors:?}");
    }
}

#[test]
fn rejects_a_document_that_is_not_a_mapping() {
    for result in [
        yaml("- name: prod\n"),
        yaml("prod\n"),
        json("[1, 2]"),
        json("42"),
    ] {
        let errors = field_errors(result);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "");
        assert!(
            errors[0].message.contains("must be a mapping"),
            "{errors:?}"
        );
    }
}

#[test]
fn rejects_malformed_documents_as_syntax_errors() {
    assert!(syntax_error(yaml("name: [demo\n")).starts_with("invalid yaml"));
    assert!(syntax_error(json("{\"name\": ")).starts_with("invalid json"));
    assert!(syntax_error(json("{\"name\": \"demo\"} trailing")).starts_with("invalid json"));
}

#[test]
fn rejects_duplicate_keys_in_both_formats() {
    let message = syntax_error(yaml("name: a\nname: b\ncloud: {provider: sandbox}\n"));
    assert!(message.contains("duplicate key \"name\""), "{message}");
    let message = syntax_error(json(r#"{"name": "a", "name": "b"}"#));
    assert!(message.contains("duplicate key \"name\""), "{message}");
}

/// Found by `command-api/tests/http_properties.rs`: the whole key came back in the message
/// (and in the API's 400), however long.
#[test]
fn a_duplicate_key_is_named_cut_short() {
    // YAML allows implicit keys of up to 1024 characters.
    let key = "k".repeat(1000);
    let shown = format!(
        "duplicate key \"{}\"...",
        "k".repeat(crate::text::SHOWN_MAX_CHARS)
    );
    for message in [
        syntax_error(yaml(&format!("{key}: 1\n{key}: 2\n"))),
        syntax_error(json(&format!(r#"{{"{key}": 1, "{key}": 2}}"#))),
    ] {
        assert!(message.contains(&shown), "{message:.200}");
        assert!(
            message.len() < 200,
            "{} bytes: {message:.200}",
            message.len()
        );
    }
}

#[test]
fn rejects_more_than_one_yaml_document() {
    let message = syntax_error(yaml(&format!("{MINIMAL_SANDBOX}---\n{MINIMAL_SANDBOX}")));
    assert!(message.contains("only one yaml document"), "{message}");
}

#[test]
fn rejects_a_yaml_alias_bomb_quickly() {
    let mut document = String::from(
        "a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let (previous, next) = (pair[0], pair[1]);
        let aliases = vec![format!("*{previous}"); 9].join(", ");
        document.push_str(&format!("{next}: &{next} [{aliases}]\n"));
    }
    let started = Instant::now();
    let message = syntax_error(yaml(&document));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(message.contains("more than"), "{message}");
}

#[test]
fn rejects_deep_nesting_in_both_formats() {
    let depth = MAX_DEPTH + 1;
    let nested_yaml = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let message = syntax_error(yaml(&nested_yaml));
    assert!(message.contains("deeper than"), "{message}");
    let nested_json = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let message = syntax_error(json(&nested_json));
    assert!(message.contains("deeper than"), "{message}");

    let block = (0..200).fold(String::new(), |mut doc, level| {
        doc.push_str(&format!("{}k{level}:\n", "  ".repeat(level)));
        doc
    });
    syntax_error(yaml(&block));
    let very_deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    syntax_error(json(&very_deep));
}

#[test]
fn accepts_nesting_up_to_the_limit_before_checking_fields() {
    let depth = MAX_DEPTH - 1;
    let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    let document = format!(
        "{{\"name\": \"demo\", \"cloud\": {{\"provider\": \"sandbox\"}}, \"x\": {nested}}}"
    );
    let errors = field_errors(json(&document));
    assert_eq!(errors[0].path, "x");
}

#[test]
fn rejects_oversized_documents_as_too_large() {
    let document = format!("{MINIMAL_SANDBOX}#{}\n", "x".repeat(MAX_DOCUMENT_BYTES));
    let too_large = ConfigError::TooLarge {
        limit: MAX_DOCUMENT_BYTES,
    };
    assert_eq!(yaml(&document), Err(too_large.clone()));
    assert_eq!(json(&document), Err(too_large.clone()));
    assert_eq!(too_large.to_string(), "the document is larger than 256 KiB");
    let padding = MAX_DOCUMENT_BYTES - MINIMAL_SANDBOX.len() - 2;
    let at_the_limit = format!("{MINIMAL_SANDBOX}#{}\n", "x".repeat(padding));
    assert_eq!(at_the_limit.len(), MAX_DOCUMENT_BYTES);
    assert!(yaml(&at_the_limit).is_ok());
}

// --- messages a user can act on -----------------------------------------------------------

#[test]
fn huge_numbers_are_shown_short() {
    let message = only_error(
        &sandbox_with("  simulate: {apply_seconds: 1e308}\n"),
        "cloud.simulate.apply_seconds",
    );
    assert_eq!(message, "must be a number from 0 to 600, got 1e308");
    let message = only_error(
        &sandbox_with("  simulate: {fail: infra, fail_times: 123456789012345678901234567890}\n"),
        "cloud.simulate.fail_times",
    );
    assert_eq!(
        message,
        "must be a whole number from 1 to 1000, got 1.2345678901234568e29"
    );
}

#[test]
fn nan_and_infinity_are_named_as_not_finite_numbers() {
    for word in [".nan", ".NaN", ".inf", "-.inf", "+.Inf"] {
        let message = only_error(
            &sandbox_with(&format!("  simulate: {{apply_seconds: {word}}}\n")),
            "cloud.simulate.apply_seconds",
        );
        // serde-saphyr hands them over in its own spelling (`.nan`, `.inf`, `-.inf`).
        assert!(
            message.starts_with("must be a number from 0 to 600, got ")
                && message.ends_with(" (not a finite number)"),
            "{word}: {message}"
        );
    }
    let message = only_error(
        &sandbox_with("  simulate: {fail: infra, fail_times: .inf}\n"),
        "cloud.simulate.fail_times",
    );
    assert!(message.contains("not a finite number"), "{message}");
}

#[test]
fn null_and_complex_keys_are_explained_without_rust_types() {
    for (document, expected) in [
        ("~: 1\n", "a key is empty or null"),
        (": 1\n", "a key is empty or null"),
        ("? [a, b]\n: 1\n", "a key is a list"),
        ("? {a: b}\n: 1\n", "a key is a mapping"),
    ] {
        let message = syntax_error(yaml(&format!("{MINIMAL_SANDBOX}{document}")));
        assert!(message.contains(expected), "{document:?}: {message}");
        for internal in ["Option<", "String", "scalar", "serde"] {
            assert!(!message.contains(internal), "{document:?}: {message}");
        }
    }
    // Numbers and booleans are keys too; they are unknown fields like any other.
    let errors = field_errors(yaml(&format!("{MINIMAL_SANDBOX}1: x\ntrue: y\n")));
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["1", "true"]);
}
