//! The external ids kept apart from the events (issue 10): each sealed under the deployment's
//! key (`domain::sealed`) in the JetStream key-value bucket `<P>_SECRETS`, keyed by environment
//! id, where an executor (which has no database) reads it just before its preflight. The API
//! owns the bucket: it creates it, writes a value before the environment's first event commits,
//! and removes it once the environment is final (destroyed, or marked so).

use async_nats::jetstream::{self, kv, stream::StorageType};
use domain::sealed::{self, SEAL_NONCE_LEN, SealingKey};
use domain::spec::ExternalId;
use domain::wire::Subjects;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the secrets bucket {bucket} could not be created or opened: {detail}")]
    Bucket { bucket: String, detail: String },
    #[error("the sealed external id of {environment_id} could not be written: {detail}")]
    Write {
        environment_id: String,
        detail: String,
    },
    #[error("the sealed external id of {environment_id} could not be removed: {detail}")]
    Remove {
        environment_id: String,
        detail: String,
    },
}

/// The sealed external ids, and the key that seals them.
#[derive(Clone)]
pub struct SealedExternalIds {
    store: kv::Store,
    key: SealingKey,
}

impl std::fmt::Debug for SealedExternalIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedExternalIds").finish_non_exhaustive()
    }
}

/// Opens (or creates) the secrets bucket with `replicas` copies. Only its own latest value is
/// kept per environment.
pub async fn ensure_bucket(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
) -> Result<kv::Store, SecretsError> {
    let bucket = subjects.secrets_bucket();
    let failed = |detail: String| SecretsError::Bucket {
        bucket: bucket.clone(),
        detail,
    };
    let store = match js.get_key_value(&bucket).await {
        Ok(store) => store,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: bucket.clone(),
                description: "each environment's external id, sealed (domain::sealed)".to_owned(),
                history: 1,
                storage: StorageType::File,
                num_replicas: replicas,
                ..kv::Config::default()
            })
            .await
            .map_err(|e| failed(e.to_string()))?,
    };
    let status = store.status().await.map_err(|e| failed(e.to_string()))?;
    if status.info.config.num_replicas != replicas {
        let mut config = status.info.config;
        config.num_replicas = replicas;
        js.update_stream(config)
            .await
            .map_err(|e| failed(e.to_string()))?;
    }
    Ok(store)
}

impl SealedExternalIds {
    pub fn new(store: kv::Store, key: SealingKey) -> Self {
        SealedExternalIds { store, key }
    }

    /// Seals `id` for `environment_id` (a fresh random nonce) and keeps it.
    pub async fn keep(&self, environment_id: &str, id: &ExternalId) -> Result<(), SecretsError> {
        let nonce: [u8; SEAL_NONCE_LEN] = rand::random();
        let sealed = sealed::seal(&self.key, nonce, environment_id, id);
        self.store
            .put(environment_id, sealed.into())
            .await
            .map(|_| ())
            .map_err(|e| SecretsError::Write {
                environment_id: environment_id.to_owned(),
                detail: e.to_string(),
            })
    }

    /// Removes what is kept for `environment_id`, every revision of it (nothing there is fine).
    pub async fn forget(&self, environment_id: &str) -> Result<(), SecretsError> {
        forget(&self.store, environment_id).await
    }
}

/// Removes every revision of `environment_id`'s sealed value from `store`.
pub async fn forget(store: &kv::Store, environment_id: &str) -> Result<(), SecretsError> {
    store
        .purge(environment_id)
        .await
        .map_err(|e| SecretsError::Remove {
            environment_id: environment_id.to_owned(),
            detail: e.to_string(),
        })
}
