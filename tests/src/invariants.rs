//! Invariants a test checks after it did its damage, whatever the damage was.
//!
//! [`committed_events_published_once`]: every committed event (the `events` table) is on the
//! JetStream events stream exactly once, on its subject, as committed, and in sequence order per
//! environment. It holds under ongoing traffic: it checks a snapshot of the table, waits until
//! the relay has dealt with that snapshot's outbox rows, and ignores what was committed later.

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use domain::wire::{EventEnvelope, Subjects};
use futures::StreamExt;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

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
