//! What an operator (an admin) gives the runbook's operations: a reason for a state declared by
//! hand, and the id of a Terraform state lock to force open. Each is validated and bounded once,
//! here, before it can reach an event; decoding stored events never re-checks (events are kept
//! forever).

use crate::text::shown;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The most characters of an operator's reason.
pub const MAX_REASON_CHARS: usize = 1000;
/// The most characters of a state lock id (Terraform's are UUIDs, 36 characters).
pub const MAX_LOCK_ID_CHARS: usize = 64;

/// Why an operator's value was refused; the message names the field and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OperatorInputError {
    #[error("reason must not be empty")]
    EmptyReason,
    #[error("reason is longer than {MAX_REASON_CHARS} characters")]
    ReasonTooLong,
    #[error("reason must not contain control characters (line breaks, tabs, escapes)")]
    ReasonControlCharacters,
    #[error(
        "lock_id {} must be 1-{MAX_LOCK_ID_CHARS} characters of A-Z, a-z, 0-9 and '-' \
         (the ID terraform printed under \"Lock Info\")",
        shown(.0)
    )]
    InvalidLockId(String),
}

impl OperatorInputError {
    /// The request field the error is about (`reason`, `lock_id`).
    pub fn field(&self) -> &'static str {
        match self {
            OperatorInputError::InvalidLockId(_) => "lock_id",
            _ => "reason",
        }
    }
}

/// An operator's reason: 1-1000 characters, no control characters, surrounding spaces trimmed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Reason(String);

impl Reason {
    pub fn parse(text: &str) -> Result<Self, OperatorInputError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(OperatorInputError::EmptyReason);
        }
        if text.chars().count() > MAX_REASON_CHARS {
            return Err(OperatorInputError::ReasonTooLong);
        }
        if text.chars().any(char::is_control) {
            return Err(OperatorInputError::ReasonControlCharacters);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a Terraform state lock: 1-64 characters of `[A-Za-z0-9-]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LockId(String);

impl LockId {
    pub fn parse(text: &str) -> Result<Self, OperatorInputError> {
        let valid = !text.is_empty()
            && text.chars().count() <= MAX_LOCK_ID_CHARS
            && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(OperatorInputError::InvalidLockId(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An operator's permission for the next run of a step to force open exactly this state lock
/// when it meets it: kept on the environment until a step starts, then carried by its job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizedUnlock {
    pub lock_id: LockId,
    /// The actor who authorised it (`token:admin`).
    pub authorized_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_trimmed_and_bounded() {
        assert_eq!(Reason::parse("  gone  ").unwrap().as_str(), "gone");
        assert_eq!(Reason::parse(" "), Err(OperatorInputError::EmptyReason));
        assert!(Reason::parse(&"é".repeat(MAX_REASON_CHARS)).is_ok());
        assert_eq!(
            Reason::parse(&"x".repeat(MAX_REASON_CHARS + 1)),
            Err(OperatorInputError::ReasonTooLong)
        );
        assert_eq!(
            Reason::parse("a\nb"),
            Err(OperatorInputError::ReasonControlCharacters)
        );
        assert_eq!(
            Reason::parse("a\u{1b}[31m"),
            Err(OperatorInputError::ReasonControlCharacters)
        );
    }

    #[test]
    fn a_lock_id_is_a_short_word_of_letters_digits_and_dashes() {
        let uuid = "4c1a1d5e-0b7a-4f4e-9d7c-2b8e6f0a1c3d";
        assert_eq!(LockId::parse(uuid).unwrap().as_str(), uuid);
        assert!(LockId::parse(&"a".repeat(MAX_LOCK_ID_CHARS)).is_ok());
        for bad in [
            "",
            "a b",
            "a;rm",
            "ü",
            "a_b",
            &"a".repeat(MAX_LOCK_ID_CHARS + 1),
        ] {
            let error = LockId::parse(bad).unwrap_err();
            assert!(error.to_string().starts_with("lock_id"), "{error}");
        }
    }
}
