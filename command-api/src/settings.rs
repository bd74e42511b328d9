//! The API side's settings: one plain typed struct, filled by the `provisioner` binary's
//! settings tree (`src/settings.rs` of the root package), which parses and validates the
//! process environment. This library reads no environment variables itself.

use crate::http::rate_limit::RateLimit;
use crate::tenancy::TenantPolicy;
use domain::aggregate::StepTimeouts;
use domain::sealed::SealingKey;
use domain::spec::Provider;
use secrecy::{ExposeSecret, SecretString};
use std::net::SocketAddr;
use std::time::Duration;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/provisioner";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_PREFIX: &str = "provisioner";
pub const DEFAULT_DB_MAX_CONNECTIONS: u32 = 32;
pub const DEFAULT_SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(15);
/// One copy of each stream: a single NATS server.
pub const DEFAULT_STREAM_REPLICAS: usize = 1;

/// The API process's settings. `Debug` hides the admin token and the database password: both
/// are [`SecretString`]s, exposed only where they are used.
#[derive(Clone)]
pub struct Settings {
    /// `DATABASE_URL` (it may carry a password).
    pub database_url: SecretString,
    /// `PROVISIONER_DB_MAX_CONNECTIONS`
    pub database_max_connections: u32,
    /// `NATS_URL`
    pub nats_url: String,
    /// `PROVISIONER_NATS_PREFIX`: subjects and streams are named under it.
    pub subject_prefix: String,
    /// `PROVISIONER_STREAM_REPLICAS`: the copies of each stream (at most the NATS cluster's
    /// servers).
    pub stream_replicas: usize,
    /// `PROVISIONER_LISTEN`
    pub listen: SocketAddr,
    /// `PROVISIONER_ADMIN_TOKEN`
    pub admin_token: Option<SecretString>,
    /// `PROVISIONER_PROVIDERS`: comma-separated providers this deployment accepts.
    pub enabled_providers: Vec<Provider>,
    /// Whether `PROVISIONER_TF_STATE_BUCKET` is set: the executors' S3 bucket for `aws`
    /// Terraform state. Without it `aws` environments are refused (422 on `cloud.provider`)
    /// even when `aws` is enabled; previews of them are still answered.
    pub tf_state_bucket_set: bool,
    /// `PROVISIONER_SECRETS_KEY`: the key external ids are sealed with, apart from the events
    /// (`domain::sealed`); the executors have the same. Without it `aws` environments are
    /// refused (422 on `cloud.provider`).
    pub secrets_key: Option<SealingKey>,
    /// `PROVISIONER_SSE_KEEPALIVE_MS`
    pub sse_keep_alive: Duration,
    /// `PROVISIONER_INFRA_TIMEOUT_SECS`, `PROVISIONER_BOOTSTRAP_TIMEOUT_SECS`,
    /// `PROVISIONER_DESTROY_TIMEOUT_SECS`: how long a step may run before it fails as timed out.
    pub step_timeouts: StepTimeouts,
    /// `PROVISIONER_METRICS_INTERVAL_SECS`: how often the gauges of the read model, the outbox
    /// and the JetStream consumers are sampled.
    pub metrics_interval: Duration,
    /// `PROVISIONER_HTTP_*`: connection timeouts and limits.
    pub http: HttpSettings,
    /// `PROVISIONER_MAX_ENVIRONMENTS_PER_TENANT`, `PROVISIONER_TENANT_QUOTAS`,
    /// `PROVISIONER_ALLOWED_REGIONS`.
    pub tenant_policy: TenantPolicy,
    /// `PROVISIONER_RATE_LIMIT_PER_MINUTE`, `PROVISIONER_RATE_LIMIT_BURST`.
    pub rate_limit: RateLimit,
}

impl Default for Settings {
    /// The defaults `serve` has when nothing is set (no admin token).
    fn default() -> Self {
        Self {
            database_url: DEFAULT_DATABASE_URL.into(),
            database_max_connections: DEFAULT_DB_MAX_CONNECTIONS,
            nats_url: DEFAULT_NATS_URL.into(),
            subject_prefix: DEFAULT_PREFIX.into(),
            stream_replicas: DEFAULT_STREAM_REPLICAS,
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            admin_token: None,
            enabled_providers: vec![Provider::Sandbox],
            tf_state_bucket_set: false,
            secrets_key: None,
            sse_keep_alive: DEFAULT_SSE_KEEP_ALIVE,
            step_timeouts: StepTimeouts::DEFAULT,
            metrics_interval: DEFAULT_METRICS_INTERVAL,
            http: HttpSettings::default(),
            tenant_policy: TenantPolicy::default(),
            rate_limit: RateLimit::default(),
        }
    }
}

/// How the HTTP server treats connections (see `crate::server`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// `PROVISIONER_HTTP_HEADER_TIMEOUT_MS`: from a connection's opening, or from the first byte
    /// of a request, until its whole head has arrived.
    pub header_timeout: Duration,
    /// `PROVISIONER_HTTP_BODY_TIMEOUT_MS`: the longest wait for the next piece of a request body.
    pub body_timeout: Duration,
    /// `PROVISIONER_HTTP_IDLE_TIMEOUT_MS`: how long a kept-alive connection may wait for its
    /// next request.
    pub idle_timeout: Duration,
    /// `PROVISIONER_HTTP_MAX_CONNECTIONS`: open connections at most (SSE streams included);
    /// lowered at start if the process's hard open-files limit does not leave room for it.
    pub max_connections: usize,
    /// `PROVISIONER_HTTP_DRAIN_TIMEOUT_MS`: on shutdown, how long requests in progress may
    /// take to finish before their connections are closed.
    pub drain_timeout: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The host and database are worth seeing in a dump; the password never is.
        let database_url = match reqwest::Url::parse(self.database_url.expose_secret()) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                url.to_string()
            }
            Err(_) => "***".to_owned(),
        };
        f.debug_struct("Settings")
            .field("database_url", &database_url)
            .field("database_max_connections", &self.database_max_connections)
            .field("nats_url", &self.nats_url)
            .field("subject_prefix", &self.subject_prefix)
            .field("listen", &self.listen)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("enabled_providers", &self.enabled_providers)
            .field("tf_state_bucket_set", &self.tf_state_bucket_set)
            .field("secrets_key", &self.secrets_key)
            .field("sse_keep_alive", &self.sse_keep_alive)
            .field("step_timeouts", &self.step_timeouts)
            .field("metrics_interval", &self.metrics_interval)
            .field("http", &self.http)
            .field("tenant_policy", &self.tenant_policy)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_admin_token_and_database_password() {
        let settings = Settings {
            database_url: "postgres://app:hunter2@db:5432/provisioner".into(),
            database_max_connections: 4,
            admin_token: Some("pvt_secret".into()),
            ..Settings::default()
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains("pvt_secret"), "{debug}");
        assert!(
            debug.contains("postgres://app:***@db:5432/provisioner"),
            "{debug}"
        );
    }

    #[test]
    fn an_unparsable_database_url_is_not_shown_at_all() {
        let settings = Settings {
            database_url: "host=db password=hunter2".into(),
            ..Settings::default()
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn the_defaults_are_serves_defaults() {
        let settings = Settings::default();
        assert_eq!(settings.database_url.expose_secret(), DEFAULT_DATABASE_URL);
        assert_eq!(settings.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(settings.database_max_connections, 32);
        assert_eq!(settings.enabled_providers, vec![Provider::Sandbox]);
        assert!(!settings.tf_state_bucket_set);
        assert_eq!(settings.sse_keep_alive, Duration::from_millis(15_000));
    }
}
