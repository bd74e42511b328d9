//! Identifiers: `env_<ulid>` for environments, `op_<ulid>` for operations.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use ulid::Ulid;

macro_rules! prefixed_id {
    ($name:ident, $prefix:literal, $what:literal) => {
        #[doc = concat!("The id of ", $what, ": `", $prefix, "_<ulid>`.")]
        #[derive(
            Clone,
            Debug,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            Serialize,
            Deserialize,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A new id, unique and roughly time-ordered.
            pub fn generate() -> Self {
                Self(format!(
                    "{}_{}",
                    $prefix,
                    Ulid::new().to_string().to_lowercase()
                ))
            }

            /// Parses an id, rejecting anything that is not `prefix_<ulid>`.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                let rest = s
                    .strip_prefix(concat!($prefix, "_"))
                    .ok_or(InvalidId($what))?;
                Ulid::from_str(rest).map_err(|_| InvalidId($what))?;
                Ok(Self(s.to_ascii_lowercase()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

prefixed_id!(EnvironmentId, "env", "an environment");
prefixed_id!(OperationId, "op", "an operation");

/// A string that is not a well-formed id of the expected kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id of {0}")]
pub struct InvalidId(&'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip_through_parse() {
        let id = EnvironmentId::generate();
        assert!(id.as_str().starts_with("env_"));
        assert_eq!(EnvironmentId::parse(id.as_str()).unwrap(), id);
    }

    #[test]
    fn parse_rejects_wrong_prefix_and_garbage() {
        let op = OperationId::generate();
        assert!(EnvironmentId::parse(op.as_str()).is_err());
        assert!(EnvironmentId::parse("env_not-a-ulid").is_err());
        assert!(EnvironmentId::parse("").is_err());
    }
}
