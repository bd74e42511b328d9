//! The environment read model, derived from the domain's own fold.
//!
//! There is one state machine: `domain::aggregate::Environment::apply`. The projection folds
//! each event into that state ([`ViewState`], which adds only what the envelope knows: the
//! sequence and the times) and the view is a pure function of the result
//! ([`EnvironmentView::from_state`]). The projection ([`crate::store`]), the replay
//! ([`crate::replay`]) and the API's fallback over an environment's history all build views
//! through [`apply`] / [`fold`], so a view cannot disagree with the domain.
//!
//! What the fold checks on top of the domain (which never fails): the envelope decodes into a
//! known event, belongs to the environment folded so far, and `EnvironmentRequested` comes first
//! and only once ([`ViewError`]).

use chrono::{DateTime, SubsecRound, Utc};
use domain::aggregate::{Environment, Event};
use domain::conditions::Conditions;
use domain::cost::CostEstimate;
use domain::infra_model::InfraModel;
use domain::spec::{EnvironmentSpec, Step};
use domain::wire::{EventDecodeError, EventEnvelope};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// One environment as the query API shows it: exactly the JSON of `GET /v1/environments/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvironmentView {
    /// `env_<ulid>`.
    pub id: String,
    pub name: String,
    /// The tenant that owns the environment.
    pub tenant: String,
    /// One of the status words (`queued`, `provisioning`, …, `destroyed`).
    #[schema(value_type = domain::aggregate::Status)]
    pub status: String,
    /// `aws` or `sandbox`.
    #[schema(value_type = domain::spec::Provider)]
    pub provider: String,
    /// The validated spec, as requested.
    #[schema(value_type = Object)]
    pub spec: Value,
    /// Non-secret outputs: an object of strings (`{}` until infra is applied).
    #[schema(value_type = BTreeMap<String, String>)]
    pub outputs: Value,
    /// The last failure, until retried.
    #[schema(value_type = Option<Failure>)]
    pub error: Option<Value>,
    /// The operation in flight.
    #[schema(value_type = Option<InFlight>)]
    pub operation: Option<Value>,
    /// `InfraReady`, `ClusterReachable`, `BaselineInstalled`, `AppReady`: each with its status,
    /// reason, message and last transition time (`domain::conditions`). Empty on a row written
    /// before conditions were kept, until its next event.
    pub conditions: Conditions,
    /// The monthly cost estimate of the spec's infrastructure (`domain::cost`), derived from
    /// the spec with the current price table whenever the view is built or read, never stored;
    /// `None` only for a stored spec this build cannot read.
    pub cost: Option<CostEstimate>,
    /// The sequence of the last event applied.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EnvironmentView {
    /// The view of the domain state `state` after the event at sequence `version`, the first
    /// event recorded at `created_at` and the last at `updated_at`.
    ///
    /// Errors: [`ViewError::Unrequested`] when `state` has no `EnvironmentRequested` applied
    /// (there is nothing to show), [`ViewError::Spec`] when the spec does not serialize.
    pub fn from_state(
        state: &Environment,
        conditions: &Conditions,
        version: i64,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> Result<Self, ViewError> {
        let requested = state.requested.as_ref().ok_or(ViewError::Unrequested)?;
        let strings = |outputs: &domain::aggregate::Outputs| {
            Value::Object(
                outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect::<Map<_, _>>(),
            )
        };
        Ok(Self {
            id: requested.id.to_string(),
            name: requested.spec.name.as_str().to_owned(),
            tenant: requested.tenant.as_str().to_owned(),
            status: state.status.as_str().to_owned(),
            provider: requested.spec.cloud.provider().as_str().to_owned(),
            spec: serde_json::to_value(requested.spec.redacted()).map_err(ViewError::Spec)?,
            outputs: strings(&state.outputs),
            error: state.failure.as_ref().map(|failure| {
                json!(Failure {
                    phase: failure.phase,
                    message: &failure.message,
                    operation_id: failure.operation_id.as_ref().map(|id| id.as_str()),
                })
            }),
            operation: state.in_flight.as_ref().map(|in_flight| {
                json!(InFlight {
                    id: in_flight.operation_id.as_str(),
                    step: in_flight.step,
                })
            }),
            conditions: conditions.clone(),
            cost: Some(cost_estimate(&requested.spec)),
            version,
            created_at,
            updated_at,
        })
    }
}

/// A view's `error`: the last failure, until retried.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Failure<'a> {
    /// The phase that failed.
    pub phase: Step,
    pub message: &'a str,
    /// The failed operation (`op_<ulid>`); `null` when the failure had none.
    pub operation_id: Option<&'a str>,
}

/// A view's `operation`: the operation in flight.
#[derive(Serialize, utoipa::ToSchema)]
pub struct InFlight<'a> {
    /// `op_<ulid>`.
    pub id: &'a str,
    /// The step it runs.
    pub step: Step,
}

/// The monthly cost estimate of `spec`'s infrastructure.
pub fn cost_estimate(spec: &EnvironmentSpec) -> CostEstimate {
    CostEstimate::for_model(&InfraModel::for_spec(spec))
}

/// The estimate of a spec as the view stores it (JSON); `None` if it does not decode.
pub fn cost_estimate_of_stored(spec: &Value) -> Option<CostEstimate> {
    EnvironmentSpec::deserialize(spec)
        .ok()
        .map(|spec| cost_estimate(&spec))
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
    /// A domain state without `EnvironmentRequested`: it has no view.
    #[error("the state has no requested environment")]
    Unrequested,
    /// The requested spec does not serialize to JSON.
    #[error("the spec does not serialize")]
    Spec(#[source] serde_json::Error),
    /// The domain state kept with the view does not (de)serialize.
    #[error("the domain state does not (de)serialize")]
    State(#[source] serde_json::Error),
}

/// One environment as the projection keeps it: the domain state folded so far, and what the
/// envelopes add to it (the sequence of the last event, the first and last `recorded_at`). The
/// view is derived from it ([`ViewState::view`]); the store keeps the state beside the view's
/// columns so the next event folds from it.
///
/// Always holds a requested environment and its view: built only by [`apply`] and
/// [`ViewState::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct ViewState {
    state: Environment,
    view: EnvironmentView,
}

/// What the store keeps beside a row's columns: the domain state and the conditions folded with
/// it (which need the events' times, which the domain fold does not see). A stored state without
/// conditions (written before they were kept) does not load, so the row is rebuilt from the
/// event store.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredState {
    #[serde(flatten)]
    pub state: Environment,
    pub conditions: Conditions,
}

impl ViewState {
    /// Resumes from a stored state; the view is derived from it again.
    ///
    /// Errors as [`EnvironmentView::from_state`].
    pub fn new(
        state: Environment,
        conditions: Conditions,
        version: i64,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> Result<Self, ViewError> {
        let view =
            EnvironmentView::from_state(&state, &conditions, version, created_at, updated_at)?;
        Ok(Self { state, view })
    }

    /// Resumes from what the store kept ([`ViewState::stored`]).
    pub fn from_stored(
        stored: StoredState,
        version: i64,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    ) -> Result<Self, ViewError> {
        Self::new(
            stored.state,
            stored.conditions,
            version,
            created_at,
            updated_at,
        )
    }

    /// What the store keeps beside the row (see [`StoredState`]).
    pub fn stored(&self) -> Result<Value, ViewError> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            #[serde(flatten)]
            state: &'a Environment,
            conditions: &'a Conditions,
        }
        serde_json::to_value(Borrowed {
            state: &self.state,
            conditions: &self.view.conditions,
        })
        .map_err(ViewError::State)
    }

    /// The domain state.
    pub fn state(&self) -> &Environment {
        &self.state
    }

    /// The view of the state.
    pub fn view(&self) -> &EnvironmentView {
        &self.view
    }

    pub fn into_view(self) -> EnvironmentView {
        self.view
    }

    /// The sequence of the last event folded.
    pub fn version(&self) -> i64 {
        self.view.version
    }
}

/// Folds one event: `Environment::apply`, then the view of the result. `None` in means the
/// environment is not in the view yet.
///
/// Does not check the sequence: [`crate::store::apply_batch`] does, before calling this.
pub fn apply(current: Option<ViewState>, envelope: &EventEnvelope) -> Result<ViewState, ViewError> {
    let event = envelope.event().map_err(|source| ViewError::Undecodable {
        event_type: envelope.event_type.clone(),
        source,
    })?;
    // Truncated to microseconds (what Postgres keeps), so a view folded in memory equals the
    // same view read back from the table.
    let at = envelope.recorded_at.trunc_subsecs(6);
    let version = i64::try_from(envelope.sequence)
        .map_err(|_| ViewError::SequenceOutOfRange(envelope.sequence))?;

    let (mut state, mut conditions, created_at) = match (current, &event) {
        (None, Event::EnvironmentRequested { id, .. }) if *id != envelope.environment_id => {
            return Err(ViewError::WrongEnvironment {
                expected: envelope.environment_id.to_string(),
                got: id.to_string(),
            });
        }
        (None, Event::EnvironmentRequested { .. }) => {
            (Environment::default(), Conditions::requested(at), at)
        }
        (None, other) => {
            return Err(ViewError::NotRequested {
                event_type: other.event_type().to_owned(),
            });
        }
        (Some(_), Event::EnvironmentRequested { .. }) => return Err(ViewError::AlreadyRequested),
        (Some(current), _) if current.view.id != envelope.environment_id.as_str() => {
            return Err(ViewError::WrongEnvironment {
                expected: current.view.id,
                got: envelope.environment_id.to_string(),
            });
        }
        (Some(current), _) => (
            current.state,
            current.view.conditions,
            current.view.created_at,
        ),
    };
    state.apply(&event);
    conditions.observe(&event, at);
    ViewState::new(state, conditions, version, created_at, at)
}

/// Folds `envelopes` (one environment's, in order) from nothing: `None` for no envelopes.
pub fn fold<'a>(
    envelopes: impl IntoIterator<Item = &'a EventEnvelope>,
) -> Result<Option<ViewState>, ViewError> {
    let mut current = None;
    for envelope in envelopes {
        current = Some(apply(current, envelope)?);
    }
    Ok(current)
}
