//! The messages every process exchanges over NATS, and their subjects. Pure data: the clients
//! that send them live in the infrastructure crates.
//!
//! One JSON shape serves the history endpoint, the SSE streams and the NATS events stream, so a
//! subscriber sees exactly what the audit trail shows.

use crate::aggregate::{Event, OperationOutcome};
use crate::ids::{EnvironmentId, OperationId};
use serde::{Deserialize, Serialize};

/// The largest event that may be committed: its [`EventEnvelope`] encoded as published
/// ([`EventEnvelope::encode`]). The event store refuses a larger one at commit, so every committed
/// event can be published; the events stream's `max_msg_size` is
/// [`MAX_EVENT_MESSAGE_BYTES`], well below NATS's default `max_payload` (1 MiB). The largest real
/// event (a request with the longest allowed values, or an apply's outputs) is a few KiB.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// The events stream's largest message: an event plus room for its headers (`Nats-Msg-Id`).
pub const MAX_EVENT_MESSAGE_BYTES: usize = MAX_EVENT_BYTES + 4 * 1024;

/// Who did what, why, and when; recorded with every event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    /// `user:<name>`, `token:<id>`, or `system:<component>`.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub request_id: String,
    /// The operation (or, before one exists, the request) this event belongs to.
    pub correlation_id: String,
    /// The event (`<env_id>:<sequence>`) or command that caused this one.
    pub causation_id: String,
    /// RFC 3339, UTC.
    pub recorded_at: String,
}

/// One committed event, as stored and as published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub environment_id: String,
    /// 1-based position in the environment's history.
    pub sequence: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: String,
    /// The event's fields (without the type tag).
    pub payload: serde_json::Value,
    pub metadata: EventMetadata,
    pub recorded_at: String,
}

impl EventEnvelope {
    /// Decodes the payload into the domain event it holds.
    pub fn event(&self) -> Result<Event, serde_json::Error> {
        serde_json::from_value(serde_json::json!({
            "type": self.event_type,
            "data": self.payload,
        }))
    }

    /// Builds the envelope from an `events` table row: `payload` is the stored tagged event
    /// (`{"type": .., "data": ..}`) and `metadata` the stored metadata object.
    pub fn from_stored(
        environment_id: String,
        sequence: u64,
        event_type: String,
        version: String,
        payload: serde_json::Value,
        metadata: serde_json::Value,
    ) -> Self {
        let payload = match payload {
            serde_json::Value::Object(mut tagged) => {
                tagged.remove("data").unwrap_or(serde_json::Value::Null)
            }
            other => other,
        };
        let metadata: EventMetadata = serde_json::from_value(metadata).unwrap_or_default();
        Self {
            environment_id,
            sequence,
            event_type,
            version,
            payload,
            recorded_at: metadata.recorded_at.clone(),
            metadata,
        }
    }

    /// The published form: the JSON the events stream, SSE and history carry.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// The JetStream de-duplication id: `<env_id>:<sequence>`.
    pub fn message_id(&self) -> String {
        format!("{}:{}", self.environment_id, self.sequence)
    }
}

/// An executor's report of how an operation ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationResult {
    pub environment_id: EnvironmentId,
    pub operation_id: OperationId,
    #[serde(flatten)]
    pub outcome: OperationOutcome,
}

/// One line of executor output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub environment_id: EnvironmentId,
    pub operation_id: OperationId,
    /// `stdout` or `stderr`, prefixed by the tool (`terraform:stdout`).
    pub stream: String,
    pub line: String,
    pub at: String,
}

/// Subject and stream names under one prefix, so several deployments (or tests) share a server;
/// and the durable consumers' names (one per stream, so they need no prefix). Every name of the
/// JetStream topology is spelled here and nowhere else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// The process manager's durable consumer on the events stream.
    pub const PROCESS_MANAGER_CONSUMER: &str = "process-manager";
    /// The process manager's durable consumer on the results stream.
    pub const PROCESS_MANAGER_RESULTS_CONSUMER: &str = "process-manager-results";
    /// The environments projection's durable consumer on the events stream.
    pub const PROJECTION_CONSUMER: &str = "projection-environments";
    /// The executors' durable job consumer on the events stream, shared by all replicas.
    pub const EXECUTOR_CONSUMER: &str = "executor";
    /// Every durable consumer name.
    pub const CONSUMERS: [&str; 4] = [
        Self::PROCESS_MANAGER_CONSUMER,
        Self::PROCESS_MANAGER_RESULTS_CONSUMER,
        Self::PROJECTION_CONSUMER,
        Self::EXECUTOR_CONSUMER,
    ];

    /// `prefix` must be a NATS token of `[a-z0-9_-]` (checked by the settings loader).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn stream(&self, suffix: &str) -> String {
        format!(
            "{}_{suffix}",
            self.prefix.to_ascii_uppercase().replace('-', "_")
        )
    }

    /// Stream holding every lifecycle event, forever.
    pub fn events_stream(&self) -> String {
        self.stream("EVENTS")
    }

    /// Work-queue stream of executor results.
    pub fn results_stream(&self) -> String {
        self.stream("RESULTS")
    }

    /// Stream of executor output lines (kept for a while).
    pub fn logs_stream(&self) -> String {
        self.stream("LOGS")
    }

    /// `<prefix>.events.>`
    pub fn all_events(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// `<prefix>.events.<env_id>.>`: every event of one environment.
    pub fn environment_events(&self, environment_id: &str) -> String {
        format!("{}.events.{environment_id}.>", self.prefix)
    }

    /// `<prefix>.events.<env_id>.<EventType>`
    pub fn event(&self, environment_id: &str, event_type: &str) -> String {
        format!("{}.events.{environment_id}.{event_type}", self.prefix)
    }

    /// `<prefix>.events.*.<EventType>`: one event type across environments.
    pub fn event_type(&self, event_type: &str) -> String {
        format!("{}.events.*.{event_type}", self.prefix)
    }

    /// `<prefix>.results.<env_id>`
    pub fn result(&self, environment_id: &str) -> String {
        format!("{}.results.{environment_id}", self.prefix)
    }

    pub fn all_results(&self) -> String {
        format!("{}.results.>", self.prefix)
    }

    /// `<prefix>.logs.<env_id>.<op_id>`
    pub fn logs(&self, environment_id: &str, operation_id: &str) -> String {
        format!("{}.logs.{environment_id}.{operation_id}", self.prefix)
    }

    pub fn environment_logs(&self, environment_id: &str) -> String {
        format!("{}.logs.{environment_id}.>", self.prefix)
    }

    pub fn all_logs(&self) -> String {
        format!("{}.logs.>", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_distinct_nats_names() {
        let names: std::collections::BTreeSet<&str> = Subjects::CONSUMERS.into_iter().collect();
        assert_eq!(names.len(), Subjects::CONSUMERS.len());
        for name in names {
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{name}"
            );
        }
        assert_eq!(
            Subjects::CONSUMERS,
            [
                "process-manager",
                "process-manager-results",
                "projection-environments",
                "executor"
            ]
        );
    }

    #[test]
    fn subjects_follow_the_documented_layout() {
        let subjects = Subjects::new("beta9-prov");
        assert_eq!(subjects.events_stream(), "BETA9_PROV_EVENTS");
        assert_eq!(
            subjects.event("env_x", "InfraApplied"),
            "beta9-prov.events.env_x.InfraApplied"
        );
        assert_eq!(
            subjects.environment_events("env_x"),
            "beta9-prov.events.env_x.>"
        );
    }
}
