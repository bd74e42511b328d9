//! The application service behind the REST commands: validation at the edge, idempotency,
//! retries on optimistic-concurrency conflicts, and the command metadata.

use crate::plans::Plan;
use crate::secrets::{SealedExternalIds, SecretsError};
use crate::store::{EventStore, ReadError, StoreError};
use crate::tenancy::TenantPolicy;
use domain::aggregate::{Command, DomainError, Environment, Status};
use domain::config::{self, ConfigError, FieldError, Format};
use domain::ids::EnvironmentId;
use domain::spec::{EnvironmentSpec, Provider};
use domain::tenant::TenantId;
use domain::wire::{Actor, EventMetadata, RequestId};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// How often a command is retried after losing an optimistic-concurrency race (e.g. with the
/// process manager) before the caller gets a 503.
const CONFLICT_ATTEMPTS: usize = 5;

/// Why the application service did not carry out a request. The HTTP layer maps each to a
/// status and an error code (`http::error`); the service knows nothing of HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No environment has this id.
    #[error("environment {} not found", domain::text::shown(.0.as_str()))]
    NotFound(EnvironmentId),
    /// The MetaConfig document is too large, does not parse, or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The document asks for a provider this provisioner does not run.
    #[error(
        "provider {} is not enabled on this provisioner (enabled: {}; see PROVISIONER_PROVIDERS)",
        .requested.as_str(),
        .enabled.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
    )]
    ProviderNotEnabled {
        requested: Provider,
        enabled: Vec<Provider>,
    },
    /// `aws` is enabled, but the executors have nowhere to keep its Terraform state.
    #[error(
        "provider aws is enabled but not configured: set PROVISIONER_TF_STATE_BUCKET (the S3 \
         bucket the executors keep Terraform state in) for the API and the executors"
    )]
    AwsStateBucketUnset,
    /// `aws` is enabled, but there is no key to seal its external ids apart from the events.
    #[error(
        "provider aws is enabled but not configured: set PROVISIONER_SECRETS_KEY (the key the \
         API and the executors seal and open external ids with) for the API and the executors"
    )]
    AwsSecretsKeyUnset,
    /// The sealed external id could not be kept or removed (NATS).
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The idempotency key was first used with another document.
    #[error(
        "idempotency key {} was already used with a different request body",
        domain::text::shown(.key)
    )]
    IdempotencyKeyReused { key: String },
    /// A concurrent first use of the key had not committed after two reads; retrying succeeds.
    #[error("idempotency key is being claimed concurrently")]
    IdempotencyKeyContended,
    /// The event store refused or failed the command.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A read of the database failed.
    #[error("database read failed")]
    Database(#[from] sqlx::Error),
    /// An admin's reason or lock id is invalid (422, naming the field).
    #[error(transparent)]
    Operator(#[from] domain::operator::OperatorInputError),
    /// An admin's force-unlock while the executor running the environment's step is alive.
    #[error(
        "the environment is {status}; force-unlock is refused: executor {executor} holds its \
         step lease (renewed {age_seconds}s ago), so the lock may be in use; wait for the step \
         to end, or cancel it (or mark it failed) first"
    )]
    ExecutorAlive {
        status: Status,
        executor: String,
        age_seconds: i64,
    },
    /// The executors' lease bucket could not be read.
    #[error("the executors' step leases could not be read: {0}")]
    LeasesUnavailable(String),
    /// A stored event or environment id does not decode: a defect or version skew.
    #[error("stored data does not decode")]
    Corrupt(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ServiceError {
    /// The field error of a provider this deployment does not provision, as the 422 names it
    /// (`cloud.provider`); `None` for any other error.
    pub fn provider_refusal(&self) -> Option<FieldError> {
        match self {
            ServiceError::ProviderNotEnabled { .. }
            | ServiceError::AwsStateBucketUnset
            | ServiceError::AwsSecretsKeyUnset => Some(FieldError {
                path: "cloud.provider".into(),
                message: self.to_string(),
            }),
            _ => None,
        }
    }
}

impl From<ReadError> for ServiceError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Database(error) => ServiceError::Database(error),
            error @ ReadError::Decode(_) => ServiceError::Corrupt(Box::new(error)),
        }
    }
}

/// Who is asking, and under which request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub actor: String,
    /// The caller's tenant: the owner of the environments it requests.
    pub tenant: TenantId,
    /// Whether it may see and act on every tenant's environments (an admin), or only its own.
    pub all_tenants: bool,
    pub request_id: String,
}

impl Caller {
    /// The metadata of this caller's command (correlated by the request). The event store gives
    /// every event its environment's tenant (migration 0008), whoever the caller is.
    pub fn metadata(&self) -> EventMetadata {
        EventMetadata::request(
            Actor::caller(self.actor.as_str()),
            Some(self.tenant.to_string()),
            RequestId::new(self.request_id.as_str()),
        )
    }

    /// Whether the caller may see an environment of `tenant`; one it may not is "not found".
    pub fn sees(&self, tenant: &TenantId) -> bool {
        self.all_tenants || &self.tenant == tenant
    }
}

/// A command's visible result.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub id: EnvironmentId,
    pub name: String,
    pub status: Status,
}

/// Which providers this deployment provisions.
#[derive(Clone, Debug)]
pub struct Providers {
    /// `PROVISIONER_PROVIDERS`.
    pub enabled: Vec<Provider>,
    /// `PROVISIONER_TF_STATE_BUCKET` is set: `aws` state has somewhere to live.
    pub tf_state_bucket_set: bool,
    /// Where external ids are sealed apart (`PROVISIONER_SECRETS_KEY` is set): without it `aws`
    /// is refused.
    pub external_ids: Option<SealedExternalIds>,
}

impl Providers {
    /// Whether an environment of `spec`'s provider can be provisioned here, and if not, why
    /// (the error's path is `cloud.provider`).
    pub fn check(&self, spec: &EnvironmentSpec) -> Result<(), ServiceError> {
        let requested = spec.cloud.provider();
        if !self.enabled.contains(&requested) {
            return Err(ServiceError::ProviderNotEnabled {
                requested,
                enabled: self.enabled.clone(),
            });
        }
        if requested == Provider::Aws && !self.tf_state_bucket_set {
            return Err(ServiceError::AwsStateBucketUnset);
        }
        if requested == Provider::Aws && self.external_ids.is_none() {
            return Err(ServiceError::AwsSecretsKeyUnset);
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct Environments {
    store: EventStore,
    providers: Providers,
    policy: TenantPolicy,
}

impl Environments {
    pub fn new(store: EventStore, providers: Providers, policy: TenantPolicy) -> Self {
        Self {
            store,
            providers,
            policy,
        }
    }

    pub fn store(&self) -> &EventStore {
        &self.store
    }

    fn pool(&self) -> &PgPool {
        self.store.pool()
    }

    /// Validates a MetaConfig document and requests the environment. With an idempotency key,
    /// the first request decides the environment id and repeats answer the same. An external
    /// id is sealed apart (under the environment's id) before the request is recorded, and the
    /// recorded spec says only that it is.
    #[tracing::instrument(skip_all, fields(request_id = %caller.request_id, env_id))]
    pub async fn create(
        &self,
        caller: &Caller,
        document: &str,
        format: Format,
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, ServiceError> {
        let mut spec = config::parse(document, format)?;
        self.providers.check(&spec)?;
        self.policy
            .check(&spec, Some(&caller.tenant))
            .map_err(|refused| ServiceError::Config(ConfigError::Invalid(vec![refused])))?;
        let id = match idempotency_key {
            Some(key) => self.claim_idempotency_key(caller, key, document).await?,
            None => EnvironmentId::generate(),
        };
        tracing::Span::current().record("env_id", id.as_str());
        let name = spec.name.to_string();
        let sealed = match spec.cloud.seal_external_id() {
            Some(external_id) => {
                let store = self
                    .providers
                    .external_ids
                    .as_ref()
                    .ok_or(ServiceError::AwsSecretsKeyUnset)?;
                store.keep(id.as_str(), &external_id).await?;
                Some(store)
            }
            None => None,
        };
        match self
            .store
            .request(&id, spec, caller.tenant.clone(), &caller.metadata())
            .await
        {
            Ok(()) => {
                tracing::info!(name, actor = caller.actor, "environment requested");
                Ok(Accepted {
                    id,
                    name,
                    status: Status::Queued,
                })
            }
            // The same idempotency key again: answer with the environment it created.
            Err(StoreError::Rejected(DomainError::AlreadyExists)) if idempotency_key.is_some() => {
                let status = self.visible(caller, &id).await?.status;
                // The same value was sealed again; a destroyed environment keeps none.
                if let (Some(store), Status::Destroyed) = (sealed, status) {
                    store.forget(id.as_str()).await?;
                }
                Ok(Accepted { id, name, status })
            }
            Err(error) => {
                // Nothing was recorded under a fresh id: keep nothing for it either. (With an
                // idempotency key the id may be an earlier request's, whose value this is too.)
                if let (Some(store), None) = (sealed, idempotency_key)
                    && let Err(forget) = store.forget(id.as_str()).await
                {
                    tracing::warn!(error = %forget, "a sealed external id was left behind");
                }
                Err(error.into())
            }
        }
    }

    /// Runs a user's command (`Retry`, `Destroy`) on an existing environment, retrying lost
    /// optimistic-concurrency races, and answers with the environment's status after it.
    /// `Retry` resumes a failed environment from its failed phase; `Destroy` cancels an in-flight
    /// step first.
    #[tracing::instrument(skip_all, fields(request_id = %caller.request_id, env_id = %id, command = command.name()))]
    pub async fn run(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
        command: Command,
    ) -> Result<Accepted, ServiceError> {
        // Another tenant's environment is refused as a missing one, before anything runs (an
        // admin sees them all; the command itself answers "not found" for a missing one).
        if !caller.all_tenants {
            self.visible(caller, id).await?;
        }
        let metadata = caller.metadata();
        let mut attempt = 1;
        loop {
            match self
                .store
                .execute(id.as_str(), command.clone(), &metadata)
                .await
            {
                Ok(()) => break,
                Err(StoreError::Conflict) if attempt < CONFLICT_ATTEMPTS => attempt += 1,
                Err(StoreError::Rejected(DomainError::NotFound)) => {
                    return Err(ServiceError::NotFound(id.clone()));
                }
                Err(error) => return Err(error.into()),
            }
        }
        let state = self.load(id).await?;
        tracing::info!(actor = caller.actor, status = %state.status, "command accepted");
        Ok(Accepted {
            id: id.clone(),
            name: state
                .requested
                .map(|r| r.spec.name.to_string())
                .unwrap_or_default(),
            status: state.status,
        })
    }

    /// The aggregate's current state, folded from its history (read-your-writes).
    pub async fn load(&self, id: &EnvironmentId) -> Result<Environment, ServiceError> {
        let history = self.store.history(id.as_str()).await?;
        if history.is_empty() {
            return Err(ServiceError::NotFound(id.clone()));
        }
        let mut state = Environment::default();
        for envelope in &history {
            let event = envelope
                .event()
                .map_err(|error| ServiceError::Corrupt(Box::new(error)))?;
            state.apply(&event);
        }
        Ok(state)
    }

    /// The aggregate's current state if `caller` may see it; "not found" otherwise, exactly as
    /// for an id nobody has.
    pub async fn visible(
        &self,
        caller: &Caller,
        id: &EnvironmentId,
    ) -> Result<Environment, ServiceError> {
        let state = self.load(id).await?;
        match &state.requested {
            Some(requested) if caller.sees(&requested.tenant) => Ok(state),
            _ => Err(ServiceError::NotFound(id.clone())),
        }
    }

    /// Validates a MetaConfig document exactly as [`Environments::create`] does and previews
    /// it; records nothing. A valid document whose provider cannot be provisioned here is still
    /// previewed, with the reason creating it would be refused.
    pub fn plan(
        &self,
        document: &str,
        format: Format,
        tenant: Option<&TenantId>,
    ) -> Result<Plan, ServiceError> {
        let spec = config::parse(document, format)?;
        let refusal = self
            .providers
            .check(&spec)
            .err()
            .and_then(|error| error.provider_refusal())
            .or_else(|| self.policy.check(&spec, tenant).err());
        Ok(Plan::new(&spec, refusal))
    }

    /// Binds an idempotency key to an environment id, or returns the id it is already bound to.
    /// A key reused with a different document is refused.
    async fn claim_idempotency_key(
        &self,
        caller: &Caller,
        key: &str,
        document: &str,
    ) -> Result<EnvironmentId, ServiceError> {
        let request_hash = format!("{:x}", Sha256::digest(document.as_bytes()));
        let fresh = EnvironmentId::generate();
        // A concurrent first use of the same key can commit between the INSERT and the SELECT
        // of one statement's snapshot; a second statement then sees it.
        let mut bound = None;
        for _ in 0..2 {
            bound = sqlx::query_as::<_, (String, String)>(
                "WITH inserted AS (
                     INSERT INTO idempotency_keys (principal, key, request_hash, environment_id)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (principal, key) DO NOTHING
                     RETURNING environment_id, request_hash)
                 SELECT environment_id, request_hash FROM inserted
                 UNION ALL
                 SELECT environment_id, request_hash FROM idempotency_keys
                  WHERE principal = $1 AND key = $2
                 LIMIT 1",
            )
            .bind(&caller.actor)
            .bind(key)
            .bind(&request_hash)
            .bind(fresh.as_str())
            .fetch_optional(self.pool())
            .await?;
            if bound.is_some() {
                break;
            }
        }
        let (bound_id, bound_hash) = bound.ok_or(ServiceError::IdempotencyKeyContended)?;
        if bound_hash != request_hash {
            return Err(ServiceError::IdempotencyKeyReused {
                key: key.to_owned(),
            });
        }
        EnvironmentId::parse(&bound_id).map_err(|error| ServiceError::Corrupt(Box::new(error)))
    }
}
