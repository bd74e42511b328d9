//! Reads the submitted text into a [`serde_json::Value`], within bounds.
//!
//! Both formats go through [`Bounded`], which caps nesting depth and node count while the value
//! is built and rejects duplicate keys, so YAML and JSON behave the same. YAML is additionally
//! bounded by the serde-saphyr [`Budget`](serde_saphyr::Budget) and alias-replay limits, which
//! stop alias bombs ("billion laughs") before they expand.

use super::{ConfigError, Format};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::Cell;
use std::fmt;

/// Largest document accepted, in bytes; also the API's request body limit (one limit, answered
/// 413). A MetaConfig is a few hundred bytes: this leaves ample room for comments while keeping
/// what one request can make the service buffer and parse small.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Deepest nesting of mappings and lists accepted (the top-level mapping is level 1).
pub const MAX_DEPTH: usize = 32;
/// Most values (mappings, lists and scalars, aliases expanded) a document may hold.
pub const MAX_NODES: usize = 10_000;

/// Parses `document` into a value; an empty document becomes [`Value::Null`].
pub(super) fn load(document: &str, format: Format) -> Result<Value, ConfigError> {
    if document.len() > MAX_DOCUMENT_BYTES {
        return Err(ConfigError::TooLarge {
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    match format {
        Format::Yaml => load_yaml(document),
        Format::Json => load_json(document),
    }
}

fn load_json(document: &str) -> Result<Value, ConfigError> {
    let document = document.strip_prefix('\u{feff}').unwrap_or(document);
    if document.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str::<Bounded>(document)
        .map(|bounded| bounded.0)
        .map_err(|err| ConfigError::Syntax(format!("invalid json: {err}")))
}

fn load_yaml(document: &str) -> Result<Value, ConfigError> {
    serde_saphyr::from_str_with_options::<Bounded>(document, yaml_options())
        .map(|bounded| bounded.0)
        .map_err(|err| ConfigError::Syntax(format!("invalid yaml: {}", yaml_message(&err))))
}

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_DEPTH,
            max_nodes: MAX_NODES,
            max_events: 4 * MAX_NODES,
            max_documents: 1,
            max_aliases: 100,
            max_anchors: 100,
            max_merge_keys: 100,
            max_recorded_anchor_events: MAX_NODES,
            max_total_scalar_bytes: MAX_DOCUMENT_BYTES,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_NODES,
            max_replay_stack_depth: MAX_DEPTH,
        },
        // Duplicates reach `Bounded`, which rejects them with the same message as for JSON.
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        // `yes`/`on` stay strings, so a boolean field reports a type error instead of guessing.
        strict_booleans: true,
        reject_unsupported_tags: true,
        // `.inf`/`.nan` become strings, so a number field reports a type error with its path.
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::AsString,
        with_snippet: false,
    }
}

/// A one-line message for a YAML error, naming the limit when a budget was breached.
fn yaml_message(err: &serde_saphyr::Error) -> String {
    use serde_saphyr::Error;
    use serde_saphyr::budget::BudgetBreach;

    let mut cause = err;
    while let Error::AliasError { error, .. } | Error::WithSnippet { error, .. } = cause {
        cause = error;
    }
    let expansion = || format!("aliases expand to more than {MAX_NODES} values");
    let limit = match cause {
        Error::Budget { breach, .. } => match breach {
            BudgetBreach::Depth { .. } => format!("nesting is deeper than {MAX_DEPTH} levels"),
            BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => {
                format!("the document has more than {MAX_NODES} values")
            }
            BudgetBreach::Documents { .. } => {
                "only one yaml document is allowed (remove the extra `---`)".to_owned()
            }
            BudgetBreach::RecordedAnchorEvents { .. }
            | BudgetBreach::RecordedAnchorBytes { .. } => expansion(),
            BudgetBreach::Aliases { .. }
            | BudgetBreach::Anchors { .. }
            | BudgetBreach::AliasAnchorRatio { .. }
            | BudgetBreach::MergeKeys { .. } => {
                "too many anchors, aliases or merge keys".to_owned()
            }
            _ => "the document is too large or too complex".to_owned(),
        },
        Error::AliasReplayLimitExceeded { .. }
        | Error::AliasReplayStackDepthExceeded { .. }
        | Error::AliasReplayCounterOverflow { .. } => expansion(),
        // Worded for users: no Rust types or parser settings in the message.
        _ => return err.render_with_formatter(&serde_saphyr::UserMessageFormatter),
    };
    match err.location() {
        Some(at) => format!("{limit} at line {}, column {}", at.line(), at.column()),
        None => limit,
    }
}

/// A value read with [`MAX_DEPTH`] and [`MAX_NODES`] enforced and duplicate keys rejected.
struct Bounded(Value);

impl<'de> Deserialize<'de> for Bounded {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let nodes = Cell::new(0);
        let seed = ValueSeed {
            depth: 0,
            nodes: &nodes,
        };
        seed.deserialize(deserializer).map(Bounded)
    }
}

/// Builds one value at `depth`, counting it against the document's node budget.
#[derive(Clone, Copy)]
struct ValueSeed<'n> {
    depth: usize,
    nodes: &'n Cell<usize>,
}

impl ValueSeed<'_> {
    /// The seed for the members of a mapping or list at this level.
    fn nested<E: de::Error>(self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(E::custom(format_args!(
                "nesting is deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(Self { depth, ..self })
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        let count = self.nodes.get() + 1;
        if count > MAX_NODES {
            return Err(de::Error::custom(format_args!(
                "the document has more than {MAX_NODES} values"
            )));
        }
        self.nodes.set(count);
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a mapping, list, string, number, boolean or null")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| E::custom("numbers must be finite"))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let member = self.nested()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(member)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let member = self.nested()?;
        let mut map = Map::new();
        while let Some(key) = access.next_key_seed(KeySeed)? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {}",
                    crate::text::shown(&key)
                )));
            }
            let value = access.next_value_seed(member)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

/// A mapping key: a field name. YAML also allows numbers and booleans as keys (they become
/// their text, and are then reported as unknown fields); null, lists and mappings are refused in
/// words a user can act on.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = String;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<String, E> {
        Ok(value.to_string())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<String, E> {
        Ok(crate::text::number(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<String, E> {
        Ok(value.to_owned())
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<String, E> {
        Ok(value)
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Err(E::custom(NULL_KEY))
    }

    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Err(E::custom(NULL_KEY))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _seq: A) -> Result<String, A::Error> {
        Err(de::Error::custom(
            "a key is a list: keys must be field names",
        ))
    }

    fn visit_map<A: MapAccess<'de>>(self, _map: A) -> Result<String, A::Error> {
        Err(de::Error::custom(
            "a key is a mapping: keys must be field names",
        ))
    }
}

const NULL_KEY: &str = "a key is empty or null (`~`): keys must be field names";
