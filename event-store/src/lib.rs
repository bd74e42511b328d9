//! The event store: the `Environment` aggregate on cqrs-es/postgres-es over the `events` table,
//! the schema migrations, and the one reader of stored events.
//!
//! - [`EventStore`] executes commands (load, decide, one-statement commit with the outbox row)
//!   and reads an environment's history.
//! - [`reader`]: every read of stored events — an environment's history, the relay's batch by
//!   (environment, sequence), the replay's ordered scan — through one SQL shape and one row →
//!   [`EventEnvelope`] decoding, with payloads upcast ([`domain::aggregate::upcast`]).
//! - [`EventRepository`]: postgres-es for the aggregate's loads (upcast the same way), and the
//!   commit.
//!
//! Depends on `domain` and the database only: no NATS, no HTTP, no executors.

mod aggregate;
pub mod reader;
mod repository;

pub use aggregate::{AGGREGATE_TYPE, EnvironmentAggregate, StoredEvent};
pub use reader::{DecodeError, ReadError, stored_metadata};
pub use repository::{EventRepository, EventTooLarge};

use cqrs_es::persist::EventStoreAggregateContext;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateError, CqrsFramework, EventStore as _};
use domain::aggregate::{Command, DomainError, Environment};
use domain::ids::EnvironmentId;
use domain::spec::EnvironmentSpec;
use domain::tenant::TenantId;
use domain::wire::{EventEnvelope, EventMetadata};
use sqlx::PgPool;
use std::sync::Arc;
use tokio::sync::Notify;

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The domain refused the command.
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// Another active environment already has this name.
    #[error("{0}")]
    NameTaken(String),
    /// The tenant already has as many active environments as its quota allows.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A concurrent command committed first; retrying may succeed.
    #[error("a concurrent change to the environment committed first")]
    Conflict,
    /// An event of the command would be too large to publish; nothing was committed.
    #[error(transparent)]
    EventTooLarge(EventTooLarge),
    /// The database could not be reached or failed.
    #[error("event store unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("event store failure")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// SQLSTATE raised by the `events` trigger when an active name is reused.
const NAME_TAKEN_SQLSTATE: &str = "BP409";
/// SQLSTATE raised by the `events` trigger when a tenant's quota of active environments is full.
const QUOTA_EXCEEDED_SQLSTATE: &str = "BP429";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the schema migrations; safe to run on every start and from several replicas.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

type Events = PersistedEventStore<EventRepository, EnvironmentAggregate>;

/// Executes commands against environments and reads their history.
#[derive(Clone)]
pub struct EventStore {
    cqrs: Arc<CqrsFramework<EnvironmentAggregate, Events>>,
    events: Arc<Events>,
    pool: PgPool,
    committed: Arc<Notify>,
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        // Snapshots stay off: cqrs-es 0.5.0 applies events twice when it builds one.
        let store = || PersistedEventStore::new_event_store(EventRepository::new(pool.clone()));
        Self {
            cqrs: Arc::new(CqrsFramework::new(store(), vec![], ())),
            events: Arc::new(store()),
            pool,
            committed: Arc::new(Notify::new()),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Signalled after every commit, so the relay in this process publishes without waiting
    /// for its next poll.
    pub fn committed(&self) -> Arc<Notify> {
        self.committed.clone()
    }

    /// Runs one command; on success its events (possibly none) are committed together with
    /// their outbox rows.
    #[tracing::instrument(skip_all, fields(env_id = %environment_id, command = command.name()))]
    pub async fn execute(
        &self,
        environment_id: &str,
        command: Command,
        metadata: &EventMetadata,
    ) -> Result<()> {
        let metadata = stored_metadata(metadata, reader::now());
        match self
            .cqrs
            .execute_with_metadata(environment_id, command, metadata)
            .await
        {
            Ok(()) => {
                self.committed.notify_one();
                Ok(())
            }
            Err(error) => Err(classify(error)),
        }
    }

    /// Requests a new environment, owned by `tenant`. A fresh id has no history, so unlike [`Self::execute`] this
    /// does not load one: it commits the request at sequence 1 directly (one round trip). If the
    /// id does exist (a repeated idempotent request), that insert conflicts and the answer is
    /// `AlreadyExists`, exactly as the aggregate would have decided.
    #[tracing::instrument(skip_all, fields(env_id = %id))]
    pub async fn request(
        &self,
        id: &EnvironmentId,
        spec: EnvironmentSpec,
        tenant: TenantId,
        metadata: &EventMetadata,
    ) -> Result<()> {
        let command = Command::Request {
            id: id.clone(),
            spec,
            tenant,
        };
        let events = Environment::default().handle(command)?;
        let context = EventStoreAggregateContext {
            aggregate_id: id.to_string(),
            aggregate: EnvironmentAggregate::default(),
            current_sequence: 0,
            current_snapshot: None,
        };
        let events = events.into_iter().map(StoredEvent).collect();
        match self
            .events
            .commit(events, context, stored_metadata(metadata, reader::now()))
            .await
        {
            Ok(_) => {
                self.committed.notify_one();
                Ok(())
            }
            Err(AggregateError::AggregateConflict) => {
                Err(StoreError::Rejected(DomainError::AlreadyExists))
            }
            Err(error) => Err(classify(error)),
        }
    }

    /// Every event of one environment, in order, with its metadata (see [`reader::history`]).
    pub async fn history(&self, environment_id: &str) -> Result<Vec<EventEnvelope>, ReadError> {
        reader::history(&self.pool, environment_id).await
    }
}

fn classify(error: AggregateError<DomainError>) -> StoreError {
    match error {
        AggregateError::UserError(rejected) => StoreError::Rejected(rejected),
        AggregateError::AggregateConflict => StoreError::Conflict,
        AggregateError::DatabaseConnectionError(source) => StoreError::Unavailable(source),
        AggregateError::UnexpectedError(source) => match refusal(source.as_ref()) {
            Some(refused) => refused,
            None if source.is::<EventTooLarge>() => match source.downcast::<EventTooLarge>() {
                Ok(too_large) => StoreError::EventTooLarge(*too_large),
                Err(source) => StoreError::Internal(source),
            },
            None if source
                .downcast_ref::<sqlx::Error>()
                .is_some_and(is_connection_error) =>
            {
                StoreError::Unavailable(source)
            }
            None => StoreError::Internal(source),
        },
        AggregateError::DeserializationError(source) => StoreError::Internal(source),
    }
}

/// The `events` trigger's refusals: a name in use, a tenant's quota full.
fn refusal(error: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<StoreError> {
    let sqlx::Error::Database(database) = error.downcast_ref::<sqlx::Error>()? else {
        return None;
    };
    let message = database.message().to_owned();
    match database.code().as_deref() {
        Some(NAME_TAKEN_SQLSTATE) => Some(StoreError::NameTaken(message)),
        Some(QUOTA_EXCEEDED_SQLSTATE) => Some(StoreError::QuotaExceeded(message)),
        _ => None,
    }
}

/// Whether Postgres could not be reached (as opposed to refusing the statement): the answer is
/// then "unavailable, retry", not an internal error.
pub fn is_connection_error(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
    )
}
