//! The rendered configuration against the hashicorp/aws provider's schema, for every profile,
//! with and without GPU workers, on aws and in the sandbox.
//!
//! Terraform cannot run here (`terraform validate` needs the provider binary), so the check runs
//! over a checked-in subset of the provider's own schema, `schema/aws-provider.json` (where each
//! part was taken from is written in it): every resource and data source type is known; every
//! argument and nested block exists, may be set (not computed-only) and is not deprecated;
//! required arguments are present, and exactly one of each group the provider wants one of; no
//! block is given more often than allowed; and every
//! reference (`${aws_x.name.attr}`, `var.x`, `local.x`, `count.index`, `depends_on`) names something
//! declared and an attribute its schema has. The `provider "aws"` block and the S3 backend are
//! checked the same way, as are the few Terraform language blocks the rendering writes.

mod support;

use std::fmt::Display;

use serde_json::{Map, Value, json};
use support::target;

const SCHEMA: &str = include_str!("../schema/aws-provider.json");

/// What `terraform init -backend-config` supplies (from the executor's settings), so the
/// rendering leaves out: the state bucket.
const BACKEND_CONFIG_FROM_INIT: &[&str] = &["bucket"];

/// Terraform's meta-arguments of a `resource` or `data` block.
const META_ARGUMENTS: &[&str] = &["count", "for_each", "depends_on", "provider", "lifecycle"];

const TOP_LEVEL_BLOCKS: &[&str] = &[
    "terraform",
    "provider",
    "variable",
    "locals",
    "data",
    "resource",
    "output",
];
const TERRAFORM_ARGUMENTS: &[&str] = &["required_version", "required_providers", "backend"];
const VARIABLE_ARGUMENTS: &[&str] = &[
    "type",
    "default",
    "description",
    "sensitive",
    "nullable",
    "validation",
    "ephemeral",
];
const OUTPUT_ARGUMENTS: &[&str] = &[
    "value",
    "description",
    "sensitive",
    "depends_on",
    "precondition",
    "ephemeral",
];

fn schema() -> Value {
    serde_json::from_str(SCHEMA).expect("schema/aws-provider.json is JSON")
}

/// Every problem of `config` against the schema, each naming where it is.
fn problems(schema: &Value, config: &Value) -> Vec<String> {
    let mut check = Check {
        schema,
        config,
        problems: Vec::new(),
    };
    check.document();
    check.problems
}

struct Check<'a> {
    schema: &'a Value,
    config: &'a Value,
    problems: Vec<String>,
}

/// One step of a reference: `.name` or `[index]`.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Name(String),
    Index(String),
}

fn object(value: &Value) -> &Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    value
        .as_object()
        .unwrap_or_else(|| EMPTY.get_or_init(Map::new))
}

impl<'a> Check<'a> {
    fn problem(&mut self, path: &str, what: impl Display) {
        self.problems.push(format!("{path}: {what}"));
    }

    fn provider_version(&self) -> &'a str {
        self.schema["provider"]["version"].as_str().unwrap_or("?")
    }

    fn document(&mut self) {
        let Some(top) = self.config.as_object() else {
            self.problem("(document)", "must be an object");
            return;
        };
        for key in top.keys() {
            if !TOP_LEVEL_BLOCKS.contains(&key.as_str()) {
                self.problem(key, "unknown top-level block");
            }
        }
        self.terraform_block();
        self.provider_block();
        self.variables();
        for (kind, schemas) in [("data", "data_sources"), ("resource", "resources")] {
            self.instances(kind, schemas);
        }
        self.outputs();
        self.references();
    }

    fn terraform_block(&mut self) {
        let config = self.config;
        let terraform = &config["terraform"];
        for key in object(terraform).keys() {
            if !TERRAFORM_ARGUMENTS.contains(&key.as_str()) {
                self.problem(&format!("terraform.{key}"), "unknown argument or block");
            }
        }
        let aws = &terraform["required_providers"]["aws"];
        if aws["source"] != json!("hashicorp/aws") {
            self.problem(
                "terraform.required_providers.aws.source",
                format_args!("is {}, the schema is hashicorp/aws's", aws["source"]),
            );
        }
        let constraint = aws["version"].as_str().unwrap_or("");
        if !pin_admits(constraint, self.provider_version()) {
            self.problem(
                "terraform.required_providers.aws.version",
                format_args!(
                    "{constraint:?} does not admit {}, the version the schema is of",
                    self.provider_version()
                ),
            );
        }
        let root = self.schema;
        let backends = object(&terraform["backend"]);
        if backends.len() != 1 {
            self.problem("terraform.backend", "exactly one backend is required");
        }
        for (name, body) in backends {
            let path = format!("terraform.backend.{name}");
            let schema = &root["backends"][name];
            if schema.is_null() {
                self.problem(&path, "unknown backend");
                continue;
            }
            let supplied = if name == "s3" {
                BACKEND_CONFIG_FROM_INIT
            } else {
                &[]
            };
            self.body(&path, body, schema, supplied, false);
        }
    }

    fn provider_block(&mut self) {
        let config = self.config;
        for (name, body) in object(&config["provider"]) {
            let path = format!("provider.{name}");
            if name != "aws" {
                self.problem(&path, "no schema for this provider");
                continue;
            }
            let root = self.schema;
            self.body(&path, body, &root["provider_config"], &[], false);
        }
    }

    fn variables(&mut self) {
        let config = self.config;
        for (name, body) in object(&config["variable"]) {
            let path = format!("variable.{name}");
            for key in object(body).keys() {
                if !VARIABLE_ARGUMENTS.contains(&key.as_str()) {
                    self.problem(&format!("{path}.{key}"), "unknown argument");
                }
            }
            if body.get("type").is_none() {
                self.problem(&path, "declares no type");
            }
        }
    }

    fn instances(&mut self, kind: &str, schemas: &str) {
        let (root, config) = (self.schema, self.config);
        for (rtype, by_name) in object(&config[kind]) {
            let schema = &root[schemas][rtype];
            if schema.is_null() {
                self.problem(
                    &format!("{kind}.{rtype}"),
                    format_args!(
                        "unknown {kind} type in hashicorp/aws {}",
                        self.provider_version()
                    ),
                );
                continue;
            }
            for (name, body) in object(by_name) {
                self.body(&format!("{kind}.{rtype}.{name}"), body, schema, &[], true);
            }
        }
    }

    fn outputs(&mut self) {
        let config = self.config;
        for (name, body) in object(&config["output"]) {
            let path = format!("output.{name}");
            for key in object(body).keys() {
                if !OUTPUT_ARGUMENTS.contains(&key.as_str()) {
                    self.problem(&format!("{path}.{key}"), "unknown argument");
                }
            }
            if body.get("value").is_none() {
                self.problem(&path, "has no value");
            }
        }
    }

    /// One block body against its schema. `supplied`: required arguments given elsewhere;
    /// `meta`: whether Terraform's meta-arguments are allowed (resources and data sources).
    fn body(&mut self, path: &str, body: &Value, schema: &Value, supplied: &[&str], meta: bool) {
        let Some(body) = body.as_object() else {
            self.problem(path, "must be an object");
            return;
        };
        let attributes = object(&schema["attributes"]);
        let blocks = object(&schema["blocks"]);
        let version = self.provider_version().to_owned();
        for (key, value) in body {
            let at = format!("{path}.{key}");
            if meta && META_ARGUMENTS.contains(&key.as_str()) {
                continue;
            }
            if let Some(attribute) = attributes.get(key) {
                if attribute["mode"] == json!("computed") {
                    self.problem(&at, "is computed by the provider: it cannot be set");
                }
                if attribute["deprecated"] == json!(true) {
                    self.problem(&at, format_args!("is deprecated in {version}"));
                }
            } else if let Some(nested) = blocks.get(key) {
                let items: Vec<&Value> = match value {
                    Value::Array(items) => items.iter().collect(),
                    other => vec![other],
                };
                if nested["nesting"] == json!("single") && value.is_array() {
                    self.problem(&at, "is a single block, not a list of blocks");
                }
                if nested["deprecated"] == json!(true) {
                    self.problem(&at, format_args!("is a deprecated block in {version}"));
                }
                let count = items.len() as u64;
                if let Some(max) = nested["max_items"].as_u64()
                    && count > max
                {
                    self.problem(
                        &at,
                        format_args!("given {count} times, at most {max} allowed"),
                    );
                }
                if let Some(min) = nested["min_items"].as_u64()
                    && count < min
                {
                    self.problem(
                        &at,
                        format_args!("given {count} times, at least {min} required"),
                    );
                }
                for (index, item) in items.into_iter().enumerate() {
                    self.body(
                        &format!("{at}[{index}]"),
                        item,
                        &nested["block"],
                        &[],
                        false,
                    );
                }
            } else {
                self.problem(&at, "unknown argument or block");
            }
        }
        for (key, attribute) in attributes {
            if attribute["mode"] == json!("required")
                && !body.contains_key(key)
                && !supplied.contains(&key.as_str())
            {
                self.problem(&format!("{path}.{key}"), "required argument missing");
            }
        }
        for (key, nested) in blocks {
            if nested["min_items"].as_u64().unwrap_or(0) > 0 && !body.contains_key(key) {
                self.problem(&format!("{path}.{key}"), "required block missing");
            }
        }
        for group in schema["exactly_one_of"].as_array().into_iter().flatten() {
            let names: Vec<&str> = group
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let given = names
                .iter()
                .filter(|name| body.contains_key(**name))
                .count();
            if given != 1 {
                self.problem(
                    path,
                    format_args!(
                        "exactly one of {} is required, {given} given",
                        names.join(", ")
                    ),
                );
            }
        }
    }

    /// Every interpolation and `depends_on` entry of the document, resolved against what is
    /// declared and the schemas.
    fn references(&mut self) {
        let config = self.config;
        for kind in ["resource", "data"] {
            for (rtype, by_name) in object(&config[kind]) {
                for (name, body) in object(by_name) {
                    let path = format!("{kind}.{rtype}.{name}");
                    let counted = body.get("count").is_some();
                    self.strings_in(&path, body, counted);
                    for dependency in body["depends_on"].as_array().into_iter().flatten() {
                        let steps = dependency.as_str().map(traversal).unwrap_or_default();
                        if steps.len() != 2 || declared(config, &steps).is_none() {
                            self.problem(
                                &format!("{path}.depends_on"),
                                format_args!("{dependency} is not a declared resource"),
                            );
                        }
                    }
                }
            }
        }
        for section in ["provider", "output", "terraform", "variable", "locals"] {
            self.strings_in(section, &config[section], false);
        }
    }

    fn strings_in(&mut self, path: &str, value: &Value, counted: bool) {
        match value {
            Value::String(text) => {
                for expression in interpolations(text) {
                    for steps in traversals(&expression) {
                        self.reference(path, &steps, counted);
                    }
                }
            }
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    self.strings_in(&format!("{path}[{index}]"), item, counted);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    self.strings_in(&format!("{path}.{key}"), item, counted);
                }
            }
            _ => {}
        }
    }

    fn reference(&mut self, path: &str, steps: &[Step], counted: bool) {
        let shown = show(steps);
        let Some(Step::Name(root)) = steps.first() else {
            return;
        };
        match root.as_str() {
            "true" | "false" | "null" => {}
            "var" => {
                let declared = matches!(steps.get(1), Some(Step::Name(name))
                    if self.config["variable"].get(name).is_some());
                if !declared {
                    self.problem(path, format_args!("{shown}: no such variable is declared"));
                }
            }
            "local" => {
                let declared = matches!(steps.get(1), Some(Step::Name(name))
                    if self.config["locals"].get(name).is_some());
                if !declared {
                    self.problem(
                        path,
                        format_args!("{shown}: no such local value is declared"),
                    );
                }
            }
            "count" => {
                if steps.get(1) != Some(&Step::Name("index".to_owned())) || !counted {
                    self.problem(path, format_args!("{shown} outside a resource with count"));
                }
            }
            root if root == "data" || root.starts_with("aws_") => {
                let (schemas, skip) = if root == "data" {
                    ("data_sources", 3)
                } else {
                    ("resources", 2)
                };
                let root_schema = self.schema;
                let Some(body) = declared(self.config, steps) else {
                    self.problem(path, format_args!("{shown}: not declared"));
                    return;
                };
                let instance_counted = body.get("count").is_some();
                let rtype = match &steps[skip - 2] {
                    Step::Name(rtype) => rtype.clone(),
                    Step::Index(_) => unreachable!("declared() checked the names"),
                };
                let mut rest = &steps[skip..];
                match (instance_counted, rest.first()) {
                    (true, Some(Step::Index(_))) => rest = &rest[1..],
                    (true, _) => {
                        self.problem(
                            path,
                            format_args!("{shown}: counted, name an instance or [*]"),
                        );
                        return;
                    }
                    (false, Some(Step::Index(_))) => {
                        self.problem(
                            path,
                            format_args!("{shown}: not counted, no instance index"),
                        );
                        return;
                    }
                    (false, _) => {}
                }
                let schema = &root_schema[schemas][rtype.as_str()];
                if let Err(why) = attribute_path(schema, rest) {
                    self.problem(path, format_args!("{shown}: {why}"));
                }
            }
            _ => self.problem(path, format_args!("{shown}: unknown kind of reference")),
        }
    }
}

/// The declared body a `type.name` (or `data.type.name`) reference names.
fn declared<'c>(config: &'c Value, steps: &[Step]) -> Option<&'c Value> {
    let name = |i: usize| match steps.get(i) {
        Some(Step::Name(name)) => Some(name.as_str()),
        _ => None,
    };
    let body = match name(0)? {
        "data" => &config["data"][name(1)?][name(2)?],
        rtype => &config["resource"][rtype][name(1)?],
    };
    (!body.is_null()).then_some(body)
}

/// Whether a `~> X.Y` constraint admits `version` (`X.Z.P` with Z >= Y).
fn pin_admits(constraint: &str, version: &str) -> bool {
    let numbers = |text: &str| -> Vec<u64> {
        text.split('.')
            .map(|part| part.trim().parse().unwrap_or(u64::MAX))
            .collect()
    };
    let Some(pin) = constraint.strip_prefix("~>") else {
        return false;
    };
    let (pin, version) = (numbers(pin), numbers(version));
    pin.len() == 2 && version.len() == 3 && version[0] == pin[0] && version[1] >= pin[1]
}

/// Follows `rest` (after `type.name[index]`) through a block schema: attributes by their type,
/// nested blocks by their nesting.
fn attribute_path(block: &Value, rest: &[Step]) -> Result<(), String> {
    let Some(first) = rest.first() else {
        return Ok(());
    };
    let Step::Name(name) = first else {
        return Err("an index where an attribute name belongs".to_owned());
    };
    if let Some(attribute) = block["attributes"].get(name) {
        return type_path(&attribute["type"], &rest[1..]).map_err(|why| format!("{name}: {why}"));
    }
    let Some(nested) = block["blocks"].get(name) else {
        return Err(format!("no attribute or block {name}"));
    };
    let mut rest = &rest[1..];
    match (nested["nesting"].as_str(), rest.first()) {
        (Some("single"), _) | (_, None) => {}
        (Some("list"), Some(Step::Index(_))) => rest = &rest[1..],
        (Some("set"), Some(Step::Index(_))) => {
            return Err(format!("{name} is a set of blocks: it cannot be indexed"));
        }
        _ => return Err(format!("{name} is a list of blocks: index it")),
    }
    attribute_path(&nested["block"], rest).map_err(|why| format!("{name}: {why}"))
}

/// Follows `rest` through a value of Terraform type `ty` (as the schema writes types).
fn type_path(ty: &Value, rest: &[Step]) -> Result<(), String> {
    let Some(step) = rest.first() else {
        return Ok(());
    };
    let kind = ty.get(0).and_then(Value::as_str).or(ty.as_str());
    let next = match (kind, step) {
        (Some("dynamic"), _) => return Ok(()),
        (Some("list" | "map"), Step::Index(_)) | (Some("map"), Step::Name(_)) => &ty[1],
        (Some("set"), Step::Index(_)) => return Err("a set cannot be indexed".to_owned()),
        (Some("object"), Step::Name(field)) => {
            let Some(field_type) = ty[1].get(field) else {
                return Err(format!("no field {field}"));
            };
            field_type
        }
        (kind, Step::Name(name)) => {
            return Err(format!("a {} has no .{name}", kind.unwrap_or("value")));
        }
        (kind, Step::Index(index)) => {
            return Err(format!(
                "a {} cannot be indexed [{index}]",
                kind.unwrap_or("value")
            ));
        }
    };
    type_path(next, &rest[1..])
}

/// The expressions of a string template: the insides of `${...}` (`$${` is a literal).
fn interpolations(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            rest = &rest[start + 2..];
            continue;
        }
        let inside = &rest[start + 2..];
        let mut depth = 0usize;
        let end = inside.char_indices().find_map(|(i, c)| match c {
            '{' => {
                depth += 1;
                None
            }
            '}' if depth == 0 => Some(i),
            '}' => {
                depth -= 1;
                None
            }
            _ => None,
        });
        let Some(end) = end else { break };
        found.push(inside[..end].to_owned());
        rest = &inside[end + 1..];
    }
    found
}

fn is_identifier_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_identifier(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A lone traversal (`aws_x.name`, as in `depends_on`).
fn traversal(text: &str) -> Vec<Step> {
    traversals(text).into_iter().next().unwrap_or_default()
}

/// The references in an expression (function names left out; references inside an index, like
/// `count.index`, included).
fn traversals(expression: &str) -> Vec<Vec<Step>> {
    let chars: Vec<char> = expression.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        let follows_word = i > 0 && (is_identifier(chars[i - 1]) || chars[i - 1] == '.');
        if !is_identifier_start(c) || follows_word {
            i += 1;
            continue;
        }
        let mut steps = Vec::new();
        let word = |i: &mut usize| {
            let start = *i;
            while *i < chars.len() && is_identifier(chars[*i]) {
                *i += 1;
            }
            chars[start..*i].iter().collect::<String>()
        };
        steps.push(Step::Name(word(&mut i)));
        loop {
            if chars.get(i) == Some(&'.')
                && chars.get(i + 1).is_some_and(|&c| is_identifier_start(c))
            {
                i += 1;
                steps.push(Step::Name(word(&mut i)));
            } else if chars.get(i) == Some(&'[') {
                let start = i + 1;
                let mut depth = 0;
                while i < chars.len() {
                    match chars[i] {
                        '[' => depth += 1,
                        ']' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                let inside: String = chars[start..i.min(chars.len())].iter().collect();
                found.extend(traversals(&inside));
                steps.push(Step::Index(inside));
                i += 1;
            } else {
                break;
            }
        }
        let mut after = i;
        while chars.get(after).is_some_and(|c| c.is_whitespace()) {
            after += 1;
        }
        let is_call = steps.len() == 1 && chars.get(after) == Some(&'(');
        if !is_call {
            found.push(steps);
        }
    }
    found
}

fn show(steps: &[Step]) -> String {
    let mut text = String::new();
    for step in steps {
        match step {
            Step::Name(name) if text.is_empty() => text.push_str(name),
            Step::Name(name) => {
                text.push('.');
                text.push_str(name);
            }
            Step::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

#[test]
fn every_rendering_is_valid_for_the_provider_schema() {
    let schema = schema();
    let models = support::every_model();
    assert_eq!(models.len(), 12, "2 providers x 3 profiles x GPU or not");
    for (name, model) in models {
        let config = terraform_stack::render(target(), &model);
        let problems = problems(&schema, &config);
        assert!(
            problems.is_empty(),
            "{name} against hashicorp/aws {}:\n{}",
            schema["provider"]["version"],
            problems.join("\n")
        );
    }
}

#[test]
fn the_schema_covers_exactly_the_types_rendered_and_the_pinned_version() {
    let schema = schema();
    let mut rendered = std::collections::BTreeSet::new();
    for (_, model) in support::every_model() {
        let config = terraform_stack::render(target(), &model);
        rendered.extend(object(&config["resource"]).keys().cloned());
    }
    let covered: std::collections::BTreeSet<String> =
        object(&schema["resources"]).keys().cloned().collect();
    assert_eq!(
        covered, rendered,
        "regenerate the subset for the types rendered"
    );
    let version = schema["provider"]["version"].as_str().unwrap();
    assert!(pin_admits(terraform_stack::AWS_PROVIDER_VERSION, version));
    assert!(!pin_admits(terraform_stack::AWS_PROVIDER_VERSION, "6.0.0"));
    assert!(!pin_admits(terraform_stack::AWS_PROVIDER_VERSION, "5.69.0"));
    // Before 5.81 the OIDC provider's thumbprint_list was required, and the rendering omits it.
    assert!(!pin_admits(terraform_stack::AWS_PROVIDER_VERSION, "5.80.0"));
}

/// The medium aws rendering with GPU workers, changed by `change`: its problems.
fn problems_after(change: impl FnOnce(&mut Value)) -> Vec<String> {
    let model = support::model(
        domain::spec::Provider::Aws,
        domain::spec::Profile::Medium,
        true,
    );
    let mut config = terraform_stack::render(target(), &model);
    change(&mut config);
    problems(&schema(), &config)
}

fn assert_found(problems: &[String], expected: &[&str]) {
    for wanted in expected {
        assert!(
            problems.iter().any(|p| p.contains(wanted)),
            "expected a problem containing {wanted:?}, got:\n{}",
            problems.join("\n")
        );
    }
}

#[test]
fn a_misspelled_argument_is_unknown_and_the_real_one_missing() {
    let problems = problems_after(|config| {
        let db = config["resource"]["aws_db_instance"]["main"]
            .as_object_mut()
            .unwrap();
        let class = db.remove("instance_class").unwrap();
        db.insert("instance_clas".to_owned(), class);
    });
    assert_found(
        &problems,
        &[
            "resource.aws_db_instance.main.instance_clas: unknown argument or block",
            "resource.aws_db_instance.main.instance_class: required argument missing",
        ],
    );
    assert_eq!(problems.len(), 2, "{problems:#?}");
}

#[test]
fn unknown_types_nested_mistakes_and_repeated_blocks_are_found() {
    let problems = problems_after(|config| {
        let resources = &mut config["resource"];
        resources["aws_s3_bukket"] = json!({"x": {"bucket": "b"}});
        let cluster = &mut resources["aws_eks_cluster"]["main"];
        let vpc_config = cluster["vpc_config"].clone();
        cluster["vpc_config"] = json!([vpc_config.clone(), vpc_config]);
        resources["aws_eks_node_group"]["cpu"]["scaling_config"]["max"] = json!(3);
        let rules = &mut resources["aws_s3_bucket_lifecycle_configuration"]["artifacts"]["rule"];
        rules[0].as_object_mut().unwrap().remove("status");
        // An empty filter: the provider warns that it will be an error.
        rules[1]["filter"] = json!({});
    });
    assert_found(
        &problems,
        &[
            "resource.aws_s3_bukket: unknown resource type in hashicorp/aws 5.100.0",
            "resource.aws_eks_cluster.main.vpc_config: given 2 times, at most 1 allowed",
            "resource.aws_eks_node_group.cpu.scaling_config[0].max: unknown argument or block",
            "resource.aws_s3_bucket_lifecycle_configuration.artifacts.rule[0].status: required argument missing",
            "resource.aws_s3_bucket_lifecycle_configuration.artifacts.rule[1].filter[0]: exactly one of and, object_size_greater_than, object_size_less_than, prefix, tag is required, 0 given",
        ],
    );
}

#[test]
fn computed_and_deprecated_arguments_are_refused() {
    let problems = problems_after(|config| {
        config["resource"]["aws_vpc"]["main"]["arn"] = json!("arn:aws:ec2:x");
        // The inline form aws_s3_bucket_versioning replaces.
        config["resource"]["aws_s3_bucket"]["artifacts"]["versioning"] = json!({"enabled": true});
    });
    assert_found(
        &problems,
        &[
            "resource.aws_vpc.main.arn: is computed by the provider: it cannot be set",
            "resource.aws_s3_bucket.artifacts.versioning: is a deprecated block in 5.100.0",
        ],
    );
}

#[test]
fn references_must_name_declared_things_and_real_attributes() {
    let problems = problems_after(|config| {
        config["output"]["cluster_oidc_issuer"]["value"] =
            json!("${aws_eks_cluster.main.identity[0].oidc[0].issuerr}");
        config["output"]["vpc_id"]["value"] = json!("${aws_vpc.other.id}");
        config["output"]["cluster_name"]["value"] =
            json!("${aws_eks_cluster.main.vpc_config.subnet_ids}");
        config["resource"]["aws_subnet"]["public"]["vpc_id"] = json!("${aws_eip.nat.id}");
        config["resource"]["aws_vpc"]["main"]["cidr_block"] = json!("${var.cidr}");
        config["resource"]["aws_vpc"]["main"]["depends_on"] = json!(["aws_iam_role.nobody"]);
        config["provider"]["aws"]["region"] = json!("${count.index}");
        config["output"]["bucket_name"]["value"] = json!("${local.nothing}");
        config["locals"]["host"] = json!("${aws_eks_cluster.other.name}");
    });
    assert_found(
        &problems,
        &[
            "output.cluster_oidc_issuer.value: aws_eks_cluster.main.identity[0].oidc[0].issuerr: identity: no field issuerr",
            "output.vpc_id.value: aws_vpc.other.id: not declared",
            "aws_eks_cluster.main.vpc_config.subnet_ids: vpc_config is a list of blocks: index it",
            "resource.aws_subnet.public.vpc_id: aws_eip.nat.id: counted, name an instance or [*]",
            "resource.aws_vpc.main.cidr_block: var.cidr: no such variable is declared",
            "resource.aws_vpc.main.depends_on: \"aws_iam_role.nobody\" is not a declared resource",
            "provider.aws.region: count.index outside a resource with count",
            "output.bucket_name.value: local.nothing: no such local value is declared",
            "locals.host: aws_eks_cluster.other.name: not declared",
        ],
    );
}

#[test]
fn the_provider_block_and_the_backend_are_checked_too() {
    let problems = problems_after(|config| {
        config["provider"]["aws"]["assume_role"]["session"] = json!("x");
        config["provider"]["aws"]["assume_role"]
            .as_object_mut()
            .unwrap()
            .remove("role_arn");
        let s3 = config["terraform"]["backend"]["s3"]
            .as_object_mut()
            .unwrap();
        s3.remove("key");
        s3.insert("lock_table".to_owned(), json!("t"));
        config["terraform"]["required_providers"]["aws"]["version"] = json!("~> 6.0");
        config["variable"]["customer_role_arn"]["secret"] = json!(true);
    });
    assert_found(
        &problems,
        &[
            "provider.aws.assume_role[0].session: unknown argument or block",
            "provider.aws.assume_role[0].role_arn: required argument missing",
            "terraform.backend.s3.key: required argument missing",
            "terraform.backend.s3.lock_table: unknown argument or block",
            "terraform.required_providers.aws.version: \"~> 6.0\" does not admit 5.100.0",
            "variable.customer_role_arn.secret: unknown argument",
        ],
    );
    // The bucket is a -backend-config argument; DynamoDB locking is deprecated upstream.
    assert!(!problems.iter().any(|p| p.contains("backend.s3.bucket")));
    let problems = problems_after(|config| {
        config["terraform"]["backend"]["s3"]["dynamodb_table"] = json!("locks");
    });
    assert_found(
        &problems,
        &["terraform.backend.s3.dynamodb_table: is deprecated"],
    );
}

#[test]
fn expressions_yield_their_references_not_function_names() {
    assert_eq!(
        traversals("concat(aws_subnet.private[*].id, aws_subnet.public[count.index].id)"),
        vec![
            vec![
                Step::Name("aws_subnet".into()),
                Step::Name("private".into()),
                Step::Index("*".into()),
                Step::Name("id".into()),
            ],
            vec![Step::Name("count".into()), Step::Name("index".into())],
            vec![
                Step::Name("aws_subnet".into()),
                Step::Name("public".into()),
                Step::Index("count.index".into()),
                Step::Name("id".into()),
            ],
        ]
    );
    assert_eq!(
        interpolations("${a.b}/x/$${literal}/${cidrsubnet(c.d, 8, 1)}"),
        ["a.b", "cidrsubnet(c.d, 8, 1)"]
    );
}
