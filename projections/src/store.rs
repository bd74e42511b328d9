//! Writing the environment read model: batches of events, one transaction, exactly-once effect.
//!
//! Each row's `version` column is the sequence of the last event folded into it: the projection's
//! checkpoint, written in the same statement as the row. An event at or below it is a duplicate
//! (skipped); one more than one above it is a gap (reported, not applied, so the caller retries it
//! after the missing events arrive).
//!
//! Each row also keeps the domain state it was derived from (`state`, the serialized
//! `domain::aggregate::Environment`): the next event folds from it through
//! [`environment_view::apply`], and the view's columns are derived from the result. A row
//! written before that column existed (`state` NULL), or whose state this build cannot read, has
//! its state rebuilt from the event store ([`event_store::reader::history`]) when its next event
//! arrives.
//!
//! Concurrency: several consumers may apply batches at once. Existing rows are locked
//! (`SELECT … FOR UPDATE`, in id order) before folding; rows are written in id order with an
//! upsert that only ever raises the version. A row at version `v` is always the fold of events
//! `1..=v`, so when two transactions race to create the same row, keeping the higher version is
//! correct.

use crate::environment_view::{self, EnvironmentView, StoredState, ViewError, ViewState};
use crate::{Error, Result};
use domain::conditions::Conditions;
use domain::text::error_chain;
use domain::wire::EventEnvelope;
use event_store::reader::{self, ReadError};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use std::collections::{BTreeMap, BTreeSet};

/// A validated read-model table name: a plain lower-case SQL identifier, so it can be spliced
/// into statements safely.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ViewTable(String);

impl ViewTable {
    /// The live table the query API reads.
    pub const LIVE: &'static str = "environments_view";
    /// The scratch table [`crate::replay::replay`] rebuilds.
    pub const REPLAY: &'static str = "environments_view_replay";

    /// Accepts `[a-z_][a-z0-9_]*`, at most 63 bytes (Postgres' identifier limit).
    pub fn new(name: &str) -> Result<Self> {
        let mut chars = name.chars();
        let valid = name.len() <= 63
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(Error::InvalidTableName(name.to_owned()))
        }
    }

    /// `environments_view`.
    pub fn live() -> Self {
        Self(Self::LIVE.to_owned())
    }

    /// `environments_view_replay`.
    pub fn replay() -> Self {
        Self(Self::REPLAY.to_owned())
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// The name quoted for SQL.
    pub(crate) fn sql(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl std::fmt::Display for ViewTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What happened to one envelope of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Folded into the row, committed.
    Applied,
    /// At or below the row's version: already applied before. Safe to acknowledge.
    Duplicate,
    /// Events are missing before this one (`expected` is the next sequence the row needs).
    /// Not applied; deliver it again later.
    Gap { expected: u64 },
    /// The event does not fold (undecodable payload, or a history that makes no sense). Not
    /// applied; the environment's row stays where it is until a build that understands it.
    Rejected { reason: String },
}

impl Disposition {
    /// Whether the message carrying this envelope can be acknowledged.
    pub fn is_done(&self) -> bool {
        matches!(self, Disposition::Applied | Disposition::Duplicate)
    }
}

/// The result of [`apply_batch`]: one disposition per input envelope, in input order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub dispositions: Vec<Disposition>,
}

impl BatchOutcome {
    pub fn applied(&self) -> usize {
        self.count(|d| matches!(d, Disposition::Applied))
    }

    pub fn duplicates(&self) -> usize {
        self.count(|d| matches!(d, Disposition::Duplicate))
    }

    pub fn gaps(&self) -> usize {
        self.count(|d| matches!(d, Disposition::Gap { .. }))
    }

    pub fn rejected(&self) -> usize {
        self.count(|d| matches!(d, Disposition::Rejected { .. }))
    }

    fn count(&self, f: impl Fn(&Disposition) -> bool) -> usize {
        self.dispositions.iter().filter(|d| f(d)).count()
    }
}

/// The columns of a view table, in the order [`view_from_row`] and the upsert use.
pub(crate) const COLUMNS: &str = "id, name, status, provider, spec, outputs, error, operation, conditions, version, created_at, \
     updated_at, tenant";

pub(crate) fn view_from_row(row: &PgRow) -> Result<EnvironmentView, sqlx::Error> {
    let spec: Value = row.try_get("spec")?;
    Ok(EnvironmentView {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        tenant: row.try_get("tenant")?,
        status: row.try_get("status")?,
        provider: row.try_get("provider")?,
        cost: environment_view::cost_estimate_of_stored(&spec),
        spec,
        outputs: row.try_get("outputs")?,
        error: row.try_get("error")?,
        operation: row.try_get("operation")?,
        conditions: row
            .try_get::<sqlx::types::Json<Conditions>, _>("conditions")?
            .0,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The domain state stored with a row, if it has one this build can read.
fn state_from_row(row: &PgRow, view: &EnvironmentView) -> Result<Option<ViewState>, sqlx::Error> {
    let Some(stored) = row.try_get::<Option<Value>, _>("state")? else {
        return Ok(None);
    };
    let resumed = serde_json::from_value::<StoredState>(stored)
        .map_err(ViewError::State)
        .and_then(|stored| {
            ViewState::from_stored(stored, view.version, view.created_at, view.updated_at)
        });
    match resumed {
        Ok(resumed) => Ok(Some(resumed)),
        Err(err) => {
            tracing::warn!(
                environment_id = %view.id,
                error = %error_chain(&err),
                "the stored state of a view row does not load; it is rebuilt from the event store"
            );
            Ok(None)
        }
    }
}

/// Where one environment's row stands while a batch is folded.
enum Current {
    /// No row yet.
    Absent,
    /// The row's state, folded up to its version.
    Folded(Box<ViewState>),
    /// The row has no state this build can read: it is rebuilt from the event store before the
    /// next event folds.
    Stateless,
    /// The state could not be rebuilt (why): the environment's next events are rejected.
    Unbuildable(String),
}

/// One environment's row while a batch is folded.
struct Working {
    /// The sequence of the last event in the row (0 without a row).
    version: u64,
    current: Current,
    /// The serialized state of `current`, once an event of this batch folded into it.
    dirty: Option<Value>,
}

/// Applies `envelopes` (in order) to `table` in one transaction. Idempotent by
/// (environment id, sequence): applying the same batch twice changes nothing the second time.
///
/// Returns an error only when the database fails; then nothing was written.
pub async fn apply_batch(
    pool: &PgPool,
    table: &ViewTable,
    envelopes: &[EventEnvelope],
) -> Result<BatchOutcome> {
    if envelopes.is_empty() {
        return Ok(BatchOutcome::default());
    }
    let ids: Vec<String> = envelopes
        .iter()
        .map(|envelope| envelope.environment_id.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    let mut tx = pool.begin().await?;

    let select = format!(
        "SELECT {COLUMNS}, state FROM {} WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        table.sql()
    );
    let rows = sqlx::query(&select).bind(&ids).fetch_all(&mut *tx).await?;
    let mut working: BTreeMap<String, Working> = ids
        .into_iter()
        .map(|id| {
            (
                id,
                Working {
                    version: 0,
                    current: Current::Absent,
                    dirty: None,
                },
            )
        })
        .collect();
    for row in &rows {
        let view = view_from_row(row)?;
        let current = match state_from_row(row, &view)? {
            Some(folded) => Current::Folded(Box::new(folded)),
            None => Current::Stateless,
        };
        if let Some(entry) = working.get_mut(&view.id) {
            entry.version = u64::try_from(view.version).unwrap_or(0);
            entry.current = current;
        }
    }

    let mut dispositions = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        let id = envelope.environment_id.as_str();
        let Some(entry) = working.get_mut(id) else {
            // Every id was inserted above.
            dispositions.push(Disposition::Rejected {
                reason: "environment missing from the batch".to_owned(),
            });
            continue;
        };
        let version = entry.version;
        let disposition = if envelope.sequence <= version {
            Disposition::Duplicate
        } else if envelope.sequence > version + 1 {
            Disposition::Gap {
                expected: version + 1,
            }
        } else {
            if matches!(entry.current, Current::Stateless) {
                entry.current = match rebuild(&mut tx, id, version).await? {
                    Ok(rebuilt) => Current::Folded(Box::new(rebuilt)),
                    Err(reason) => Current::Unbuildable(reason),
                };
            }
            let previous = match &entry.current {
                Current::Absent => Ok(None),
                Current::Folded(folded) => Ok(Some(ViewState::clone(folded))),
                Current::Stateless => Err("the stored state was not rebuilt".to_owned()),
                Current::Unbuildable(reason) => Err(reason.clone()),
            };
            match previous.and_then(|previous| fold_one(previous, envelope)) {
                Ok((next, stored)) => {
                    entry.version = envelope.sequence;
                    entry.current = Current::Folded(Box::new(next));
                    entry.dirty = Some(stored);
                    Disposition::Applied
                }
                Err(reason) => Disposition::Rejected { reason },
            }
        };
        dispositions.push(disposition);
    }

    let upsert = format!(
        "INSERT INTO {table} AS v ({COLUMNS}, state) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (id) DO UPDATE SET \
           name = EXCLUDED.name, status = EXCLUDED.status, provider = EXCLUDED.provider, \
           spec = EXCLUDED.spec, outputs = EXCLUDED.outputs, error = EXCLUDED.error, \
           operation = EXCLUDED.operation, conditions = EXCLUDED.conditions, \
           version = EXCLUDED.version, \
           created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
           tenant = EXCLUDED.tenant, state = EXCLUDED.state \
         WHERE v.version < EXCLUDED.version",
        table = table.sql()
    );
    // BTreeMap: rows are written in id order, like they were locked.
    for entry in working.values() {
        let (Current::Folded(folded), Some(state)) = (&entry.current, &entry.dirty) else {
            continue;
        };
        let view = folded.view();
        sqlx::query(&upsert)
            .bind(&view.id)
            .bind(&view.name)
            .bind(&view.status)
            .bind(&view.provider)
            .bind(&view.spec)
            .bind(&view.outputs)
            .bind(&view.error)
            .bind(&view.operation)
            .bind(sqlx::types::Json(&view.conditions))
            .bind(view.version)
            .bind(view.created_at)
            .bind(view.updated_at)
            .bind(&view.tenant)
            .bind(state)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;

    Ok(BatchOutcome { dispositions })
}

/// Folds one envelope, and serializes the new state for the row. `Err` is the reason it does
/// not fold.
fn fold_one(
    previous: Option<ViewState>,
    envelope: &EventEnvelope,
) -> Result<(ViewState, Value), String> {
    let next = environment_view::apply(previous, envelope).map_err(|err| error_chain(&err))?;
    let stored = next.stored().map_err(|err| error_chain(&err))?;
    Ok((next, stored))
}

/// The state of a row at `version` that was stored without one, folded from the environment's
/// first `version` events in the event store. `Ok(Err(reason))` when those events do not fold
/// to that version (missing, undecodable, or not a history); `Err` only when the database fails.
async fn rebuild(
    conn: &mut PgConnection,
    environment_id: &str,
    version: u64,
) -> Result<Result<ViewState, String>> {
    let history = match reader::history(&mut *conn, environment_id).await {
        Ok(history) => history,
        Err(ReadError::Database(err)) => return Err(Error::Database(err)),
        Err(err @ ReadError::Decode(_)) => {
            return Ok(Err(format!(
                "the stored state cannot be rebuilt: {}",
                error_chain(&err)
            )));
        }
    };
    let events = history
        .iter()
        .take_while(|envelope| envelope.sequence <= version);
    Ok(match environment_view::fold(events) {
        Ok(Some(rebuilt)) if u64::try_from(rebuilt.version()).ok() == Some(version) => Ok(rebuilt),
        Ok(_) => Err(format!(
            "the stored state cannot be rebuilt: the event store does not have the {version} \
             events the row was built from"
        )),
        Err(err) => Err(format!(
            "the stored state cannot be rebuilt: {}",
            error_chain(&err)
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_table_accepts_plain_identifiers_only() {
        assert!(ViewTable::new("environments_view").is_ok());
        assert!(ViewTable::new("_scratch_2").is_ok());
        for bad in [
            "",
            "2view",
            "Environments",
            "view; DROP TABLE events",
            "a\"b",
            "public.view",
            &"x".repeat(64),
        ] {
            assert!(
                matches!(ViewTable::new(bad), Err(Error::InvalidTableName(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn only_applied_and_duplicate_messages_are_done() {
        assert!(Disposition::Applied.is_done());
        assert!(Disposition::Duplicate.is_done());
        assert!(!Disposition::Gap { expected: 2 }.is_done());
        assert!(
            !Disposition::Rejected {
                reason: String::new()
            }
            .is_done()
        );
    }
}
