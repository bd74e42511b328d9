//! The fold: one behaviour per event, the checks the view adds to the domain's fold, and the
//! view as a function of the domain state.

mod support;

use domain::aggregate::{Environment, Event};
use domain::conditions::{ConditionStatus, ConditionType, Conditions};
use domain::spec::Step;
use projections::environment_view::{self, EnvironmentView, ViewError, ViewState};
use serde_json::json;
use support::{History, at, aws_spec, op};

fn fold_state(history: &History) -> ViewState {
    environment_view::fold(&history.envelopes())
        .expect("event folds")
        .expect("a view")
}

fn fold(history: &History) -> EnvironmentView {
    fold_state(history).into_view()
}

#[test]
fn environment_requested_creates_a_queued_view() {
    let history = History::requested("alpha");
    let view = fold(&history);

    assert_eq!(view.id, history.env_id.as_str());
    assert_eq!(view.name, "alpha");
    assert_eq!(view.status, "queued");
    assert_eq!(view.provider, "sandbox");
    assert_eq!(view.spec, serde_json::to_value(&history.spec).unwrap());
    assert_eq!(view.outputs, json!({}));
    assert_eq!(view.error, None);
    assert_eq!(view.operation, None);
    assert_eq!(view.version, 1);
    assert_eq!(view.created_at, view.updated_at);
}

#[test]
fn provider_comes_from_the_spec() {
    let view = fold(&History::requested_with(aws_spec("beta"), at(0)));
    assert_eq!(view.provider, "aws");
}

#[test]
fn timestamps_come_from_recorded_at_truncated_to_microseconds() {
    let history = History::requested("alpha").infra_started(1);
    let view = fold(&history);

    let micros = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros();
    assert_eq!(
        view.created_at.timestamp_micros(),
        micros(history.recorded_at(1))
    );
    assert_eq!(
        view.updated_at.timestamp_micros(),
        micros(history.recorded_at(2))
    );
    assert_eq!(view.created_at.timestamp_subsec_nanos() % 1_000, 0);
    assert_eq!(view.version, 2);
}

#[test]
fn infra_apply_started_is_provisioning_with_the_operation() {
    let view = fold(&History::requested("alpha").infra_started(1));
    assert_eq!(view.status, "provisioning");
    assert_eq!(
        view.operation,
        Some(json!({"id": op(1).as_str(), "step": "infra"}))
    );
}

#[test]
fn infra_applied_sets_outputs_stays_provisioning_and_clears_the_operation() {
    let view = fold(
        &History::requested("alpha")
            .infra_started(1)
            .infra_applied(1, &[("vpc_id", "vpc-1")]),
    );
    assert_eq!(view.status, "provisioning");
    assert_eq!(view.outputs, json!({"vpc_id": "vpc-1"}));
    assert_eq!(view.operation, None);
}

#[test]
fn bootstrap_started_is_bootstrapping_with_the_operation() {
    let view = fold(
        &History::requested("alpha")
            .infra_started(1)
            .infra_applied(1, &[])
            .bootstrap_started(2),
    );
    assert_eq!(view.status, "bootstrapping");
    assert_eq!(
        view.operation,
        Some(json!({"id": op(2).as_str(), "step": "bootstrap"}))
    );
}

#[test]
fn bootstrap_completed_merges_outputs_and_is_ready() {
    let view = fold(
        &History::requested("alpha")
            .infra_started(1)
            .infra_applied(1, &[("vpc_id", "vpc-1"), ("api_url", "old")])
            .bootstrap_started(2)
            .bootstrap_completed(2, &[("api_url", "https://api.example")]),
    );
    assert_eq!(view.status, "ready");
    assert_eq!(
        view.outputs,
        json!({"vpc_id": "vpc-1", "api_url": "https://api.example"})
    );
    assert_eq!(view.operation, None);
    assert_eq!(view.version, 5);
}

#[test]
fn each_failure_is_failed_with_its_phase_message_and_operation() {
    let cases = [
        (
            History::requested("alpha")
                .infra_started(1)
                .infra_failed(1, "quota exceeded"),
            "infra",
            1,
        ),
        (
            History::ready("alpha")
                .destroy_requested()
                .destroy_started(3)
                .destroy_failed(3, "bucket not empty"),
            "destroy",
            3,
        ),
        (
            History::requested("alpha")
                .infra_started(1)
                .infra_applied(1, &[])
                .bootstrap_started(2)
                .bootstrap_failed(2, "helm timed out"),
            "bootstrap",
            2,
        ),
        (
            History::ready("alpha")
                .destroy_requested()
                .destroy_started(3)
                .timed_out(3, Step::Destroy),
            "destroy",
            3,
        ),
    ];
    for (history, phase, n) in cases {
        let view = fold(&history);
        let Some(
            Event::InfraApplyFailed { error, .. }
            | Event::BootstrapFailed { error, .. }
            | Event::DestroyFailed { error, .. }
            | Event::OperationTimedOut { error, .. },
        ) = history.events.last()
        else {
            panic!("last event is a failure")
        };
        assert_eq!(view.status, "failed");
        assert_eq!(
            view.error,
            Some(json!({"phase": phase, "message": error, "operation_id": op(n).as_str()}))
        );
        assert_eq!(view.operation, None);
    }
}

#[test]
fn retry_clears_the_error_and_resumes_the_failed_phase() {
    let failed_infra = History::requested("alpha")
        .infra_started(1)
        .infra_failed(1, "boom");
    let failed_bootstrap = History::requested("alpha")
        .infra_started(1)
        .infra_applied(1, &[])
        .bootstrap_started(2)
        .bootstrap_failed(2, "boom");
    let failed_destroy = History::ready("alpha")
        .destroy_requested()
        .destroy_started(3)
        .destroy_failed(3, "boom");
    for (history, phase, status) in [
        (failed_infra, Step::Infra, "provisioning"),
        (failed_bootstrap, Step::Bootstrap, "bootstrapping"),
        (failed_destroy, Step::Destroy, "destroy_queued"),
    ] {
        let view = fold(&history.retry(phase));
        assert_eq!(view.status, status);
        assert_eq!(view.error, None);
    }
}

#[test]
fn destroy_requested_queues_the_destroy_and_clears_the_error() {
    let view = fold(
        &History::requested("alpha")
            .infra_started(1)
            .infra_failed(1, "boom")
            .destroy_requested(),
    );
    assert_eq!(view.status, "destroy_queued");
    assert_eq!(view.error, None);
}

#[test]
fn operation_cancelled_clears_the_operation_and_keeps_the_status() {
    let view = fold(
        &History::requested("alpha")
            .infra_started(1)
            .destroy_requested()
            .cancelled(1),
    );
    assert_eq!(view.status, "destroy_queued");
    assert_eq!(view.operation, None);
}

#[test]
fn destroy_started_is_destroying_with_the_operation() {
    let view = fold(
        &History::ready("alpha")
            .destroy_requested()
            .destroy_started(3),
    );
    assert_eq!(view.status, "destroying");
    assert_eq!(
        view.operation,
        Some(json!({"id": op(3).as_str(), "step": "destroy"}))
    );
}

#[test]
fn infra_destroyed_is_destroyed_without_outputs() {
    let view = fold(
        &History::ready("alpha")
            .destroy_requested()
            .destroy_started(3)
            .destroyed(3),
    );
    assert_eq!(view.status, "destroyed");
    assert_eq!(view.outputs, json!({}));
    assert_eq!(view.operation, None);
    assert_eq!(view.version, 8);
}

#[test]
fn an_event_before_environment_requested_does_not_fold() {
    let history = History::requested("alpha").infra_started(1);
    let err = environment_view::apply(None, &history.envelope(2)).unwrap_err();
    assert!(matches!(err, ViewError::NotRequested { .. }), "{err:?}");
}

#[test]
fn a_second_environment_requested_does_not_fold() {
    let history = History::requested("alpha");
    let view = fold_state(&history);
    let err = environment_view::apply(Some(view), &history.envelope(1)).unwrap_err();
    assert!(matches!(err, ViewError::AlreadyRequested), "{err:?}");
}

#[test]
fn an_event_of_another_environment_does_not_fold() {
    let view = fold_state(&History::requested("alpha"));
    let other = History::requested("beta").infra_started(1);
    let err = environment_view::apply(Some(view), &other.envelope(2)).unwrap_err();
    assert!(matches!(err, ViewError::WrongEnvironment { .. }), "{err:?}");
}

#[test]
fn an_unknown_event_type_or_payload_does_not_fold() {
    let history = History::requested("alpha").infra_started(1);
    let view = fold_state(&History {
        events: history.events[..1].to_vec(),
        ..history.clone()
    });

    let mut unknown = history.envelope(2);
    unknown.event_type = "DriftDetected".to_owned();
    let err = environment_view::apply(Some(view.clone()), &unknown).unwrap_err();
    assert!(matches!(err, ViewError::Undecodable { .. }), "{err:?}");

    let mut malformed = history.envelope(2);
    malformed.payload = json!({"operation_id": 42});
    let err = environment_view::apply(Some(view), &malformed).unwrap_err();
    assert!(matches!(err, ViewError::Undecodable { .. }), "{err:?}");
}

#[test]
fn a_bad_recorded_at_does_not_fold() {
    // `recorded_at` is typed: an envelope with a bad one never reaches the fold, because it
    // does not decode (the consumer terminates such a message as not an envelope).
    let envelope = History::requested("alpha").envelope(1);
    let mut published = serde_json::to_value(&envelope).unwrap();
    published["recorded_at"] = "yesterday".into();
    let err = serde_json::from_value::<domain::wire::EventEnvelope>(published).unwrap_err();
    assert!(err.is_data(), "{err}");
    assert!(
        err.to_string().contains("recorded_at") || err.to_string().contains("input"),
        "{err}"
    );
}

#[test]
fn the_view_serializes_with_the_api_field_names() {
    let view = fold(&History::requested("alpha").infra_started(1));
    let value = serde_json::to_value(&view).unwrap();
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "conditions",
            "cost",
            "created_at",
            "error",
            "id",
            "name",
            "operation",
            "outputs",
            "provider",
            "spec",
            "status",
            "tenant",
            "updated_at",
            "version"
        ]
    );
    assert_eq!(value["error"], serde_json::Value::Null);
    assert!(
        value["cost"]["monthly_total_cents"].as_u64() > Some(0),
        "{value}"
    );
    let back: EnvironmentView = serde_json::from_value(value).unwrap();
    assert_eq!(back, view);
}

// The view is derived from the aggregate's own fold (`Environment::apply`, then
// `EnvironmentView::from_state`), so it can no longer disagree with the domain on the status
// machine. The comparisons below stay as tests of `from_state`: every status, operation, error
// and outputs the domain reaches shows in the view as the domain has it.

/// Folds `history` through the view and the aggregate, comparing after every event.
fn assert_agrees_with_the_aggregate(history: &History) {
    let mut view = None;
    let mut aggregate = Environment::default();
    for (index, event) in history.events.iter().enumerate() {
        let sequence = index as u64 + 1;
        aggregate.apply(event);
        let folded_state =
            environment_view::apply(view, &history.envelope(sequence)).expect("event folds");
        assert_eq!(
            folded_state.state(),
            &aggregate,
            "the view folds the domain state"
        );
        let folded = folded_state.view().clone();
        let trail = || {
            history.events[..=index]
                .iter()
                .map(Event::event_type)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            folded.status,
            aggregate.status.as_str(),
            "status after {:?}",
            trail()
        );
        assert_eq!(
            folded.outputs,
            serde_json::to_value(&aggregate.outputs).unwrap(),
            "outputs after {:?}",
            trail()
        );
        assert_eq!(
            folded.operation,
            aggregate
                .in_flight
                .as_ref()
                .map(|op| json!({"id": op.operation_id.as_str(), "step": op.step.as_str()})),
            "operation after {:?}",
            trail()
        );
        assert_eq!(
            folded.error.as_ref().map(|e| e["phase"].clone()),
            aggregate.failure.as_ref().map(|f| json!(f.phase.as_str())),
            "error after {:?}",
            trail()
        );
        view = Some(folded_state);
    }
}

#[test]
fn the_view_agrees_with_the_aggregate_over_whole_lifecycles() {
    let lifecycles = [
        History::ready("alpha"),
        History::ready("alpha")
            .destroy_requested()
            .destroy_started(3)
            .destroyed(3),
        History::requested("alpha")
            .infra_started(1)
            .infra_failed(1, "boom")
            .retry(Step::Infra)
            .infra_started(2)
            .infra_applied(2, &[("vpc_id", "vpc-2")])
            .bootstrap_started(3)
            .bootstrap_failed(3, "boom")
            .retry(Step::Bootstrap)
            .bootstrap_started(4)
            .bootstrap_completed(4, &[("api_url", "u")]),
        History::requested("alpha")
            .infra_started(1)
            .destroy_requested()
            .cancelled(1)
            .destroy_started(2)
            .destroy_failed(2, "boom")
            .retry(Step::Destroy)
            .destroy_started(3)
            .destroyed(3),
        History::requested("alpha")
            .destroy_requested()
            .destroy_started(1)
            .destroyed(1),
        History::requested("alpha")
            .infra_started(1)
            .timed_out(1, Step::Infra)
            .retry(Step::Infra)
            .infra_started(2)
            .infra_applied(2, &[("vpc_id", "vpc-2")])
            .bootstrap_started(3)
            .timed_out(3, Step::Bootstrap)
            .retry(Step::Bootstrap)
            .bootstrap_started(4)
            .bootstrap_completed(4, &[("api_url", "u")]),
    ];
    for history in &lifecycles {
        assert_agrees_with_the_aggregate(history);
    }
}

type Step1 = fn(History) -> History;

/// Depth-first over every continuation of `history`, checking the newest event only (the
/// states before it were checked on the way down).
fn explore(
    history: &History,
    view: &ViewState,
    aggregate: &Environment,
    alphabet: &[Step1],
    depth: usize,
) -> usize {
    if depth == 0 {
        return 0;
    }
    let mut checked = 0;
    for step in alphabet {
        let longer = step(history.clone());
        let event = longer.events.last().unwrap();
        let mut aggregate = aggregate.clone();
        aggregate.apply(event);
        let folded =
            environment_view::apply(Some(view.clone()), &longer.envelope(longer.last_sequence()))
                .expect("event folds");
        assert_eq!(folded.state(), &aggregate);
        let view = folded.view();
        let trail: Vec<_> = longer.events.iter().map(Event::event_type).collect();
        assert_eq!(
            view.status,
            aggregate.status.as_str(),
            "status after {trail:?}"
        );
        assert_eq!(
            view.outputs,
            serde_json::to_value(&aggregate.outputs).unwrap(),
            "outputs after {trail:?}"
        );
        assert_eq!(
            view.operation.is_some(),
            aggregate.in_flight.is_some(),
            "operation after {trail:?}"
        );
        assert_eq!(
            view.error.is_some(),
            aggregate.failure.is_some(),
            "error after {trail:?}"
        );
        checked += 1 + explore(&longer, &folded, &aggregate, alphabet, depth - 1);
    }
    checked
}

#[test]
fn the_view_agrees_with_the_aggregate_for_every_short_sequence() {
    // Every sequence of up to four events after EnvironmentRequested, valid or not: both folds
    // are total, so they must agree whatever the order.
    let base = History::requested("alpha");
    let alphabet: [Step1; 15] = [
        |h| h.infra_started(1),
        |h| h.infra_applied(1, &[("a", "1")]),
        |h| h.infra_failed(1, "boom"),
        |h| h.bootstrap_started(2),
        |h| h.bootstrap_completed(2, &[("b", "2")]),
        |h| h.bootstrap_failed(2, "boom"),
        |h| h.retry(Step::Infra),
        |h| h.retry(Step::Bootstrap),
        |h| h.retry(Step::Destroy),
        |h| h.destroy_requested(),
        |h| h.cancelled(1),
        |h| h.destroy_started(3),
        |h| h.destroyed(3),
        |h| h.destroy_failed(3, "boom"),
        |h| h.timed_out(1, Step::Infra),
    ];
    let view = fold_state(&base);
    let mut aggregate = Environment::default();
    aggregate.apply(&base.events[0]);
    let checked = explore(&base, &view, &aggregate, &alphabet, 4);
    assert_eq!(checked, 15 + 15 * 15 + 15 * 15 * 15 + 15 * 15 * 15 * 15);
}

#[test]
fn environment_requested_of_another_id_than_its_envelope_does_not_fold() {
    let alpha = History::requested("alpha");
    let beta = History::requested("beta");
    let mut envelope = alpha.envelope(1);
    envelope.environment_id = beta.env_id.clone();
    let err = environment_view::apply(None, &envelope).unwrap_err();
    assert!(matches!(err, ViewError::WrongEnvironment { .. }), "{err:?}");
}

#[test]
fn the_view_is_a_function_of_the_domain_state() {
    let history = History::requested("alpha")
        .infra_started(1)
        .infra_applied(1, &[("vpc_id", "vpc-1")])
        .bootstrap_started(2)
        .bootstrap_failed(2, "helm timed out");
    let folded = fold_state(&history);
    let mut aggregate = Environment::default();
    for event in &history.events {
        aggregate.apply(event);
    }
    let view = folded.view();

    assert_eq!(folded.state(), &aggregate);
    assert_eq!(
        EnvironmentView::from_state(
            &aggregate,
            &view.conditions,
            view.version,
            view.created_at,
            view.updated_at
        )
        .unwrap(),
        *view
    );
    let resumed = ViewState::new(
        aggregate.clone(),
        view.conditions.clone(),
        view.version,
        view.created_at,
        view.updated_at,
    )
    .unwrap();
    assert_eq!(resumed, folded);
    // The bootstrap failed before anything was observed: at the cluster.
    let reachable = view
        .conditions
        .get(ConditionType::ClusterReachable)
        .unwrap();
    assert_eq!(reachable.status, ConditionStatus::False);
    assert_eq!(reachable.message, "helm timed out");
    let infra = view.conditions.get(ConditionType::InfraReady).unwrap();
    assert_eq!(infra.status, ConditionStatus::True);
    assert_eq!(
        infra.last_transition_time,
        // As Postgres keeps it (microseconds).
        chrono::SubsecRound::trunc_subsecs(history.envelopes()[2].recorded_at, 6)
    );
}

#[test]
fn a_state_without_environment_requested_has_no_view() {
    let none = Conditions::requested(at(0));
    let err =
        EnvironmentView::from_state(&Environment::default(), &none, 1, at(0), at(0)).unwrap_err();
    assert!(matches!(err, ViewError::Unrequested), "{err:?}");
    let err = ViewState::new(Environment::default(), none, 1, at(0), at(0)).unwrap_err();
    assert!(matches!(err, ViewError::Unrequested), "{err:?}");
}

#[test]
fn folding_nothing_is_no_view() {
    assert_eq!(environment_view::fold(&[]).unwrap(), None);
}
