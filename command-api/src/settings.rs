//! Settings for the API side, in one typed place, read from the environment.

use domain::aggregate::StepTimeouts;
use domain::spec::Provider;
use std::net::SocketAddr;
use std::time::Duration;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/provisioner";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_PREFIX: &str = "provisioner";

#[derive(Debug, thiserror::Error)]
#[error("invalid setting {variable}={value:?}: {reason}")]
pub struct SettingsError {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
}

/// The API process's settings. `Debug` hides the admin token and the database password.
#[derive(Clone)]
pub struct Settings {
    /// `DATABASE_URL`
    pub database_url: String,
    /// `PROVISIONER_DB_MAX_CONNECTIONS`
    pub database_max_connections: u32,
    /// `NATS_URL`
    pub nats_url: String,
    /// `PROVISIONER_NATS_PREFIX`: subjects and streams are named under it.
    pub subject_prefix: String,
    /// `PROVISIONER_LISTEN`
    pub listen: SocketAddr,
    /// `PROVISIONER_ADMIN_TOKEN`
    pub admin_token: Option<String>,
    /// `PROVISIONER_PROVIDERS`: comma-separated providers this deployment accepts.
    pub enabled_providers: Vec<Provider>,
    /// `PROVISIONER_SSE_KEEPALIVE_MS`
    pub sse_keep_alive: Duration,
    /// `PROVISIONER_INFRA_TIMEOUT_SECS`, `PROVISIONER_BOOTSTRAP_TIMEOUT_SECS`,
    /// `PROVISIONER_DESTROY_TIMEOUT_SECS`: how long a step may run before it fails as timed out.
    pub step_timeouts: StepTimeouts,
    /// `PROVISIONER_HTTP_*`: connection timeouts and limits.
    pub http: HttpSettings,
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

impl HttpSettings {
    fn from_env() -> Result<Self, SettingsError> {
        let default = Self::default();
        let max_connections = parsed("PROVISIONER_HTTP_MAX_CONNECTIONS", default.max_connections)?;
        if max_connections == 0 {
            return Err(invalid(
                "PROVISIONER_HTTP_MAX_CONNECTIONS",
                "0",
                "allow at least one connection",
            ));
        }
        Ok(Self {
            header_timeout: millis("PROVISIONER_HTTP_HEADER_TIMEOUT_MS", default.header_timeout)?,
            body_timeout: millis("PROVISIONER_HTTP_BODY_TIMEOUT_MS", default.body_timeout)?,
            idle_timeout: millis("PROVISIONER_HTTP_IDLE_TIMEOUT_MS", default.idle_timeout)?,
            max_connections,
            drain_timeout: millis("PROVISIONER_HTTP_DRAIN_TIMEOUT_MS", default.drain_timeout)?,
        })
    }
}

/// A variable's value, when it is set to something other than blanks.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn invalid(variable: &'static str, value: &str, reason: impl Into<String>) -> SettingsError {
    SettingsError {
        variable,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn parsed<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, SettingsError>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(value) => value
            .trim()
            .parse()
            .map_err(|e: T::Err| invalid(name, &value, e.to_string())),
    }
}

/// A positive duration in milliseconds.
fn millis(name: &'static str, default: Duration) -> Result<Duration, SettingsError> {
    let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    match parsed(name, default_ms)? {
        0 => Err(invalid(name, "0", "use a positive number of milliseconds")),
        ms => Ok(Duration::from_millis(ms)),
    }
}

/// A NATS subject token: `[a-z0-9_-]+`.
pub fn validate_prefix(prefix: &str) -> Result<(), SettingsError> {
    let ok = !prefix.is_empty()
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "PROVISIONER_NATS_PREFIX",
            prefix,
            "use lowercase letters, digits, '-' and '_'",
        ))
    }
}

fn providers(value: &str) -> Result<Vec<Provider>, SettingsError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p {
            "sandbox" => Ok(Provider::Sandbox),
            "aws" => Ok(Provider::Aws),
            other => Err(invalid(
                "PROVISIONER_PROVIDERS",
                value,
                format!("unknown provider {other:?}; known: sandbox, aws"),
            )),
        })
        .collect()
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let database_url = match reqwest::Url::parse(&self.database_url) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                url.to_string()
            }
            _ => self.database_url.clone(),
        };
        f.debug_struct("Settings")
            .field("database_url", &database_url)
            .field("database_max_connections", &self.database_max_connections)
            .field("nats_url", &self.nats_url)
            .field("subject_prefix", &self.subject_prefix)
            .field("listen", &self.listen)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("enabled_providers", &self.enabled_providers)
            .field("sse_keep_alive", &self.sse_keep_alive)
            .field("step_timeouts", &self.step_timeouts)
            .field("http", &self.http)
            .finish()
    }
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        let subject_prefix =
            var("PROVISIONER_NATS_PREFIX").unwrap_or_else(|| DEFAULT_PREFIX.into());
        validate_prefix(&subject_prefix)?;
        Ok(Self {
            database_url: var("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            database_max_connections: parsed("PROVISIONER_DB_MAX_CONNECTIONS", 32)?,
            nats_url: var("NATS_URL").unwrap_or_else(|| DEFAULT_NATS_URL.into()),
            subject_prefix,
            listen: parsed(
                "PROVISIONER_LISTEN",
                DEFAULT_LISTEN.parse().expect("valid default"),
            )?,
            admin_token: var("PROVISIONER_ADMIN_TOKEN"),
            enabled_providers: providers(
                &var("PROVISIONER_PROVIDERS").unwrap_or_else(|| "sandbox".into()),
            )?,
            sse_keep_alive: Duration::from_millis(parsed("PROVISIONER_SSE_KEEPALIVE_MS", 15_000)?),
            step_timeouts: StepTimeouts {
                infra: timeout(
                    "PROVISIONER_INFRA_TIMEOUT_SECS",
                    StepTimeouts::DEFAULT.infra,
                )?,
                bootstrap: timeout(
                    "PROVISIONER_BOOTSTRAP_TIMEOUT_SECS",
                    StepTimeouts::DEFAULT.bootstrap,
                )?,
                destroy: timeout(
                    "PROVISIONER_DESTROY_TIMEOUT_SECS",
                    StepTimeouts::DEFAULT.destroy,
                )?,
            },
            http: HttpSettings::from_env()?,
        })
    }
}

/// A step timeout in whole seconds: at least 1, at most 7 days.
fn timeout(name: &'static str, default: Duration) -> Result<Duration, SettingsError> {
    const MAX_SECONDS: u64 = 7 * 24 * 3600;
    let seconds: u64 = parsed(name, default.as_secs())?;
    if (1..=MAX_SECONDS).contains(&seconds) {
        Ok(Duration::from_secs(seconds))
    } else {
        Err(invalid(
            name,
            &seconds.to_string(),
            format!("use 1 to {MAX_SECONDS} seconds"),
        ))
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
            nats_url: DEFAULT_NATS_URL.into(),
            subject_prefix: DEFAULT_PREFIX.into(),
            listen: DEFAULT_LISTEN.parse().unwrap(),
            admin_token: Some("pvt_secret".into()),
            enabled_providers: vec![Provider::Sandbox],
            sse_keep_alive: Duration::from_secs(15),
            step_timeouts: StepTimeouts::DEFAULT,
            http: HttpSettings::default(),
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
    fn a_prefix_must_be_a_single_lowercase_subject_token() {
        assert!(validate_prefix("beta9-prov_1").is_ok());
        for bad in ["", "Upper", "has.dot", "has space", "wild*"] {
            assert!(validate_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
