//! One tracing set-up for the binary: `RUST_LOG` filters, `PROVISIONER_LOG_FORMAT=json` for
//! machine-readable logs. Logs go to stderr so client verbs keep stdout for their output. And
//! the one metrics recorder of a server process ([`install_metrics`]).

use crate::settings::{LogArgs, LogFormat};
use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// How often the recorder's histograms are compacted when nobody scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Installs the process's Prometheus recorder, with the histogram buckets of the API's and the
/// executor's metrics, and keeps it compacted; returns the handle that `/metrics` renders. Call
/// once, inside the runtime.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in command_api::metrics::HISTOGRAM_BUCKETS
        .iter()
        .chain(executors::metrics::HISTOGRAM_BUCKETS)
    {
        builder = builder
            .set_buckets_for_metric(Matcher::Full((*name).to_owned()), buckets)
            .with_context(|| format!("invalid buckets for {name}"))?;
    }
    let handle = builder
        .install_recorder()
        .context("failed to install the metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(METRICS_UPKEEP).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// `log` holds the `RUST_LOG` filter (an invalid one falls back to `default_filter`) and the
/// `PROVISIONER_LOG_FORMAT`.
pub fn init_tracing(default_filter: &str, log: &LogArgs) {
    let filter = log
        .log_filter
        .as_deref()
        .and_then(|filter| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = if log.log_format == LogFormat::Json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
