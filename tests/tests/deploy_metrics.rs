//! Every metric the alert rules (deploy/prometheus/alerts.yaml) and the Grafana dashboard
//! (deploy/grafana/provisioner.json) query is one the provisioner exports, and every expression
//! parses as PromQL: a renamed metric breaks this test, not a silent alert.

use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde::Deserialize;
use std::collections::BTreeSet;

const ALERTS: &str = include_str!("../../deploy/prometheus/alerts.yaml");
const DASHBOARD: &str = include_str!("../../deploy/grafana/provisioner.json");

/// Every metric the provisioner exports: the API process's and the executor's.
const API_METRICS: &[&str] = command_api::metrics::NAMES;
const EXECUTOR_METRICS: &[&str] = executors::metrics::NAMES;

/// Series that come from elsewhere: Prometheus's own `up`, kube-state-metrics.
fn external(name: &str) -> bool {
    name == "up" || name.starts_with("kube_")
}

/// A histogram's series are its name with `_bucket`, `_sum` or `_count`.
fn exported(name: &str) -> bool {
    let known = |n: &str| API_METRICS.contains(&n) || EXECUTOR_METRICS.contains(&n);
    known(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| name.strip_suffix(suffix).is_some_and(known))
}

/// The metric names an expression selects.
fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = std::convert::Infallible;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
            let selector = match expr {
                Expr::VectorSelector(selector) => Some(selector),
                Expr::MatrixSelector(matrix) => Some(&matrix.vs),
                _ => None,
            };
            if let Some(name) = selector.and_then(|s| s.name.clone()) {
                self.0.insert(name);
            }
            Ok(true)
        }
    }
    let parsed = parser::parse(expr)?;
    let mut names = Names(BTreeSet::new());
    let _ = walk_expr(&mut names, &parsed);
    Ok(names.0)
}

#[derive(Deserialize)]
struct Rules {
    groups: Vec<Group>,
}
#[derive(Deserialize)]
struct Group {
    rules: Vec<Rule>,
}
/// An alerting rule (`alert`) or a recording rule (`record`).
#[derive(Deserialize)]
struct Rule {
    alert: Option<String>,
    record: Option<String>,
    expr: String,
}

/// (where, expression) of every query of the alerts and the dashboard.
fn queries() -> Vec<(String, String)> {
    let rules: Rules = serde_saphyr::from_str(ALERTS).expect("alerts.yaml");
    let mut queries: Vec<(String, String)> = rules
        .groups
        .into_iter()
        .flat_map(|group| group.rules)
        .map(|rule| {
            let name = rule.alert.or(rule.record).unwrap_or_default();
            (format!("rule {name}"), rule.expr)
        })
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("the dashboard");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a target's expr");
            // Grafana's range variables are durations once Grafana fills them in.
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$__interval", "1m")
                .replace("$__range", "1h");
            queries.push((format!("panel {}", panel["title"]), expr));
        }
    }
    queries
}

/// Problems of `queries`: an expression that does not parse, a metric nobody exports.
fn problems(queries: &[(String, String)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (place, expr) in queries {
        match metric_names(expr) {
            Err(error) => problems.push(format!("{place}: {expr:?} does not parse: {error}")),
            Ok(names) => problems.extend(
                names
                    .into_iter()
                    .filter(|name| !external(name) && !exported(name))
                    .map(|name| format!("{place}: {name} is exported by neither process")),
            ),
        }
    }
    problems
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_query_is_exported() {
    let queries = queries();
    assert!(queries.len() > 20, "{} queries", queries.len());
    let problems = problems(&queries);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_misspelt_metric_or_a_broken_expression_is_reported() {
    let queries = [
        (
            "alert A".to_owned(),
            "sum(rate(api_request_total[5m])) > 1".to_owned(),
        ),
        (
            "panel B".to_owned(),
            "histogram_quantile(0.95, sum by (le) (rate(executor_job_duration_seconds_bucket[5m])))"
                .to_owned(),
        ),
        ("panel C".to_owned(), "sum(rate(relay_lag_seconds[5m]".to_owned()),
    ];
    let problems = problems(&queries);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("api_request_total is exported by neither"));
    assert!(problems[1].contains("does not parse"));
}
