//! How Terraform reaches the cloud and keeps its state: the `terraform` block (provider pin,
//! backend), the `provider "aws"` block, and the input variables it reads.
//!
//! On `aws` the provider assumes the customer's role itself (`assume_role`), so credentials
//! renew during long applies. The role, external id, session name and duration are
//! [`variables`], never values in `main.tf.json`: the external id is a secret, and the caller
//! passes them in a variables file of its own for the duration of a run.

use domain::infra_model::InfraModel;
use domain::spec::Provider;
use serde_json::{Value, json};

use crate::Target;

/// The provider release series the rendering is written (and checked) against.
pub const AWS_PROVIDER_VERSION: &str = "~> 5.70";

/// The names of the input variables of an `aws` configuration (none in the sandbox).
pub mod variables {
    /// The customer's IAM role the provider assumes (`cloud.role_arn`).
    pub const ROLE_ARN: &str = "customer_role_arn";
    /// The STS external id (`cloud.external_id`); sensitive, and optional (null when unset).
    pub const EXTERNAL_ID: &str = "customer_external_id";
    /// The STS session name: `provisioner-<env_id>`.
    pub const SESSION_NAME: &str = "customer_session_name";
    /// How long one assumed-role session lasts, as a Go duration (`1h`); the provider renews it.
    pub const SESSION_DURATION: &str = "customer_session_duration";

    /// Every variable, in declaration order.
    pub const ALL: [&str; 4] = [ROLE_ARN, EXTERNAL_ID, SESSION_NAME, SESSION_DURATION];
}

/// `"${var.<name>}"`.
fn var(name: &str) -> String {
    format!("${{var.{name}}}")
}

/// The `terraform` block.
pub(crate) fn terraform(target: Target<'_>, model: &InfraModel) -> Value {
    json!({
        "required_providers": {
            "aws": {"source": "hashicorp/aws", "version": AWS_PROVIDER_VERSION},
        },
        "backend": backend(target, model),
    })
}

/// The state backend: a local file in the sandbox; for real clouds S3, encrypted, one key per
/// environment, locked by S3 itself (`use_lockfile`, Terraform >= 1.10). The bucket (and a
/// state region other than the environment's, and an optional DynamoDB lock table) are
/// deployment settings, given to `terraform init` as `-backend-config` (Terraform's partial
/// configuration, which overrides what is written here), so the rendering stays pure.
fn backend(target: Target<'_>, model: &InfraModel) -> Value {
    match model.provider {
        Provider::Sandbox => json!({"local": {}}),
        Provider::Aws => json!({
            "s3": {
                "key": format!("environments/{}/terraform.tfstate", target.environment_id),
                "region": model.region,
                "encrypt": true,
                "use_lockfile": true,
            },
        }),
    }
}

/// The `provider` block: the region, the environment's tags on every resource, and on `aws`
/// the customer's role.
pub(crate) fn provider(model: &InfraModel, tags: Value) -> Value {
    let mut aws = json!({
        "region": model.region,
        "default_tags": {"tags": tags},
    });
    if model.provider == Provider::Aws {
        aws["assume_role"] = json!({
            "role_arn": var(variables::ROLE_ARN),
            "external_id": var(variables::EXTERNAL_ID),
            "session_name": var(variables::SESSION_NAME),
            "duration": var(variables::SESSION_DURATION),
        });
    }
    json!({"aws": aws})
}

/// The `variable` block, `None` when the configuration has no inputs (the sandbox).
pub(crate) fn variables(model: &InfraModel) -> Option<Value> {
    match model.provider {
        Provider::Sandbox => None,
        Provider::Aws => Some(json!({
            variables::ROLE_ARN: {
                "type": "string",
                "description": "The customer's IAM role the provider assumes.",
            },
            variables::EXTERNAL_ID: {
                "type": "string",
                "description": "The STS external id of the customer's role (null: none).",
                "sensitive": true,
                "default": null,
            },
            variables::SESSION_NAME: {
                "type": "string",
                "description": "The STS session name, provisioner-<environment id>.",
            },
            variables::SESSION_DURATION: {
                "type": "string",
                "description": "How long one assumed-role session lasts (a duration such as 1h).",
            },
        })),
    }
}
