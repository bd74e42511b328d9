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

/// Libraries whose lines at some level carry secrets, each with the most verbose level kept
/// whatever `RUST_LOG` asks: the AWS request signer traces each canonical request, which holds
/// the session token (`x-amz-security-token`) of the executor's identity and of the assumed
/// customer session (issue 10's canary search found it at `trace`). Every module on the way to
/// the lines is named, so a more specific directive of `RUST_LOG` cannot turn them back on.
const SECRET_BEARING_TARGETS: &[&str] = &[
    "aws_sigv4=debug",
    "aws_sigv4::http_request=debug",
    "aws_sigv4::http_request::sign=debug",
    "aws_sigv4::event_stream=debug",
];

/// `RUST_LOG`'s filter (an invalid one falls back to `default_filter`), with the secret-bearing
/// lines of [`SECRET_BEARING_TARGETS`] always left out.
fn log_filter(requested: Option<&str>, default_filter: &str) -> EnvFilter {
    let mut filter = requested
        .and_then(|filter| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    for directive in SECRET_BEARING_TARGETS {
        filter = filter.add_directive(directive.parse().expect("a valid directive"));
    }
    filter
}

/// `log` holds the `RUST_LOG` filter (an invalid one falls back to `default_filter`) and the
/// `PROVISIONER_LOG_FORMAT`.
pub fn init_tracing(default_filter: &str, log: &LogArgs) {
    let filter = log_filter(log.log_filter.as_deref(), default_filter);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What a subscriber with [`log_filter`]`(requested)` writes while `log` runs.
    fn logged(requested: &str, log: impl FnOnce()) -> String {
        let written = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = written.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(log_filter(Some(requested), "info"))
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        String::from_utf8(written.lock().unwrap().clone()).unwrap()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_request_signers_trace_lines_are_left_out_at_every_requested_level() {
        for requested in [
            "trace",
            "aws_sigv4=trace",
            "trace,aws_sigv4::http_request=trace",
            "aws_sigv4::http_request::sign=trace",
        ] {
            let text = logged(requested, || {
                tracing::trace!(target: "aws_sigv4::http_request::sign", "x-amz-security-token:canary");
                tracing::debug!(target: "aws_sigv4::http_request::sign", "signing kept");
                tracing::trace!(target: "provisioner", "other trace kept");
            });
            assert!(!text.contains("canary"), "{requested}: {text}");
            assert!(text.contains("signing kept"), "{requested}: {text}");
            if requested == "trace" {
                assert!(text.contains("other trace kept"), "{text}");
            }
        }
    }
}
