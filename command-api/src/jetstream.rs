//! The JetStream topology the command side owns: the events, results and logs streams, each
//! with the deployment's replica count (`PROVISIONER_STREAM_REPLICAS`: 1 on a single server, 3
//! on a three-server cluster).

use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::{self, ErrorCode, stream};
use domain::wire::{MAX_EVENT_MESSAGE_BYTES, Subjects};
use std::time::Duration;

/// How long JetStream remembers a `Nats-Msg-Id` to drop a republished duplicate.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long executor output is kept.
pub const LOG_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("failed to create or update stream {stream}")]
    Stream {
        stream: String,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    /// The servers cannot hold that many copies: more replicas than JetStream servers in the
    /// cluster (or replicas above 1 on a single server).
    #[error(
        "stream {stream} cannot have {replicas} replicas: NATS has fewer JetStream servers than \
         that (or not enough storage on them); set PROVISIONER_STREAM_REPLICAS to at most the \
         cluster's size (1 for a single server)"
    )]
    Replicas {
        stream: String,
        replicas: usize,
        #[source]
        source: jetstream::context::CreateStreamError,
    },
}

impl TopologyError {
    fn of(stream: String, replicas: usize, source: jetstream::context::CreateStreamError) -> Self {
        match source.kind() {
            CreateStreamErrorKind::JetStream(error)
                if [
                    // No placement for that many copies (a cluster smaller than that).
                    ErrorCode::CLUSTER_NO_PEERS,
                    ErrorCode::INSUFFICIENT_RESOURCES,
                    ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED,
                ]
                .contains(&error.error_code()) =>
            {
                Self::Replicas {
                    stream,
                    replicas,
                    source,
                }
            }
            _ => Self::Stream { stream, source },
        }
    }
}

/// Creates the streams if missing, each with `replicas` copies, and changes the replica count
/// of an existing one that has another (nothing else of an existing stream is changed).
/// Idempotent; every API replica runs it at start-up.
pub async fn ensure_streams(
    js: &jetstream::Context,
    subjects: &Subjects,
    replicas: usize,
) -> Result<(), TopologyError> {
    let configs = [
        stream::Config {
            name: subjects.events_stream(),
            description: Some("every environment lifecycle event, in order per environment".into()),
            subjects: vec![subjects.all_events()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            // The event store refuses larger events at commit, so this only stops strangers.
            max_message_size: i32::try_from(MAX_EVENT_MESSAGE_BYTES).unwrap_or(i32::MAX),
            ..Default::default()
        },
        stream::Config {
            name: subjects.results_stream(),
            description: Some("executor results, consumed by the process manager".into()),
            subjects: vec![subjects.all_results()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        },
        stream::Config {
            name: subjects.logs_stream(),
            description: Some("executor output lines per operation".into()),
            subjects: vec![subjects.all_logs()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_age: LOG_RETENTION,
            ..Default::default()
        },
    ];
    for mut config in configs {
        config.num_replicas = replicas;
        let name = config.name.clone();
        let stream = js
            .get_or_create_stream(config)
            .await
            .map_err(|source| TopologyError::of(name.clone(), replicas, source))?;
        let existing = &stream.cached_info().config;
        if existing.num_replicas != replicas {
            let mut changed = existing.clone();
            changed.num_replicas = replicas;
            js.update_stream(changed)
                .await
                .map_err(|source| TopologyError::of(name, replicas, source))?;
        }
    }
    Ok(())
}
