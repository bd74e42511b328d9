//! The external id sealed apart from the events (issue 10): the API seals the value it parsed
//! with ChaCha20-Poly1305 under the deployment's key (`PROVISIONER_SECRETS_KEY`, which the API
//! and the executors share), keeps the sealed bytes in the secrets bucket under the
//! environment's id, and records only [`crate::spec::ExternalIdRef::Sealed`]; an executor opens
//! them just before the preflight. The environment's id is the associated data, so a sealed
//! value moved to another environment's key does not open.
//!
//! Pure (no I/O): the caller supplies the nonce, fresh and random for every seal.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::spec::ExternalId;

/// The key's length in bytes.
pub const KEY_LEN: usize = 32;
/// The nonce's length in bytes.
pub const SEAL_NONCE_LEN: usize = NONCE_LEN;
/// The first byte of a sealed value: the format (algorithm, layout), so a later one can differ.
const FORMAT: u8 = 1;

/// The deployment's secrets key. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealingKey([u8; KEY_LEN]);

impl SealingKey {
    /// A key of exactly [`KEY_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyLengthError> {
        bytes
            .try_into()
            .map(SealingKey)
            .map_err(|_| KeyLengthError { found: bytes.len() })
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &self.0).expect("a 32-byte ChaCha20-Poly1305 key"),
        )
    }
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the secrets key must be {KEY_LEN} bytes, not {found}")]
pub struct KeyLengthError {
    pub found: usize,
}

/// Why a sealed value did not open. Never carries the value.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the sealed external id is not in a format this build knows")]
    Format,
    /// Another key sealed it, or for another environment, or it was altered.
    #[error(
        "the sealed external id does not open with this key (is PROVISIONER_SECRETS_KEY the \
         API's?)"
    )]
    Key,
}

fn aad(environment_id: &str) -> String {
    format!("provisioner external id of {environment_id}")
}

/// `id` sealed for `environment_id`: the format byte, the nonce, the ciphertext and its tag.
pub fn seal(
    key: &SealingKey,
    nonce: [u8; SEAL_NONCE_LEN],
    environment_id: &str,
    id: &ExternalId,
) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(1 + SEAL_NONCE_LEN + id.expose().len() + 16);
    sealed.push(FORMAT);
    sealed.extend_from_slice(&nonce);
    let mut body = id.expose().as_bytes().to_vec();
    key.aead()
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(environment_id).as_bytes()),
            &mut body,
        )
        .expect("an external id is far below ChaCha20-Poly1305's limit");
    sealed.extend_from_slice(&body);
    sealed
}

/// The external id [`seal`] sealed for `environment_id`.
pub fn open(
    key: &SealingKey,
    environment_id: &str,
    sealed: &[u8],
) -> Result<ExternalId, OpenError> {
    let [FORMAT, rest @ ..] = sealed else {
        return Err(OpenError::Format);
    };
    let (nonce, body) = rest
        .split_first_chunk::<SEAL_NONCE_LEN>()
        .ok_or(OpenError::Format)?;
    let mut body = body.to_vec();
    let opened = key
        .aead()
        .open_in_place(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(aad(environment_id).as_bytes()),
            &mut body,
        )
        .map_err(|_| OpenError::Key)?;
    let value = String::from_utf8(opened.to_vec()).map_err(|_| OpenError::Format)?;
    Ok(ExternalId::from_opened(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SealingKey {
        SealingKey::from_bytes(&[byte; KEY_LEN]).unwrap()
    }

    fn id() -> ExternalId {
        ExternalId::from_opened("canary-ext-id".to_owned())
    }

    #[test]
    fn a_sealed_id_opens_with_its_key_for_its_environment_only() {
        let sealed = seal(&key(1), [7; SEAL_NONCE_LEN], "env_a", &id());
        assert!(!String::from_utf8_lossy(&sealed).contains("canary-ext-id"));
        assert_eq!(open(&key(1), "env_a", &sealed), Ok(id()));
        assert_eq!(open(&key(2), "env_a", &sealed), Err(OpenError::Key));
        assert_eq!(open(&key(1), "env_b", &sealed), Err(OpenError::Key));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(open(&key(1), "env_a", &altered), Err(OpenError::Key));
        assert_eq!(open(&key(1), "env_a", &[]), Err(OpenError::Format));
        assert_eq!(open(&key(1), "env_a", &[9, 1, 2]), Err(OpenError::Format));
        assert_eq!(open(&key(1), "env_a", &sealed[..5]), Err(OpenError::Format));
    }

    #[test]
    fn the_key_has_exactly_32_bytes_and_never_shows() {
        assert_eq!(
            SealingKey::from_bytes(&[0; 31]),
            Err(KeyLengthError { found: 31 })
        );
        assert_eq!(format!("{:?}", key(0x41)), "SealingKey(<redacted>)");
    }
}
