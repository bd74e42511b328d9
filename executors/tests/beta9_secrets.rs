//! Beta9's secrets against moto's Secrets Manager, as the assumed customer role.

use domain::config::{self, Format};
use executors::beta9_secrets::{self, SecretsError, encryption_key_name};
use executors::customer_account::{AwsSettings, CustomerAccounts, ExecutorIdentity};
use secrecy::ExposeSecret;
use system_tests::aws::{EXECUTOR_ACCESS_KEY_ID, EXECUTOR_SECRET_ACCESS_KEY, Moto};

async fn customer_secrets(moto: &Moto) -> aws_sdk_secretsmanager::Client {
    let accounts = CustomerAccounts::new(AwsSettings {
        sts_endpoint: Some(moto.endpoint().to_owned()),
        secrets_manager_endpoint: Some(moto.endpoint().to_owned()),
        identity: ExecutorIdentity::Static {
            access_key_id: EXECUTOR_ACCESS_KEY_ID.to_owned(),
            secret_access_key: EXECUTOR_SECRET_ACCESS_KEY.to_owned(),
        },
        ..AwsSettings::default()
    });
    let spec = config::parse(
        "name: acme\ncloud:\n  provider: aws\n  region: us-east-1\n  account_id: \"210987654321\"\n  role_arn: arn:aws:iam::210987654321:role/beta9-provisioner\n",
        Format::Yaml,
    )
    .unwrap();
    let session = accounts
        .preflight(
            "env_secrets",
            "us-east-1",
            spec.cloud.customer_role().as_ref(),
        )
        .await
        .unwrap();
    accounts
        .secrets_manager("us-east-1", &session.credentials)
        .await
}

async fn put(client: &aws_sdk_secretsmanager::Client, name: &str, value: &str) -> String {
    let created = client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap();
    created.arn().unwrap().to_owned()
}

#[tokio::test]
async fn the_password_comes_from_rds_secret_and_the_key_is_made_once_per_environment() {
    let moto = Moto::start().await;
    let client = customer_secrets(&moto).await;
    let arn = put(
        &client,
        "rds-db-1",
        r#"{"username":"beta9","password":"pw-1"}"#,
    )
    .await;

    let first = beta9_secrets::read(&client, &arn, "env_a").await.unwrap();
    assert_eq!(first.database_password.expose_secret(), "pw-1");
    let key = first.encryption_key.expose_secret().to_owned();
    assert!(key.starts_with("sk_") && key.len() > 40, "{key}");
    // A later bootstrap (a retry, a re-run after a crash) gets the same key.
    let again = beta9_secrets::read(&client, &arn, "env_a").await.unwrap();
    assert_eq!(again.encryption_key.expose_secret(), key);
    // Another environment has its own.
    let other = beta9_secrets::read(&client, &arn, "env_b").await.unwrap();
    assert_ne!(other.encryption_key.expose_secret(), key);

    beta9_secrets::delete_encryption_key(&client, "env_a")
        .await
        .unwrap();
    let deleted = client
        .describe_secret()
        .secret_id(encryption_key_name("env_a"))
        .send()
        .await
        .unwrap();
    assert!(deleted.deleted_date().is_some());
    // A key never made is no error at destroy.
    beta9_secrets::delete_encryption_key(&client, "env_never")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_or_malformed_database_secret_fails_without_echoing_it() {
    let moto = Moto::start().await;
    let client = customer_secrets(&moto).await;
    let missing = "arn:aws:secretsmanager:us-east-1:210987654321:secret:nope-AbCdEf";
    match beta9_secrets::read(&client, missing, "env_c").await {
        Err(SecretsError::Password { arn, detail }) => {
            assert_eq!(arn, missing);
            assert!(detail.contains("ResourceNotFoundException"), "{detail}");
        }
        other => panic!("expected Password, got {:?}", other.err()),
    }
    let arn = put(&client, "rds-db-2", "not-json-canary").await;
    let Err(error) = beta9_secrets::read(&client, &arn, "env_c").await else {
        panic!("a secret without a password was taken");
    };
    assert!(matches!(error, SecretsError::NoPassword { .. }), "{error}");
    assert!(!error.to_string().contains("canary"), "{error}");
}
