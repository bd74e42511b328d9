//! The variables through which the rendered `aws` provider assumes the customer's role (its
//! `assume_role` block refers to them): the values never enter `main.tf.json`; the executor
//! writes them, per step, to [`VARS_FILE`] (owner-only, removed after the step), which
//! Terraform loads by itself.

use std::time::Duration;

use serde_json::{Value, json};

/// The file in the workdir that carries the values; `*.auto.tfvars.json` is loaded by every
/// terraform command without a flag, so nothing of it appears in a process's arguments.
pub const VARS_FILE: &str = "customer.auto.tfvars.json";

/// The role's ARN.
pub const ROLE_ARN: &str = "customer_role_arn";
/// The external id (sensitive); `null` when the config has none.
pub const EXTERNAL_ID: &str = "customer_external_id";
/// `provisioner-<env_id>`, shown in the customer's CloudTrail.
pub const SESSION_NAME: &str = "customer_session_name";
/// How long each session lasts (`"3600s"`); the provider renews it.
pub const SESSION_DURATION: &str = "customer_session_duration";

/// Every variable, in the order the rendering declares them.
pub const ALL: [&str; 4] = [ROLE_ARN, EXTERNAL_ID, SESSION_NAME, SESSION_DURATION];

/// The contents of [`VARS_FILE`].
pub fn values(
    role_arn: &str,
    external_id: Option<&str>,
    session_name: &str,
    duration: Duration,
) -> Value {
    json!({
        ROLE_ARN: role_arn,
        EXTERNAL_ID: external_id,
        SESSION_NAME: session_name,
        SESSION_DURATION: format!("{}s", duration.as_secs()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_values_name_every_variable() {
        let values = values(
            "arn:aws:iam::210987654321:role/p",
            None,
            "provisioner-env_1",
            Duration::from_secs(3600),
        );
        assert_eq!(
            values,
            json!({
                "customer_role_arn": "arn:aws:iam::210987654321:role/p",
                "customer_external_id": null,
                "customer_session_name": "provisioner-env_1",
                "customer_session_duration": "3600s",
            })
        );
    }
}
