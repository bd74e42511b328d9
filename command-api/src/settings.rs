//! Settings for the API side, in one typed place, read from the environment.

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

/// The API process's settings.
#[derive(Clone, Debug)]
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
}

fn var(name: &str) -> Option<String> {
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
        })
    }
}
