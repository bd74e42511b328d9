//! The API process's Prometheus metrics: every name once, their descriptions, the fixed label
//! sets, and what records them — the request middleware (`crate::http::prometheus`), the
//! operation ends seen by the process manager ([`record_operation_end`]) and the periodic
//! [`sampler`] of the read model, the outbox and the JetStream consumers.
//!
//! Only the `metrics` facade is used here; the binary installs the one recorder of the process
//! (a Prometheus recorder, with [`HISTOGRAM_BUCKETS`]) and hands its handle to the router, which
//! renders it at `GET /metrics`. Every label value comes from a fixed set, or is the matched
//! route template: never client text.

pub mod sampler;

use crate::http::auth::AuthFailure;
use domain::aggregate::{Event, Status};
use domain::spec::Step;
use std::time::Duration;

pub const API_REQUESTS_TOTAL: &str = "api_requests_total";
pub const API_REQUEST_DURATION_SECONDS: &str = "api_request_duration_seconds";
pub const ENVIRONMENTS_TOTAL: &str = "provisioning_environments_total";
pub const PROVISIONING_DURATION_SECONDS: &str = "provisioning_duration_seconds";
pub const OPERATIONS_TOTAL: &str = "provisioning_operations_total";
pub const ENVIRONMENT_CREATED_AT: &str = "provisioning_environment_created_at";
pub const OPERATIONS_PAST_DEADLINE: &str = "provisioning_operations_past_deadline";
pub const RELAY_LAG_SECONDS: &str = "relay_lag_seconds";
pub const RELAY_OUTBOX_ROWS: &str = "relay_outbox_rows";
pub const RELAY_QUARANTINED_ROWS: &str = "relay_quarantined_rows";
pub const PROJECTION_LAG_EVENTS: &str = "projection_lag_events";
pub const CONSUMER_PENDING: &str = "jetstream_consumer_pending_messages";
pub const CONSUMER_ACK_PENDING: &str = "jetstream_consumer_ack_pending_messages";
pub const CONSUMER_REDELIVERED: &str = "jetstream_consumer_redelivered_messages";
pub const DEPENDENCY_UP: &str = "provisioner_dependency_up";
pub const AUTH_FAILURES_TOTAL: &str = "api_auth_failures_total";
pub const RATE_LIMITED_TOTAL: &str = "api_rate_limited_total";

/// Every metric this crate records (the dashboard's and the alert rules' tests check against it).
pub const NAMES: &[&str] = &[
    API_REQUESTS_TOTAL,
    API_REQUEST_DURATION_SECONDS,
    ENVIRONMENTS_TOTAL,
    PROVISIONING_DURATION_SECONDS,
    OPERATIONS_TOTAL,
    ENVIRONMENT_CREATED_AT,
    OPERATIONS_PAST_DEADLINE,
    RELAY_LAG_SECONDS,
    RELAY_OUTBOX_ROWS,
    RELAY_QUARANTINED_ROWS,
    PROJECTION_LAG_EVENTS,
    CONSUMER_PENDING,
    CONSUMER_ACK_PENDING,
    CONSUMER_REDELIVERED,
    DEPENDENCY_UP,
    AUTH_FAILURES_TOTAL,
    RATE_LIMITED_TOTAL,
];

/// The buckets of this crate's histograms, in seconds: requests up to 30 s, operations up to
/// 2 h.
pub const HISTOGRAM_BUCKETS: &[(&str, &[f64])] = &[
    (
        API_REQUEST_DURATION_SECONDS,
        &[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ],
    ),
    (
        PROVISIONING_DURATION_SECONDS,
        &[
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
            5400.0, 7200.0,
        ],
    ),
];

/// How an operation ended: the `outcome` label of [`OPERATIONS_TOTAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Succeeded,
        Outcome::Failed,
        Outcome::TimedOut,
        Outcome::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
        }
    }

    /// How `event` ends its operation; `None` for an event that ends none.
    pub fn of(event: &Event) -> Option<Outcome> {
        match event {
            Event::InfraApplied { .. }
            | Event::BootstrapCompleted { .. }
            | Event::InfraDestroyed { .. } => Some(Outcome::Succeeded),
            Event::InfraApplyFailed { .. }
            | Event::BootstrapFailed { .. }
            | Event::DestroyFailed { .. }
            | Event::MarkedFailed { .. } => Some(Outcome::Failed),
            Event::OperationTimedOut { .. } => Some(Outcome::TimedOut),
            Event::OperationCancelled { .. } => Some(Outcome::Cancelled),
            _ => None,
        }
    }
}

/// Describes every metric and creates the counters of every fixed label set at zero, so a
/// rate or an `increase()` sees the first failure. Call once the recorder is installed.
pub fn describe() {
    use ::metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        API_REQUESTS_TOTAL,
        "HTTP requests answered, by matched route, method and status code"
    );
    describe_histogram!(
        API_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "time to answer an HTTP request (to the response head), by matched route and method"
    );
    describe_gauge!(
        ENVIRONMENTS_TOTAL,
        "environments per status, from the read model"
    );
    describe_histogram!(
        PROVISIONING_DURATION_SECONDS,
        Unit::Seconds,
        "how long a finished operation ran, from its …Started event to its end event"
    );
    describe_counter!(
        OPERATIONS_TOTAL,
        "operations ended, by phase and outcome (succeeded, failed, timed_out, cancelled)"
    );
    describe_gauge!(
        ENVIRONMENT_CREATED_AT,
        Unit::Seconds,
        "Unix time of the newest environment request (0 when there is none)"
    );
    describe_gauge!(
        OPERATIONS_PAST_DEADLINE,
        "operations in flight whose deadline has passed"
    );
    describe_gauge!(
        RELAY_LAG_SECONDS,
        Unit::Seconds,
        "age of the oldest committed event not yet published to JetStream (0 when none)"
    );
    describe_gauge!(
        RELAY_OUTBOX_ROWS,
        "committed events waiting to be published"
    );
    describe_gauge!(
        RELAY_QUARANTINED_ROWS,
        "environments held behind an event that can never be published"
    );
    describe_gauge!(
        PROJECTION_LAG_EVENTS,
        "events on the stream the environments projection has not applied yet"
    );
    describe_gauge!(
        CONSUMER_PENDING,
        "messages a durable JetStream consumer has not delivered yet"
    );
    describe_gauge!(
        CONSUMER_ACK_PENDING,
        "messages a durable JetStream consumer delivered and awaits the ack of"
    );
    describe_gauge!(
        CONSUMER_REDELIVERED,
        "messages a durable JetStream consumer delivered more than once, unacknowledged"
    );
    describe_gauge!(
        DEPENDENCY_UP,
        "1 when the last sample reached the dependency (postgres: the read model answered; \
         nats: every consumer's info answered) within its timeout, else 0"
    );
    describe_counter!(
        AUTH_FAILURES_TOTAL,
        "requests refused 401, by reason (missing, malformed, rejected: unknown, revoked or \
         expired)"
    );
    describe_counter!(
        RATE_LIMITED_TOTAL,
        "commands refused 429 because their token exceeded its rate limit"
    );
    for failure in AuthFailure::ALL {
        ::metrics::counter!(AUTH_FAILURES_TOTAL, "reason" => failure.as_str()).increment(0);
    }
    ::metrics::counter!(RATE_LIMITED_TOTAL).increment(0);
    for phase in Step::ALL {
        for outcome in Outcome::ALL {
            ::metrics::counter!(
                OPERATIONS_TOTAL,
                "phase" => phase.as_str(),
                "outcome" => outcome.as_str()
            )
            .increment(0);
        }
    }
}

/// Counts one refused authentication.
pub fn auth_failed(failure: AuthFailure) {
    ::metrics::counter!(AUTH_FAILURES_TOTAL, "reason" => failure.as_str()).increment(1);
}

/// Counts one command refused by its token's rate limit.
pub fn rate_limited() {
    ::metrics::counter!(RATE_LIMITED_TOTAL).increment(1);
}

/// Records one operation's end: its phase, outcome and how long it ran.
pub fn record_operation_end(phase: Step, outcome: Outcome, ran: Duration) {
    ::metrics::counter!(
        OPERATIONS_TOTAL,
        "phase" => phase.as_str(),
        "outcome" => outcome.as_str()
    )
    .increment(1);
    ::metrics::histogram!(PROVISIONING_DURATION_SECONDS, "phase" => phase.as_str())
        .record(ran.as_secs_f64());
}

/// The number of environments of each status, every status present (0 when it has none), from
/// the read model's `(status word, count)` rows; unknown words are left out.
pub fn per_status(rows: &[(String, i64)]) -> [(Status, i64); Status::ALL.len()] {
    Status::ALL.map(|status| {
        let count = rows
            .iter()
            .filter(|(word, _)| Status::parse(word) == Some(status))
            .map(|(_, count)| *count)
            .sum();
        (status, count)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_is_counted_with_zero_for_the_absent_ones() {
        let rows = vec![
            ("ready".to_owned(), 3),
            ("failed".to_owned(), 1),
            ("no-such-status".to_owned(), 7),
        ];
        let counts = per_status(&rows);
        assert_eq!(counts.len(), 9);
        for (status, count) in counts {
            let expected = match status {
                Status::Ready => 3,
                Status::Failed => 1,
                _ => 0,
            };
            assert_eq!(count, expected, "{status}");
        }
    }

    #[test]
    fn names_are_distinct_and_every_histogram_has_buckets_up_to_its_range() {
        let distinct: std::collections::BTreeSet<_> = NAMES.iter().collect();
        assert_eq!(distinct.len(), NAMES.len());
        for (name, buckets) in HISTOGRAM_BUCKETS {
            assert!(NAMES.contains(name), "{name}");
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{name}");
        }
        let top = |name: &str| {
            HISTOGRAM_BUCKETS
                .iter()
                .find(|(n, _)| *n == name)
                .and_then(|(_, b)| b.last().copied())
        };
        assert!(top(API_REQUEST_DURATION_SECONDS) >= Some(10.0));
        assert!(top(PROVISIONING_DURATION_SECONDS) >= Some(7200.0));
    }
}
