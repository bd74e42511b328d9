//! The environment read model and the pure fold that builds it, one event at a time.
//!
//! The view's status follows the same rules as `domain::Environment::apply`; the tests fold
//! event sequences through both and compare.

use chrono::{DateTime, SubsecRound, Utc};
use domain::aggregate::{Event, Status};
use domain::spec::Step;
use domain::wire::{EventDecodeError, EventEnvelope};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One environment as the query API shows it: exactly the JSON of `GET /v1/environments/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentView {
    /// `env_<ulid>`.
    pub id: String,
    pub name: String,
    /// One of the status words (`queued`, `provisioning`, …, `destroyed`).
    pub status: String,
    /// `aws` or `sandbox`.
    pub provider: String,
    /// The validated spec, as requested.
    pub spec: Value,
    /// Non-secret outputs: an object of strings (`{}` until infra is applied).
    pub outputs: Value,
    /// The last failure, until retried: `{phase, message, operation_id}`.
    pub error: Option<Value>,
    /// The operation in flight: `{id, step}`.
    pub operation: Option<Value>,
    /// The sequence of the last event applied.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why an event could not be folded into the view. None of these fixes itself by retrying the
/// same build: they mean version skew, a corrupt event, or events applied out of order.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// The payload does not decode into a known event (unknown type, shape or version).
    #[error("event {event_type} does not decode")]
    Undecodable {
        event_type: String,
        #[source]
        source: EventDecodeError,
    },
    /// An event other than `EnvironmentRequested` for an environment the view does not have.
    #[error("{event_type} for an environment that was never requested")]
    NotRequested { event_type: String },
    /// `EnvironmentRequested` for an environment the view already has.
    #[error("EnvironmentRequested for an environment that already exists")]
    AlreadyRequested,
    /// The envelope belongs to another environment than the view.
    #[error("event of {got} applied to the view of {expected}")]
    WrongEnvironment { expected: String, got: String },
    /// The sequence does not fit the `version` column.
    #[error("sequence {0} is out of range")]
    SequenceOutOfRange(u64),
}

/// Folds one event into the view. `None` in means the environment is not in the view yet; the
/// result is the new view (never `None` today: no event removes an environment from the list).
///
/// Does not check the sequence: [`crate::store::apply_batch`] does, before calling this.
pub fn apply(
    view: Option<EnvironmentView>,
    envelope: &EventEnvelope,
) -> Result<Option<EnvironmentView>, ViewError> {
    let event = envelope.event().map_err(|source| ViewError::Undecodable {
        event_type: envelope.event_type.clone(),
        source,
    })?;
    // Truncated to microseconds (what Postgres keeps), so a view folded in memory equals the
    // same view read back from the table.
    let at = envelope.recorded_at.trunc_subsecs(6);
    let version = i64::try_from(envelope.sequence)
        .map_err(|_| ViewError::SequenceOutOfRange(envelope.sequence))?;

    let mut view = match (view, &event) {
        (None, Event::EnvironmentRequested { spec, .. }) => EnvironmentView {
            id: envelope.environment_id.to_string(),
            name: spec.name.as_str().to_owned(),
            status: Status::Queued.as_str().to_owned(),
            provider: spec.cloud.provider().as_str().to_owned(),
            spec: serde_json::to_value(spec).map_err(|source| ViewError::Undecodable {
                event_type: envelope.event_type.clone(),
                source: source.into(),
            })?,
            outputs: Value::Object(Map::new()),
            error: None,
            operation: None,
            version,
            created_at: at,
            updated_at: at,
        },
        (None, other) => {
            return Err(ViewError::NotRequested {
                event_type: other.event_type().to_owned(),
            });
        }
        (Some(_), Event::EnvironmentRequested { .. }) => return Err(ViewError::AlreadyRequested),
        (Some(view), _) if view.id != envelope.environment_id.as_str() => {
            return Err(ViewError::WrongEnvironment {
                expected: view.id,
                got: envelope.environment_id.to_string(),
            });
        }
        (Some(view), _) => view,
    };

    match &event {
        Event::EnvironmentRequested { .. } => {}
        Event::InfraApplyStarted { operation_id, .. } => {
            view.start(operation_id.as_str(), Step::Infra, Status::Provisioning)
        }
        Event::BootstrapStarted { operation_id, .. } => view.start(
            operation_id.as_str(),
            Step::Bootstrap,
            Status::Bootstrapping,
        ),
        Event::DestroyStarted { operation_id, .. } => {
            view.start(operation_id.as_str(), Step::Destroy, Status::Destroying)
        }
        Event::InfraApplied { outputs, .. } => {
            view.operation = None;
            view.outputs = Value::Object(
                outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            );
        }
        Event::BootstrapCompleted { outputs, .. } => {
            view.operation = None;
            let mut merged = match std::mem::take(&mut view.outputs) {
                Value::Object(map) => map,
                _ => Map::new(),
            };
            for (k, v) in outputs {
                merged.insert(k.clone(), Value::String(v.clone()));
            }
            view.outputs = Value::Object(merged);
            view.set_status(Status::Ready);
        }
        Event::InfraApplyFailed {
            operation_id,
            error,
        } => view.fail(operation_id.as_str(), Step::Infra, error),
        Event::BootstrapFailed {
            operation_id,
            error,
        } => view.fail(operation_id.as_str(), Step::Bootstrap, error),
        Event::DestroyFailed {
            operation_id,
            error,
        } => view.fail(operation_id.as_str(), Step::Destroy, error),
        Event::OperationTimedOut {
            operation_id,
            phase,
            error,
            ..
        } => view.fail(operation_id.as_str(), *phase, error),
        Event::RetryRequested { phase } => {
            view.error = None;
            view.set_status(match phase {
                Step::Infra => Status::Provisioning,
                Step::Bootstrap => Status::Bootstrapping,
                Step::Destroy => Status::DestroyQueued,
            });
        }
        Event::DestroyRequested {} => {
            view.error = None;
            view.set_status(Status::DestroyQueued);
        }
        Event::OperationCancelled { .. } => view.operation = None,
        Event::InfraDestroyed { .. } => {
            view.operation = None;
            view.outputs = Value::Object(Map::new());
            view.set_status(Status::Destroyed);
        }
    }

    view.version = version;
    view.updated_at = at;
    Ok(Some(view))
}

impl EnvironmentView {
    fn set_status(&mut self, status: Status) {
        self.status = status.as_str().to_owned();
    }

    fn start(&mut self, operation_id: &str, step: Step, status: Status) {
        self.operation = Some(json!({ "id": operation_id, "step": step.as_str() }));
        self.set_status(status);
    }

    fn fail(&mut self, operation_id: &str, phase: Step, message: &str) {
        self.operation = None;
        self.error = Some(json!({
            "phase": phase.as_str(),
            "message": message,
            "operation_id": operation_id,
        }));
        self.set_status(Status::Failed);
    }
}
