//! Who owns an environment and what a token may do: the tenant (every environment belongs to
//! one, fixed at request time) and the role of an API token. Validated and bounded once, here,
//! before either reaches an event; decoding stored events never re-checks.

use crate::text::shown;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The most characters of a tenant id (a DNS label's).
pub const MAX_TENANT_CHARS: usize = 63;

/// A tenant id: 1-63 characters of `a-z`, `0-9` and `-`, starting and ending with a letter or
/// digit (a DNS label, so it is safe in subjects, labels and paths). Environments requested
/// before tenants existed belong to [`TenantId::DEFAULT`].
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct TenantId(String);

/// Why a tenant id or a role was refused; the message names what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TenantInputError {
    #[error(
        "tenant {} must be 1-{MAX_TENANT_CHARS} characters of a-z, 0-9 and '-', starting and \
         ending with a letter or digit",
        shown(.0)
    )]
    InvalidTenant(String),
    #[error("role {} must be one of viewer, operator, admin", shown(.0))]
    InvalidRole(String),
}

impl TenantId {
    /// The tenant of environments requested before tenants existed, and of the bootstrap admin.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(text: &str) -> Result<Self, TenantInputError> {
        let valid = !text.is_empty()
            && text.len() <= MAX_TENANT_CHARS
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !text.starts_with('-')
            && !text.ends_with('-');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(TenantInputError::InvalidTenant(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TenantId {
    type Err = TenantInputError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// What a token may do. Ordered: each role may do everything the ones before it may.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads its tenant's environments: list, get, history, logs, outputs, plans, streams.
    Viewer,
    /// Also creates, retries and destroys its tenant's environments.
    Operator,
    /// Everything, across all tenants: the runbook's operations and the tokens.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TenantInputError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| TenantInputError::InvalidRole(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_dns_labels() {
        for good in ["default", "acme", "a", "team-7", &"x".repeat(63)] {
            assert!(TenantId::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-acme",
            "acme-",
            "Acme",
            "ac me",
            "ac_me",
            "acmé",
            "a/b",
            "a\0",
            &"x".repeat(64),
        ] {
            let error = TenantId::parse(bad).unwrap_err();
            assert!(error.to_string().starts_with("tenant "), "{error}");
        }
    }

    #[test]
    fn roles_are_ordered_and_parse_from_their_names() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert_eq!(
            "root".parse::<Role>().unwrap_err().to_string(),
            "role \"root\" must be one of viewer, operator, admin"
        );
    }

    #[test]
    fn an_environment_requested_before_tenants_belongs_to_the_default_tenant() {
        assert_eq!(TenantId::default().as_str(), "default");
    }
}
