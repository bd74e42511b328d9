//! Read models built from the events stream, and the replay that rebuilds and verifies them.
//!
//! - [`environment_view`]: the environment read model (the JSON `GET /v1/environments/{id}`
//!   returns) as a pure function of the domain state, and the fold that builds it with the
//!   domain's own `Environment::apply`.
//! - [`store`]: applies batches of events to a read-model table in one transaction, idempotent by
//!   (environment id, sequence); the row's `version` column is the checkpoint, its `state`
//!   column the domain state the next event folds from.
//! - [`consumer`]: the durable JetStream pull consumer that feeds [`store::apply_batch`].
//! - [`queries`]: reads for the query API (one environment; filtered, keyset-paginated lists).
//! - [`replay`]: rebuilds the read model from the `events` table into a scratch table and
//!   compares it with the live one.

pub mod consumer;
pub mod environment_view;
pub mod queries;
pub mod replay;
pub mod store;

pub use consumer::CONSUMER_NAME;
pub use environment_view::{EnvironmentView, ViewError};
pub use queries::{ListQuery, Page};
pub use replay::{Mismatch, MismatchKind, ReplayReport};
pub use store::{BatchOutcome, Disposition, ViewTable};

/// Why a projection operation failed, named by what the caller does about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A list cursor that this crate did not produce (or that was altered). Maps to 400.
    #[error("the cursor is not valid")]
    InvalidCursor,
    /// A page size outside `1..=200`. Maps to 400.
    #[error("limit must be between 1 and {max}, got {limit}", max = ListQuery::MAX_LIMIT)]
    InvalidLimit { limit: u32 },
    /// A name filter that no environment can have (`domain::config::environment_name`). Maps
    /// to 400.
    #[error("name {}: {reason}", domain::text::shown(.name))]
    InvalidName { name: String, reason: String },
    /// A status filter that is not one of the status words. Maps to 400.
    #[error("unknown status {0:?}")]
    InvalidStatus(String),
    /// A read-model table name that is not a plain SQL identifier (a programming error).
    #[error("invalid read-model table name {0:?}")]
    InvalidTableName(String),
    /// Postgres failed or is unreachable: retry later (or 503).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Error::Database(err)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
