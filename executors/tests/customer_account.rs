//! The preflight against real STS APIs: moto's (which implements AssumeRole and
//! GetCallerIdentity) and, for the refusals moto does not model, the stand-in STS at the HTTP
//! boundary. The executor's real `aws-sdk-sts` client does every call.

use std::time::{Duration, Instant};

use domain::config::{self, Format};
use domain::spec::CustomerRole;
use executors::customer_account::{
    AwsSettings, CustomerAccounts, ExecutorIdentity, PreflightError,
};
use system_tests::aws::{
    EXECUTOR_ACCESS_KEY_ID, EXECUTOR_SECRET_ACCESS_KEY, Moto, StandinSts, StsBehaviour,
};

const ENV: &str = "env_01jd0000000000000000000000";
const EXTERNAL_ID: &str = "canary-external-id-7f3a";

fn role(account: &str, external_id: Option<&str>) -> CustomerRole {
    let external = external_id
        .map(|id| format!("  external_id: {id}\n"))
        .unwrap_or_default();
    let yaml = format!(
        "name: acme\ncloud:\n  provider: aws\n  region: us-east-1\n  account_id: \"{account}\"\n  role_arn: arn:aws:iam::{account}:role/beta9-provisioner\n{external}"
    );
    config::parse(&yaml, Format::Yaml)
        .expect("a valid aws spec")
        .cloud
        .customer_role()
        .expect("aws has a customer role")
}

fn accounts(endpoint: &str) -> CustomerAccounts {
    CustomerAccounts::new(AwsSettings {
        sts_endpoint: Some(endpoint.to_owned()),
        call_timeout: Duration::from_secs(5),
        identity: ExecutorIdentity::Static {
            access_key_id: EXECUTOR_ACCESS_KEY_ID.to_owned(),
            secret_access_key: EXECUTOR_SECRET_ACCESS_KEY.to_owned(),
        },
        ..AwsSettings::default()
    })
}

/// The preflight of [`ENV`] in us-east-1 through STS at `endpoint`, for the role of account
/// 210987654321 with `external_id`.
async fn preflight(
    endpoint: &str,
    external_id: Option<&str>,
) -> Result<executors::customer_account::AssumedIdentity, PreflightError> {
    accounts(endpoint)
        .preflight(ENV, "us-east-1", Some(&role("210987654321", external_id)))
        .await
        .map(|session| session.identity)
}

#[tokio::test]
async fn moto_assumes_the_role_and_the_session_belongs_to_the_configured_account() {
    let moto = Moto::start().await;
    let identity = preflight(moto.endpoint(), Some(EXTERNAL_ID))
        .await
        .expect("the preflight passes");
    assert_eq!(identity.account, "210987654321");
    assert_eq!(
        identity.arn,
        format!("arn:aws:sts::210987654321:assumed-role/beta9-provisioner/provisioner-{ENV}")
    );
}

#[tokio::test]
async fn a_wrong_external_id_is_refused_with_aws_access_denied() {
    let sts = StandinSts::expecting_external_id("the-right-one").await;
    let error = preflight(&sts.endpoint(), Some(EXTERNAL_ID))
        .await
        .expect_err("refused");
    let message = error.to_string();
    assert!(matches!(error, PreflightError::Refused { .. }), "{error:?}");
    assert!(message.contains("AccessDenied"), "{message}");
    assert!(
        message.contains("arn:aws:iam::210987654321:role/beta9-provisioner"),
        "{message}"
    );
    assert!(!message.contains(EXTERNAL_ID), "{message}");
    assert!(!format!("{error:?}").contains(EXTERNAL_ID));
    let calls = sts.calls();
    assert_eq!(
        calls.len(),
        1,
        "no GetCallerIdentity after a refusal: {calls:?}"
    );
    assert_eq!(calls[0].action, "AssumeRole");
    assert_eq!(
        calls[0].session_name.as_deref(),
        Some(format!("provisioner-{ENV}").as_str())
    );
    assert_eq!(calls[0].duration_seconds.as_deref(), Some("3600"));
    assert!(calls[0].sent_external_id);
}

#[tokio::test]
async fn a_role_that_expects_an_external_id_refuses_a_config_without_one() {
    let sts = StandinSts::expecting_external_id("the-right-one").await;
    let error = preflight(&sts.endpoint(), None).await.expect_err("refused");
    assert!(matches!(error, PreflightError::Refused { .. }), "{error:?}");
    assert!(!sts.calls()[0].sent_external_id);
}

#[tokio::test]
async fn the_right_external_id_passes_the_standin_too() {
    let sts = StandinSts::expecting_external_id(EXTERNAL_ID).await;
    let identity = preflight(&sts.endpoint(), Some(EXTERNAL_ID))
        .await
        .expect("passes");
    assert_eq!(identity.account, "210987654321");
    let actions: Vec<_> = sts.calls().into_iter().map(|c| c.action).collect();
    assert_eq!(actions, ["AssumeRole", "GetCallerIdentity"]);
}

#[tokio::test]
async fn a_session_in_another_account_is_refused() {
    let sts = StandinSts::start(StsBehaviour {
        claimed_account: Some("999999999999".to_owned()),
        ..StsBehaviour::default()
    })
    .await;
    let error = preflight(&sts.endpoint(), None).await.expect_err("refused");
    match &error {
        PreflightError::WrongAccount {
            expected, actual, ..
        } => {
            assert_eq!(expected, "210987654321");
            assert_eq!(actual, "999999999999");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(error.to_string().contains("999999999999"));
}

#[tokio::test]
async fn an_unreachable_sts_fails_within_the_call_timeout() {
    let port = local_services::nats::free_port().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let error = preflight(&endpoint, None).await.expect_err("unreachable");
    assert!(
        matches!(error, PreflightError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&endpoint), "{error}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn a_job_without_a_role_is_refused_before_any_call() {
    let sts = StandinSts::start(StsBehaviour::default()).await;
    let error = accounts(&sts.endpoint())
        .preflight(ENV, "us-east-1", None)
        .await
        .expect_err("no role");
    assert!(matches!(error, PreflightError::NoRole));
    assert!(sts.calls().is_empty());
}

/// The preflight keeps the assumed session's credentials (not the executor's own), and the EKS
/// token is signed with them. (moto cannot answer the presigned URL itself: its one-port server
/// routes an unsigned-header GET to S3, and its GetCallerIdentity reads the caller's key from an
/// `Authorization` header only, never from `X-Amz-Credential`; the signature is checked against a
/// token aws-iam-authenticator made, in `bootstrap::eks_token`'s tests.)
#[tokio::test]
async fn the_eks_token_is_signed_with_the_assumed_session_the_preflight_kept() {
    use bootstrap::eks_token::{TOKEN_PREFIX, TokenSource, TokenTarget};
    use secrecy::ExposeSecret;

    let moto = Moto::start().await;
    let session = accounts(moto.endpoint())
        .preflight(
            ENV,
            "us-east-1",
            Some(&role("210987654321", Some(EXTERNAL_ID))),
        )
        .await
        .expect("the preflight passes");
    let credentials = &session.credentials;
    assert_ne!(credentials.access_key_id, EXECUTOR_ACCESS_KEY_ID);
    assert!(credentials.session_token.is_some());
    let shown = format!("{session:?}");
    assert!(
        !shown.contains(credentials.secret_access_key.expose_secret()),
        "{shown}"
    );
    let source = TokenSource::new(
        TokenTarget {
            cluster_name: "beta9-env-x".into(),
            region: "us-east-1".into(),
            sts_endpoint: None,
        },
        credentials.clone(),
    );
    let token = source.current().expect("a token");
    let encoded = token
        .expose_secret()
        .strip_prefix(TOKEN_PREFIX)
        .expect("the EKS prefix");
    let url = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, encoded).unwrap(),
    )
    .unwrap();
    assert!(
        url.contains(&format!(
            "X-Amz-Credential={}%2F",
            credentials.access_key_id
        )),
        "{url}"
    );
    assert!(url.contains("X-Amz-Security-Token="), "{url}");
}
