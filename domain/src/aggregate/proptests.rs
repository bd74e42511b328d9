//! Property tests: whatever commands arrive, in whatever order, the aggregate keeps its
//! invariants.

use super::*;
use crate::ids::{EnvironmentId, OperationId};
use crate::spec::Step;
use proptest::prelude::*;

/// A command, with operation ids drawn from a small pool so late, duplicate and foreign
/// results are frequent.
#[derive(Clone, Debug)]
enum Action {
    Start(u8),
    Succeed(u8),
    Fail(u8),
    TimeOut(u8),
    Retry,
    Destroy,
    Cancel,
    MarkFailed,
    MarkDestroyed,
    ForceUnlock,
}

fn op(n: u8) -> OperationId {
    OperationId::parse(&format!("op_01jd00000000000000000000{:02}", n % 4)).unwrap()
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (0u8..4).prop_map(Action::Start),
        (0u8..4).prop_map(Action::Succeed),
        (0u8..4).prop_map(Action::Fail),
        (0u8..4).prop_map(Action::TimeOut),
        Just(Action::Retry),
        Just(Action::Destroy),
        Just(Action::Cancel),
        Just(Action::MarkFailed),
        Just(Action::MarkDestroyed),
        Just(Action::ForceUnlock),
    ]
}

fn command(action: &Action) -> Command {
    match action {
        Action::Start(n) => Command::StartPendingOperation {
            operation_id: op(*n),
            timeouts: StepTimeouts::DEFAULT,
        },
        Action::TimeOut(n) => Command::TimeOutOperation {
            operation_id: op(*n),
        },
        Action::Succeed(n) => Command::CompleteOperation {
            operation_id: op(*n),
            outcome: OperationOutcome::Succeeded {
                outputs: Outputs::new(),
            },
        },
        Action::Fail(n) => Command::CompleteOperation {
            operation_id: op(*n),
            outcome: OperationOutcome::Failed {
                error: "boom".into(),
            },
        },
        Action::Retry => Command::Retry,
        Action::Destroy => Command::Destroy,
        Action::Cancel => Command::Cancel {
            by: "token:admin".into(),
        },
        Action::MarkFailed => Command::MarkFailed {
            by: "token:admin".into(),
            reason: crate::operator::Reason::parse("gone").unwrap(),
        },
        Action::MarkDestroyed => Command::MarkDestroyed {
            reason: crate::operator::Reason::parse("by hand").unwrap(),
        },
        Action::ForceUnlock => Command::AuthorizeForceUnlock {
            by: "token:admin".into(),
            lock_id: crate::operator::LockId::parse("abc").unwrap(),
            reason: None,
        },
    }
}

fn requested() -> Environment {
    let spec = crate::config::parse(
        "name: prop\ncloud:\n  provider: sandbox\n",
        crate::config::Format::Yaml,
    )
    .expect("valid spec");
    let mut state = Environment::default();
    let id = EnvironmentId::parse("env_01jd0000000000000000000000").unwrap();
    for event in state
        .handle(Command::Request {
            id,
            spec,
            tenant: crate::tenant::TenantId::default(),
        })
        .unwrap()
    {
        state.apply(&event);
    }
    state
}

proptest! {
    #[test]
    fn the_aggregate_keeps_its_invariants_under_any_command_sequence(
        actions in proptest::collection::vec(action(), 0..40)
    ) {
        let mut state = requested();
        let mut started = 0usize;
        let mut ended = 0usize;
        for action in &actions {
            let before = state.clone();
            let Ok(events) = state.handle(command(action)) else {
                continue;
            };
            for event in &events {
                // A result is recorded only for the operation in flight.
                if let (Some(op), Event::InfraApplied { .. }
                    | Event::InfraApplyFailed { .. }
                    | Event::BootstrapCompleted { .. }
                    | Event::BootstrapFailed { .. }
                    | Event::InfraDestroyed { .. }
                    | Event::DestroyFailed { .. }
                    | Event::OperationTimedOut { .. }) = (event.operation_id(), event)
                {
                    prop_assert_eq!(
                        Some(op),
                        before.in_flight.as_ref().map(|f| &f.operation_id)
                    );
                    ended += 1;
                }
                // A time-out fails the phase that was running.
                if let Event::OperationTimedOut { phase, .. } = event {
                    prop_assert_eq!(Some(*phase), before.in_flight.as_ref().map(|f| f.step));
                }
                if event.job().is_some() {
                    // A step starts only when none is running.
                    prop_assert!(state.in_flight.is_none());
                    started += 1;
                }
                if matches!(event, Event::OperationCancelled { .. })
                    || matches!(event, Event::MarkedFailed { operation_id: Some(_), .. })
                {
                    ended += 1;
                }
                state.apply(event);
            }
            // At most one operation in flight, and only in a status that runs one.
            prop_assert!(started - ended <= 1);
            prop_assert_eq!(state.in_flight.is_some(), started > ended);
            if let Some(in_flight) = &state.in_flight {
                let expected = match in_flight.step {
                    Step::Infra => Status::Provisioning,
                    Step::Bootstrap => Status::Bootstrapping,
                    Step::Destroy => Status::Destroying,
                };
                prop_assert_eq!(state.status, expected);
            }
            // Failed always says why; nothing leaves destroyed.
            prop_assert_eq!(state.status == Status::Failed, state.failure.is_some());
            if before.status == Status::Destroyed {
                prop_assert_eq!(state.status, Status::Destroyed);
            }
        }
    }
}
