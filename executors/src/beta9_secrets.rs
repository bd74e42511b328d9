//! Beta9's secrets on `aws`, read at bootstrap time with the assumed customer session and held
//! in memory only (they reach Helm through the step's owner-only values file):
//!
//! - the database password, from the Secrets Manager secret RDS manages for the instance
//!   (`manage_master_user_password`; its ARN is the `database_password_secret_arn` output);
//! - Beta9's encryption key, generated once per environment and kept in the customer's Secrets
//!   Manager as `beta9/<env_id>/encryption-key` (its name is the reference): every later
//!   bootstrap reads the same key, and destroy deletes it.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use bootstrap::Beta9Secrets;
use secrecy::SecretString;

use crate::customer_account::error_detail;

/// Days a deleted encryption key can still be restored (AWS's minimum is 7).
const RECOVERY_WINDOW_DAYS: i64 = 7;

/// The name of the secret holding `environment_id`'s encryption key.
pub fn encryption_key_name(environment_id: &str) -> String {
    format!("beta9/{environment_id}/encryption-key")
}

/// Why a secret could not be read or kept; never carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("cannot read the database password from {arn}: {detail}")]
    Password { arn: String, detail: String },
    #[error("the database secret {arn} holds no password (expected RDS's JSON with \"password\")")]
    NoPassword { arn: String },
    #[error("cannot keep Beta9's encryption key in the secret {name}: {detail}")]
    EncryptionKey { name: String, detail: String },
}

/// The database password and the environment's encryption key (created on first use).
pub async fn read(
    client: &Client,
    password_secret_arn: &str,
    environment_id: &str,
) -> Result<Beta9Secrets, SecretsError> {
    Ok(Beta9Secrets {
        database_password: database_password(client, password_secret_arn).await?,
        encryption_key: encryption_key(client, environment_id).await?,
    })
}

/// Deletes the environment's encryption key (restorable for [`RECOVERY_WINDOW_DAYS`]); a key
/// already gone is fine.
pub async fn delete_encryption_key(
    client: &Client,
    environment_id: &str,
) -> Result<(), SecretsError> {
    let name = encryption_key_name(environment_id);
    match client
        .delete_secret()
        .secret_id(&name)
        .recovery_window_in_days(RECOVERY_WINDOW_DAYS)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(error) if error.code() == Some("ResourceNotFoundException") => Ok(()),
        Err(error) => Err(SecretsError::EncryptionKey {
            name,
            detail: error_detail(&error),
        }),
    }
}

async fn database_password(client: &Client, arn: &str) -> Result<SecretString, SecretsError> {
    #[derive(serde::Deserialize)]
    struct RdsSecret {
        password: Option<String>,
    }
    let value = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|error| SecretsError::Password {
            arn: arn.to_owned(),
            detail: error_detail(&error),
        })?;
    let no_password = || SecretsError::NoPassword {
        arn: arn.to_owned(),
    };
    let text = value.secret_string().ok_or_else(no_password)?;
    // Never echo the text: it is the secret.
    let secret: RdsSecret = serde_json::from_str(text).map_err(|_| no_password())?;
    secret
        .password
        .map(SecretString::from)
        .ok_or_else(no_password)
}

async fn encryption_key(
    client: &Client,
    environment_id: &str,
) -> Result<SecretString, SecretsError> {
    let name = encryption_key_name(environment_id);
    let failed = |error: String| SecretsError::EncryptionKey {
        name: name.clone(),
        detail: error,
    };
    // Read it, or create it once; a concurrent creator's key wins (read it again).
    for _ in 0..3 {
        match client.get_secret_value().secret_id(&name).send().await {
            Ok(value) => {
                return value
                    .secret_string()
                    .map(|key| SecretString::from(key.to_owned()))
                    .ok_or_else(|| failed("the secret holds no string".to_owned()));
            }
            Err(error) if error.code() == Some("ResourceNotFoundException") => {}
            Err(error) => return Err(failed(error_detail(&error))),
        }
        let created = client
            .create_secret()
            .name(&name)
            .description("Beta9's encryption key, kept by the Beta9 provisioner")
            .secret_string(new_encryption_key())
            .tags(
                aws_sdk_secretsmanager::types::Tag::builder()
                    .key("beta9:environment-id")
                    .value(environment_id)
                    .build(),
            )
            .send()
            .await;
        match created {
            Ok(_) => continue,
            Err(error) if error.code() == Some("ResourceExistsException") => continue,
            Err(error) => return Err(failed(error_detail(&error))),
        }
    }
    Err(failed("it kept changing while being created".to_owned()))
}

/// A new key: `sk_` and 32 random bytes, base64 (the shape of Beta9's own default key).
fn new_encryption_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!(
        "sk_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}
