//! What the terraform stand-in knows about Terraform: the JSON configuration (`main.tf.json`),
//! interpolation resolved to deterministic fake values, the state file (format version 4) and
//! the difference between the two.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fsutil::{fnv1a64, random_uuid, read_json, write_json_atomic};
use super::{Error, Result};

pub const CONFIG_FILE: &str = "main.tf.json";
pub const STATE_FILE: &str = "terraform.tfstate";

/// Resource meta-arguments: not attributes of the resource.
const META_ARGUMENTS: [&str; 6] = [
    "count",
    "for_each",
    "depends_on",
    "lifecycle",
    "provider",
    "provisioner",
];

/// How deep an interpolation may refer through other resources' attributes.
const MAX_DEPTH: usize = 8;

/// The parsed `main.tf.json`.
#[derive(Clone, Debug)]
pub struct Config {
    root: Map<String, Value>,
}

impl Config {
    /// Reads `main.tf.json` from the workdir.
    pub fn load(workdir: &Path) -> Result<Self> {
        let path = workdir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Failed {
                    summary: "No configuration files".to_owned(),
                    detail: vec![format!(
                        "The directory {} contains no {CONFIG_FILE}.",
                        workdir.display()
                    )],
                });
            }
            Err(e) => return Err(Error::io(format!("read {CONFIG_FILE}"), e)),
        };
        Self::parse(&text)
    }

    /// Parses configuration text; the root must be a JSON object.
    pub fn parse(text: &str) -> Result<Self> {
        match serde_json::from_str(text) {
            Ok(Value::Object(root)) => Ok(Config { root }),
            Ok(_) => Err(Error::failed(format!(
                "Invalid {CONFIG_FILE}: the root must be a JSON object"
            ))),
            Err(e) => Err(Error::Failed {
                summary: format!("Invalid {CONFIG_FILE}"),
                detail: vec![e.to_string()],
            }),
        }
    }

    /// The configuration as JSON, as a plan file keeps a snapshot of it.
    pub fn to_value(&self) -> Value {
        Value::Object(self.root.clone())
    }

    /// `resource`: type → name → body.
    fn resources(&self) -> Option<&Map<String, Value>> {
        self.root.get("resource").and_then(Value::as_object)
    }

    fn body(&self, rtype: &str, name: &str) -> Option<&Map<String, Value>> {
        let body = self.resources()?.get(rtype)?.get(name)?;
        // The JSON syntax allows a block body to be given as an array of one object.
        match body {
            Value::Array(items) => items.first()?.as_object(),
            other => other.as_object(),
        }
    }

    /// Every resource instance the configuration declares, with its attributes resolved; types
    /// and names in sorted order. `count = N` declares instances `[0]` to `[N-1]`.
    pub fn desired(&self, resolver: &Resolver<'_>) -> Vec<Instance> {
        let mut instances = Vec::new();
        for (rtype, names) in self.resources().into_iter().flatten() {
            for name in names.as_object().into_iter().flat_map(Map::keys) {
                let body = self.body(rtype, name).cloned().unwrap_or_default();
                let count = body
                    .get("count")
                    .map(|count| resolver.resolve(count, None))
                    .and_then(|count| match count {
                        Value::Number(n) => n.as_u64(),
                        Value::String(s) => s.parse().ok(),
                        _ => None,
                    });
                let indexes: Vec<Option<u64>> = match count {
                    Some(n) => (0..n).map(Some).collect(),
                    None => vec![None],
                };
                for index in indexes {
                    let mut attributes = Map::new();
                    for (key, value) in &body {
                        if !META_ARGUMENTS.contains(&key.as_str()) {
                            attributes.insert(key.clone(), resolver.resolve(value, index));
                        }
                    }
                    let mut instance = Instance {
                        rtype: rtype.clone(),
                        name: name.clone(),
                        index,
                        attributes: Value::Null,
                    };
                    attributes.insert(
                        "id".to_owned(),
                        Value::String(resolver.fake_id(rtype, &instance.address())),
                    );
                    instance.attributes = Value::Object(attributes);
                    instances.push(instance);
                }
            }
        }
        instances
    }

    /// The `output` block with values resolved, as state stores outputs.
    pub fn outputs(&self, resolver: &Resolver<'_>) -> BTreeMap<String, StateOutput> {
        let Some(outputs) = self.root.get("output").and_then(Value::as_object) else {
            return BTreeMap::new();
        };
        outputs
            .iter()
            .map(|(name, block)| {
                let value = resolver.resolve(block.get("value").unwrap_or(&Value::Null), None);
                let output = StateOutput {
                    kind: type_of(&value),
                    value,
                    sensitive: block.get("sensitive").and_then(Value::as_bool) == Some(true),
                };
                (name.clone(), output)
            })
            .collect()
    }
}

/// Turns interpolations (`"${aws_vpc.main.id}"`) into deterministic fake values: the same
/// workdir name and address always give the same value.
#[derive(Clone, Copy, Debug)]
pub struct Resolver<'a> {
    scope: &'a str,
    config: Option<&'a Config>,
}

impl<'a> Resolver<'a> {
    /// `scope` is the workdir's name (so two environments get different ids); `config` lets a
    /// reference to a literal attribute resolve to that literal.
    pub fn new(scope: &'a str, config: Option<&'a Config>) -> Self {
        Resolver { scope, config }
    }

    fn hex8(&self, key: &str) -> String {
        let hash = fnv1a64(format!("{}/{key}", self.scope).as_bytes());
        format!("{:08x}", (hash ^ (hash >> 32)) as u32)
    }

    /// The id of a resource instance: `vpc-1a2b3c4d` for `aws_vpc.main`.
    pub fn fake_id(&self, rtype: &str, address: &str) -> String {
        format!("{}-{}", id_prefix(rtype), self.hex8(address))
    }

    /// Resolves every interpolation in `value`; `index` is `count.index` of the instance.
    pub fn resolve(&self, value: &Value, index: Option<u64>) -> Value {
        self.value(value, index, 0)
    }

    fn value(&self, value: &Value, index: Option<u64>, depth: usize) -> Value {
        match value {
            Value::String(s) => self.template(s, index, depth),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.value(v, index, depth)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.value(v, index, depth)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// A string template: `"${expr}"` alone keeps the expression's type; otherwise every
    /// interpolation is spliced in as text. `$${` is a literal `${`.
    fn template(&self, text: &str, index: Option<u64>, depth: usize) -> Value {
        let parts = template_parts(text);
        if let [Part::Expr(expr)] = parts.as_slice() {
            return self.expr(expr, index, depth);
        }
        let mut out = String::new();
        for part in parts {
            match part {
                Part::Literal(text) => out.push_str(&text),
                Part::Expr(expr) => match self.expr(&expr, index, depth) {
                    Value::String(s) => out.push_str(&s),
                    other => out.push_str(&other.to_string()),
                },
            }
        }
        Value::String(out)
    }

    fn expr(&self, expr: &str, index: Option<u64>, depth: usize) -> Value {
        let expr = expr.trim();
        if expr == "count.index" {
            return Value::from(index.unwrap_or(0));
        }
        if depth < MAX_DEPTH
            && let Some(reference) = Reference::parse(expr, index)
        {
            return self.attribute(&reference, depth);
        }
        Value::String(format!("sandbox-{}", self.hex8(expr)))
    }

    fn attribute(&self, r: &Reference<'_>, depth: usize) -> Value {
        let address = match r.index {
            Some(i) => format!("{}.{}[{i}]", r.rtype, r.name),
            None => format!("{}.{}", r.rtype, r.name),
        };
        if r.attribute == "id" {
            return Value::String(self.fake_id(r.rtype, &address));
        }
        let literal = self
            .config
            .and_then(|c| c.body(r.rtype, r.name))
            .and_then(|body| body.get(r.attribute))
            .filter(|_| !META_ARGUMENTS.contains(&r.attribute));
        if let Some(literal) = literal {
            return self.value(literal, r.index, depth + 1);
        }
        let hex = self.hex8(&format!("{address}.{}", r.attribute));
        Value::String(match r.attribute {
            "arn" => format!(
                "arn:aws:{}:us-east-1:000000000000:{}/{}",
                r.rtype.split('_').nth(1).unwrap_or("sandbox"),
                id_prefix(r.rtype),
                self.fake_id(r.rtype, &address)
            ),
            "endpoint" => format!("https://{hex}.sandbox.invalid"),
            "address" | "hostname" | "dns_name" => format!("{hex}.sandbox.invalid"),
            attribute => format!("{}-{hex}", attribute.replace('_', "-")),
        })
    }
}

/// A piece of a string template.
enum Part {
    Literal(String),
    /// The inside of `${...}`.
    Expr(String),
}

/// Splits a template into literal text and `${...}` expressions (no empty literals).
fn template_parts(text: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("$${") {
            literal.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${")
            && let Some(end) = closing_brace(after)
        {
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Expr(after[..end].to_owned()));
            rest = &after[end + 1..];
        } else {
            let c = rest.chars().next().unwrap_or_default();
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    parts
}

/// `TYPE.NAME[INDEX].ATTRIBUTE...` in an interpolation.
struct Reference<'e> {
    rtype: &'e str,
    name: &'e str,
    index: Option<u64>,
    attribute: &'e str,
}

impl<'e> Reference<'e> {
    fn parse(expr: &'e str, count_index: Option<u64>) -> Option<Self> {
        let mut segments = expr.split('.');
        let rtype = segments.next()?;
        let (name, index) = split_index(segments.next()?)?;
        let (attribute, _) = split_index(segments.next()?)?;
        let reserved = [
            "data",
            "var",
            "local",
            "module",
            "each",
            "count",
            "path",
            "terraform",
            "self",
        ];
        if reserved.contains(&rtype) || !is_identifier(rtype) || !rtype.contains('_') {
            return None;
        }
        let index = match index {
            None => None,
            Some("count.index") => Some(count_index.unwrap_or(0)),
            Some(i) => Some(i.parse().ok()?),
        };
        Some(Reference {
            rtype,
            name,
            index,
            attribute,
        })
    }
}

/// `name[3]` → (`name`, Some(`3`)); `name` → (`name`, None); anything else → None.
fn split_index(segment: &str) -> Option<(&str, Option<&str>)> {
    let (ident, index) = match segment.split_once('[') {
        Some((ident, rest)) => (ident, Some(rest.strip_suffix(']')?)),
        None => (segment, None),
    };
    is_identifier(ident).then_some((ident, index))
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The position of the `}` closing an interpolation whose `${` was just consumed.
fn closing_brace(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The prefix AWS gives ids of this resource type (`vpc`, `subnet`, `sg`, ...).
fn id_prefix(rtype: &str) -> String {
    let known = match rtype {
        "aws_vpc" => "vpc",
        "aws_subnet" => "subnet",
        "aws_internet_gateway" => "igw",
        "aws_nat_gateway" => "nat",
        "aws_eip" => "eipalloc",
        "aws_route_table" => "rtb",
        "aws_security_group" => "sg",
        "aws_instance" => "i",
        "aws_launch_template" => "lt",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_owned();
    }
    // aws_eks_cluster → eks-cluster
    let short = rtype.split_once('_').map_or(rtype, |(_, rest)| rest);
    short.replace('_', "-")
}

/// Terraform's type constraint for an output value, as `output -json` shows it.
pub fn type_of(value: &Value) -> Value {
    match value {
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "dynamic".into(),
        Value::Array(items) => {
            serde_json::json!(["tuple", items.iter().map(type_of).collect::<Vec<_>>()])
        }
        Value::Object(map) => serde_json::json!([
            "object",
            map.iter()
                .map(|(k, v)| (k.clone(), type_of(v)))
                .collect::<Map<_, _>>()
        ]),
    }
}

/// One resource instance, in configuration or in state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub rtype: String,
    pub name: String,
    pub index: Option<u64>,
    pub attributes: Value,
}

impl Instance {
    /// `aws_subnet.private[0]`, as terraform prints it.
    pub fn address(&self) -> String {
        match self.index {
            Some(i) => format!("{}.{}[{i}]", self.rtype, self.name),
            None => format!("{}.{}", self.rtype, self.name),
        }
    }

    pub fn id(&self) -> &str {
        self.attributes
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// `terraform.tfstate`, format version 4.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub terraform_version: String,
    pub serial: u64,
    pub lineage: String,
    #[serde(default)]
    pub outputs: BTreeMap<String, StateOutput>,
    #[serde(default)]
    pub resources: Vec<StateResource>,
    #[serde(default)]
    pub check_results: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateOutput {
    pub value: Value,
    #[serde(rename = "type")]
    pub kind: Value,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateResource {
    pub mode: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub name: String,
    pub provider: String,
    pub instances: Vec<StateInstance>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateInstance {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_key: Option<u64>,
    pub schema_version: u32,
    pub attributes: Value,
    #[serde(default)]
    pub sensitive_attributes: Vec<Value>,
}

impl State {
    pub fn new() -> Self {
        State {
            version: 4,
            terraform_version: super::terraform::VERSION.to_owned(),
            serial: 0,
            lineage: random_uuid(),
            outputs: BTreeMap::new(),
            resources: Vec::new(),
            check_results: None,
        }
    }

    /// The workdir's state; a new empty one when there is no state file yet.
    pub fn load(workdir: &Path) -> Result<Self> {
        Ok(read_json(&workdir.join(STATE_FILE))?.unwrap_or_else(Self::new))
    }

    /// Writes the state atomically, bumping its serial.
    pub fn save(&mut self, workdir: &Path) -> Result<()> {
        self.serial += 1;
        write_json_atomic(&workdir.join(STATE_FILE), self)
    }

    /// Every managed resource instance, in state order.
    pub fn instances(&self) -> Vec<Instance> {
        self.resources
            .iter()
            .filter(|r| r.mode == "managed")
            .flat_map(|r| {
                r.instances.iter().map(|i| Instance {
                    rtype: r.rtype.clone(),
                    name: r.name.clone(),
                    index: i.index_key,
                    attributes: i.attributes.clone(),
                })
            })
            .collect()
    }

    /// Replaces the resources with `instances`, grouped by resource in first-seen order.
    pub fn set_instances(&mut self, instances: &[Instance]) {
        let mut resources: Vec<StateResource> = Vec::new();
        for instance in instances {
            let state_instance = StateInstance {
                index_key: instance.index,
                schema_version: 0,
                attributes: instance.attributes.clone(),
                sensitive_attributes: Vec::new(),
            };
            match resources
                .iter_mut()
                .find(|r| r.rtype == instance.rtype && r.name == instance.name)
            {
                Some(resource) => resource.instances.push(state_instance),
                None => resources.push(StateResource {
                    mode: "managed".to_owned(),
                    rtype: instance.rtype.clone(),
                    name: instance.name.clone(),
                    provider: provider_of(&instance.rtype),
                    instances: vec![state_instance],
                }),
            }
        }
        self.resources = resources;
    }
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

fn provider_of(rtype: &str) -> String {
    let provider = rtype.split_once('_').map_or(rtype, |(p, _)| p);
    format!("provider[\"registry.terraform.io/hashicorp/{provider}\"]")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Create,
    Update,
    Delete,
}

/// A change to one instance: for create and update the desired instance, for delete the current.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub kind: ActionKind,
    pub instance: Instance,
}

/// What an apply must do to turn `current` into `desired`: creates and updates in desired order,
/// then deletes of instances no longer declared, last-created first.
pub fn diff(current: &[Instance], desired: &[Instance]) -> Vec<Action> {
    let mut actions = Vec::new();
    for want in desired {
        match current.iter().find(|have| have.address() == want.address()) {
            None => actions.push(Action {
                kind: ActionKind::Create,
                instance: want.clone(),
            }),
            Some(have) if have.attributes != want.attributes => actions.push(Action {
                kind: ActionKind::Update,
                instance: want.clone(),
            }),
            Some(_) => {}
        }
    }
    for have in current.iter().rev() {
        if !desired.iter().any(|want| want.address() == have.address()) {
            actions.push(Action {
                kind: ActionKind::Delete,
                instance: have.clone(),
            });
        }
    }
    actions
}

/// What a destroy does: delete everything, last-created first.
pub fn destroy_all(current: &[Instance]) -> Vec<Action> {
    current
        .iter()
        .rev()
        .map(|instance| Action {
            kind: ActionKind::Delete,
            instance: instance.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(value: Value) -> Config {
        Config::parse(&value.to_string()).unwrap()
    }

    fn sample() -> Config {
        config(json!({
            "resource": {
                "aws_vpc": {"main": {"cidr_block": "10.0.0.0/16"}},
                "aws_subnet": {"private": {
                    "count": 2,
                    "vpc_id": "${aws_vpc.main.id}",
                    "cidr_block": "10.0.${count.index}.0/24",
                    "depends_on": ["aws_vpc.main"]
                }}
            },
            "output": {
                "vpc_id": {"value": "${aws_vpc.main.id}"},
                "cidr": {"value": "${aws_vpc.main.cidr_block}"},
                "region": {"value": "us-east-1"},
                "db_password_arn": {"value": "${aws_secretsmanager_secret.db.arn}", "sensitive": true},
                "subnets": {"value": ["${aws_subnet.private[0].id}", "${aws_subnet.private[1].id}"]}
            }
        }))
    }

    #[test]
    fn fake_ids_are_deterministic_per_workdir_and_address() {
        let a = Resolver::new("env_a", None);
        let b = Resolver::new("env_b", None);
        let id = a.fake_id("aws_vpc", "aws_vpc.main");
        assert_eq!(id, a.fake_id("aws_vpc", "aws_vpc.main"));
        assert_ne!(id, b.fake_id("aws_vpc", "aws_vpc.main"));
        assert_ne!(id, a.fake_id("aws_vpc", "aws_vpc.other"));
        assert!(id.starts_with("vpc-") && id.len() == 12, "{id}");
        assert!(
            a.fake_id("aws_eks_cluster", "aws_eks_cluster.main")
                .starts_with("eks-cluster-")
        );
    }

    #[test]
    fn desired_instances_expand_count_resolve_references_and_drop_meta_arguments() {
        let config = sample();
        let resolver = Resolver::new("env_x", Some(&config));
        let desired = config.desired(&resolver);
        let addresses: Vec<String> = desired.iter().map(Instance::address).collect();
        assert_eq!(
            addresses,
            [
                "aws_subnet.private[0]",
                "aws_subnet.private[1]",
                "aws_vpc.main"
            ]
        );
        let vpc_id = resolver.fake_id("aws_vpc", "aws_vpc.main");
        assert_eq!(desired[2].id(), vpc_id);
        assert_eq!(desired[1].attributes["vpc_id"], json!(vpc_id));
        assert_eq!(desired[1].attributes["cidr_block"], json!("10.0.1.0/24"));
        assert!(desired[0].attributes.get("count").is_none());
        assert!(desired[0].attributes.get("depends_on").is_none());
    }

    #[test]
    fn outputs_resolve_literals_references_and_sensitivity() {
        let config = sample();
        let resolver = Resolver::new("env_x", Some(&config));
        let outputs = config.outputs(&resolver);
        assert_eq!(
            outputs["vpc_id"].value,
            json!(resolver.fake_id("aws_vpc", "aws_vpc.main"))
        );
        assert_eq!(outputs["cidr"].value, json!("10.0.0.0/16"));
        assert_eq!(outputs["region"].value, json!("us-east-1"));
        assert_eq!(outputs["region"].kind, json!("string"));
        assert!(!outputs["region"].sensitive);
        assert!(outputs["db_password_arn"].sensitive);
        let arn = outputs["db_password_arn"].value.as_str().unwrap();
        assert!(arn.starts_with("arn:aws:secretsmanager:"), "{arn}");
        assert_eq!(
            outputs["subnets"].value[1],
            json!(resolver.fake_id("aws_subnet", "aws_subnet.private[1]"))
        );
        assert_eq!(
            outputs["subnets"].kind,
            json!(["tuple", ["string", "string"]])
        );
    }

    #[test]
    fn templates_splice_text_and_keep_escapes_literal() {
        let resolver = Resolver::new("env_x", None);
        let vpc = resolver.fake_id("aws_vpc", "aws_vpc.main");
        assert_eq!(
            resolver.resolve(&json!("id=${aws_vpc.main.id}!"), None),
            json!(format!("id={vpc}!"))
        );
        assert_eq!(
            resolver.resolve(&json!("$${literal}"), None),
            json!("${literal}")
        );
        assert_eq!(
            resolver.resolve(&json!("no interpolation"), None),
            json!("no interpolation")
        );
        let var = resolver.resolve(&json!("${var.region}"), None);
        assert!(var.as_str().unwrap().starts_with("sandbox-"));
        assert_eq!(var, resolver.resolve(&json!("${var.region}"), None));
    }

    #[test]
    fn self_referencing_attributes_stop_at_the_depth_limit() {
        let config = config(json!({"resource": {"aws_x": {"a": {"v": "${aws_x.a.v}"}}}}));
        let resolver = Resolver::new("env", Some(&config));
        let value = resolver.resolve(&json!("${aws_x.a.v}"), None);
        assert!(value.as_str().unwrap().starts_with("sandbox-"));
    }

    #[test]
    fn invalid_configuration_is_reported() {
        assert!(Config::parse("{not json").is_err());
        assert!(Config::parse("[]").is_err());
        assert!(Config::parse("{}").is_ok());
    }

    #[test]
    fn state_round_trips_instances_grouped_by_resource() {
        let config = sample();
        let resolver = Resolver::new("env_x", Some(&config));
        let desired = config.desired(&resolver);
        let mut state = State::new();
        state.set_instances(&desired);
        assert_eq!(state.resources.len(), 2);
        assert_eq!(state.resources[0].instances.len(), 2);
        assert_eq!(state.instances(), desired);
        let text = serde_json::to_string(&state).unwrap();
        let back: State = serde_json::from_str(&text).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.version, 4);
    }

    #[test]
    fn diff_creates_updates_and_deletes() {
        let config = sample();
        let resolver = Resolver::new("env_x", Some(&config));
        let desired = config.desired(&resolver);
        assert!(diff(&desired, &desired).is_empty());
        assert!(
            diff(&[], &desired)
                .iter()
                .all(|a| a.kind == ActionKind::Create)
        );

        let mut changed = desired.clone();
        changed[2].attributes["cidr_block"] = json!("10.1.0.0/16");
        changed.remove(0);
        let actions = diff(&desired, &changed);
        let summary: Vec<(ActionKind, String)> = actions
            .iter()
            .map(|a| (a.kind, a.instance.address()))
            .collect();
        assert_eq!(
            summary,
            [
                (ActionKind::Update, "aws_vpc.main".to_owned()),
                (ActionKind::Delete, "aws_subnet.private[0]".to_owned()),
            ]
        );
        let destroy: Vec<String> = destroy_all(&desired)
            .iter()
            .map(|a| a.instance.address())
            .collect();
        assert_eq!(
            destroy,
            [
                "aws_vpc.main",
                "aws_subnet.private[1]",
                "aws_subnet.private[0]"
            ]
        );
    }
}
