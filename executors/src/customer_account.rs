//! The way into a customer's AWS account, checked before any Terraform runs (the *preflight*).
//!
//! The executor's own identity comes from the standard AWS chain (IRSA in a cluster, the
//! environment or a profile locally). With it, the preflight assumes the environment's
//! [`CustomerRole`] (with its external id, as session `provisioner-<env_id>`), then calls
//! `GetCallerIdentity` with the credentials it got: the identity must belong to the account the
//! config names. Every refusal — access denied (a wrong external id included), the wrong account,
//! STS out of reach, no credentials of our own — is a [`PreflightError`] whose message names the
//! cause. Terraform assumes the role itself, in its provider's `assume_role` block, so it renews
//! them during long applies; the credentials the preflight obtained are handed back in memory only
//! ([`AssumedSession`], secrets as `secrecy` values) for what the executor does itself with the
//! role — the bootstrap's EKS tokens — and dropped when the step ends.
//!
//! Neither the external id nor any credential is ever part of a message or a log line.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_sts::config::{Credentials, Region, SharedHttpClient};
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;
use bootstrap::eks_token::SessionCredentials;
use domain::spec::{CustomerRole, ExternalIdRef};
use tokio::sync::OnceCell;

/// How the executor talks to AWS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsSettings {
    /// `PROVISIONER_AWS_STS_ENDPOINT`: STS's URL when it is not AWS's own regional endpoint (a
    /// VPC endpoint, or a local STS in tests).
    pub sts_endpoint: Option<String>,
    /// `PROVISIONER_AWS_SECRETSMANAGER_ENDPOINT`: Secrets Manager's URL when it is not AWS's
    /// regional endpoint (a VPC endpoint, or a local one in tests).
    pub secrets_manager_endpoint: Option<String>,
    /// `PROVISIONER_AWS_SESSION_SECONDS`: how long an assumed customer session lasts (Terraform
    /// renews its own). 900 to 43200, within the role's maximum.
    pub session_duration: Duration,
    /// The longest one STS call may take, retries included.
    pub call_timeout: Duration,
    /// Whose credentials the executor calls STS with.
    pub identity: ExecutorIdentity,
}

impl Default for AwsSettings {
    fn default() -> Self {
        AwsSettings {
            sts_endpoint: None,
            secrets_manager_endpoint: None,
            session_duration: Duration::from_secs(3600),
            call_timeout: Duration::from_secs(30),
            identity: ExecutorIdentity::DefaultChain,
        }
    }
}

/// The executor's own AWS identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecutorIdentity {
    /// The standard chain (environment, profile, web identity/IRSA, container and instance
    /// metadata): what the binary always uses.
    DefaultChain,
    /// Fixed keys: a seam for tests against a local STS, set in code; no setting selects it.
    Static {
        access_key_id: String,
        secret_access_key: String,
    },
}

/// The session name the preflight and Terraform's provider use: it shows in the customer's
/// CloudTrail, naming the environment.
pub fn session_name(environment_id: &str) -> String {
    format!("provisioner-{environment_id}")
}

/// Who the assumed session turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssumedIdentity {
    pub account: String,
    pub arn: String,
}

/// The assumed session: who it is, and its credentials (memory only; the secret parts never
/// shown by `Debug`).
#[derive(Clone, Debug)]
pub struct AssumedSession {
    pub identity: AssumedIdentity,
    pub credentials: SessionCredentials,
}

/// Why the customer's account cannot be reached; each message names the cause and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "the job names no customer role: it was recorded before roles were carried; retry the \
         operation to record a new one"
    )]
    NoRole,
    /// The role's external id was handed over sealed (a defect: the driver opens it first).
    #[error("the external id was not opened before the preflight")]
    ExternalIdNotOpened,
    #[error(
        "STS refused to assume {role_arn} ({code}: {message}); check that the role's trust \
         policy trusts the provisioner's identity and expects this external id"
    )]
    Refused {
        role_arn: String,
        code: String,
        message: String,
    },
    #[error(
        "the assumed role {role_arn} belongs to account {actual}, not to the configured account \
         {expected}"
    )]
    WrongAccount {
        role_arn: String,
        expected: String,
        actual: String,
    },
    #[error(
        "the executor's own AWS credentials were refused ({code}: {message}); fix its identity \
         (IRSA, AWS_PROFILE or the environment)"
    )]
    OwnCredentials { code: String, message: String },
    #[error("STS at {endpoint} could not be reached: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("STS call {call} failed: {detail}")]
    Unexpected { call: &'static str, detail: String },
}

/// Reaches customer accounts with the executor's own identity; the identity is resolved once,
/// on first use, so an executor that runs only sandbox jobs needs no AWS configuration.
#[derive(Debug)]
pub struct CustomerAccounts {
    settings: AwsSettings,
    own: OnceCell<SdkConfig>,
}

impl CustomerAccounts {
    pub fn new(settings: AwsSettings) -> Self {
        CustomerAccounts {
            settings,
            own: OnceCell::new(),
        }
    }

    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// Assumes `role` for `environment_id` and checks whose identity that gives; the session's
    /// credentials come back with it.
    pub async fn preflight(
        &self,
        environment_id: &str,
        region: &str,
        role: Option<&CustomerRole>,
    ) -> Result<AssumedSession, PreflightError> {
        let role = role.ok_or(PreflightError::NoRole)?;
        let own = self.own_config().await;
        let sts = self.sts_client(own, region, None);
        let mut request = sts
            .assume_role()
            .role_arn(role.role_arn.as_str())
            .role_session_name(session_name(environment_id))
            .duration_seconds(duration_seconds(self.settings.session_duration));
        match &role.external_id {
            None => {}
            Some(ExternalIdRef::Plain(external_id)) => {
                request = request.external_id(external_id.expose());
            }
            Some(ExternalIdRef::Sealed | ExternalIdRef::Redacted) => {
                return Err(PreflightError::ExternalIdNotOpened);
            }
        }
        let assumed = request
            .send()
            .await
            .map_err(|e| self.classify("AssumeRole", region, role, e))?;
        let Some(credentials) = assumed.credentials() else {
            return Err(PreflightError::Unexpected {
                call: "AssumeRole",
                detail: "the answer carried no credentials".to_owned(),
            });
        };
        let kept = SessionCredentials {
            access_key_id: credentials.access_key_id().to_owned(),
            secret_access_key: credentials.secret_access_key().into(),
            session_token: Some(credentials.session_token().into()),
        };
        let session = Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            Some(credentials.session_token().to_owned()),
            None,
            "customer-role",
        );
        let identity = self
            .sts_client(own, region, Some(session))
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| self.classify("GetCallerIdentity", region, role, e))?;
        let account = identity.account().unwrap_or_default().to_owned();
        let arn = identity.arn().unwrap_or_default().to_owned();
        if account != role.account_id.as_str() {
            return Err(PreflightError::WrongAccount {
                role_arn: role.role_arn.as_str().to_owned(),
                expected: role.account_id.as_str().to_owned(),
                actual: if account.is_empty() {
                    "(none given)".to_owned()
                } else {
                    account
                },
            });
        }
        Ok(AssumedSession {
            identity: AssumedIdentity { account, arn },
            credentials: kept,
        })
    }

    async fn own_config(&self) -> &SdkConfig {
        self.own
            .get_or_init(|| async {
                let timeouts = TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_timeout(self.settings.call_timeout)
                    .build();
                let loader = aws_config::defaults(BehaviorVersion::latest())
                    .http_client(https_client())
                    .timeout_config(timeouts);
                match &self.settings.identity {
                    ExecutorIdentity::DefaultChain => loader.load().await,
                    ExecutorIdentity::Static {
                        access_key_id,
                        secret_access_key,
                    } => {
                        loader
                            .credentials_provider(Credentials::new(
                                access_key_id,
                                secret_access_key,
                                None,
                                None,
                                "static",
                            ))
                            .load()
                            .await
                    }
                }
            })
            .await
    }

    /// Secrets Manager in `region` (or at the configured endpoint), as the assumed customer
    /// session.
    pub async fn secrets_manager(
        &self,
        region: &str,
        session: &SessionCredentials,
    ) -> aws_sdk_secretsmanager::Client {
        use secrecy::ExposeSecret;
        let own = self.own_config().await;
        let credentials = Credentials::new(
            session.access_key_id.clone(),
            session.secret_access_key.expose_secret().to_owned(),
            session
                .session_token
                .as_ref()
                .map(|token| token.expose_secret().to_owned()),
            None,
            "customer-role",
        );
        let mut config = aws_sdk_secretsmanager::config::Builder::from(own)
            .region(Region::new(region.to_owned()))
            .credentials_provider(credentials);
        if let Some(endpoint) = &self.settings.secrets_manager_endpoint {
            config = config.endpoint_url(endpoint);
        }
        aws_sdk_secretsmanager::Client::from_conf(config.build())
    }

    /// STS in `region` (or at the configured endpoint), as the executor itself or, with
    /// `session`, as the assumed role.
    fn sts_client(
        &self,
        own: &SdkConfig,
        region: &str,
        session: Option<Credentials>,
    ) -> aws_sdk_sts::Client {
        let mut config =
            aws_sdk_sts::config::Builder::from(own).region(Region::new(region.to_owned()));
        if let Some(endpoint) = &self.settings.sts_endpoint {
            config = config.endpoint_url(endpoint);
        }
        if let Some(session) = session {
            config = config.credentials_provider(session);
        }
        aws_sdk_sts::Client::from_conf(config.build())
    }

    fn endpoint(&self, region: &str) -> String {
        self.settings
            .sts_endpoint
            .clone()
            .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"))
    }

    fn classify<E, R>(
        &self,
        call: &'static str,
        region: &str,
        role: &CustomerRole,
        error: SdkError<E, R>,
    ) -> PreflightError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let detail = || error_detail(&error);
        match &error {
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or("Unknown").to_owned();
                let message = service.err().message().unwrap_or_default().to_owned();
                if OWN_CREDENTIAL_CODES.contains(&code.as_str()) {
                    PreflightError::OwnCredentials { code, message }
                } else if call == "AssumeRole" {
                    PreflightError::Refused {
                        role_arn: role.role_arn.as_str().to_owned(),
                        code,
                        message,
                    }
                } else {
                    PreflightError::Unexpected {
                        call,
                        detail: format!("{code}: {message}"),
                    }
                }
            }
            SdkError::TimeoutError(_) => PreflightError::Unreachable {
                endpoint: self.endpoint(region),
                detail: format!("no answer within {}s", self.settings.call_timeout.as_secs()),
            },
            SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => {
                PreflightError::Unreachable {
                    endpoint: self.endpoint(region),
                    detail: detail(),
                }
            }
            _ => PreflightError::Unexpected {
                call,
                detail: detail(),
            },
        }
    }
}

/// An AWS call's failure as text for a message: its causes one after the other (not their debug
/// forms), bounded. Never holds a request's secrets: AWS's errors do not echo them.
pub fn error_detail(error: &(dyn std::error::Error + 'static)) -> String {
    domain::text::truncated(&domain::text::error_chain(error), 500).to_owned()
}

/// Error codes that mean the executor's own credentials, not the customer's role, are wrong.
const OWN_CREDENTIAL_CODES: &[&str] = &[
    "InvalidClientTokenId",
    "ExpiredToken",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "MissingAuthenticationToken",
];

fn duration_seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}

/// The one HTTPS client of the AWS SDK: rustls with ring, as everywhere in the workspace.
fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_names_the_environment() {
        assert_eq!(
            session_name("env_01jd0000000000000000000000"),
            "provisioner-env_01jd0000000000000000000000"
        );
    }

    #[test]
    fn messages_name_the_cause() {
        let refused = PreflightError::Refused {
            role_arn: "arn:aws:iam::123456789012:role/p".into(),
            code: "AccessDenied".into(),
            message: "not authorized".into(),
        };
        assert!(refused.to_string().contains("AccessDenied"), "{refused}");
        let wrong = PreflightError::WrongAccount {
            role_arn: "arn:aws:iam::123456789012:role/p".into(),
            expected: "123456789012".into(),
            actual: "210987654321".into(),
        };
        assert!(wrong.to_string().contains("210987654321"), "{wrong}");
    }
}
