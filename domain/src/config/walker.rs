//! Walks a parsed document field by field, collecting every error with its dotted path.
//!
//! An [`Object`] hands out the fields of one mapping and remembers which names were asked for;
//! [`Object::finish`] then reports every other key as unknown. Readers return `None` exactly when
//! they have recorded an error, so callers combine results with `?` after all fields are read.

use super::FieldError;
use crate::text::{self, shown};
use serde_json::{Map, Value};
use std::ops::RangeInclusive;

/// The errors found so far, in the order the fields were read.
#[derive(Debug, Default)]
pub(super) struct Errors(Vec<FieldError>);

impl Errors {
    pub(super) fn add(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn into_vec(self) -> Vec<FieldError> {
        self.0
    }
}

/// One present, non-null value and its path.
#[derive(Clone, Debug)]
pub(super) struct Field<'a> {
    path: String,
    value: &'a Value,
}

impl<'a> Field<'a> {
    pub(super) fn value(&self) -> &'a Value {
        self.value
    }

    /// Records `message` against this field.
    pub(super) fn reject(&self, errors: &mut Errors, message: impl Into<String>) {
        errors.add(&self.path, message);
    }

    fn expected(&self, errors: &mut Errors, what: &str) {
        self.reject(
            errors,
            format!("expected {what}, found {}", describe(self.value)),
        );
    }

    pub(super) fn string(&self, errors: &mut Errors) -> Option<&'a str> {
        match self.value {
            Value::String(text) => Some(text),
            _ => {
                self.expected(errors, "a string");
                None
            }
        }
    }

    /// A string accepted by `rule`, which explains what is wrong otherwise.
    pub(super) fn validated(
        &self,
        errors: &mut Errors,
        rule: impl FnOnce(&str) -> Result<(), String>,
    ) -> Option<&'a str> {
        let text = self.string(errors)?;
        match rule(text) {
            Ok(()) => Some(text),
            Err(message) => {
                self.reject(errors, message);
                None
            }
        }
    }

    /// A real boolean; `"yes"` or `1` are type errors.
    pub(super) fn boolean(&self, errors: &mut Errors) -> Option<bool> {
        match self.value {
            Value::Bool(flag) => Some(*flag),
            _ => {
                self.expected(errors, "a boolean (true or false)");
                None
            }
        }
    }

    /// A finite number within `range`, fractions allowed.
    pub(super) fn number_in(&self, errors: &mut Errors, range: RangeInclusive<f64>) -> Option<f64> {
        let wanted = || {
            format!(
                "a number from {} to {}",
                text::number(*range.start()),
                text::number(*range.end())
            )
        };
        let number = self.number(errors, wanted)?;
        if range.contains(&number) {
            Some(number)
        } else {
            self.reject(
                errors,
                format!("must be {}, got {}", wanted(), text::number(number)),
            );
            None
        }
    }

    /// A whole number within `range`.
    pub(super) fn integer_in(
        &self,
        errors: &mut Errors,
        range: RangeInclusive<u32>,
    ) -> Option<u32> {
        let wanted = || format!("a whole number from {} to {}", range.start(), range.end());
        let number = self.number(errors, wanted)?;
        let exact = self.value.as_u64();
        let whole = exact.and_then(|n| u32::try_from(n).ok());
        match whole {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                let got = exact.map_or_else(|| text::number(number), |n| n.to_string());
                self.reject(errors, format!("must be {}, got {got}", wanted()));
                None
            }
        }
    }

    /// The value as a finite number. `wanted` describes the accepted numbers for the messages.
    /// YAML's `.nan` and `.inf` arrive as strings (so they keep their path) and are named as
    /// what they are.
    fn number(&self, errors: &mut Errors, wanted: impl Fn() -> String) -> Option<f64> {
        match self.value {
            Value::Number(number) => number.as_f64(),
            Value::String(word) if is_non_finite(word) => {
                self.reject(
                    errors,
                    format!("must be {}, got {word} (not a finite number)", wanted()),
                );
                None
            }
            _ => {
                self.expected(errors, &wanted());
                None
            }
        }
    }

    /// One of a fixed set of words, e.g. `small | medium | large`.
    pub(super) fn choice<T: Copy>(&self, errors: &mut Errors, options: &[(&str, T)]) -> Option<T> {
        let text = self.string(errors)?;
        let found = options.iter().find(|(word, _)| *word == text);
        if found.is_none() {
            let words: Vec<&str> = options.iter().map(|(word, _)| *word).collect();
            self.reject(
                errors,
                format!("must be one of {}, got {}", words.join(", "), shown(text)),
            );
        }
        found.map(|(_, value)| *value)
    }

    /// The fields of a mapping.
    pub(super) fn object(&self, errors: &mut Errors) -> Option<Object<'a>> {
        match self.value {
            Value::Object(map) => Some(Object::new(self.path.clone(), Some(map))),
            _ => {
                self.expected(errors, "a mapping");
                None
            }
        }
    }
}

/// The fields of one mapping, handed out by name; unknown names are reported by [`Self::finish`].
#[derive(Debug)]
pub(super) struct Object<'a> {
    path: String,
    /// `None` for an absent optional section: every field then takes its default.
    map: Option<&'a Map<String, Value>>,
    /// Names a user may write here, in the order they were asked for.
    allowed: Vec<&'static str>,
    /// Names that have been checked but are not listed as allowed (rejected with a reason).
    refused: Vec<&'static str>,
}

impl<'a> Object<'a> {
    fn new(path: String, map: Option<&'a Map<String, Value>>) -> Self {
        Self {
            path,
            map,
            allowed: Vec::new(),
            refused: Vec::new(),
        }
    }

    /// The top-level mapping of a document.
    pub(super) fn root(value: &'a Value, errors: &mut Errors) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Self::new(String::new(), Some(map))),
            Value::Null => {
                errors.add(
                    "",
                    "the document is empty: expected a mapping with at least name and cloud",
                );
                None
            }
            other => {
                errors.add(
                    "",
                    format!(
                        "the document must be a mapping of fields, found {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }
}

impl<'a> Object<'a> {
    fn child_path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn allow(&mut self, name: &'static str) {
        if !self.allowed.contains(&name) {
            self.allowed.push(name);
        }
    }

    /// Marks names as allowed without reading them, e.g. when the provider is unknown.
    pub(super) fn allow_all(&mut self, names: &[&'static str]) {
        for name in names {
            self.allow(name);
        }
    }

    /// The field, if present; `null` counts as absent.
    pub(super) fn optional(&mut self, name: &'static str) -> Option<Field<'a>> {
        self.allow(name);
        let value = self.map?.get(name).filter(|value| !value.is_null())?;
        Some(Field {
            path: self.child_path(name),
            value,
        })
    }

    /// The field, or an error naming it when it is absent or `null`.
    pub(super) fn required(
        &mut self,
        name: &'static str,
        errors: &mut Errors,
    ) -> Option<Field<'a>> {
        let field = self.optional(name);
        if field.is_none() {
            errors.add(&self.child_path(name), "missing required field");
        }
        field
    }

    /// The field read by `read`, or `default` when it is absent.
    pub(super) fn or_default<T>(
        &mut self,
        name: &'static str,
        default: T,
        read: impl FnOnce(Field<'a>) -> Option<T>,
    ) -> Option<T> {
        self.optional(name).map_or(Some(default), read)
    }

    /// An optional nested mapping; when absent, an empty one so its fields take their defaults.
    pub(super) fn section(
        &mut self,
        name: &'static str,
        errors: &mut Errors,
    ) -> Option<Object<'a>> {
        match self.optional(name) {
            Some(field) => field.object(errors),
            None => Some(Object::new(self.child_path(name), None)),
        }
    }

    /// A field that must not be given here; `reason` says where it belongs.
    pub(super) fn refuse(&mut self, name: &'static str, reason: &str, errors: &mut Errors) {
        if !self.refused.contains(&name) {
            self.refused.push(name);
        }
        let present = self
            .map
            .and_then(|map| map.get(name))
            .is_some_and(|value| !value.is_null());
        if present {
            errors.add(&self.child_path(name), reason);
        }
    }

    /// Reports every key that no reader asked for.
    pub(super) fn finish(self, errors: &mut Errors) {
        let Some(map) = self.map else { return };
        for key in map.keys() {
            let known =
                self.allowed.contains(&key.as_str()) || self.refused.contains(&key.as_str());
            if !known {
                let path = self.child_path(&shown_key(key));
                errors.add(
                    &path,
                    format!(
                        "unknown field, expected one of: {}",
                        self.allowed.join(", ")
                    ),
                );
            }
        }
    }
}

/// A key as it appears in a path: itself when it is a plain name, quoted and cut short otherwise.
fn shown_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain { key.to_owned() } else { shown(key) }
}

/// YAML 1.2's spellings of infinity and not-a-number.
fn is_non_finite(word: &str) -> bool {
    let unsigned = word.strip_prefix(['+', '-']).unwrap_or(word);
    matches!(unsigned, ".inf" | ".Inf" | ".INF") || matches!(word, ".nan" | ".NaN" | ".NAN")
}

/// The kind of a value, for "expected X, found Y" messages.
fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
