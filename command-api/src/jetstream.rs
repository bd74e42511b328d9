//! The JetStream topology the command side owns: the events, results and logs streams.

use async_nats::jetstream::{self, stream};
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
}

/// Creates the streams if missing. Idempotent; every API replica runs it at start-up.
pub async fn ensure_streams(
    js: &jetstream::Context,
    subjects: &Subjects,
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
    for config in configs {
        let name = config.name.clone();
        js.get_or_create_stream(config)
            .await
            .map_err(|source| TopologyError::Stream {
                stream: name,
                source,
            })?;
    }
    Ok(())
}
