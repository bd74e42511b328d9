//! Shared test helpers: event histories, a throw-away Postgres database, a throw-away
//! nats-server with JetStream.
//!
//! The servers come from `system_tests::services`.

#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::aggregate::{Event, OperationJob};
use domain::spec::{EnvironmentSpec, Step};
use domain::wire::{Actor, EventEnvelope, EventMetadata, RequestId};
use domain::{EnvironmentId, OperationId};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::time::Instant;

// ---------------------------------------------------------------------------------------------
// Event histories

/// A sandbox spec named `name`.
pub fn sandbox_spec(name: &str) -> EnvironmentSpec {
    spec_from(
        name,
        serde_json::json!({"provider": "sandbox", "region": "sandbox-local", "simulate": {}}),
    )
}

/// An AWS spec named `name`.
pub fn aws_spec(name: &str) -> EnvironmentSpec {
    spec_from(
        name,
        serde_json::json!({
            "provider": "aws",
            "region": "us-east-1",
            "account_id": "123456789012",
            "role_arn": "arn:aws:iam::123456789012:role/Beta9Provisioner",
        }),
    )
}

fn spec_from(name: &str, cloud: serde_json::Value) -> EnvironmentSpec {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "cloud": cloud,
        "cluster": {"profile": "small"},
        "data": {
            "postgres": {"size": "small", "multi_az": false},
            "redis": {"size": "small", "ha": false},
        },
        "beta9": {"domain": format!("{name}.beta9.local"), "workers": {"gpu_enabled": false}},
    }))
    .expect("test spec deserializes")
}

/// A fixed operation id; `n` tells them apart.
pub fn op(n: u8) -> OperationId {
    OperationId::parse(&format!("op_01jd00000000000000000000{n:02}")).unwrap()
}

pub fn outputs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A time with a nanosecond part, so tests see the view truncate to what Postgres keeps.
pub fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_732_000_000 + seconds, 123_456_789)
        .single()
        .unwrap()
}

/// One environment's events, built in order. Event `i` (0-based) has sequence `i + 1` and is
/// recorded `i` seconds after `start`.
#[derive(Clone, Debug)]
pub struct History {
    pub env_id: EnvironmentId,
    pub spec: EnvironmentSpec,
    pub events: Vec<Event>,
    pub start: DateTime<Utc>,
}

impl History {
    /// A new environment: `EnvironmentRequested` for a sandbox spec named `name`.
    pub fn requested(name: &str) -> Self {
        Self::requested_with(sandbox_spec(name), at(0))
    }

    pub fn requested_with(spec: EnvironmentSpec, start: DateTime<Utc>) -> Self {
        let env_id = EnvironmentId::generate();
        let infra_model = domain::infra_model::InfraModel::for_spec(&spec);
        Self {
            events: vec![Event::EnvironmentRequested {
                id: env_id.clone(),
                spec: spec.clone(),
                infra_model,
                tenant: domain::tenant::TenantId::default(),
            }],
            env_id,
            spec,
            start,
        }
    }

    /// Requested, infra applied, bootstrapped: `ready` at sequence 5.
    pub fn ready(name: &str) -> Self {
        Self::requested(name)
            .infra_started(1)
            .infra_applied(1, &[("vpc_id", "vpc-1"), ("cluster", "eks-1")])
            .bootstrap_started(2)
            .bootstrap_completed(2, &[("api_url", "https://api.example")])
    }

    pub fn then(mut self, event: Event) -> Self {
        self.events.push(event);
        self
    }

    pub fn job(&self, step: Step) -> OperationJob {
        OperationJob {
            environment_id: self.env_id.clone(),
            name: self.spec.name.clone(),
            step,
            infra_model: domain::infra_model::InfraModel::for_spec(&self.spec),
            beta9: self.spec.beta9.clone(),
            simulate: None,
            infra_outputs: BTreeMap::new(),
            timeout_seconds: Some(600),
            customer_role: None,
            force_unlock: None,
        }
    }

    pub fn infra_started(self, n: u8) -> Self {
        let job = self.job(Step::Infra);
        self.then(Event::InfraApplyStarted {
            operation_id: op(n),
            job,
        })
    }

    pub fn infra_applied(self, n: u8, pairs: &[(&str, &str)]) -> Self {
        self.then(Event::InfraApplied {
            operation_id: op(n),
            outputs: outputs(pairs),
        })
    }

    pub fn infra_failed(self, n: u8, error: &str) -> Self {
        self.then(Event::InfraApplyFailed {
            operation_id: op(n),
            error: error.to_owned(),
        })
    }

    pub fn bootstrap_started(self, n: u8) -> Self {
        let job = self.job(Step::Bootstrap);
        self.then(Event::BootstrapStarted {
            operation_id: op(n),
            job,
        })
    }

    pub fn bootstrap_completed(self, n: u8, pairs: &[(&str, &str)]) -> Self {
        self.then(Event::BootstrapCompleted {
            operation_id: op(n),
            outputs: outputs(pairs),
        })
    }

    pub fn bootstrap_failed(self, n: u8, error: &str) -> Self {
        self.then(Event::BootstrapFailed {
            operation_id: op(n),
            error: error.to_owned(),
        })
    }

    pub fn retry(self, phase: Step) -> Self {
        self.then(Event::RetryRequested { phase })
    }

    pub fn destroy_requested(self) -> Self {
        self.then(Event::DestroyRequested {})
    }

    pub fn cancelled(self, n: u8) -> Self {
        self.then(Event::OperationCancelled {
            operation_id: op(n),
            reason: "destroy requested".to_owned(),
            failed_phase: None,
        })
    }

    pub fn destroy_started(self, n: u8) -> Self {
        let job = self.job(Step::Destroy);
        self.then(Event::DestroyStarted {
            operation_id: op(n),
            job,
        })
    }

    pub fn destroyed(self, n: u8) -> Self {
        self.then(Event::InfraDestroyed {
            operation_id: op(n),
        })
    }

    pub fn destroy_failed(self, n: u8, error: &str) -> Self {
        self.then(Event::DestroyFailed {
            operation_id: op(n),
            error: error.to_owned(),
        })
    }

    pub fn timed_out(self, n: u8, phase: Step) -> Self {
        self.then(Event::OperationTimedOut {
            operation_id: op(n),
            phase,
            timeout_seconds: Some(600),
            error: format!("timed out: the {} step did not finish within its timeout of 10m; retry to run it again", phase.as_str()),
        })
    }

    pub fn recorded_at(&self, sequence: u64) -> DateTime<Utc> {
        self.start + Duration::seconds(sequence as i64 - 1)
    }

    /// The envelope of the event at `sequence` (1-based).
    pub fn envelope(&self, sequence: u64) -> EventEnvelope {
        let event = &self.events[sequence as usize - 1];
        EventEnvelope {
            environment_id: self.env_id.clone(),
            sequence,
            event_type: event.event_type().to_owned(),
            version: event.version().to_string(),
            payload: event.payload(),
            metadata: EventMetadata::request(
                Actor::caller("user:test"),
                None,
                RequestId::new(format!("req_{sequence}")),
            ),
            recorded_at: self.recorded_at(sequence),
        }
    }

    /// Every envelope, in order.
    pub fn envelopes(&self) -> Vec<EventEnvelope> {
        (1..=self.events.len() as u64)
            .map(|sequence| self.envelope(sequence))
            .collect()
    }

    pub fn last_sequence(&self) -> u64 {
        self.events.len() as u64
    }

    /// Writes the events into the `events` table the way the event store does (tagged payload,
    /// metadata object).
    pub async fn record(&self, pool: &PgPool) {
        for (index, event) in self.events.iter().enumerate() {
            let envelope = self.envelope(index as u64 + 1);
            sqlx::query(
                "INSERT INTO events \
                 (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 VALUES ('Environment', $1, $2, $3, $4, $5::json, $6::json)",
            )
            .bind(envelope.environment_id.as_str())
            .bind(envelope.sequence as i64)
            .bind(&envelope.event_type)
            .bind(&envelope.version)
            .bind(serde_json::to_string(event).unwrap())
            .bind(
                serde_json::to_string(&event_store::stored_metadata(
                    &envelope.metadata,
                    envelope.recorded_at,
                ))
                .unwrap(),
            )
            .execute(pool)
            .await
            .expect("insert event");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Postgres

/// A fresh database with the provisioner's migrations applied (see `system_tests::services`).
pub struct TestDb(system_tests::services::TestDb);

impl TestDb {
    pub async fn new() -> Self {
        Self(system_tests::services::TestDb::new("projections_test").await)
    }
}

impl std::ops::Deref for TestDb {
    type Target = system_tests::services::TestDb;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

// ---------------------------------------------------------------------------------------------
// NATS

/// A private nats-server >= 2.10 (see `system_tests::services::nats`), killed on drop.
pub struct NatsServer(system_tests::services::LocalNats);

impl NatsServer {
    pub async fn start() -> Self {
        Self(system_tests::services::nats().await)
    }

    pub fn url(&self) -> String {
        self.0.url()
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
