//! One tracing set-up for the binary: `RUST_LOG` filters, `PROVISIONER_LOG_FORMAT=json` for
//! machine-readable logs. Logs go to stderr so client verbs keep stdout for their output.

use crate::settings::{LogArgs, LogFormat};
use tracing_subscriber::EnvFilter;

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
