//! One tracing set-up for the binary: `RUST_LOG` filters, `PROVISIONER_LOG_FORMAT=json` for
//! machine-readable logs. Logs go to stderr so client verbs keep stdout for their output.

use tracing_subscriber::EnvFilter;

pub fn init_tracing(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var("PROVISIONER_LOG_FORMAT").is_ok_and(|f| f == "json");
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
