//! Invariants a test checks after it did its damage, whatever the damage was, written once:
//! [`check`] (through `Stack::assert_invariants`) is the one entry point every fault scenario
//! ends with. It waits (bounded) for the system to come to rest, then checks five things:
//!
//! 1. every committed event is on the events stream exactly once, in order per environment
//!    ([`committed_events_published_once`]);
//! 2. no two terraform/helm runs of any environment in the database overlapped (the stand-ins'
//!    run intervals, `standins::overlap`);
//! 3. the read models rebuilt by `provisioner replay` equal the live ones (after the projection
//!    caught up with every committed event);
//! 4. every environment is settled: in a status a user can act on — `ready` (update, destroy),
//!    `failed` (retry, destroy), `destroyed` (nothing left to do), the domain's
//!    `Status::is_settled` — with no operation in flight and no step pending. A transitional
//!    status (`queued`, `provisioning`, `bootstrapping`, `updating`, `destroy_queued`,
//!    `destroying`) is a step still running or one the system lost; the check waits
//!    [`SETTLE_WITHIN`] for it, then names the environment and its last events;
//! 5. no outbox row is left, and none is quarantined.
//!
//! [`committed_events_published_once`]: every committed event (the `events` table) is on the
//! JetStream events stream exactly once, on its subject, as committed, and in sequence order per
//! environment. It holds under ongoing traffic: it checks a snapshot of the table, waits until
//! the relay has dealt with that snapshot's outbox rows, and ignores what was committed later.

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use domain::aggregate::Environment;
use domain::wire::{EventEnvelope, Subjects};
use futures::StreamExt;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long [`check`] waits for every environment to settle: longer than a sandbox step
/// redelivered after its executor died (the ack wait, then the step again), far shorter than
/// the step deadlines that would settle a lost step by failing it.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(90);
/// How long [`check`] waits for the relay and the projection once everything settled.
const DRAIN_WITHIN: Duration = Duration::from_secs(30);

/// What [`check`] looks at: one deployment's database, stream and executors' workdirs.
pub struct Target<'a> {
    pub pool: &'a PgPool,
    pub nats_url: &'a str,
    pub subjects: &'a Subjects,
    /// For `provisioner replay`.
    pub database_url: &'a str,
    /// The executors' `<data_dir>/workdirs`, one directory per environment.
    pub workdirs: &'a Path,
}

/// What [`check`] checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub environments: usize,
    pub events: usize,
    /// Finished terraform/helm runs whose intervals were checked.
    pub runs: usize,
    /// Environments per (settled) status.
    pub statuses: BTreeMap<String, usize>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} events of {} environments ({:?}), {} tool runs",
            self.events, self.environments, self.statuses, self.runs
        )
    }
}

/// How long [`check`] waits for the system to come to rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// For every environment to settle.
    pub settle: Duration,
    /// For the relay to drain the outbox and the projection to catch up, once settled.
    pub drain: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            settle: SETTLE_WITHIN,
            drain: DRAIN_WITHIN,
        }
    }
}

/// The one invariant check (see the module's documentation). Every violation found is
/// returned; when some environment never settles, the others are not judged.
pub async fn check(target: &Target<'_>, limits: Limits) -> Result<Report, Vec<Violation>> {
    let statuses = settled(target.pool, limits.settle).await?;
    let mut violations = Vec::new();
    let published = committed_events_published_once(
        target.pool,
        target.nats_url,
        target.subjects,
        limits.drain,
    )
    .await
    .unwrap_or_else(|found| {
        violations.extend(found);
        Checked::default()
    });
    if let Err(left) = outbox_empty(target.pool, limits.drain).await {
        violations.push(left);
    }
    let runs = no_overlaps(target.workdirs, &statuses).unwrap_or_else(|found| {
        violations.extend(found);
        0
    });
    match projection_caught_up(target.pool, limits.drain).await {
        Ok(()) => {
            if let Err(differs) = replay_equal(target.database_url).await {
                violations.push(differs);
            }
        }
        Err(behind) => violations.extend(behind),
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    let mut by_status = BTreeMap::new();
    for status in statuses.values() {
        *by_status.entry(status.clone()).or_default() += 1;
    }
    Ok(Report {
        environments: published.environments,
        events: published.events,
        runs,
        statuses: by_status,
    })
}

/// Whether a user can act on an environment in this state: a settled status (the domain's
/// `Status::is_settled`), no operation in flight, no step waiting to start.
fn actionable(state: &Environment) -> bool {
    state.status.is_settled() && state.in_flight.is_none() && state.pending.is_none()
}

/// Waits (up to `within`) until every environment's state, folded from its committed events by
/// the domain's own `apply`, is actionable; returns each one's status.
async fn settled(
    pool: &PgPool,
    within: Duration,
) -> Result<BTreeMap<String, String>, Vec<Violation>> {
    let deadline = Instant::now() + within;
    loop {
        let rows = event_store::reader::scan(pool, None, None)
            .await
            .expect("read events");
        let mut states: BTreeMap<String, (Environment, Vec<String>)> = BTreeMap::new();
        for ((env, sequence), read) in rows {
            let envelope = read.expect("every committed event decodes");
            let event = envelope.event().expect("every committed event upcasts");
            let (state, types) = states.entry(env).or_default();
            state.apply(&event);
            types.push(format!("{sequence}:{}", envelope.event_type));
        }
        let stuck: Vec<Violation> = states
            .iter()
            .filter(|(_, (state, _))| !actionable(state))
            .map(|(env, (state, types))| Violation::Unsettled {
                environment_id: env.clone(),
                status: state.status.to_string(),
                last_events: types.iter().rev().take(6).rev().cloned().collect(),
            })
            .collect();
        if stuck.is_empty() {
            return Ok(states
                .into_iter()
                .map(|(env, (state, _))| (env, state.status.to_string()))
                .collect());
        }
        if Instant::now() >= deadline {
            return Err(stuck);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (up to `within`) until the outbox is empty and nothing is quarantined.
async fn outbox_empty(pool: &PgPool, within: Duration) -> Result<(), Violation> {
    let deadline = Instant::now() + within;
    loop {
        let (outbox, quarantined): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM event_outbox), \
                    (SELECT count(*) FROM event_outbox_quarantine)",
        )
        .fetch_one(pool)
        .await
        .expect("count outbox rows");
        if outbox == 0 && quarantined == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Violation::OutboxLeft {
                outbox,
                quarantined,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks every environment's run log; returns how many finished runs were checked. A `ready`
/// environment ran its steps, so a run log without a finished run means the check looks in the
/// wrong place: that is a violation too.
fn no_overlaps(
    workdirs: &Path,
    statuses: &BTreeMap<String, String>,
) -> Result<usize, Vec<Violation>> {
    let mut runs = 0;
    let mut violations = Vec::new();
    for (env, status) in statuses {
        match standins::overlap::read(&workdirs.join(env)) {
            Ok(log) => {
                if status == "ready" && log.finished.is_empty() {
                    violations.push(Violation::Overlap {
                        environment_id: env.clone(),
                        detail: format!(
                            "ready, but no terraform/helm run recorded in {}",
                            workdirs.display()
                        ),
                    });
                }
                runs += log.finished.len();
                violations.extend(log.overlaps().iter().map(|overlap| Violation::Overlap {
                    environment_id: env.clone(),
                    detail: overlap.to_string(),
                }));
            }
            Err(error) => violations.push(Violation::Overlap {
                environment_id: env.clone(),
                detail: format!("unreadable run log: {error}"),
            }),
        }
    }
    if violations.is_empty() {
        Ok(runs)
    } else {
        Err(violations)
    }
}

/// Waits (up to `within`) until the live read model has applied every committed event.
async fn projection_caught_up(pool: &PgPool, within: Duration) -> Result<(), Vec<Violation>> {
    let deadline = Instant::now() + within;
    loop {
        let behind: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT e.aggregate_id, max(e.sequence), v.version
               FROM events e LEFT JOIN environments_view v ON v.id = e.aggregate_id
              WHERE e.aggregate_type = 'Environment'
              GROUP BY e.aggregate_id, v.version
             HAVING v.version IS DISTINCT FROM max(e.sequence)",
        )
        .fetch_all(pool)
        .await
        .expect("compare the read model with the events");
        if behind.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(behind
                .into_iter()
                .map(
                    |(environment_id, committed, projected)| Violation::ProjectionBehind {
                        environment_id,
                        committed,
                        projected,
                    },
                )
                .collect());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `provisioner replay`, which rebuilds the read models from the events and compares them
/// with the live ones.
async fn replay_equal(database_url: &str) -> Result<(), Violation> {
    let output = tokio::process::Command::new(crate::binary_dir().join("provisioner"))
        .arg("replay")
        .env("DATABASE_URL", database_url)
        .output()
        .await
        .expect("run provisioner replay");
    if output.status.success() {
        Ok(())
    } else {
        Err(Violation::ReplayDiffers {
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}

/// One way the events stream disagrees with the events table.
#[derive(Clone, Debug, PartialEq)]
pub enum Violation {
    /// A message that is not an event envelope.
    Undecodable { stream_sequence: u64 },
    /// An event on a subject other than `<p>.events.<env_id>.<Type>`.
    WrongSubject {
        stream_sequence: u64,
        subject: String,
    },
    /// Per environment, the stream must hold sequences 1, 2, … n, each once, in that order.
    WrongOrder {
        environment_id: String,
        /// The sequences on the stream, in stream order (up to the last committed one).
        on_stream: Vec<u64>,
        committed: u64,
    },
    /// An event on the stream differs from the committed one.
    Different {
        environment_id: String,
        sequence: u64,
    },
    /// The relay did not deal with the snapshot's outbox rows in time.
    OutboxNotDrained { left: i64 },
    /// Rows left in the outbox (or quarantined) once everything settled.
    OutboxLeft { outbox: i64, quarantined: i64 },
    /// An environment not in a status a user can act on, [`SETTLE_WITHIN`] after the check
    /// began: its status and last events.
    Unsettled {
        environment_id: String,
        status: String,
        last_events: Vec<String>,
    },
    /// Two terraform/helm runs of one environment overlapped (or its run log is unreadable).
    Overlap {
        environment_id: String,
        detail: String,
    },
    /// The projection did not catch up with the committed events in time.
    ProjectionBehind {
        environment_id: String,
        committed: i64,
        projected: Option<i64>,
    },
    /// `provisioner replay` found the live read model different from the rebuilt one.
    ReplayDiffers { output: String },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Undecodable { stream_sequence } => {
                write!(f, "stream message {stream_sequence} is not an event")
            }
            Violation::WrongSubject {
                stream_sequence,
                subject,
            } => write!(f, "stream message {stream_sequence} is on {subject}"),
            Violation::WrongOrder {
                environment_id,
                on_stream,
                committed,
            } => write!(
                f,
                "{environment_id}: committed 1..={committed}, on the stream {on_stream:?}"
            ),
            Violation::Different {
                environment_id,
                sequence,
            } => write!(
                f,
                "{environment_id}:{sequence} differs from the committed event"
            ),
            Violation::OutboxNotDrained { left } => {
                write!(f, "{left} committed events still wait in the outbox")
            }
            Violation::OutboxLeft {
                outbox,
                quarantined,
            } => write!(
                f,
                "{outbox} outbox rows left, {quarantined} quarantined, after everything settled"
            ),
            Violation::Unsettled {
                environment_id,
                status,
                last_events,
            } => write!(
                f,
                "{environment_id} is stuck in {status}; its last events: {}",
                last_events.join(", ")
            ),
            Violation::Overlap {
                environment_id,
                detail,
            } => write!(f, "{environment_id}: {detail}"),
            Violation::ProjectionBehind {
                environment_id,
                committed,
                projected,
            } => write!(
                f,
                "{environment_id}: the projection is at {projected:?}, the events at {committed}"
            ),
            Violation::ReplayDiffers { output } => {
                write!(f, "replay differs from the live read model: {output}")
            }
        }
    }
}

/// What the check looked at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub environments: usize,
    pub events: usize,
}

/// Checks that every event committed when it is called is on the stream exactly once, in order
/// per environment. Waits up to `within` for the relay to publish what was pending then.
pub async fn committed_events_published_once(
    pool: &PgPool,
    nats_url: &str,
    subjects: &Subjects,
    within: Duration,
) -> Result<Checked, Vec<Violation>> {
    let (committed, pending) = snapshot(pool).await;
    let deadline = Instant::now() + within;
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM event_outbox WHERE id = ANY($1::bigint[])")
                .bind(&pending)
                .fetch_one(pool)
                .await
                .expect("count outbox rows");
        if left == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(vec![Violation::OutboxNotDrained { left }]);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let messages = read_stream(nats_url, subjects).await;
    let violations = compare(&committed, &messages, subjects);
    if violations.is_empty() {
        Ok(Checked {
            environments: committed.len(),
            events: committed.values().map(Vec::len).sum(),
        })
    } else {
        Err(violations)
    }
}

/// The committed events per environment (in sequence order) and the outbox rows, read in one
/// transaction so the two agree.
async fn snapshot(pool: &PgPool) -> (BTreeMap<String, Vec<EventEnvelope>>, Vec<i64>) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .expect("repeatable read");
    let rows = event_store::reader::scan(&mut *tx, None, None)
        .await
        .expect("read events");
    let pending: Vec<i64> = sqlx::query_scalar("SELECT id FROM event_outbox")
        .fetch_all(&mut *tx)
        .await
        .expect("read outbox");
    tx.commit().await.expect("commit");
    let mut committed: BTreeMap<String, Vec<EventEnvelope>> = BTreeMap::new();
    for ((env, _), read) in rows {
        let envelope = read.expect("every committed event decodes");
        committed.entry(env).or_default().push(envelope);
    }
    (committed, pending)
}

/// One message of the events stream.
struct StreamMessage {
    stream_sequence: u64,
    subject: String,
    envelope: Option<EventEnvelope>,
}

/// Every message of the events stream, in stream order.
async fn read_stream(nats_url: &str, subjects: &Subjects) -> Vec<StreamMessage> {
    let client = async_nats::connect(nats_url).await.expect("connect nats");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(subjects.events_stream())
        .await
        .expect("events stream");
    let last = stream
        .info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    let mut read = Vec::new();
    if last == 0 {
        return read;
    }
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: subjects.all_events(),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("ordered consumer");
    let mut messages = consumer.messages().await.expect("messages");
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the stream delivers up to its last message")
            .expect("more messages")
            .expect("a message");
        let stream_sequence = message.info().expect("jetstream message").stream_sequence;
        read.push(StreamMessage {
            stream_sequence,
            subject: message.subject.to_string(),
            envelope: serde_json::from_slice(&message.payload).ok(),
        });
        if stream_sequence >= last {
            return read;
        }
    }
}

fn compare(
    committed: &BTreeMap<String, Vec<EventEnvelope>>,
    messages: &[StreamMessage],
    subjects: &Subjects,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut on_stream: BTreeMap<&str, Vec<&EventEnvelope>> = BTreeMap::new();
    for message in messages {
        let Some(envelope) = &message.envelope else {
            violations.push(Violation::Undecodable {
                stream_sequence: message.stream_sequence,
            });
            continue;
        };
        if message.subject != subjects.event(envelope.environment_id.as_str(), &envelope.event_type)
        {
            violations.push(Violation::WrongSubject {
                stream_sequence: message.stream_sequence,
                subject: message.subject.clone(),
            });
        }
        on_stream
            .entry(envelope.environment_id.as_str())
            .or_default()
            .push(envelope);
    }
    for (env, events) in committed {
        let last = events.len() as u64;
        // Events committed after the snapshot may follow; they are not judged here.
        let published: Vec<&EventEnvelope> = on_stream
            .get(env.as_str())
            .map(|all| all.iter().copied().filter(|e| e.sequence <= last).collect())
            .unwrap_or_default();
        let sequences: Vec<u64> = published.iter().map(|e| e.sequence).collect();
        if sequences != (1..=last).collect::<Vec<_>>() {
            violations.push(Violation::WrongOrder {
                environment_id: env.clone(),
                on_stream: sequences,
                committed: last,
            });
            continue;
        }
        for (published, committed) in published.iter().zip(events) {
            if *published != committed {
                violations.push(Violation::Different {
                    environment_id: env.clone(),
                    sequence: committed.sequence,
                });
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(env: &str, sequence: u64) -> EventEnvelope {
        EventEnvelope {
            // Short ids, read as any stored id is: without validation.
            environment_id: serde_json::from_value(serde_json::json!(env)).unwrap(),
            sequence,
            event_type: "DestroyRequested".to_owned(),
            version: "1".to_owned(),
            payload: serde_json::json!({}),
            metadata: Default::default(),
            recorded_at: Default::default(),
        }
    }

    fn on_stream(subjects: &Subjects, events: &[EventEnvelope]) -> Vec<StreamMessage> {
        events
            .iter()
            .enumerate()
            .map(|(i, e)| StreamMessage {
                stream_sequence: i as u64 + 1,
                subject: subjects.event(e.environment_id.as_str(), &e.event_type),
                envelope: Some(e.clone()),
            })
            .collect()
    }

    #[test]
    fn the_check_accepts_interleaved_environments_and_later_events_and_finds_each_fault() {
        let subjects = Subjects::new("t");
        let committed = BTreeMap::from([
            ("a".to_owned(), vec![envelope("a", 1), envelope("a", 2)]),
            ("b".to_owned(), vec![envelope("b", 1)]),
        ]);
        let (a1, a2, a3, b1) = (
            envelope("a", 1),
            envelope("a", 2),
            envelope("a", 3),
            envelope("b", 1),
        );
        let good = [a1.clone(), b1.clone(), a2.clone(), a3.clone()];
        assert!(compare(&committed, &on_stream(&subjects, &good), &subjects).is_empty());

        for bad in [
            vec![a1.clone(), b1.clone()],                         // a:2 missing
            vec![a1.clone(), a1.clone(), a2.clone(), b1.clone()], // a:1 twice
            vec![a2.clone(), a1.clone(), b1.clone()],             // out of order
        ] {
            let found = compare(&committed, &on_stream(&subjects, &bad), &subjects);
            assert!(
                matches!(&found[..], [Violation::WrongOrder { environment_id, .. }] if environment_id == "a"),
                "{found:?}"
            );
        }
        let mut changed = a2.clone();
        changed.payload = serde_json::json!({"x": 1});
        let found = compare(
            &committed,
            &on_stream(&subjects, &[a1, changed, b1]),
            &subjects,
        );
        assert_eq!(
            found,
            [Violation::Different {
                environment_id: "a".into(),
                sequence: 2
            }]
        );
    }
}
