//! Where a step's observations on the way go ([`ConditionReport`]s: the cluster became
//! reachable, the baseline is installed): a channel that the runner forwards, in order and
//! before the step's result, to the results subject, where the process manager records them as
//! `BootstrapProgressed`. Sending never blocks and never fails the step: the step's own result
//! is what decides the operation.

use domain::conditions::{ConditionReport, ConditionStatus, ConditionType};
use tokio::sync::mpsc;

/// The sending end, given to the driver in its `StepContext`.
#[derive(Clone, Debug)]
pub struct ProgressSink {
    tx: mpsc::UnboundedSender<ConditionReport>,
}

/// The receiving end, drained by whoever publishes (or, in tests, inspects) the reports.
pub type ProgressReceiver = mpsc::UnboundedReceiver<ConditionReport>;

impl ProgressSink {
    /// A sink and the receiver of its reports.
    pub fn channel() -> (Self, ProgressReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ProgressSink { tx }, rx)
    }

    /// Reports `condition` as `status`, for `reason` (CamelCase), saying `message`.
    pub fn report(
        &self,
        condition: ConditionType,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) {
        let _ = self.tx.send(ConditionReport {
            condition,
            status,
            reason: reason.to_owned(),
            message: message.into(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_arrive_in_order_and_a_closed_receiver_does_not_fail_the_sender() {
        let (sink, mut rx) = ProgressSink::channel();
        sink.report(
            ConditionType::ClusterReachable,
            ConditionStatus::True,
            "NodesReady",
            "1 cpu node Ready",
        );
        sink.report(
            ConditionType::BaselineInstalled,
            ConditionStatus::True,
            "ReleasesDeployed",
            "",
        );
        assert_eq!(
            rx.try_recv().unwrap().condition,
            ConditionType::ClusterReachable
        );
        assert_eq!(rx.try_recv().unwrap().reason, "ReleasesDeployed".to_owned());
        drop(rx);
        sink.report(
            ConditionType::AppReady,
            ConditionStatus::False,
            "GatewayUnavailable",
            "",
        );
    }
}
