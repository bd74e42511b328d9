//! Given/when/then tests for every command and every rejection.

use super::*;
use crate::conditions::{ConditionReport, ConditionStatus, ConditionType};
use crate::ids::{EnvironmentId, OperationId};
use crate::infra_model::InfraModel;
use crate::spec::*;
use crate::tenant::TenantId;

/// `production` on the sandbox, with every default.
fn spec() -> EnvironmentSpec {
    crate::config::parse(
        "name: production\ncloud:\n  provider: sandbox\n",
        crate::config::Format::Yaml,
    )
    .expect("a valid spec")
}

fn env_id() -> EnvironmentId {
    EnvironmentId::parse("env_01jd0000000000000000000000").unwrap()
}

fn op(n: u8) -> OperationId {
    OperationId::parse(&format!("op_01jd00000000000000000000{n:02}")).unwrap()
}

/// A tiny given/when/then harness over the pure aggregate.
struct Scenario {
    state: Environment,
}

fn given(events: &[Event]) -> Scenario {
    let mut state = Environment::default();
    for event in events {
        state.apply(event);
    }
    Scenario { state }
}

impl Scenario {
    fn when(self, command: Command) -> Outcome {
        Outcome {
            result: self.state.handle(command),
            state: self.state,
        }
    }
}

struct Outcome {
    state: Environment,
    result: Result<Vec<Event>, DomainError>,
}

impl Outcome {
    fn then_expect_events(self, expected: &[Event]) -> Environment {
        let events = self.result.expect("command was rejected");
        assert_eq!(events, expected);
        let mut state = self.state;
        for event in &events {
            state.apply(event);
        }
        state
    }

    fn then_expect_error(self, expected: DomainError) {
        assert_eq!(self.result, Err(expected));
    }
}

fn requested() -> Event {
    let spec = spec();
    Event::EnvironmentRequested {
        id: env_id(),
        infra_model: InfraModel::for_spec(&spec),
        spec,
        tenant: TenantId::default(),
    }
}

fn job(step: Step, infra_outputs: Outputs) -> OperationJob {
    let spec = spec();
    OperationJob {
        environment_id: env_id(),
        name: spec.name.clone(),
        step,
        infra_model: InfraModel::for_spec(&spec),
        beta9: spec.beta9.clone(),
        simulate: Some(Simulation::default()),
        infra_outputs,
        timeout_seconds: Some(StepTimeouts::DEFAULT.for_step(step).as_secs()),
        customer_role: None,
        force_unlock: None,
    }
}

fn infra_outputs() -> Outputs {
    Outputs::from([("cluster_name".to_owned(), "beta9-production".to_owned())])
}

fn infra_started(n: u8) -> Event {
    Event::InfraApplyStarted {
        operation_id: op(n),
        job: job(Step::Infra, Outputs::new()),
    }
}

fn infra_applied(n: u8) -> Event {
    Event::InfraApplied {
        operation_id: op(n),
        outputs: infra_outputs(),
    }
}

fn bootstrap_started(n: u8) -> Event {
    Event::BootstrapStarted {
        operation_id: op(n),
        job: job(Step::Bootstrap, infra_outputs()),
    }
}

fn succeeded(pairs: &[(&str, &str)]) -> OperationOutcome {
    OperationOutcome::Succeeded {
        outputs: pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn failed(error: &str) -> OperationOutcome {
    OperationOutcome::Failed {
        error: error.to_owned(),
    }
}

fn complete(n: u8, outcome: OperationOutcome) -> Command {
    Command::CompleteOperation {
        operation_id: op(n),
        outcome,
    }
}

fn start(n: u8) -> Command {
    Command::StartPendingOperation {
        operation_id: op(n),
        timeouts: StepTimeouts::DEFAULT,
    }
}

fn time_out(n: u8) -> Command {
    Command::TimeOutOperation {
        operation_id: op(n),
    }
}

fn infra_timed_out(n: u8) -> Event {
    Event::OperationTimedOut {
        operation_id: op(n),
        phase: Step::Infra,
        timeout_seconds: Some(5400),
        error: "timed out: the infra step did not finish within its timeout of 90m; retry to run it again"
            .to_owned(),
    }
}

#[test]
fn request_records_the_spec_and_infra_model_and_queues_the_environment() {
    let state = given(&[])
        .when(Command::Request {
            id: env_id(),
            spec: spec(),
            tenant: TenantId::default(),
        })
        .then_expect_events(&[requested()]);
    assert_eq!(state.status, Status::Queued);
    assert_eq!(state.pending, Some(Step::Infra));
}

#[test]
fn request_is_rejected_when_the_environment_already_exists() {
    given(&[requested()])
        .when(Command::Request {
            id: env_id(),
            spec: spec(),
            tenant: TenantId::default(),
        })
        .then_expect_error(DomainError::AlreadyExists);
}

#[test]
fn commands_on_a_missing_environment_are_rejected_as_not_found() {
    for command in [
        start(1),
        complete(1, failed("x")),
        time_out(1),
        Command::Retry,
        Command::Destroy,
    ] {
        given(&[])
            .when(command)
            .then_expect_error(DomainError::NotFound);
    }
}

#[test]
fn start_pending_starts_the_infra_apply_with_a_job_carrying_what_the_executor_needs() {
    let state = given(&[requested()])
        .when(start(1))
        .then_expect_events(&[infra_started(1)]);
    assert_eq!(state.status, Status::Provisioning);
    assert_eq!(state.in_flight.unwrap().operation_id, op(1));
}

#[test]
fn start_pending_does_nothing_while_an_operation_is_in_flight() {
    given(&[requested(), infra_started(1)])
        .when(start(2))
        .then_expect_events(&[]);
}

#[test]
fn start_pending_does_nothing_when_no_step_is_pending() {
    let completed = Event::BootstrapCompleted {
        operation_id: op(2),
        outputs: Outputs::new(),
    };
    given(&[
        requested(),
        infra_started(1),
        infra_applied(1),
        bootstrap_started(2),
        completed,
    ])
    .when(start(3))
    .then_expect_events(&[]);
}

#[test]
fn infra_success_records_outputs_and_leaves_bootstrap_pending() {
    let state = given(&[requested(), infra_started(1)])
        .when(complete(
            1,
            succeeded(&[("cluster_name", "beta9-production")]),
        ))
        .then_expect_events(&[infra_applied(1)]);
    assert_eq!(state.pending, Some(Step::Bootstrap));
    assert!(state.in_flight.is_none());
}

#[test]
fn bootstrap_job_carries_the_infra_outputs() {
    given(&[requested(), infra_started(1), infra_applied(1)])
        .when(start(2))
        .then_expect_events(&[bootstrap_started(2)]);
}

#[test]
fn bootstrap_success_makes_the_environment_ready_with_all_outputs() {
    let state = given(&[
        requested(),
        infra_started(1),
        infra_applied(1),
        bootstrap_started(2),
    ])
    .when(complete(
        2,
        succeeded(&[("endpoint", "https://production.beta9.local")]),
    ))
    .then_expect_events(&[Event::BootstrapCompleted {
        operation_id: op(2),
        outputs: Outputs::from([(
            "endpoint".to_owned(),
            "https://production.beta9.local".to_owned(),
        )]),
    }]);
    assert_eq!(state.status, Status::Ready);
    assert_eq!(
        state.outputs.len(),
        2,
        "infra and bootstrap outputs together"
    );
}

#[test]
fn infra_failure_fails_the_environment_and_keeps_the_error() {
    let state = given(&[requested(), infra_started(1)])
        .when(complete(1, failed("quota exceeded")))
        .then_expect_events(&[Event::InfraApplyFailed {
            operation_id: op(1),
            error: "quota exceeded".to_owned(),
        }]);
    assert_eq!(state.status, Status::Failed);
    let failure = state.failure.unwrap();
    assert_eq!(failure.phase, Step::Infra);
    assert_eq!(failure.message, "quota exceeded");
}

#[test]
fn a_result_for_another_operation_is_ignored() {
    given(&[requested(), infra_started(2)])
        .when(complete(1, succeeded(&[])))
        .then_expect_events(&[]);
}

#[test]
fn a_duplicate_result_is_ignored() {
    given(&[requested(), infra_started(1), infra_applied(1)])
        .when(complete(1, succeeded(&[])))
        .then_expect_events(&[]);
}

#[test]
fn a_late_result_of_a_cancelled_operation_is_ignored() {
    let cancelled = Event::OperationCancelled {
        operation_id: op(1),
        reason: "destroy requested".to_owned(),
        failed_phase: None,
    };
    given(&[
        requested(),
        infra_started(1),
        cancelled,
        Event::DestroyRequested {},
    ])
    .when(complete(1, succeeded(&[])))
    .then_expect_events(&[]);
}

#[test]
fn retry_after_a_bootstrap_failure_resumes_at_bootstrap_not_infra() {
    let bootstrap_failed = Event::BootstrapFailed {
        operation_id: op(2),
        error: "chart timeout".to_owned(),
    };
    let state = given(&[
        requested(),
        infra_started(1),
        infra_applied(1),
        bootstrap_started(2),
        bootstrap_failed,
    ])
    .when(Command::Retry)
    .then_expect_events(&[Event::RetryRequested {
        phase: Step::Bootstrap,
    }]);
    assert_eq!(state.pending, Some(Step::Bootstrap));
    assert_eq!(state.status, Status::Bootstrapping);
    assert!(state.failure.is_none());
}

#[test]
fn retry_after_an_infra_failure_resumes_at_infra() {
    let infra_failed = Event::InfraApplyFailed {
        operation_id: op(1),
        error: "boom".to_owned(),
    };
    let state = given(&[requested(), infra_started(1), infra_failed])
        .when(Command::Retry)
        .then_expect_events(&[Event::RetryRequested { phase: Step::Infra }]);
    assert_eq!(state.pending, Some(Step::Infra));
}

#[test]
fn retry_is_rejected_unless_the_environment_failed() {
    given(&[requested(), infra_started(1)])
        .when(Command::Retry)
        .then_expect_error(DomainError::NotFailed {
            status: Status::Provisioning,
        });
}

#[test]
fn destroy_while_applying_cancels_the_operation_first() {
    let state = given(&[requested(), infra_started(1)])
        .when(Command::Destroy)
        .then_expect_events(&[
            Event::OperationCancelled {
                operation_id: op(1),
                reason: "destroy requested".to_owned(),
                failed_phase: None,
            },
            Event::DestroyRequested {},
        ]);
    assert_eq!(state.status, Status::DestroyQueued);
    assert!(state.in_flight.is_none());
    assert_eq!(state.pending, Some(Step::Destroy));
}

#[test]
fn destroy_of_a_queued_environment_needs_no_cancellation() {
    given(&[requested()])
        .when(Command::Destroy)
        .then_expect_events(&[Event::DestroyRequested {}]);
}

#[test]
fn destroy_again_while_destroying_changes_nothing() {
    let destroy_started = Event::DestroyStarted {
        operation_id: op(2),
        job: job(Step::Destroy, Outputs::new()),
    };
    given(&[requested(), Event::DestroyRequested {}, destroy_started])
        .when(Command::Destroy)
        .then_expect_events(&[]);
}

#[test]
fn destroy_runs_and_ends_destroyed_with_outputs_cleared() {
    let state = given(&[
        requested(),
        infra_started(1),
        infra_applied(1),
        Event::DestroyRequested {},
    ])
    .when(start(2))
    .then_expect_events(&[Event::DestroyStarted {
        operation_id: op(2),
        job: job(Step::Destroy, infra_outputs()),
    }]);
    assert_eq!(state.status, Status::Destroying);
    let mut state = state;
    let events = state.handle(complete(2, succeeded(&[]))).unwrap();
    assert_eq!(
        events,
        [Event::InfraDestroyed {
            operation_id: op(2)
        }]
    );
    state.apply(&events[0]);
    assert_eq!(state.status, Status::Destroyed);
    assert!(state.outputs.is_empty());
}

#[test]
fn a_failed_destroy_can_be_retried_as_a_destroy() {
    let destroy_failed = Event::DestroyFailed {
        operation_id: op(2),
        error: "dependency violation".to_owned(),
    };
    let destroy_started = Event::DestroyStarted {
        operation_id: op(2),
        job: job(Step::Destroy, Outputs::new()),
    };
    let state = given(&[
        requested(),
        Event::DestroyRequested {},
        destroy_started,
        destroy_failed,
    ])
    .when(Command::Retry)
    .then_expect_events(&[Event::RetryRequested {
        phase: Step::Destroy,
    }]);
    assert_eq!(state.status, Status::DestroyQueued);
}

#[test]
fn events_round_trip_through_json_with_their_type_name() {
    let event = infra_applied(1);
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["type"], "InfraApplied");
    assert_eq!(event.event_type(), "InfraApplied");
    assert_eq!(
        event.payload()["outputs"]["cluster_name"],
        "beta9-production"
    );
    let back: Event = serde_json::from_value(json).unwrap();
    assert_eq!(back, event);
}

#[test]
fn start_pending_records_the_timeout_of_the_step_in_the_job() {
    let timeouts = StepTimeouts {
        infra: std::time::Duration::from_millis(2500),
        ..StepTimeouts::DEFAULT
    };
    let events = given(&[requested()])
        .when(Command::StartPendingOperation {
            operation_id: op(1),
            timeouts,
        })
        .result
        .unwrap();
    let (_, job) = events[0].job().unwrap();
    assert_eq!(job.timeout_seconds, Some(3), "rounded up to whole seconds");
    let state = given(&[requested(), infra_started(1), infra_applied(1)])
        .when(start(2))
        .then_expect_events(&[bootstrap_started(2)]);
    assert_eq!(state.in_flight.unwrap().timeout_seconds, Some(45 * 60));
}

#[test]
fn a_time_out_fails_the_operation_in_flight_with_an_error_naming_the_timeout() {
    let state = given(&[requested(), infra_started(1)])
        .when(time_out(1))
        .then_expect_events(&[infra_timed_out(1)]);
    assert_eq!(state.status, Status::Failed);
    assert!(state.in_flight.is_none());
    let failure = state.failure.unwrap();
    assert_eq!(failure.phase, Step::Infra);
    assert_eq!(failure.operation_id, Some(op(1)));
    assert!(
        failure.message.contains("within its timeout of 90m"),
        "{}",
        failure.message
    );
}

#[test]
fn a_time_out_of_a_bootstrap_names_the_bootstrap_and_its_own_timeout() {
    let state = given(&[
        requested(),
        infra_started(1),
        infra_applied(1),
        bootstrap_started(2),
    ])
    .when(time_out(2))
    .result
    .unwrap();
    assert_eq!(
        state,
        [Event::OperationTimedOut {
            operation_id: op(2),
            phase: Step::Bootstrap,
            timeout_seconds: Some(2700),
            error: "timed out: the bootstrap step did not finish within its timeout of 45m; retry to run it again".to_owned(),
        }]
    );
}

#[test]
fn a_time_out_of_an_operation_that_is_not_in_flight_is_ignored() {
    // Another operation, one that already finished, and one that was cancelled.
    given(&[requested(), infra_started(2)])
        .when(time_out(1))
        .then_expect_events(&[]);
    given(&[requested(), infra_started(1), infra_applied(1)])
        .when(time_out(1))
        .then_expect_events(&[]);
    let cancelled = Event::OperationCancelled {
        operation_id: op(1),
        reason: "destroy requested".to_owned(),
        failed_phase: None,
    };
    given(&[requested(), infra_started(1), cancelled])
        .when(time_out(1))
        .then_expect_events(&[]);
    // A second sweep (another replica) after the first recorded the time-out: nothing.
    given(&[requested(), infra_started(1), infra_timed_out(1)])
        .when(time_out(1))
        .then_expect_events(&[]);
}

#[test]
fn a_late_result_of_a_timed_out_operation_is_ignored() {
    given(&[requested(), infra_started(1), infra_timed_out(1)])
        .when(complete(1, succeeded(&[])))
        .then_expect_events(&[]);
}

#[test]
fn retry_after_a_time_out_runs_the_timed_out_step_again() {
    let state = given(&[requested(), infra_started(1), infra_timed_out(1)])
        .when(Command::Retry)
        .then_expect_events(&[Event::RetryRequested { phase: Step::Infra }]);
    assert_eq!(state.pending, Some(Step::Infra));
    assert_eq!(state.status, Status::Provisioning);
    assert!(state.failure.is_none());
}

#[test]
fn a_started_event_recorded_before_deadlines_existed_still_times_out() {
    let mut old = serde_json::to_value(infra_started(1)).unwrap();
    old["data"]["job"]
        .as_object_mut()
        .unwrap()
        .remove("timeout_seconds");
    let old: Event = serde_json::from_value(old).unwrap();
    let events = given(&[requested(), old]).when(time_out(1)).result.unwrap();
    match &events[..] {
        [
            Event::OperationTimedOut {
                timeout_seconds: None,
                error,
                ..
            },
        ] => assert!(error.contains("before its deadline"), "{error}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn operation_timed_out_round_trips_through_json_with_its_type_name() {
    let event = infra_timed_out(1);
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["type"], "OperationTimedOut");
    assert_eq!(event.event_type(), "OperationTimedOut");
    assert_eq!(event.payload()["phase"], "infra");
    assert_eq!(event.payload()["timeout_seconds"], 5400);
    assert_eq!(event.operation_id(), Some(&op(1)));
    let back: Event = serde_json::from_value(json).unwrap();
    assert_eq!(back, event);
}

#[test]
fn an_aws_job_carries_the_customer_role_and_a_sandbox_job_none() {
    let mut aws = aws_spec();
    assert_eq!(
        aws.cloud
            .seal_external_id()
            .as_ref()
            .map(ExternalId::expose),
        Some("ext-secret-1")
    );
    let requested_aws = Event::EnvironmentRequested {
        id: env_id(),
        infra_model: InfraModel::for_spec(&aws),
        spec: aws,
        tenant: TenantId::default(),
    };
    let events = given(&[requested_aws]).when(start(1)).result.unwrap();
    let (_, job) = events[0].job().unwrap();
    let role = job
        .customer_role
        .as_ref()
        .expect("an aws job names its role");
    assert_eq!(role.account_id.as_str(), "123456789012");
    assert_eq!(
        role.role_arn.as_str(),
        "arn:aws:iam::123456789012:role/provisioner"
    );
    assert_eq!(role.external_id, Some(ExternalIdRef::Sealed));
    let payload = serde_json::to_string(&events[0]).unwrap();
    assert!(!payload.contains("ext-secret-1"), "{payload}");
    assert!(
        payload.contains(r#""external_id":{"sealed":true}"#),
        "{payload}"
    );

    let events = given(&[requested()]).when(start(1)).result.unwrap();
    assert_eq!(events[0].job().unwrap().1.customer_role, None);
}

fn aws_spec() -> EnvironmentSpec {
    crate::config::parse(
        "name: production\ncloud:\n  provider: aws\n  region: us-east-1\n  account_id: \"123456789012\"\n  role_arn: arn:aws:iam::123456789012:role/provisioner\n  external_id: ext-secret-1\n",
        crate::config::Format::Yaml,
    )
    .expect("a valid spec")
}

#[test]
fn a_request_holding_the_external_id_itself_is_refused() {
    let result = given(&[])
        .when(Command::Request {
            id: env_id(),
            spec: aws_spec(),
            tenant: TenantId::default(),
        })
        .result;
    assert_eq!(result, Err(DomainError::ExternalIdNotSealed));
}

#[test]
fn an_event_recorded_with_the_external_id_itself_still_loads_and_its_jobs_carry_it() {
    // As written before the external id was sealed apart (issue 10).
    let mut json = serde_json::to_value(Event::EnvironmentRequested {
        id: env_id(),
        infra_model: InfraModel::for_spec(&aws_spec()),
        spec: aws_spec(),
        tenant: TenantId::default(),
    })
    .unwrap();
    assert_eq!(json["data"]["spec"]["cloud"]["external_id"], "ext-secret-1");
    let old: Event = serde_json::from_value(json.take()).unwrap();
    let events = given(&[old]).when(start(1)).result.unwrap();
    let role = events[0].job().unwrap().1.customer_role.clone().unwrap();
    match role.external_id {
        Some(ExternalIdRef::Plain(id)) => assert_eq!(id.expose(), "ext-secret-1"),
        other => panic!("{other:?}"),
    }
}

fn progressed(condition: ConditionType, status: ConditionStatus, reason: &str) -> OperationOutcome {
    OperationOutcome::Progressed {
        report: ConditionReport {
            condition,
            status,
            reason: reason.to_owned(),
            message: "seen".to_owned(),
        },
    }
}

#[test]
fn a_bootstrap_records_what_its_executor_observes_once_and_stays_in_flight() {
    let reachable = progressed(
        ConditionType::ClusterReachable,
        ConditionStatus::True,
        "NodesReady",
    );
    let state = given(&[
        requested(),
        infra_started(1),
        infra_applied(1),
        bootstrap_started(2),
    ])
    .when(complete(2, reachable.clone()))
    .then_expect_events(&[Event::BootstrapProgressed {
        operation_id: op(2),
        report: ConditionReport {
            condition: ConditionType::ClusterReachable,
            status: ConditionStatus::True,
            reason: "NodesReady".to_owned(),
            message: "seen".to_owned(),
        },
    }]);
    assert_eq!(state.status, Status::Bootstrapping);
    assert!(state.in_flight.is_some());
    // The same observation again (a redelivery, a re-run after a crash) records nothing.
    Scenario {
        state: state.clone(),
    }
    .when(complete(2, reachable))
    .then_expect_events(&[]);
    // A later operation's result still completes it.
    Scenario { state }
        .when(complete(2, succeeded(&[])))
        .then_expect_events(&[Event::BootstrapCompleted {
            operation_id: op(2),
            outputs: Outputs::new(),
        }]);
}

#[test]
fn progress_of_another_step_or_operation_is_ignored_and_a_report_is_bounded() {
    let reachable = progressed(
        ConditionType::ClusterReachable,
        ConditionStatus::True,
        "NodesReady",
    );
    given(&[requested(), infra_started(1)])
        .when(complete(1, reachable.clone()))
        .then_expect_events(&[]);
    given(&[
        requested(),
        infra_started(1),
        infra_applied(1),
        bootstrap_started(2),
    ])
    .when(complete(3, reachable))
    .then_expect_events(&[]);
    let mut hostile = progressed(
        ConditionType::AppReady,
        ConditionStatus::False,
        &format!("Bad reason\n{}", "x".repeat(500)),
    );
    if let OperationOutcome::Progressed { report } = &mut hostile {
        report.message = "m".repeat(100_000);
    }
    let events = given(&[
        requested(),
        infra_started(1),
        infra_applied(1),
        bootstrap_started(2),
    ])
    .when(complete(2, hostile))
    .result
    .unwrap();
    let Event::BootstrapProgressed { report, .. } = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(report.reason.len(), crate::conditions::MAX_REASON);
    assert!(report.reason.starts_with("Badreason"));
    assert!(report.message.len() <= crate::conditions::MAX_MESSAGE);
}

// The runbook's operations (admin only at the edge).

const ADMIN: &str = "token:admin";

fn reason(text: &str) -> crate::operator::Reason {
    crate::operator::Reason::parse(text).unwrap()
}

fn lock(id: &str) -> crate::operator::LockId {
    crate::operator::LockId::parse(id).unwrap()
}

fn cancel() -> Command {
    Command::Cancel { by: ADMIN.into() }
}

fn mark_failed(text: &str) -> Command {
    Command::MarkFailed {
        by: ADMIN.into(),
        reason: reason(text),
    }
}

fn mark_destroyed(text: &str) -> Command {
    Command::MarkDestroyed {
        reason: reason(text),
    }
}

fn force_unlock(id: &str) -> Command {
    Command::AuthorizeForceUnlock {
        by: ADMIN.into(),
        lock_id: lock(id),
        reason: Some(reason("the run that held it crashed")),
    }
}

fn infra_failed(n: u8) -> Event {
    Event::InfraApplyFailed {
        operation_id: op(n),
        error: "the state is locked by another run (lock abc)".to_owned(),
    }
}

#[test]
fn cancel_fails_the_running_step_naming_who_cancelled_and_a_retry_resumes_it() {
    let state = given(&[requested(), infra_started(1)])
        .when(cancel())
        .then_expect_events(&[Event::OperationCancelled {
            operation_id: op(1),
            reason: "cancelled by token:admin; retry to run the infra step again".to_owned(),
            failed_phase: Some(Step::Infra),
        }]);
    assert_eq!(state.status, Status::Failed);
    assert!(state.in_flight.is_none());
    let failure = state.failure.clone().unwrap();
    assert_eq!(failure.phase, Step::Infra);
    assert!(
        failure.message.contains("token:admin"),
        "{}",
        failure.message
    );
    // A late result of the cancelled apply changes nothing.
    assert_eq!(state.handle(complete(1, succeeded(&[]))).unwrap(), []);
    let mut state = state;
    for event in state.handle(Command::Retry).unwrap() {
        state.apply(&event);
    }
    assert_eq!(state.status, Status::Provisioning);
    assert_eq!(state.pending, Some(Step::Infra));
}

#[test]
fn cancel_is_refused_when_nothing_is_in_flight() {
    for events in [
        vec![requested()],
        vec![requested(), infra_started(1), infra_failed(1)],
    ] {
        let status = given(&events).state.status;
        given(&events)
            .when(cancel())
            .then_expect_error(DomainError::Refused {
                action: "cancel",
                status,
                why: "no operation is in flight, so there is nothing to cancel",
            });
    }
    let error = given(&[requested()]).state.handle(cancel()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "the environment is queued; cancel is refused: no operation is in flight, so there is \
         nothing to cancel"
    );
}

#[test]
fn mark_failed_ends_the_operation_in_flight_and_its_late_result_is_ignored() {
    let state = given(&[
        requested(),
        infra_started(1),
        infra_applied(1),
        bootstrap_started(2),
    ])
    .when(mark_failed("the executor's node is gone"))
    .then_expect_events(&[Event::MarkedFailed {
        operation_id: Some(op(2)),
        phase: Step::Bootstrap,
        reason: "the executor's node is gone".to_owned(),
        error: "marked failed by token:admin: the executor's node is gone; retry to run the \
                    bootstrap step again"
            .to_owned(),
    }]);
    assert_eq!(state.status, Status::Failed);
    assert_eq!(state.failure.as_ref().unwrap().phase, Step::Bootstrap);
    assert_eq!(state.handle(complete(2, succeeded(&[]))).unwrap(), []);
    assert_eq!(state.handle(time_out(2)).unwrap(), []);
}

#[test]
fn mark_failed_of_a_step_that_never_started_fails_its_phase() {
    let state = given(&[requested()])
        .when(mark_failed("stuck"))
        .then_expect_events(&[Event::MarkedFailed {
            operation_id: None,
            phase: Step::Infra,
            reason: "stuck".to_owned(),
            error: "marked failed by token:admin: stuck; retry to run the infra step again"
                .to_owned(),
        }]);
    assert_eq!(state.status, Status::Failed);
    assert_eq!(state.pending, None);
    // Nothing is pending any more: the process manager's late start does nothing.
    assert_eq!(state.handle(start(1)).unwrap(), []);
}

#[test]
fn mark_failed_is_refused_when_nothing_runs_or_waits() {
    let ready = [
        requested(),
        infra_started(1),
        infra_applied(1),
        bootstrap_started(2),
        Event::BootstrapCompleted {
            operation_id: op(2),
            outputs: Outputs::new(),
        },
    ];
    for (events, status) in [
        (ready.to_vec(), Status::Ready),
        (
            vec![requested(), infra_started(1), infra_failed(1)],
            Status::Failed,
        ),
    ] {
        let error = given(&events).state.handle(mark_failed("x")).unwrap_err();
        assert!(
            matches!(error, DomainError::Refused { action: "mark-failed", status: s, .. } if s == status),
            "{error:?}"
        );
    }
}

#[test]
fn mark_destroyed_destroys_a_failed_environment_and_is_final() {
    let destroy_failed = Event::DestroyFailed {
        operation_id: op(2),
        error: "dependency violation".to_owned(),
    };
    let state = given(&[
        requested(),
        Event::DestroyRequested {},
        Event::DestroyStarted {
            operation_id: op(2),
            job: job(Step::Destroy, Outputs::new()),
        },
        destroy_failed,
    ])
    .when(mark_destroyed("deleted by hand in the console"))
    .then_expect_events(&[Event::MarkedDestroyed {
        reason: "deleted by hand in the console".to_owned(),
    }]);
    assert_eq!(state.status, Status::Destroyed);
    assert!(state.failure.is_none() && state.pending.is_none());
    assert!(
        Event::MarkedDestroyed {
            reason: String::new()
        }
        .is_final()
    );
    // Nothing leaves destroyed.
    assert!(state.handle(Command::Retry).is_err());
    assert_eq!(state.handle(Command::Destroy).unwrap(), []);
    assert!(matches!(
        state.handle(mark_destroyed("again")),
        Err(DomainError::Refused {
            status: Status::Destroyed,
            ..
        })
    ));
}

#[test]
fn mark_destroyed_is_refused_while_an_operation_is_in_flight() {
    given(&[requested(), infra_started(1)])
        .when(mark_destroyed("gone"))
        .then_expect_error(DomainError::Refused {
            action: "mark-destroyed",
            status: Status::Provisioning,
            why: "an operation is in flight; cancel it or mark it failed first",
        });
}

#[test]
fn force_unlock_on_a_failed_environment_queues_the_retry_and_the_next_job_carries_the_lock() {
    let state = given(&[requested(), infra_started(1), infra_failed(1)])
        .when(force_unlock("abc-123"))
        .then_expect_events(&[
            Event::ForceUnlockAuthorized {
                lock_id: lock("abc-123"),
                authorized_by: ADMIN.to_owned(),
                reason: Some("the run that held it crashed".to_owned()),
            },
            Event::RetryRequested { phase: Step::Infra },
        ]);
    assert_eq!(state.pending, Some(Step::Infra));
    let events = state.handle(start(2)).unwrap();
    let Some((_, job)) = events[0].job() else {
        panic!("a job: {events:?}")
    };
    let authorized = job.force_unlock.clone().expect("the job carries the lock");
    assert_eq!(authorized.lock_id.as_str(), "abc-123");
    assert_eq!(authorized.authorized_by, ADMIN);
    // Used up by that run: the one after it carries none.
    let mut state = state;
    state.apply(&events[0]);
    state.apply(&infra_failed(2));
    state.apply(&Event::RetryRequested { phase: Step::Infra });
    let events = state.handle(start(3)).unwrap();
    assert_eq!(events[0].job().unwrap().1.force_unlock, None);
}

#[test]
fn force_unlock_on_a_running_environment_waits_for_the_next_step_and_is_refused_once_destroyed() {
    let state = given(&[requested(), infra_started(1)])
        .when(force_unlock("abc"))
        .then_expect_events(&[Event::ForceUnlockAuthorized {
            lock_id: lock("abc"),
            authorized_by: ADMIN.to_owned(),
            reason: Some("the run that held it crashed".to_owned()),
        }]);
    assert_eq!(state.status, Status::Provisioning);
    assert!(state.force_unlock.is_some());
    given(&[requested(), Event::MarkedDestroyed { reason: "r".into() }])
        .when(force_unlock("abc"))
        .then_expect_error(DomainError::Refused {
            action: "force-unlock",
            status: Status::Destroyed,
            why: "it is destroyed, so no step will run again",
        });
}

#[test]
fn operator_events_round_trip_and_an_old_cancellation_without_a_phase_still_decodes() {
    for event in [
        Event::MarkedFailed {
            operation_id: None,
            phase: Step::Infra,
            reason: "r".into(),
            error: "e".into(),
        },
        Event::MarkedDestroyed { reason: "r".into() },
        Event::ForceUnlockAuthorized {
            lock_id: lock("abc"),
            authorized_by: ADMIN.into(),
            reason: None,
        },
    ] {
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], event.event_type());
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
    }
    let old = serde_json::json!({"type": "OperationCancelled",
        "data": {"operation_id": op(1).to_string(), "reason": "destroy requested"}});
    let Event::OperationCancelled { failed_phase, .. } = serde_json::from_value(old).unwrap()
    else {
        panic!("an OperationCancelled")
    };
    assert_eq!(failed_phase, None);
}
