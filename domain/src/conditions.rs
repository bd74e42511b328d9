//! An environment's conditions, in the manner of Crossplane's (and Kubernetes') status
//! conditions: beside the coarse status, one entry per aspect a user waits for — the
//! infrastructure applied ([`ConditionType::InfraReady`]), the cluster answering with its
//! nodes Ready ([`ConditionType::ClusterReachable`]), the baseline charts installed
//! ([`ConditionType::BaselineInstalled`]), Beta9 available ([`ConditionType::AppReady`]) —
//! each with a status (`True`, `False`, `Unknown`), a CamelCase reason, a message and the time
//! its status last changed.
//!
//! Conditions are derived from the events alone ([`Conditions::observe`]): the step events say
//! when a step starts, ends or fails, and the executor's observations on the way
//! ([`ConditionReport`], recorded as `BootstrapProgressed`) say when the cluster became
//! reachable and the baseline was installed. The read model folds them beside the domain state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::Event;
use crate::spec::Step;
use crate::text::truncated;

/// The longest reason kept: a CamelCase word.
pub const MAX_REASON: usize = 64;
/// The longest message kept, in bytes.
pub const MAX_MESSAGE: usize = 1024;

/// The aspects of an environment a condition is kept for, in the order they become true.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ConditionType {
    /// The infrastructure (Terraform) is applied.
    InfraReady,
    /// The cluster's API server answers and each node pool has its minimum of Ready nodes.
    ClusterReachable,
    /// The baseline charts (ingress, certificates, metrics, autoscaling, GPU plugin) are installed.
    BaselineInstalled,
    /// Beta9 is installed and its gateway available.
    AppReady,
}

impl ConditionType {
    pub const ALL: [ConditionType; 4] = [
        ConditionType::InfraReady,
        ConditionType::ClusterReachable,
        ConditionType::BaselineInstalled,
        ConditionType::AppReady,
    ];

    /// The conditions the bootstrap step decides.
    const BOOTSTRAP: [ConditionType; 3] = [
        ConditionType::ClusterReachable,
        ConditionType::BaselineInstalled,
        ConditionType::AppReady,
    ];
}

/// Whether a condition holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// What an executor observed of one condition while its step ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionReport {
    pub condition: ConditionType,
    pub status: ConditionStatus,
    /// CamelCase, at most [`MAX_REASON`] characters (see [`ConditionReport::bounded`]).
    pub reason: String,
    pub message: String,
}

impl ConditionReport {
    /// The report with its reason reduced to ASCII letters and digits (at most [`MAX_REASON`];
    /// `Observed` when nothing is left) and its message to at most [`MAX_MESSAGE`] bytes: what
    /// an event may record of it, whoever sent it.
    pub fn bounded(self) -> Self {
        let reason: String = self
            .reason
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(MAX_REASON)
            .collect();
        ConditionReport {
            reason: if reason.is_empty() {
                "Observed".to_owned()
            } else {
                reason
            },
            message: truncated(&self.message, MAX_MESSAGE).to_owned(),
            ..self
        }
    }
}

/// One condition as the read model shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Condition {
    #[serde(rename = "type")]
    pub condition: ConditionType,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    /// When `status` last changed (the recording time of the event that changed it).
    pub last_transition_time: DateTime<Utc>,
}

/// Every condition of one environment, in [`ConditionType::ALL`] order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(
    description = "Every condition of one environment: InfraReady, ClusterReachable, \
                        BaselineInstalled, AppReady, in that order."
)]
pub struct Conditions(Vec<Condition>);

impl Conditions {
    /// The conditions of an environment just requested, at `at`: all `Unknown`.
    pub fn requested(at: DateTime<Utc>) -> Self {
        Conditions(
            ConditionType::ALL
                .into_iter()
                .map(|condition| Condition {
                    condition,
                    status: ConditionStatus::Unknown,
                    reason: "Requested".to_owned(),
                    message: String::new(),
                    last_transition_time: at,
                })
                .collect(),
        )
    }

    pub fn as_slice(&self) -> &[Condition] {
        &self.0
    }

    /// The condition `condition`: every one is kept, but a stored list is read as it was
    /// written, so `None` stays possible.
    pub fn get(&self, condition: ConditionType) -> Option<&Condition> {
        self.0.iter().find(|c| c.condition == condition)
    }

    /// Whether `condition` is kept with `status`.
    fn is(&self, condition: ConditionType, status: ConditionStatus) -> bool {
        self.get(condition).is_some_and(|c| c.status == status)
    }

    /// Sets `condition`; its transition time moves to `at` only when its status changes.
    fn set(
        &mut self,
        condition: ConditionType,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        at: DateTime<Utc>,
    ) {
        if self.get(condition).is_none() {
            // Not in a list read back from storage: added, in its place.
            self.0.push(Condition {
                condition,
                status,
                reason: String::new(),
                message: String::new(),
                last_transition_time: at,
            });
            self.0
                .sort_by_key(|c| ConditionType::ALL.iter().position(|t| *t == c.condition));
        }
        let Some(entry) = self.0.iter_mut().find(|c| c.condition == condition) else {
            return;
        };
        if entry.status != status {
            entry.status = status;
            entry.last_transition_time = at;
        }
        reason.clone_into(&mut entry.reason);
        truncated(message, MAX_MESSAGE).clone_into(&mut entry.message);
    }

    /// Each bootstrap condition that is not `True` set as given (the ones already observed
    /// true stay so: a re-run of the step observes them again).
    fn unsettled_bootstrap(
        &mut self,
        status: ConditionStatus,
        reason: &str,
        message: &str,
        at: DateTime<Utc>,
    ) {
        for condition in ConditionType::BOOTSTRAP {
            if !self.is(condition, ConditionStatus::True) {
                self.set(condition, status, reason, message, at);
            }
        }
    }

    /// The first bootstrap condition not `True` set `False` (the one the step failed at), the
    /// later ones left `Unknown`; one the executor already reported `False` keeps its reason.
    fn bootstrap_failed(&mut self, reason: &str, message: &str, at: DateTime<Utc>) {
        if let Some(first) = ConditionType::BOOTSTRAP
            .into_iter()
            .find(|c| !self.is(*c, ConditionStatus::True))
            && !self.is(first, ConditionStatus::False)
        {
            self.set(first, ConditionStatus::False, reason, message, at);
        }
    }

    /// The condition of a phase that failed set `False` (a destroy's failure changes none).
    fn phase_failed(&mut self, phase: Step, reason: &str, message: &str, at: DateTime<Utc>) {
        match phase {
            Step::Infra => self.set(
                ConditionType::InfraReady,
                ConditionStatus::False,
                reason,
                message,
                at,
            ),
            Step::Bootstrap => self.bootstrap_failed(reason, message, at),
            Step::Destroy => {}
        }
    }

    /// Folds `event`, recorded at `at`.
    pub fn observe(&mut self, event: &Event, at: DateTime<Utc>) {
        use ConditionStatus::{False, True, Unknown};
        use ConditionType::{AppReady, InfraReady};
        match event {
            Event::EnvironmentRequested { .. } => *self = Conditions::requested(at),
            Event::InfraApplyStarted { .. } => {
                self.set(InfraReady, Unknown, "Applying", "terraform is applying", at)
            }
            Event::InfraApplied { .. } => self.set(InfraReady, True, "Applied", "", at),
            Event::InfraApplyFailed { error, .. } => {
                self.set(InfraReady, False, "ApplyFailed", error, at)
            }
            Event::BootstrapStarted { .. } => {
                self.unsettled_bootstrap(Unknown, "Bootstrapping", "the bootstrap is running", at)
            }
            Event::BootstrapProgressed { report, .. } => {
                let report = report.clone().bounded();
                self.set(
                    report.condition,
                    report.status,
                    &report.reason,
                    &report.message,
                    at,
                )
            }
            Event::BootstrapCompleted { .. } => {
                self.unsettled_bootstrap(True, "Available", "", at);
                self.set(AppReady, True, "Available", "", at);
            }
            Event::BootstrapFailed { error, .. } => {
                self.bootstrap_failed("BootstrapFailed", error, at)
            }
            Event::OperationTimedOut { phase, error, .. } => match phase {
                Step::Infra => self.set(InfraReady, False, "TimedOut", error, at),
                Step::Bootstrap => self.bootstrap_failed("TimedOut", error, at),
                Step::Destroy => {}
            },
            Event::RetryRequested { phase } => match phase {
                Step::Infra => self.set(InfraReady, Unknown, "RetryRequested", "", at),
                Step::Bootstrap => self.unsettled_bootstrap(Unknown, "RetryRequested", "", at),
                Step::Destroy => {}
            },
            Event::DestroyStarted { .. } => self.set(
                AppReady,
                False,
                "Destroying",
                "the environment is being destroyed",
                at,
            ),
            Event::InfraDestroyed { .. } => {
                for condition in ConditionType::ALL {
                    self.set(condition, False, "Destroyed", "", at);
                }
            }
            Event::MarkedDestroyed { reason } => {
                for condition in ConditionType::ALL {
                    self.set(condition, False, "MarkedDestroyed", reason, at);
                }
            }
            Event::OperationCancelled {
                failed_phase: Some(phase),
                reason,
                ..
            } => self.phase_failed(*phase, "Cancelled", reason, at),
            Event::MarkedFailed { phase, error, .. } => {
                self.phase_failed(*phase, "MarkedFailed", error, at)
            }
            Event::DestroyRequested {}
            | Event::OperationCancelled {
                failed_phase: None, ..
            }
            | Event::ForceUnlockAuthorized { .. }
            | Event::DestroyFailed { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OperationId;
    use chrono::TimeZone;

    fn at(second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, second).unwrap()
    }

    fn op() -> OperationId {
        OperationId::parse("op_01jd0000000000000000000001").unwrap()
    }

    fn progressed(condition: ConditionType, status: ConditionStatus, reason: &str) -> Event {
        Event::BootstrapProgressed {
            operation_id: op(),
            report: ConditionReport {
                condition,
                status,
                reason: reason.to_owned(),
                message: String::new(),
            },
        }
    }

    fn statuses(conditions: &Conditions) -> Vec<(ConditionStatus, &str)> {
        conditions
            .as_slice()
            .iter()
            .map(|c| (c.status, c.reason.as_str()))
            .collect()
    }

    use ConditionStatus::{False, True, Unknown};

    #[test]
    fn a_bootstrap_turns_each_condition_true_as_it_is_observed() {
        let mut conditions = Conditions::requested(at(0));
        conditions.observe(
            &Event::InfraApplied {
                operation_id: op(),
                outputs: Default::default(),
            },
            at(1),
        );
        conditions.observe(
            &progressed(ConditionType::ClusterReachable, True, "NodesReady"),
            at(2),
        );
        assert_eq!(
            statuses(&conditions),
            [
                (True, "Applied"),
                (True, "NodesReady"),
                (Unknown, "Requested"),
                (Unknown, "Requested")
            ]
        );
        conditions.observe(
            &Event::BootstrapCompleted {
                operation_id: op(),
                outputs: Default::default(),
            },
            at(3),
        );
        assert_eq!(
            statuses(&conditions),
            [
                (True, "Applied"),
                (True, "NodesReady"),
                (True, "Available"),
                (True, "Available")
            ]
        );
        // The transition time is when the status changed, not when it was last said.
        assert_eq!(
            conditions
                .get(ConditionType::ClusterReachable)
                .unwrap()
                .last_transition_time,
            at(2)
        );
    }

    #[test]
    fn a_failed_bootstrap_marks_the_condition_it_stopped_at_and_a_retry_starts_it_over() {
        let mut conditions = Conditions::requested(at(0));
        conditions.observe(
            &progressed(ConditionType::ClusterReachable, True, "NodesReady"),
            at(1),
        );
        conditions.observe(
            &Event::BootstrapFailed {
                operation_id: op(),
                error: "helm: ingress-nginx failed".into(),
            },
            at(2),
        );
        let baseline = conditions.get(ConditionType::BaselineInstalled).unwrap();
        assert_eq!(
            (baseline.status, baseline.reason.as_str()),
            (False, "BootstrapFailed")
        );
        assert_eq!(baseline.message, "helm: ingress-nginx failed");
        assert_eq!(
            conditions.get(ConditionType::AppReady).unwrap().status,
            Unknown
        );

        conditions.observe(
            &Event::RetryRequested {
                phase: Step::Bootstrap,
            },
            at(3),
        );
        assert_eq!(
            statuses(&conditions)[1..],
            [
                (True, "NodesReady"),
                (Unknown, "RetryRequested"),
                (Unknown, "RetryRequested")
            ]
        );
    }

    #[test]
    fn a_reason_the_executor_gave_for_a_failure_is_kept() {
        let mut conditions = Conditions::requested(at(0));
        conditions.observe(
            &progressed(ConditionType::ClusterReachable, False, "NodesNotReady"),
            at(1),
        );
        conditions.observe(
            &Event::BootstrapFailed {
                operation_id: op(),
                error: "the cluster's nodes never became ready".into(),
            },
            at(2),
        );
        let reachable = conditions.get(ConditionType::ClusterReachable).unwrap();
        assert_eq!(
            (reachable.status, reachable.reason.as_str()),
            (False, "NodesNotReady")
        );
        assert_eq!(reachable.last_transition_time, at(1));
    }

    #[test]
    fn destroy_turns_everything_false() {
        let mut conditions = Conditions::requested(at(0));
        conditions.observe(&Event::InfraDestroyed { operation_id: op() }, at(1));
        assert!(
            conditions
                .as_slice()
                .iter()
                .all(|c| c.status == False && c.reason == "Destroyed")
        );
    }

    #[test]
    fn a_stored_list_missing_a_condition_gets_it_back_in_its_place() {
        let mut conditions: Conditions = serde_json::from_value(serde_json::json!([])).unwrap();
        assert!(conditions.get(ConditionType::AppReady).is_none());
        conditions.observe(
            &Event::BootstrapCompleted {
                operation_id: op(),
                outputs: Default::default(),
            },
            at(1),
        );
        let types: Vec<ConditionType> = conditions.as_slice().iter().map(|c| c.condition).collect();
        assert_eq!(types, ConditionType::ALL[1..]);
        assert_eq!(statuses(&conditions)[2], (True, "Available"));
    }

    #[test]
    fn conditions_serialize_as_the_api_shows_them() {
        let value = serde_json::to_value(Conditions::requested(at(0))).unwrap();
        assert_eq!(
            value[0],
            serde_json::json!({
                "type": "InfraReady",
                "status": "Unknown",
                "reason": "Requested",
                "message": "",
                "last_transition_time": "2026-11-30T12:00:00Z",
            })
        );
    }
}
