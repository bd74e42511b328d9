//! Searching for secrets: canary values (a known database password, a key, an external id)
//! looked for in every text a deployment gives out or leaves behind. The search is written
//! once ([`search`], [`assert_absent`]); the collectors gather the texts, each as a [`Source`]
//! named for the failure message: [`files_under`] (a data directory), [`WireTap`] (every message
//! published on the stack's NATS subjects while a test runs, the work-queue results included),
//! [`stream_messages`] (what a JetStream stream keeps) and [`sse_text_until`] (an SSE stream).

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::wire::Subjects;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use reqwest::Method;
use tokio::task::JoinHandle;

use crate::ApiClient;

/// One text searched, and where it came from.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// A secret to look for: what it is (for the message) and its value.
#[derive(Clone, Copy, Debug)]
pub struct Canary<'a> {
    pub name: &'a str,
    pub value: &'a str,
}

/// A canary found in a source, with the text around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub canary: String,
    pub source: String,
    pub context: String,
}

impl fmt::Display for Hit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in {}: …{}…", self.canary, self.source, self.context)
    }
}

/// Characters of context shown on each side of a hit.
const CONTEXT: usize = 60;

/// Every occurrence of every canary in every source.
pub fn search(sources: &[Source], canaries: &[Canary<'_>]) -> Vec<Hit> {
    let mut hits = Vec::new();
    for canary in canaries {
        assert!(
            !canary.value.is_empty(),
            "the canary {} is empty",
            canary.name
        );
        for source in sources {
            for (at, _) in source.text.match_indices(canary.value) {
                let start = floor_char_boundary(&source.text, at.saturating_sub(CONTEXT));
                let end = floor_char_boundary(
                    &source.text,
                    (at + canary.value.len() + CONTEXT).min(source.text.len()),
                );
                hits.push(Hit {
                    canary: canary.name.to_owned(),
                    source: source.name.clone(),
                    context: source.text[start..end].to_owned(),
                });
            }
        }
    }
    hits
}

fn floor_char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Fails the test, naming each hit, if any canary occurs in any source.
pub fn assert_absent(sources: &[Source], canaries: &[Canary<'_>]) {
    let hits = search(sources, canaries);
    assert!(
        hits.is_empty(),
        "secrets found ({} hits in {} sources searched):\n{}",
        hits.len(),
        sources.len(),
        hits.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Every regular file under `dir` (recursively; symbolic links not followed), its bytes read
/// as text (lossily), named by its path.
pub fn files_under(dir: &Path) -> Vec<Source> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file()
                && let Ok(bytes) = std::fs::read(&path)
            {
                found.push(Source::new(
                    format!("file {}", path.display()),
                    String::from_utf8_lossy(&bytes),
                ));
            }
        }
    }
    found
}

/// Every message published on the stack's subjects (`<p>.>`: events, results, logs) and on its
/// key-value buckets (leases, secrets), heard by core-NATS subscriptions from [`WireTap::start`] on, whether or not a
/// stream keeps it (the results stream is a work queue: an acknowledged result is gone).
pub struct WireTap {
    heard: Arc<Mutex<Vec<Source>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl WireTap {
    pub async fn start(nats_url: &str, subjects: &Subjects) -> WireTap {
        let client = async_nats::connect(nats_url).await.expect("connect nats");
        let heard = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for subject in [
            format!("{}.>", subjects.prefix()),
            format!("$KV.{}.>", subjects.leases_bucket()),
            format!("$KV.{}.>", subjects.secrets_bucket()),
        ] {
            let mut subscription = client.subscribe(subject).await.expect("subscribe");
            let heard = heard.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(message) = subscription.next().await {
                    heard.lock().unwrap().push(Source::new(
                        format!("nats message on {}", message.subject),
                        String::from_utf8_lossy(&message.payload),
                    ));
                }
            }));
        }
        // The subscriptions are registered with the server before anything is published.
        client.flush().await.expect("flush nats");
        WireTap { heard, tasks }
    }

    /// What was heard so far.
    pub fn sources(&self) -> Vec<Source> {
        self.heard.lock().unwrap().clone()
    }
}

impl Drop for WireTap {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Every message of every stream of the stack's (the streams, and the key-value buckets, which
/// are streams `KV_<bucket>`), as [`stream_messages`] reads each; the streams' names are
/// returned too, so a test can check it read the ones it expects.
pub async fn all_stream_messages(
    nats_url: &str,
    subjects: &Subjects,
) -> (Vec<String>, Vec<Source>) {
    let client = async_nats::connect(nats_url).await.expect("connect nats");
    let js = async_nats::jetstream::new(client);
    let ours = subjects.events_stream().replace("_EVENTS", "_");
    let names: Vec<String> = js
        .stream_names()
        .filter_map(|name| async move { name.ok() })
        .filter(|name| {
            let mine = name.starts_with(&ours) || name.starts_with(&format!("KV_{ours}"));
            async move { mine }
        })
        .collect()
        .await;
    let mut read = Vec::new();
    for name in &names {
        read.extend(stream_messages(nats_url, name).await);
    }
    (names, read)
}

/// Every message a JetStream stream holds now, in stream order (read one by one by sequence,
/// with no consumer, so work-queue streams are read as they are).
pub async fn stream_messages(nats_url: &str, stream: &str) -> Vec<Source> {
    let client = async_nats::connect(nats_url).await.expect("connect nats");
    let js = async_nats::jetstream::new(client);
    let mut handle = js
        .get_stream(stream)
        .await
        .unwrap_or_else(|e| panic!("stream {stream}: {e}"));
    let state = handle.info().await.expect("stream info").state.clone();
    let mut read = Vec::new();
    if state.messages == 0 {
        return read;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        // A deleted message (purged, or acknowledged from a work queue) is not there.
        let Ok(message) = handle.get_raw_message(sequence).await else {
            continue;
        };
        read.push(Source::new(
            format!("{stream} message {sequence} on {}", message.subject),
            format!(
                "{:?}\n{}",
                message.headers,
                String::from_utf8_lossy(&message.payload)
            ),
        ));
    }
    read
}

/// Reads the SSE stream at `path` until an event of type `terminal` arrives (or `within`
/// passes, which fails the test), in a task; its text is each event's id, type and data.
pub fn sse_text_until(
    client: &ApiClient,
    path: &str,
    terminal: &'static str,
    within: Duration,
) -> JoinHandle<Source> {
    let request = client.request(Method::GET, path);
    let name = format!("SSE {path}");
    tokio::spawn(async move {
        let response = request.send().await.expect("GET the SSE stream");
        assert_eq!(response.status(), reqwest::StatusCode::OK, "{name}");
        let mut events = response.bytes_stream().eventsource();
        let mut text = String::new();
        let read = async {
            while let Some(event) = events.next().await {
                let event = event.expect("an SSE event");
                text.push_str(&format!(
                    "id: {}\nevent: {}\ndata: {}\n\n",
                    event.id, event.event, event.data
                ));
                if event.event == terminal {
                    return;
                }
            }
            panic!("{name} ended before {terminal}");
        };
        if tokio::time::timeout(within, read).await.is_err() {
            panic!("no {terminal} on {name} within {within:?}; read:\n{text}");
        }
        Source::new(name, text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_finds_each_canary_wherever_it_is_and_only_there() {
        let sources = [
            Source::new("a", "nothing here"),
            Source::new("b", "password=hunter2-canary and hunter2-canary"),
            Source::new("c", "é key-canary"),
        ];
        let canaries = [
            Canary {
                name: "password",
                value: "hunter2-canary",
            },
            Canary {
                name: "key",
                value: "key-canary",
            },
            Canary {
                name: "absent",
                value: "nowhere-canary",
            },
        ];
        let hits = search(&sources, &canaries);
        let found: Vec<(&str, &str)> = hits
            .iter()
            .map(|hit| (hit.canary.as_str(), hit.source.as_str()))
            .collect();
        assert_eq!(
            found,
            [("password", "b"), ("password", "b"), ("key", "c")],
            "{hits:?}"
        );
        assert_eq!(hits[2].context, "é key-canary");
        assert!(search(&sources[..1], &canaries).is_empty());
    }

    #[test]
    #[should_panic(expected = "password in b")]
    fn a_hit_fails_the_assertion_naming_the_secret_and_the_source() {
        assert_absent(
            &[Source::new("b", "hunter2-canary")],
            &[Canary {
                name: "password",
                value: "hunter2-canary",
            }],
        );
    }

    #[test]
    fn files_are_found_in_nested_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/leak.txt"), "x hunter2-canary").unwrap();
        std::fs::write(dir.path().join("top"), b"\xff\xfe binary").unwrap();
        let sources = files_under(dir.path());
        assert_eq!(sources.len(), 2);
        let hits = search(
            &sources,
            &[Canary {
                name: "password",
                value: "hunter2-canary",
            }],
        );
        assert_eq!(hits.len(), 1);
        assert!(hits[0].source.ends_with("a/b/leak.txt"), "{hits:?}");
    }
}
