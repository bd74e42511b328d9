//! How Terraform reaches the cloud and keeps its state: the `terraform` block (provider pin,
//! backend), the `provider "aws"` block, and the input variables it reads.
//!
//! On `aws` the provider assumes the customer's role itself (`assume_role`), so credentials
//! renew during long applies. The role, external id, session name and duration are the input
//! variables named in [`crate::customer_role`], never values in `main.tf.json`: the external id
//! is a secret, and the executor passes them in its own variables file for the duration of a
//! step.

use domain::infra_model::InfraModel;
use domain::spec::Provider;
use serde_json::{Value, json};

use crate::Target;
use crate::customer_role::{EXTERNAL_ID, ROLE_ARN, SESSION_DURATION, SESSION_NAME};

/// The provider release series the rendering is written (and checked) against: from 5.81, where
/// `aws_iam_openid_connect_provider.thumbprint_list` became optional (see
/// [`crate::cluster_autoscaler`]).
pub const AWS_PROVIDER_VERSION: &str = "~> 5.81";

/// `"${var.<name>}"`.
fn var(name: &str) -> String {
    format!("${{var.{name}}}")
}

/// The `terraform` block.
pub(crate) fn terraform_block(target: Target<'_>, model: &InfraModel) -> Value {
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
pub(crate) fn provider_block(model: &InfraModel, tags: Value) -> Value {
    let mut aws = json!({
        "region": model.region,
        "default_tags": {"tags": tags},
    });
    if model.provider == Provider::Aws {
        aws["assume_role"] = json!({
            "role_arn": var(ROLE_ARN),
            "external_id": var(EXTERNAL_ID),
            "session_name": var(SESSION_NAME),
            "duration": var(SESSION_DURATION),
        });
    }
    json!({"aws": aws})
}

/// The `variable` block, `None` when the configuration has no inputs (the sandbox).
pub(crate) fn variable_block(model: &InfraModel) -> Option<Value> {
    match model.provider {
        Provider::Sandbox => None,
        Provider::Aws => Some(json!({
            ROLE_ARN: {
                "type": "string",
                "description": "The customer's IAM role the provider assumes.",
            },
            EXTERNAL_ID: {
                "type": "string",
                "description": "The STS external id of the customer's role (null: none).",
                "sensitive": true,
                "default": null,
            },
            SESSION_NAME: {
                "type": "string",
                "description": "The STS session name, provisioner-<environment id>.",
            },
            SESSION_DURATION: {
                "type": "string",
                "description": "How long one assumed-role session lasts (a duration such as 1h).",
            },
        })),
    }
}
