//! The event repository: postgres-es for reads (each event's payload brought to its current
//! version by [`domain::aggregate::upcast`], as every read path does), and a commit that is one
//! statement.
//!
//! cqrs-es loads an aggregate through `get_events` (and `get_last_events`, with snapshots, which
//! are off): both upcast. `stream_events`/`stream_all_events` feed cqrs-es's replay of queries,
//! which this store does not use; they pass through as stored.
//!
//! postgres-es commits with BEGIN, one INSERT per event, COMMIT: three round trips or more. A
//! single multi-row `INSERT … SELECT FROM UNNEST(…)` is atomic on its own (one statement, one
//! implicit transaction, the `events` trigger included), so a commit here is one round trip —
//! the command path's cost is dominated by round trips and fsyncs, not by work.

use crate::reader::StoredRow;
use cqrs_es::Aggregate;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use domain::aggregate::upcast;
use domain::wire::MAX_EVENT_BYTES;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlx::PgPool;

/// SQLSTATE of a unique violation: another command committed the same sequence first.
const UNIQUE_VIOLATION: &str = "23505";

pub struct EventRepository {
    reads: PostgresEventRepository,
    pool: PgPool,
}

impl EventRepository {
    pub fn new(pool: PgPool) -> Self {
        Self {
            reads: PostgresEventRepository::new(pool.clone()),
            pool,
        }
    }
}

/// An event whose published form would exceed [`MAX_EVENT_BYTES`]: it could never be relayed,
/// so it is not committed (nor is any other event of the command).
#[derive(Debug, thiserror::Error)]
#[error(
    "event {event_type} of {aggregate_id} would be {size} bytes, more than the {limit}-byte limit"
)]
pub struct EventTooLarge {
    pub aggregate_id: String,
    pub event_type: String,
    pub size: usize,
    pub limit: usize,
}

/// Refuses an event that could not be published: the same envelope the relay sends (decoded as
/// the reader decodes it), measured.
fn check_size(event: &SerializedEvent) -> Result<(), PersistenceError> {
    let envelope = StoredRow {
        aggregate_id: event.aggregate_id.clone(),
        sequence: i64::try_from(event.sequence).unwrap_or(i64::MAX),
        event_type: event.event_type.clone(),
        event_version: event.event_version.clone(),
        payload: event.payload.clone(),
        metadata: event.metadata.clone(),
    }
    .decode()
    .map_err(|error| PersistenceError::UnknownError(Box::new(error)))?;
    let size = envelope
        .encode()
        .map_err(|error| PersistenceError::UnknownError(Box::new(error)))?
        .len();
    if size > MAX_EVENT_BYTES {
        return Err(PersistenceError::UnknownError(Box::new(EventTooLarge {
            aggregate_id: event.aggregate_id.clone(),
            event_type: event.event_type.clone(),
            size,
            limit: MAX_EVENT_BYTES,
        })));
    }
    Ok(())
}

/// Brings a loaded event's payload (the stored tagged event) to its type's current version.
fn upcast_loaded(mut event: SerializedEvent) -> Result<SerializedEvent, PersistenceError> {
    let Value::Object(tagged) = &mut event.payload else {
        return Err(PersistenceError::DeserializationError(
            format!(
                "stored event {}:{} ({}) is not a tagged event object",
                event.aggregate_id, event.sequence, event.event_type
            )
            .into(),
        ));
    };
    let data = tagged.remove("data").unwrap_or(Value::Null);
    let upcasted = upcast(&event.event_type, &event.event_version, data)
        .map_err(|error| PersistenceError::DeserializationError(Box::new(error)))?;
    tagged.insert("data".to_owned(), upcasted.payload);
    event.event_version = upcasted.version.to_string();
    Ok(event)
}

fn persistence_error(error: sqlx::Error) -> PersistenceError {
    match &error {
        sqlx::Error::Database(database) if database.code().as_deref() == Some(UNIQUE_VIOLATION) => {
            PersistenceError::OptimisticLockError
        }
        _ if crate::is_connection_error(&error) => {
            PersistenceError::ConnectionError(Box::new(error))
        }
        _ => PersistenceError::UnknownError(Box::new(error)),
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads
            .get_events::<A>(aggregate_id)
            .await?
            .into_iter()
            .map(upcast_loaded)
            .collect()
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.reads
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await?
            .into_iter()
            .map(upcast_loaded)
            .collect()
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        // Snapshots are off: cqrs-es 0.5.0 applies events twice when it builds one.
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            return Err(PersistenceError::UnknownError(
                "snapshots are disabled for this event store".into(),
            ));
        }
        if events.is_empty() {
            return Ok(());
        }
        for event in events {
            check_size(event)?;
        }
        let mut sequences = Vec::with_capacity(events.len());
        let mut columns: [Vec<&str>; 4] = Default::default();
        let (mut payloads, mut metadata) = (Vec::new(), Vec::new());
        for event in events {
            columns[0].push(&event.aggregate_type);
            columns[1].push(&event.aggregate_id);
            columns[2].push(&event.event_type);
            columns[3].push(&event.event_version);
            sequences.push(i64::try_from(event.sequence).unwrap_or(i64::MAX));
            payloads.push(&event.payload);
            metadata.push(&event.metadata);
        }
        let [aggregate_types, aggregate_ids, event_types, event_versions] = columns;
        sqlx::query(
            "INSERT INTO events
                 (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             SELECT t, id, seq, et, ev, p::json, m::json
               FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
                           $6::jsonb[], $7::jsonb[]) AS e(t, id, seq, et, ev, p, m)",
        )
        .bind(aggregate_types)
        .bind(aggregate_ids)
        .bind(sequences)
        .bind(event_types)
        .bind(event_versions)
        .bind(payloads)
        .bind(metadata)
        .execute(&self.pool)
        .await
        .map_err(persistence_error)?;
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.reads.stream_all_events::<A>().await
    }
}
