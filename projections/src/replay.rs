//! Rebuilds the environment read model from the event store and checks the live one against it.
//!
//! The events are read through the event store's reader ([`event_store::reader::scan`]), so
//! they decode (and upcast) exactly as the history and the relay read them. The rebuild goes
//! into a scratch table (`environments_view_replay`, dropped and re-created each
//! run and left in place for inspection) through the same fold (the domain's
//! `Environment::apply`, then the view of the state: [`crate::environment_view`]) and the same
//! batch writer as the live projection. The live table is only read. The stored domain state is
//! compared too, except on live rows that have none yet (written before it was kept).
//!
//! The comparison is a snapshot: on a busy system the live projection may lag behind the events
//! table (or pass it, for events committed after they were read), which shows as `Differs` with
//! `version` among the fields. Run it on a quiet system, or run it twice.

use crate::Result;
use crate::store::{self, Disposition, ViewTable};
use event_store::reader;
use serde::Serialize;
use sqlx::{PgPool, Row};

/// Events read (and applied) per transaction.
const PAGE_SIZE: i64 = 1_000;

/// The columns compared, besides the id.
const COMPARED: [&str; 12] = [
    "name",
    "status",
    "provider",
    "spec",
    "outputs",
    "error",
    "operation",
    "conditions",
    "version",
    "created_at",
    "updated_at",
    "state",
];

/// Whether `column` differs between the live row `l` and the rebuilt row `r`. A live row without
/// a state, or without conditions (written before the column, or the conditions, existed; the
/// projection rebuilds it with the next event), is not a difference.
fn differs(column: &str) -> String {
    match column {
        "state" => "(l.state IS NOT NULL AND l.state ? 'conditions' \
                    AND l.state IS DISTINCT FROM r.state)"
            .to_owned(),
        "conditions" => "(l.conditions <> '[]'::jsonb \
                         AND l.conditions IS DISTINCT FROM r.conditions)"
            .to_owned(),
        _ => format!("l.{column} IS DISTINCT FROM r.{column}"),
    }
}

/// What a replay found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// Environments in the event store.
    pub environments: usize,
    /// Events read from the event store.
    pub events: usize,
    /// Rows that differ between the live read model and the rebuilt one, by environment id.
    pub mismatches: Vec<Mismatch>,
    /// Events the rebuild could not apply (they do not decode, or the history has a hole).
    pub unapplied: Vec<UnappliedEvent>,
}

impl ReplayReport {
    /// The live read model equals the one rebuilt from the events, and every event applied.
    pub fn is_consistent(&self) -> bool {
        self.mismatches.is_empty() && self.unapplied.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub environment_id: String,
    pub kind: MismatchKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MismatchKind {
    /// The events have the environment; the live read model does not.
    MissingInLive,
    /// The live read model has an environment the events do not.
    MissingInReplay,
    /// Both have it; these columns differ.
    Differs { fields: Vec<String> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnappliedEvent {
    pub environment_id: String,
    pub sequence: u64,
    pub reason: String,
}

/// Rebuilds `environments_view_replay` from every environment event and compares it with
/// `environments_view`, column by column.
pub async fn replay(pool: &PgPool) -> Result<ReplayReport> {
    let table = ViewTable::replay();
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS {replay}; CREATE TABLE {replay} (LIKE {live} INCLUDING ALL);",
        replay = table.sql(),
        live = ViewTable::live().sql(),
    ))
    .execute(pool)
    .await?;

    let mut report = ReplayReport::default();
    let mut last: Option<reader::Cursor> = None;
    loop {
        let rows = reader::scan(pool, last.as_ref(), Some(PAGE_SIZE)).await?;
        if rows.is_empty() {
            break;
        }

        let mut envelopes = Vec::with_capacity(rows.len());
        for ((environment_id, sequence), read) in rows {
            if last.as_ref().map(|(id, _)| id) != Some(&environment_id) {
                report.environments += 1;
            }
            report.events += 1;
            last = Some((environment_id, sequence));
            match read {
                Ok(envelope) => envelopes.push(envelope),
                Err(undecodable) => report.unapplied.push(UnappliedEvent {
                    environment_id: undecodable.environment_id.clone(),
                    sequence: u64::try_from(undecodable.sequence).unwrap_or(0),
                    reason: undecodable.to_string(),
                }),
            }
        }

        let outcome = store::apply_batch(pool, &table, &envelopes).await?;
        for (envelope, disposition) in envelopes.iter().zip(&outcome.dispositions) {
            let reason = match disposition {
                Disposition::Applied | Disposition::Duplicate => continue,
                Disposition::Gap { expected } => format!("sequence {expected} is missing"),
                Disposition::Rejected { reason } => reason.clone(),
            };
            report.unapplied.push(UnappliedEvent {
                environment_id: envelope.environment_id.to_string(),
                sequence: envelope.sequence,
                reason,
            });
        }
    }

    report.mismatches = compare(pool, &ViewTable::live(), &table).await?;
    Ok(report)
}

/// Rows of `live` and `rebuilt` that differ, ordered by id.
async fn compare(pool: &PgPool, live: &ViewTable, rebuilt: &ViewTable) -> Result<Vec<Mismatch>> {
    let each_differs = COMPARED
        .iter()
        .map(|column| format!("{} AS {column}", differs(column)))
        .collect::<Vec<_>>()
        .join(", ");
    let any_differs = COMPARED
        .iter()
        .map(|column| differs(column))
        .collect::<Vec<_>>()
        .join(" OR ");
    let sql = format!(
        "SELECT COALESCE(l.id, r.id) AS id, l.id IS NULL AS missing_in_live, \
                r.id IS NULL AS missing_in_replay, {each_differs} \
         FROM {live} l FULL OUTER JOIN {rebuilt} r ON l.id = r.id \
         WHERE l.id IS NULL OR r.id IS NULL OR {any_differs} \
         ORDER BY 1",
        live = live.sql(),
        rebuilt = rebuilt.sql(),
    );
    let rows = sqlx::query(&sql).fetch_all(pool).await?;

    let mut mismatches = Vec::with_capacity(rows.len());
    for row in &rows {
        let environment_id: String = row.try_get("id")?;
        let kind = if row.try_get("missing_in_live")? {
            MismatchKind::MissingInLive
        } else if row.try_get("missing_in_replay")? {
            MismatchKind::MissingInReplay
        } else {
            let mut fields = Vec::new();
            for column in COMPARED {
                if row.try_get::<bool, _>(column)? {
                    fields.push(column.to_owned());
                }
            }
            MismatchKind::Differs { fields }
        };
        mismatches.push(Mismatch {
            environment_id,
            kind,
        });
    }
    Ok(mismatches)
}
