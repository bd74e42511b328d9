//! The one reader of stored events: one SQL shape over the `events` table, one decoding of a row
//! into an [`EventEnvelope`], and the reads built from them — an environment's [`history`],
//! events by (environment, sequence) [`by_keys`] (the deadline sweep), the relay's
//! [`outbox_batch`] (outbox rows joined with their events, one statement), and the replay's
//! ordered [`scan`].
//!
//! Decoding is strict where a default would hide a defect and lenient where events are kept
//! forever: the stored metadata must be the object the store writes ([`stored_metadata`]: the
//! metadata's fields and `recorded_at`), or the row is a [`DecodeError`] naming the event; the
//! payload is brought to its type's current version by [`domain::aggregate::upcast`] but not
//! decoded into a domain event here (the relay publishes what is stored, whatever its type).

use crate::AGGREGATE_TYPE;
use chrono::{DateTime, SubsecRound, Utc};
use domain::aggregate::{UpcastError, upcast};
use domain::ids::EnvironmentId;
use domain::wire::{EventEnvelope, EventMetadata, format_recorded_at};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading events failed")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A stored event that cannot be read as an envelope, named by its environment, sequence and type.
#[derive(Debug, thiserror::Error)]
#[error("stored event {environment_id}:{sequence} ({event_type}) cannot be read: {reason}")]
pub struct DecodeError {
    pub environment_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub reason: DecodeReason,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeReason {
    #[error("its aggregate id is not an environment id")]
    EnvironmentId,
    #[error("its sequence is not positive")]
    Sequence,
    #[error("its metadata is not the stored metadata object: {0}")]
    Metadata(#[source] serde_json::Error),
    #[error("its payload is not a tagged event object")]
    Payload,
    #[error(transparent)]
    Upcast(UpcastError),
}

/// One row of the `events` table, as every read selects it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredRow {
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The stored tagged event: `{"type": …, "data": {…}}`.
    pub payload: Value,
    /// The stored metadata object ([`stored_metadata`]).
    pub metadata: Value,
}

/// The stored metadata object: the metadata's fields and `recorded_at` (strings, as postgres-es
/// writes metadata). Every field the store writes is required when reading.
#[derive(Deserialize)]
struct StoredMetadata {
    #[serde(flatten)]
    metadata: EventMetadata,
    recorded_at: DateTime<Utc>,
}

/// The metadata object the store writes with an event recorded at `recorded_at`.
pub fn stored_metadata(
    metadata: &EventMetadata,
    recorded_at: DateTime<Utc>,
) -> HashMap<String, String> {
    let mut map = HashMap::from([
        ("actor".to_owned(), metadata.actor.to_string()),
        ("request_id".to_owned(), metadata.request_id.to_string()),
        (
            "correlation_id".to_owned(),
            metadata.correlation_id.to_string(),
        ),
        ("causation_id".to_owned(), metadata.causation_id.to_string()),
        ("recorded_at".to_owned(), format_recorded_at(&recorded_at)),
    ]);
    if let Some(tenant) = &metadata.tenant {
        map.insert("tenant".to_owned(), tenant.clone());
    }
    map
}

/// Now, as an event's `recorded_at`: microseconds, which is what is stored.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl StoredRow {
    /// Decodes the row: the envelope as published, its payload at its type's current version.
    pub fn decode(self) -> Result<EventEnvelope, DecodeError> {
        let StoredRow {
            aggregate_id,
            sequence,
            event_type,
            event_version,
            payload,
            metadata,
        } = self;
        let fail = |reason| DecodeError {
            environment_id: aggregate_id.clone(),
            sequence,
            event_type: event_type.clone(),
            reason,
        };
        let environment_id =
            EnvironmentId::parse(&aggregate_id).map_err(|_| fail(DecodeReason::EnvironmentId))?;
        let position = u64::try_from(sequence)
            .ok()
            .filter(|sequence| *sequence > 0)
            .ok_or_else(|| fail(DecodeReason::Sequence))?;
        let StoredMetadata {
            metadata,
            recorded_at,
        } = StoredMetadata::deserialize(metadata)
            .map_err(|error| fail(DecodeReason::Metadata(error)))?;
        let payload = match payload {
            Value::Object(mut tagged) => tagged.remove("data").unwrap_or(Value::Null),
            _ => return Err(fail(DecodeReason::Payload)),
        };
        let upcasted = upcast(&event_type, &event_version, payload)
            .map_err(|error| fail(DecodeReason::Upcast(error)))?;
        Ok(EventEnvelope {
            environment_id,
            sequence: position,
            version: upcasted.version.to_string(),
            payload: upcasted.payload,
            metadata,
            recorded_at,
            event_type,
        })
    }
}

/// The one SELECT of stored events; each read adds its condition and order.
const SELECT: &str = "SELECT aggregate_id, sequence, event_type, event_version,
                             payload::jsonb AS payload, metadata::jsonb AS metadata
                        FROM events
                       WHERE aggregate_type = $1";

/// Every event of one environment, in sequence order. The first event that does not decode
/// fails the read.
pub async fn history<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    environment_id: &str,
) -> Result<Vec<EventEnvelope>, ReadError> {
    let rows: Vec<StoredRow> =
        sqlx::query_as(&format!("{SELECT} AND aggregate_id = $2 ORDER BY sequence"))
            .bind(AGGREGATE_TYPE)
            .bind(environment_id)
            .fetch_all(executor)
            .await?;
    Ok(rows
        .into_iter()
        .map(StoredRow::decode)
        .collect::<Result<_, _>>()?)
}

/// The events at `keys` (environment id, sequence), each decoded on its own (one row that does
/// not decode fails only itself); a key whose event does not exist is absent from the map.
pub async fn by_keys<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    keys: &[(String, i64)],
) -> Result<HashMap<(String, i64), Result<EventEnvelope, DecodeError>>, sqlx::Error> {
    let (ids, sequences): (Vec<&str>, Vec<i64>) =
        keys.iter().map(|(id, seq)| (id.as_str(), *seq)).unzip();
    let rows: Vec<StoredRow> = sqlx::query_as(&format!(
        "{SELECT} AND (aggregate_id, sequence) IN
                      (SELECT * FROM UNNEST($2::text[], $3::bigint[]))"
    ))
    .bind(AGGREGATE_TYPE)
    .bind(ids)
    .bind(sequences)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| ((row.aggregate_id.clone(), row.sequence), row.decode()))
        .collect())
}

/// One row of the outbox with its event: `None` when the event row is missing.
#[derive(Debug)]
pub struct OutboxEvent {
    pub outbox_id: i64,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event: Option<Result<EventEnvelope, DecodeError>>,
}

/// The relay's batch in one statement: the oldest `limit` outbox rows of environments not held
/// in `event_outbox_quarantine`, in outbox order, each with its event decoded as every read
/// decodes it. The batch is chosen on the outbox's primary key alone, so the join reads just
/// those events however large the backlog or the events table is.
pub async fn outbox_batch<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    limit: i64,
) -> Result<Vec<OutboxEvent>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Joined {
        outbox_id: i64,
        aggregate_id: String,
        sequence: i64,
        event_type: Option<String>,
        event_version: Option<String>,
        payload: Option<Value>,
        metadata: Option<Value>,
    }
    let rows: Vec<Joined> = sqlx::query_as(
        "WITH batch AS (
             SELECT o.id, o.aggregate_type, o.aggregate_id, o.sequence
               FROM event_outbox o
              WHERE o.aggregate_type = $1
                AND NOT EXISTS (SELECT 1 FROM event_outbox_quarantine q
                                 WHERE q.aggregate_type = o.aggregate_type
                                   AND q.aggregate_id = o.aggregate_id)
              ORDER BY o.id
              LIMIT $2)
         SELECT b.id AS outbox_id, b.aggregate_id, b.sequence, e.event_type, e.event_version,
                e.payload::jsonb AS payload, e.metadata::jsonb AS metadata
           FROM batch b
           LEFT JOIN events e USING (aggregate_type, aggregate_id, sequence)
          ORDER BY b.id",
    )
    .bind(AGGREGATE_TYPE)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let event = match (row.event_type, row.event_version, row.payload, row.metadata) {
                (Some(event_type), Some(event_version), Some(payload), Some(metadata)) => Some(
                    StoredRow {
                        aggregate_id: row.aggregate_id.clone(),
                        sequence: row.sequence,
                        event_type,
                        event_version,
                        payload,
                        metadata,
                    }
                    .decode(),
                ),
                _ => None,
            };
            OutboxEvent {
                outbox_id: row.outbox_id,
                aggregate_id: row.aggregate_id,
                sequence: row.sequence,
                event,
            }
        })
        .collect())
}

/// A position in the full scan: the last (environment id, sequence) read.
pub type Cursor = (String, i64);

/// Events in (environment id, sequence) order after `after` (from the start with `None`), at
/// most `limit` of them (all with `None`), each decoded on its own.
pub async fn scan<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    after: Option<&Cursor>,
    limit: Option<i64>,
) -> Result<Vec<(Cursor, Result<EventEnvelope, DecodeError>)>, sqlx::Error> {
    let (id, sequence) = after.cloned().unwrap_or((String::new(), -1));
    let rows: Vec<StoredRow> = sqlx::query_as(&format!(
        "{SELECT} AND (aggregate_id, sequence) > ($2, $3)
          ORDER BY aggregate_id, sequence
          LIMIT $4"
    ))
    .bind(AGGREGATE_TYPE)
    .bind(id)
    .bind(sequence)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| ((row.aggregate_id.clone(), row.sequence), row.decode()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::wire::{Actor, RequestId};
    use serde_json::json;

    const ENV: &str = "env_01jdxk6f6b6cz8r9qv1g4t4m3a";

    fn metadata() -> EventMetadata {
        EventMetadata::request(Actor::caller("token:admin"), None, RequestId::new("req_1"))
    }

    fn recorded_at() -> DateTime<Utc> {
        "2025-01-01T00:00:00.123456Z".parse().unwrap()
    }

    fn row() -> StoredRow {
        StoredRow {
            aggregate_id: ENV.to_owned(),
            sequence: 1,
            event_type: "DestroyRequested".to_owned(),
            event_version: "1".to_owned(),
            payload: json!({"type": "DestroyRequested", "data": {}}),
            metadata: serde_json::to_value(stored_metadata(&metadata(), recorded_at())).unwrap(),
        }
    }

    #[test]
    fn a_stored_row_decodes_into_the_published_envelope() {
        let envelope = row().decode().unwrap();
        assert_eq!(envelope.environment_id.as_str(), ENV);
        assert_eq!(envelope.sequence, 1);
        assert_eq!(envelope.version, "1");
        assert_eq!(envelope.payload, json!({}));
        assert_eq!(envelope.metadata, metadata());
        assert_eq!(envelope.recorded_at, recorded_at());
        let published = serde_json::to_value(&envelope).unwrap();
        assert_eq!(published["recorded_at"], "2025-01-01T00:00:00.123456Z");
        assert_eq!(
            published["metadata"]["recorded_at"],
            "2025-01-01T00:00:00.123456Z"
        );
        assert_eq!(published["metadata"]["causation_id"], "request:req_1");
        let back: EventEnvelope = serde_json::from_value(published).unwrap();
        assert_eq!(back, envelope);
    }

    #[test]
    fn metadata_that_does_not_decode_is_an_error_naming_the_event() {
        for metadata in [
            json!({}),
            json!("not an object"),
            json!({"actor": "a", "request_id": "r", "correlation_id": "c", "causation_id": "x"}),
            json!({"actor": "a", "request_id": "r", "correlation_id": "c", "causation_id": "x",
                   "recorded_at": "yesterday"}),
        ] {
            let error = StoredRow {
                metadata: metadata.clone(),
                ..row()
            }
            .decode()
            .unwrap_err();
            assert!(
                matches!(error.reason, DecodeReason::Metadata(_)),
                "{metadata}: {error}"
            );
            let text = error.to_string();
            assert!(
                text.contains(&format!("{ENV}:1 (DestroyRequested)")),
                "{text}"
            );
        }
    }

    #[test]
    fn ids_sequences_payloads_and_versions_that_do_not_decode_are_errors() {
        let cases = [
            StoredRow {
                aggregate_id: "not-an-id".into(),
                ..row()
            },
            StoredRow {
                sequence: 0,
                ..row()
            },
            StoredRow {
                payload: json!([1, 2]),
                ..row()
            },
            StoredRow {
                event_version: "9".into(),
                ..row()
            },
        ];
        let reasons: Vec<String> = cases
            .into_iter()
            .map(|row| row.decode().unwrap_err().reason.to_string())
            .collect();
        assert!(reasons[0].contains("environment id"), "{reasons:?}");
        assert!(reasons[1].contains("sequence"), "{reasons:?}");
        assert!(reasons[2].contains("payload"), "{reasons:?}");
        assert!(reasons[3].contains("newer"), "{reasons:?}");
    }

    #[test]
    fn a_payload_of_an_unknown_type_is_read_as_stored() {
        let envelope = StoredRow {
            event_type: "DriftDetected".into(),
            payload: json!({"type": "DriftDetected", "data": {"blob": "x"}}),
            ..row()
        }
        .decode()
        .unwrap();
        assert_eq!(envelope.payload, json!({"blob": "x"}));
        assert!(envelope.event().is_err());
    }
}
