//! The customer's external id, opened just before the preflight: a job carries only the marker
//! that it is sealed apart (`domain::spec::ExternalIdRef::Sealed`), and the value is in the
//! API's secrets bucket `<P>_SECRETS` under the environment's id, sealed with the key the API
//! and the executors share (`PROVISIONER_SECRETS_KEY`, `domain::sealed`). Jobs recorded before
//! that carry the value itself, used as it is. The opened value stays in memory for the step.

use async_nats::jetstream::{self, kv};
use domain::sealed::{self, OpenError, SealingKey};
use domain::spec::{CustomerRole, ExternalIdRef};
use domain::wire::Subjects;
use tokio::sync::OnceCell;

/// Why a job's external id could not be had. Never carries the value.
#[derive(Debug, thiserror::Error)]
pub enum ExternalIdError {
    #[error(
        "the job's external id is sealed, and this executor has no key to open it: set \
         PROVISIONER_SECRETS_KEY to the API's"
    )]
    NoKey,
    #[error("the secrets bucket {bucket} could not be read: {detail}")]
    Unavailable { bucket: String, detail: String },
    #[error(
        "no sealed external id is kept for this environment (it was removed when the \
         environment was destroyed, or never kept)"
    )]
    Missing,
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("the job's external id is redacted, which only a read model shows: a defect")]
    Redacted,
}

/// Opens the sealed external ids of jobs, reading the secrets bucket on a NATS connection of
/// its own, made on first use (an executor that runs no `aws` job makes none).
#[derive(Debug)]
pub struct ExternalIds {
    nats_url: String,
    subjects: Subjects,
    key: Option<SealingKey>,
    store: OnceCell<kv::Store>,
}

impl ExternalIds {
    pub fn new(nats_url: impl Into<String>, subjects: Subjects, key: Option<SealingKey>) -> Self {
        ExternalIds {
            nats_url: nats_url.into(),
            subjects,
            key,
            store: OnceCell::new(),
        }
    }

    /// `role` with its external id's value in place of the marker (as it is when the job
    /// carries the value itself, or none).
    pub async fn open(
        &self,
        environment_id: &str,
        role: &CustomerRole,
    ) -> Result<CustomerRole, ExternalIdError> {
        let external_id = match &role.external_id {
            None | Some(ExternalIdRef::Plain(_)) => return Ok(role.clone()),
            Some(ExternalIdRef::Redacted) => return Err(ExternalIdError::Redacted),
            Some(ExternalIdRef::Sealed) => {
                let key = self.key.as_ref().ok_or(ExternalIdError::NoKey)?;
                let sealed = self
                    .bucket()
                    .await?
                    .get(environment_id)
                    .await
                    .map_err(|e| self.unavailable(e))?
                    .ok_or(ExternalIdError::Missing)?;
                sealed::open(key, environment_id, &sealed)?
            }
        };
        Ok(CustomerRole {
            external_id: Some(ExternalIdRef::Plain(external_id)),
            ..role.clone()
        })
    }

    async fn bucket(&self) -> Result<&kv::Store, ExternalIdError> {
        self.store
            .get_or_try_init(|| async {
                let client = async_nats::ConnectOptions::new()
                    .name("provisioner-executor-secrets")
                    .connect(&self.nats_url)
                    .await
                    .map_err(|e| self.unavailable(e))?;
                jetstream::new(client)
                    .get_key_value(self.subjects.secrets_bucket())
                    .await
                    .map_err(|e| self.unavailable(e))
            })
            .await
    }

    fn unavailable(&self, error: impl std::fmt::Display) -> ExternalIdError {
        ExternalIdError::Unavailable {
            bucket: self.subjects.secrets_bucket(),
            detail: error.to_string(),
        }
    }
}
