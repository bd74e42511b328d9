//! MetaConfig: the YAML or JSON a user submits, turned into a validated [`EnvironmentSpec`].
//!
//! Parsing collects *every* field error with its path (`cluster.profile`), rejects unknown
//! fields and bounds document size and nesting, so a user fixes a config in one round trip.

use crate::spec::EnvironmentSpec;
use serde::Serialize;

mod cloud;
mod document;
mod rules;
mod schema;
mod walker;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use document::{MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_NODES};
pub use rules::{AWS_REGIONS, SANDBOX_REGION, environment_name};

/// The format of a submitted document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `cluster.profile` or `data.postgres.size`; empty for the
    /// document itself.
    pub path: String,
    pub message: String,
}

/// Why a document was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Longer than [`MAX_DOCUMENT_BYTES`].
    #[error("the document is larger than {} KiB", .limit / 1024)]
    TooLarge { limit: usize },
    /// Not well-formed YAML/JSON, or over the nesting/value-count bounds.
    #[error("the document could not be parsed: {0}")]
    Syntax(String),
    /// Well-formed, but fields are missing, unknown or invalid.
    #[error("{} field(s) are invalid", .0.len())]
    Invalid(Vec<FieldError>),
}

/// Parses and validates a MetaConfig document.
///
/// Optional fields take their defaults when absent or `null`: `cluster.profile` small, data
/// services small without multi-AZ/HA, `beta9.domain` `<name>.beta9.local`, GPU workers off, the
/// sandbox region `sandbox-local` and no simulated faults.
pub fn parse(document: &str, format: Format) -> Result<EnvironmentSpec, ConfigError> {
    let value = document::load(document, format)?;
    schema::environment_spec(&value).map_err(ConfigError::Invalid)
}
