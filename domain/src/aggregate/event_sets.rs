//! Which events play which role, by their wire names: the names consumers filter NATS subjects
//! by (`<p>.events.*.<EventType>`). Each set is the wire form of a predicate on [`Event`], and a
//! test checks every event against both, so a new event cannot fall out of a set unnoticed.

use super::events::Event;

/// The events after which a step may be pending: the process manager reacts to these by
/// starting it ([`Event::leaves_step_pending`]).
pub const STEP_TRIGGERS: [&str; 4] = [
    "EnvironmentRequested",
    "InfraApplied",
    "RetryRequested",
    "DestroyRequested",
];

/// The events that carry a job for an executor ([`Event::job`]).
pub const JOB_EVENTS: [&str; 3] = ["InfraApplyStarted", "BootstrapStarted", "DestroyStarted"];

/// The events that end an operation without its result: an executor must stop its job, or not
/// start it ([`Event::ends_operation_early`]).
pub const ENDED_EARLY_EVENTS: [&str; 3] =
    ["OperationCancelled", "OperationTimedOut", "MarkedFailed"];

/// The events that end an operation, one way or another: its result (success or failure), a
/// cancellation, a time-out or an admin declaring it failed ([`Event::ends_operation`]).
pub const OPERATION_END_EVENTS: [&str; 9] = [
    "InfraApplied",
    "InfraApplyFailed",
    "BootstrapCompleted",
    "BootstrapFailed",
    "InfraDestroyed",
    "DestroyFailed",
    "OperationCancelled",
    "OperationTimedOut",
    "MarkedFailed",
];

/// The events after which nothing more happens to an environment: a live stream of one
/// environment ends with either ([`Event::is_final`]).
pub const FINAL_EVENTS: [&str; 2] = ["InfraDestroyed", "MarkedDestroyed"];

impl Event {
    /// Whether this event ends its operation without the operation's own result.
    pub fn ends_operation_early(&self) -> bool {
        matches!(
            self,
            Event::OperationCancelled { .. }
                | Event::OperationTimedOut { .. }
                | Event::MarkedFailed { .. }
        )
    }

    /// Whether this event ends its operation (with its result, or early).
    pub fn ends_operation(&self) -> bool {
        self.ends_operation_early()
            || matches!(
                self,
                Event::InfraApplied { .. }
                    | Event::InfraApplyFailed { .. }
                    | Event::BootstrapCompleted { .. }
                    | Event::BootstrapFailed { .. }
                    | Event::InfraDestroyed { .. }
                    | Event::DestroyFailed { .. }
            )
    }

    /// Whether this is the last event an environment can have.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Event::InfraDestroyed { .. } | Event::MarkedDestroyed { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{OperationJob, StepTimeouts};
    use crate::config::{self, Format};
    use crate::ids::{EnvironmentId, OperationId};
    use crate::infra_model::InfraModel;
    use crate::spec::Step;

    /// One event of every type. The `match` has no wildcard: adding an event type fails to
    /// compile here until it has a sample, and so until the sets below were considered for it.
    fn one_of_each() -> Vec<Event> {
        let spec = config::parse("name: sets\ncloud:\n  provider: sandbox\n", Format::Yaml)
            .expect("a valid spec");
        let id = EnvironmentId::parse("env_01jd0000000000000000000000").unwrap();
        let op = OperationId::parse("op_01jd0000000000000000000001").unwrap();
        let job = OperationJob {
            environment_id: id.clone(),
            name: spec.name.clone(),
            step: Step::Infra,
            infra_model: InfraModel::for_spec(&spec),
            beta9: spec.beta9.clone(),
            simulate: None,
            infra_outputs: Default::default(),
            timeout_seconds: Some(StepTimeouts::DEFAULT.infra.as_secs()),
            customer_role: None,
            force_unlock: None,
        };
        let events = vec![
            Event::EnvironmentRequested {
                id,
                infra_model: InfraModel::for_spec(&spec),
                spec,
                tenant: crate::tenant::TenantId::default(),
            },
            Event::InfraApplyStarted {
                operation_id: op.clone(),
                job: job.clone(),
            },
            Event::InfraApplied {
                operation_id: op.clone(),
                outputs: Default::default(),
            },
            Event::InfraApplyFailed {
                operation_id: op.clone(),
                error: "e".into(),
            },
            Event::BootstrapStarted {
                operation_id: op.clone(),
                job: job.clone(),
            },
            Event::BootstrapProgressed {
                operation_id: op.clone(),
                report: crate::conditions::ConditionReport {
                    condition: crate::conditions::ConditionType::ClusterReachable,
                    status: crate::conditions::ConditionStatus::True,
                    reason: "NodesReady".into(),
                    message: String::new(),
                },
            },
            Event::BootstrapCompleted {
                operation_id: op.clone(),
                outputs: Default::default(),
            },
            Event::BootstrapFailed {
                operation_id: op.clone(),
                error: "e".into(),
            },
            Event::RetryRequested { phase: Step::Infra },
            Event::DestroyRequested {},
            Event::OperationCancelled {
                operation_id: op.clone(),
                reason: "r".into(),
                failed_phase: Some(Step::Infra),
            },
            Event::DestroyStarted {
                operation_id: op.clone(),
                job,
            },
            Event::InfraDestroyed {
                operation_id: op.clone(),
            },
            Event::DestroyFailed {
                operation_id: op.clone(),
                error: "e".into(),
            },
            Event::OperationTimedOut {
                operation_id: op.clone(),
                phase: Step::Infra,
                timeout_seconds: None,
                error: "e".into(),
            },
            Event::MarkedFailed {
                operation_id: Some(op),
                phase: Step::Infra,
                reason: "r".into(),
                error: "e".into(),
            },
            Event::MarkedDestroyed { reason: "r".into() },
            Event::ForceUnlockAuthorized {
                lock_id: crate::operator::LockId::parse("abc").unwrap(),
                authorized_by: "token:admin".into(),
                reason: None,
            },
        ];
        let mut covered = [false; 18];
        for event in &events {
            let index = match event {
                Event::EnvironmentRequested { .. } => 0,
                Event::InfraApplyStarted { .. } => 1,
                Event::InfraApplied { .. } => 2,
                Event::InfraApplyFailed { .. } => 3,
                Event::BootstrapStarted { .. } => 4,
                Event::BootstrapCompleted { .. } => 5,
                Event::BootstrapFailed { .. } => 6,
                Event::RetryRequested { .. } => 7,
                Event::DestroyRequested {} => 8,
                Event::OperationCancelled { .. } => 9,
                Event::DestroyStarted { .. } => 10,
                Event::InfraDestroyed { .. } => 11,
                Event::DestroyFailed { .. } => 12,
                Event::OperationTimedOut { .. } => 13,
                Event::BootstrapProgressed { .. } => 14,
                Event::MarkedFailed { .. } => 15,
                Event::MarkedDestroyed { .. } => 16,
                Event::ForceUnlockAuthorized { .. } => 17,
            };
            covered[index] = true;
        }
        assert!(covered.iter().all(|c| *c), "a sample is missing");
        events
    }

    #[test]
    fn every_set_names_exactly_the_events_of_its_predicate() {
        for event in one_of_each() {
            let name = event.event_type();
            assert_eq!(
                STEP_TRIGGERS.contains(&name),
                event.leaves_step_pending(),
                "{name} and STEP_TRIGGERS"
            );
            assert_eq!(
                JOB_EVENTS.contains(&name),
                event.job().is_some(),
                "{name} and JOB_EVENTS"
            );
            assert_eq!(
                ENDED_EARLY_EVENTS.contains(&name),
                event.ends_operation_early(),
                "{name} and ENDED_EARLY_EVENTS"
            );
            assert_eq!(
                OPERATION_END_EVENTS.contains(&name),
                event.ends_operation(),
                "{name} and OPERATION_END_EVENTS"
            );
            assert_eq!(
                FINAL_EVENTS.contains(&name),
                event.is_final(),
                "{name} and FINAL_EVENTS"
            );
        }
    }
}
