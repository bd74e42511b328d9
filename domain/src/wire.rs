//! The messages every process exchanges over NATS, and their subjects. Pure data: the clients
//! that send them live in the infrastructure crates.
//!
//! One JSON shape serves the history endpoint, the SSE streams and the NATS events stream, so a
//! subscriber sees exactly what the audit trail shows.

use crate::aggregate::{Event, OperationOutcome, UpcastError, upcast};
use crate::ids::{EnvironmentId, OperationId};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest event that may be committed: its [`EventEnvelope`] encoded as published
/// ([`EventEnvelope::encode`]). The event store refuses a larger one at commit, so every committed
/// event can be published; the events stream's `max_msg_size` is
/// [`MAX_EVENT_MESSAGE_BYTES`], well below NATS's default `max_payload` (1 MiB). The largest real
/// event (a request with the longest allowed values, or an apply's outputs) is a few KiB.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// The events stream's largest message: an event plus room for its headers (`Nats-Msg-Id`).
pub const MAX_EVENT_MESSAGE_BYTES: usize = MAX_EVENT_BYTES + 4 * 1024;

/// The text of a metadata id: any string is accepted when reading (events are kept forever, so
/// decoding never tightens); the constructors below are the only ways new values are made.
macro_rules! metadata_text {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

metadata_text!(
    /// Who caused an event: `user:<name>`, `token:<id>` (an API caller, as authenticated), or
    /// `system:<component>`.
    Actor
);
metadata_text!(
    /// The request an event belongs to: the API's request id, or for events no request caused,
    /// `result:<op_id>` / `deadline:<op_id>`.
    RequestId
);
metadata_text!(
    /// The operation (or, before one exists, the request) an event belongs to.
    CorrelationId
);
metadata_text!(
    /// What caused an event: `request:<request_id>`, an event `<env_id>:<sequence>`,
    /// `result:<op_id>`, `deadline:<env_id>:<sequence>` or `advisory:max-deliveries:<stream_seq>`.
    CausationId
);

impl Actor {
    /// The process manager, starting steps and recording abandoned jobs.
    pub const PROCESS_MANAGER: &str = "system:process-manager";
    /// An executor, whose result is recorded.
    pub const EXECUTOR: &str = "system:executor";
    /// The deadline sweep, timing operations out.
    pub const DEADLINE_SWEEP: &str = "system:deadline-sweep";

    /// An authenticated API caller, as the edge names it (`user:<name>` or `token:<id>`).
    pub fn caller(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    fn system(component: &'static str) -> Self {
        Self(component.to_owned())
    }
}

impl RequestId {
    /// The id of an API request (validated and bounded at the edge).
    pub fn new(request_id: impl Into<String>) -> Self {
        Self(request_id.into())
    }
}

impl CorrelationId {
    fn request(request_id: &RequestId) -> Self {
        Self(request_id.0.clone())
    }

    fn operation(operation_id: &OperationId) -> Self {
        Self(operation_id.to_string())
    }
}

/// Who did what and why; recorded with every event. When is the envelope's
/// [`EventEnvelope::recorded_at`], stamped by the event store at commit.
///
/// Built per cause — [`Self::request`], [`Self::trigger`], [`Self::result`], [`Self::timeout`],
/// [`Self::abandoned`] — so every event of one cause carries the same fields, spelled the same.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "Who did what and why; recorded with every event.")]
pub struct EventMetadata {
    pub actor: Actor,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub request_id: RequestId,
    /// The operation (or, before one exists, the request) this event belongs to.
    pub correlation_id: CorrelationId,
    /// The event (`<env_id>:<sequence>`), request, result or deadline that caused this one.
    pub causation_id: CausationId,
}

impl EventMetadata {
    /// An API request's command: correlated by the request (no operation exists yet).
    pub fn request(actor: Actor, tenant: Option<String>, request_id: RequestId) -> Self {
        Self {
            actor,
            tenant,
            causation_id: CausationId(format!("request:{request_id}")),
            correlation_id: CorrelationId::request(&request_id),
            request_id,
        }
    }

    /// The process manager reacting to `cause` by starting `operation_id`: caused by that
    /// event (`<env_id>:<sequence>`), in its request and tenant.
    pub fn trigger(cause: &EventEnvelope, operation_id: &OperationId) -> Self {
        Self {
            actor: Actor::system(Actor::PROCESS_MANAGER),
            tenant: cause.metadata.tenant.clone(),
            request_id: cause.metadata.request_id.clone(),
            correlation_id: CorrelationId::operation(operation_id),
            causation_id: CausationId(cause.message_id()),
        }
    }

    /// An executor's result of `operation_id`, in the request that caused its job when the
    /// result names it (`result:<op_id>` otherwise).
    pub fn result(operation_id: &OperationId, request_id: Option<&RequestId>) -> Self {
        Self {
            actor: Actor::system(Actor::EXECUTOR),
            tenant: None,
            request_id: request_id
                .cloned()
                .unwrap_or_else(|| RequestId(format!("result:{operation_id}"))),
            correlation_id: CorrelationId::operation(operation_id),
            causation_id: CausationId(format!("result:{operation_id}")),
        }
    }

    /// The deadline sweep timing out `operation_id`, started by event `started_sequence` of
    /// `environment_id` (whose metadata is `started`, when it can be read): in that event's
    /// request and tenant.
    pub fn timeout(
        environment_id: &str,
        started_sequence: i64,
        operation_id: &OperationId,
        started: Option<&EventMetadata>,
    ) -> Self {
        Self {
            actor: Actor::system(Actor::DEADLINE_SWEEP),
            tenant: started.and_then(|started| started.tenant.clone()),
            request_id: started.map_or_else(
                || RequestId(format!("deadline:{operation_id}")),
                |started| started.request_id.clone(),
            ),
            correlation_id: CorrelationId::operation(operation_id),
            causation_id: CausationId(format!("deadline:{environment_id}:{started_sequence}")),
        }
    }

    /// The process manager failing `operation_id`, whose job (`started`) JetStream stopped
    /// redelivering: caused by the max-deliveries advisory about stream message `stream_sequence`.
    pub fn abandoned(
        started: &EventEnvelope,
        operation_id: &OperationId,
        stream_sequence: u64,
    ) -> Self {
        Self {
            actor: Actor::system(Actor::PROCESS_MANAGER),
            tenant: started.metadata.tenant.clone(),
            request_id: started.metadata.request_id.clone(),
            correlation_id: CorrelationId::operation(operation_id),
            causation_id: CausationId(format!("advisory:max-deliveries:{stream_sequence}")),
        }
    }
}

/// One committed event, as stored and as published.
///
/// Published (history, SSE, NATS) as `{environment_id, sequence, type, version, payload,
/// metadata, recorded_at}`, where `metadata` also carries `recorded_at` (the documented shape);
/// both are written from the one [`Self::recorded_at`], and reading takes the top-level one.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct EventEnvelope {
    pub environment_id: EnvironmentId,
    /// 1-based position in the environment's history.
    pub sequence: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: String,
    /// The event's fields (without the type tag).
    pub payload: serde_json::Value,
    pub metadata: EventMetadata,
    /// When the event was committed (UTC, microseconds: what is stored).
    pub recorded_at: DateTime<Utc>,
}

/// `recorded_at` as written everywhere: RFC 3339, UTC, microseconds (`…T12:00:00.000000Z`).
pub fn format_recorded_at(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// An envelope's metadata as published: the metadata's fields and `recorded_at`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PublishedMetadata<'a> {
    #[serde(flatten)]
    metadata: &'a EventMetadata,
    /// The envelope's `recorded_at`.
    #[schema(format = DateTime)]
    recorded_at: String,
}

impl Serialize for EventEnvelope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Published<'a> {
            environment_id: &'a EnvironmentId,
            sequence: u64,
            #[serde(rename = "type")]
            event_type: &'a str,
            version: &'a str,
            payload: &'a serde_json::Value,
            metadata: PublishedMetadata<'a>,
            recorded_at: String,
        }
        Published {
            environment_id: &self.environment_id,
            sequence: self.sequence,
            event_type: &self.event_type,
            version: &self.version,
            payload: &self.payload,
            metadata: self.published_metadata(),
            recorded_at: format_recorded_at(&self.recorded_at),
        }
        .serialize(serializer)
    }
}

impl EventEnvelope {
    /// Decodes the payload into the domain event it holds, through [`upcast`] (so a payload of an
    /// older version decodes as its current shape).
    pub fn event(&self) -> Result<Event, EventDecodeError> {
        let payload = upcast(&self.event_type, &self.version, self.payload.clone())?;
        Ok(serde_json::from_value(serde_json::json!({
            "type": self.event_type,
            "data": payload.payload,
        }))?)
    }

    /// The metadata as published, with `recorded_at`.
    pub fn published_metadata(&self) -> PublishedMetadata<'_> {
        PublishedMetadata {
            metadata: &self.metadata,
            recorded_at: format_recorded_at(&self.recorded_at),
        }
    }

    /// The published form: the JSON the events stream, SSE and history carry.
    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// The tenant of the environment the event belongs to: the event store records it in every
    /// event's metadata; an event recorded before tenants existed is the default tenant's.
    pub fn tenant(&self) -> &str {
        self.metadata
            .tenant
            .as_deref()
            .unwrap_or(crate::tenant::TenantId::DEFAULT)
    }

    /// The JetStream de-duplication id: `<env_id>:<sequence>`.
    pub fn message_id(&self) -> String {
        format!("{}:{}", self.environment_id, self.sequence)
    }
}

/// Why an envelope's payload is not a domain event.
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    /// Its version cannot be brought to the current one.
    #[error(transparent)]
    Upcast(#[from] UpcastError),
    /// The (upcast) payload is not the event type's shape, or the type is unknown.
    #[error(transparent)]
    Payload(#[from] serde_json::Error),
}

/// An executor's report of how an operation ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OperationResult {
    pub environment_id: EnvironmentId,
    pub operation_id: OperationId,
    #[serde(flatten)]
    pub outcome: OperationOutcome,
    /// The fencing token: the attempt (the job's delivery) that ran the step. A result of an
    /// attempt older than the one holding the environment's [`StepLease`] is rejected. Absent
    /// from results sent before attempts were carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u64>,
    /// The request that caused the job (from the job event's metadata), carried back so the
    /// events this result causes stay in that request. Absent from results of older executors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

/// Which executor runs an environment's step, and which attempt of it: one key per environment
/// in the executors' lease bucket ([`Subjects::leases_bucket`]). The holder renews it while its
/// step runs; a newer attempt takes it over only once it lapsed; a result is accepted only
/// from the attempt that holds it (or held it last).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepLease {
    pub operation_id: OperationId,
    /// The job message's delivery number (1 on the first delivery).
    pub attempt: u64,
    /// The executor process holding it (`<host>:<pid>:<random>`).
    pub executor: String,
    /// When the holder last renewed it, in milliseconds since the Unix epoch.
    pub renewed_at_ms: i64,
    /// The step ended and its holder let go: the next step need not wait for a lapse.
    #[serde(default)]
    pub released: bool,
    /// How long the lease lasts without renewal, in milliseconds (the executor's ack wait).
    /// Absent from leases written before it was carried: [`StepLease::DEFAULT_TTL_MS`] then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

impl StepLease {
    /// The lease time of a lease that does not say (the executors' default ack wait).
    pub const DEFAULT_TTL_MS: u64 = 30_000;

    /// Whether its holder may still be running the step at `now_ms`: it did not let go, and
    /// renewed the lease within its time. The rule the command side uses before an admin's
    /// force-unlock; the executors' own takeover uses their configured ack wait.
    pub fn is_live(&self, now_ms: i64) -> bool {
        let ttl = self.ttl_ms.unwrap_or(Self::DEFAULT_TTL_MS);
        let age = u64::try_from(now_ms.saturating_sub(self.renewed_at_ms)).unwrap_or(0);
        !self.released && age <= ttl
    }

    /// Whether a result of `attempt` for `operation_id` comes from a superseded attempt.
    pub fn fences_out(&self, operation_id: &OperationId, attempt: u64) -> bool {
        &self.operation_id == operation_id && self.attempt > attempt
    }
}

/// One line of executor output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// The process manager's durable consumer of the events that end an operation, on the
    /// events stream: where each operation's end is counted once across API replicas (metrics).
    pub const OPERATION_ENDS_CONSUMER: &str = "process-manager-operation-ends";
    /// The process manager's durable consumer of the final events (an environment destroyed),
    /// on the events stream: where its sealed secrets are removed.
    pub const FINAL_EVENTS_CONSUMER: &str = "process-manager-final";
    /// Every durable consumer name.
    pub const CONSUMERS: [&str; 6] = [
        Self::PROCESS_MANAGER_CONSUMER,
        Self::PROCESS_MANAGER_RESULTS_CONSUMER,
        Self::PROJECTION_CONSUMER,
        Self::EXECUTOR_CONSUMER,
        Self::OPERATION_ENDS_CONSUMER,
        Self::FINAL_EVENTS_CONSUMER,
    ];

    /// Every durable consumer with the stream it reads: the results stream for
    /// [`Self::PROCESS_MANAGER_RESULTS_CONSUMER`], the events stream for the others.
    pub fn durable_consumers(&self) -> [(String, &'static str); 6] {
        Self::CONSUMERS.map(|name| {
            let stream = if name == Self::PROCESS_MANAGER_RESULTS_CONSUMER {
                self.results_stream()
            } else {
                self.events_stream()
            };
            (stream, name)
        })
    }

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

    /// The key-value bucket of the executors' [`StepLease`]s, keyed by environment id.
    pub fn leases_bucket(&self) -> String {
        self.stream("LEASES")
    }

    /// The key-value bucket of the environments' sealed external ids (`domain::sealed`),
    /// keyed by environment id: the value kept apart from the events.
    pub fn secrets_bucket(&self) -> String {
        self.stream("SECRETS")
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
    fn a_lease_is_live_until_released_or_not_renewed_within_its_time() {
        let lease = StepLease {
            operation_id: OperationId::parse("op_01jd0000000000000000000001").unwrap(),
            attempt: 1,
            executor: "host:1:a".into(),
            renewed_at_ms: 1_000_000,
            released: false,
            ttl_ms: Some(5_000),
        };
        assert!(lease.is_live(1_000_000));
        assert!(lease.is_live(1_005_000));
        assert!(!lease.is_live(1_005_001));
        let released = StepLease {
            released: true,
            ..lease.clone()
        };
        assert!(!released.is_live(1_000_000));
        let old = StepLease {
            ttl_ms: None,
            ..lease
        };
        assert!(old.is_live(1_000_000 + 30_000));
        assert!(!old.is_live(1_000_000 + 30_001));
    }

    fn envelope() -> EventEnvelope {
        serde_json::from_value(serde_json::json!({
            "environment_id": "env_01jdxk6f6b6cz8r9qv1g4t4m3a",
            "sequence": 3,
            "type": "InfraApplied",
            "version": "1",
            "payload": {"operation_id": "op_01jdxk6f6b6cz8r9qv1g4t4m3b", "outputs": {}},
            "metadata": {"actor": "token:admin", "tenant": "acme", "request_id": "req_1",
                         "correlation_id": "req_1", "causation_id": "request:req_1",
                         "recorded_at": "2025-01-01T00:00:00.000000Z"},
            "recorded_at": "2025-01-01T00:00:00.123456Z",
        }))
        .unwrap()
    }

    #[test]
    fn the_envelope_publishes_the_documented_shape_with_recorded_at_from_one_field() {
        let envelope = envelope();
        // Reading takes the top-level recorded_at; the metadata's copy is only published.
        assert_eq!(
            format_recorded_at(&envelope.recorded_at),
            "2025-01-01T00:00:00.123456Z"
        );
        let published = serde_json::to_value(&envelope).unwrap();
        let keys: Vec<&str> = published
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "environment_id",
            "sequence",
            "type",
            "version",
            "payload",
            "metadata",
            "recorded_at",
        ] {
            assert!(keys.contains(&key), "{key} missing from {published}");
        }
        assert_eq!(published["recorded_at"], "2025-01-01T00:00:00.123456Z");
        assert_eq!(
            published["metadata"]["recorded_at"],
            "2025-01-01T00:00:00.123456Z"
        );
        assert_eq!(published["metadata"]["tenant"], "acme");
        let back: EventEnvelope = serde_json::from_value(published).unwrap();
        assert_eq!(back, envelope);
    }

    #[test]
    fn metadata_is_built_per_cause() {
        let cause = envelope();
        let op = OperationId::parse("op_01jdxk6f6b6cz8r9qv1g4t4m3c").unwrap();

        let request = EventMetadata::request(
            Actor::caller("user:ada"),
            Some("acme".into()),
            RequestId::new("req_9"),
        );
        assert_eq!(request.actor.as_str(), "user:ada");
        assert_eq!(request.correlation_id.as_str(), "req_9");
        assert_eq!(request.causation_id.as_str(), "request:req_9");

        let trigger = EventMetadata::trigger(&cause, &op);
        assert_eq!(trigger.actor.as_str(), Actor::PROCESS_MANAGER);
        assert_eq!(trigger.tenant.as_deref(), Some("acme"));
        assert_eq!(trigger.request_id.as_str(), "req_1");
        assert_eq!(trigger.correlation_id.as_str(), op.as_str());
        assert_eq!(
            trigger.causation_id.as_str(),
            "env_01jdxk6f6b6cz8r9qv1g4t4m3a:3"
        );

        let result = EventMetadata::result(&op, None);
        assert_eq!(result.actor.as_str(), Actor::EXECUTOR);
        assert_eq!(result.tenant, None);
        assert_eq!(result.request_id.as_str(), format!("result:{op}"));
        assert_eq!(result.causation_id.as_str(), format!("result:{op}"));
        let in_request = EventMetadata::result(&op, Some(&trigger.request_id));
        assert_eq!(in_request.request_id.as_str(), "req_1");
        assert_eq!(in_request.causation_id.as_str(), format!("result:{op}"));

        let timeout = EventMetadata::timeout("env_x", 4, &op, None);
        assert_eq!(timeout.actor.as_str(), Actor::DEADLINE_SWEEP);
        assert_eq!(timeout.request_id.as_str(), format!("deadline:{op}"));
        assert_eq!(timeout.causation_id.as_str(), "deadline:env_x:4");
        let timeout = EventMetadata::timeout("env_x", 4, &op, Some(&cause.metadata));
        assert_eq!(timeout.request_id.as_str(), "req_1");
        assert_eq!(timeout.tenant.as_deref(), Some("acme"));

        let abandoned = EventMetadata::abandoned(&cause, &op, 17);
        assert_eq!(abandoned.actor.as_str(), Actor::PROCESS_MANAGER);
        assert_eq!(abandoned.request_id.as_str(), "req_1");
        assert_eq!(abandoned.correlation_id.as_str(), op.as_str());
        assert_eq!(
            abandoned.causation_id.as_str(),
            "advisory:max-deliveries:17"
        );
    }

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
                "executor",
                "process-manager-operation-ends",
                "process-manager-final"
            ]
        );
        let subjects = Subjects::new("p");
        let on_results: Vec<&str> = subjects
            .durable_consumers()
            .into_iter()
            .filter(|(stream, _)| *stream == subjects.results_stream())
            .map(|(_, name)| name)
            .collect();
        assert_eq!(on_results, ["process-manager-results"]);
    }

    #[test]
    fn subjects_follow_the_documented_layout() {
        let subjects = Subjects::new("beta9-prov");
        assert_eq!(subjects.events_stream(), "BETA9_PROV_EVENTS");
        assert_eq!(subjects.secrets_bucket(), "BETA9_PROV_SECRETS");
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
