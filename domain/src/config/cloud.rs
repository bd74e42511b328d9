//! The `cloud` section: the provider decides which other fields are allowed.

use super::rules;
use super::walker::{Errors, Field, Object};
use crate::spec::{
    AwsAccountId, AwsCloud, CloudSpec, ExternalId, ExternalIdRef, Provider, Region, RoleArn,
    SandboxCloud, Simulation, Step,
};
use crate::text::shown;
use serde_json::Value;

/// Every field some provider accepts, for reporting unknown fields when the provider is invalid.
const ALL_FIELDS: &[&str] = &[
    "provider",
    "region",
    "account_id",
    "role_arn",
    "external_id",
    "simulate",
];

const STEPS: &[(&str, Step)] = &[
    ("infra", Step::Infra),
    ("bootstrap", Step::Bootstrap),
    ("destroy", Step::Destroy),
];

const MAX_APPLY_SECONDS: f64 = 600.0;
const MAX_FAIL_TIMES: u32 = 1000;

pub(super) fn cloud(root: &mut Object<'_>, errors: &mut Errors) -> Option<CloudSpec> {
    let mut cloud = root.required("cloud", errors)?.object(errors)?;
    let provider = cloud
        .required("provider", errors)
        .and_then(|field| provider(&field, errors));
    let spec = match provider {
        Some(Provider::Aws) => aws(&mut cloud, errors).map(CloudSpec::Aws),
        Some(Provider::Sandbox) => sandbox(&mut cloud, errors).map(CloudSpec::Sandbox),
        None => {
            cloud.allow_all(ALL_FIELDS);
            None
        }
    };
    cloud.finish(errors);
    spec
}

fn provider(field: &Field<'_>, errors: &mut Errors) -> Option<Provider> {
    match field.string(errors)? {
        "aws" => Some(Provider::Aws),
        "sandbox" => Some(Provider::Sandbox),
        "gcp" => {
            field.reject(errors, "gcp is not supported yet, use aws or sandbox");
            None
        }
        other => {
            field.reject(
                errors,
                format!("must be one of aws, sandbox, got {}", shown(other)),
            );
            None
        }
    }
}

fn aws(cloud: &mut Object<'_>, errors: &mut Errors) -> Option<AwsCloud> {
    let region = cloud
        .required("region", errors)
        .and_then(|field| field.validated(errors, rules::aws_region));
    let account_id = cloud
        .required("account_id", errors)
        .and_then(|field| account_id(&field, errors));
    let role_arn = cloud
        .required("role_arn", errors)
        .and_then(|field| role_arn(&field, account_id, errors));
    let external_id = cloud.or_default("external_id", None, |field| {
        field
            .validated(errors, rules::external_id)
            .map(|id| Some(ExternalIdRef::Plain(ExternalId::new_unchecked(id))))
    });
    cloud.refuse(
        "simulate",
        "simulate is only allowed when provider is sandbox",
        errors,
    );
    Some(AwsCloud {
        region: Region::new_unchecked(region?),
        account_id: AwsAccountId::new_unchecked(account_id?),
        role_arn: RoleArn::new_unchecked(role_arn?),
        external_id: external_id?,
    })
}

fn account_id<'a>(field: &Field<'a>, errors: &mut Errors) -> Option<&'a str> {
    if let Value::Number(number) = field.value() {
        field.reject(
            errors,
            format!(
                "must be a quoted string of 12 digits, e.g. \"123456789012\", not the number {number} (a number loses leading zeros)"
            ),
        );
        return None;
    }
    field.validated(errors, rules::account_id)
}

/// `account_id` is the validated account, if any, which the arn must belong to.
fn role_arn<'a>(
    field: &Field<'a>,
    account_id: Option<&str>,
    errors: &mut Errors,
) -> Option<&'a str> {
    let arn = field.string(errors)?;
    let arn_account = match rules::role_arn(arn) {
        Ok(account) => account,
        Err(message) => {
            field.reject(errors, message);
            return None;
        }
    };
    match account_id {
        Some(expected) if expected != arn_account => {
            field.reject(
                errors,
                format!("the role belongs to account {arn_account}, but account_id is {expected}"),
            );
            None
        }
        _ => Some(arn),
    }
}

fn sandbox(cloud: &mut Object<'_>, errors: &mut Errors) -> Option<SandboxCloud> {
    let region = cloud.or_default("region", rules::SANDBOX_REGION, |field| {
        field.validated(errors, rules::sandbox_region)
    });
    for name in ["account_id", "role_arn", "external_id"] {
        cloud.refuse(
            name,
            &format!("{name} is only allowed when provider is aws"),
            errors,
        );
    }
    let simulate = simulation(cloud, errors);
    Some(SandboxCloud {
        region: Region::new_unchecked(region?),
        simulate: simulate?,
    })
}

fn simulation(cloud: &mut Object<'_>, errors: &mut Errors) -> Option<Simulation> {
    let mut simulate = cloud.section("simulate", errors)?;
    let apply_seconds = simulate.or_default("apply_seconds", None, |field| {
        field.number_in(errors, 0.0..=MAX_APPLY_SECONDS).map(Some)
    });
    let fail_field = simulate.optional("fail");
    let fail_given = fail_field.is_some();
    let fail = fail_field.map_or(Some(None), |field| field.choice(errors, STEPS).map(Some));
    let fail_times = simulate.or_default("fail_times", None, |field| {
        let times = field.integer_in(errors, 1..=MAX_FAIL_TIMES)?;
        if !fail_given {
            field.reject(
                errors,
                "fail_times needs fail: set fail to infra, bootstrap or destroy",
            );
            return None;
        }
        Some(Some(times))
    });
    let transient_failures = simulate.or_default("transient_failures", None, |field| {
        field.integer_in(errors, 1..=MAX_FAIL_TIMES).map(Some)
    });
    simulate.finish(errors);
    Some(Simulation {
        apply_seconds: apply_seconds?,
        fail: fail?,
        fail_times: fail_times?,
        transient_failures: transient_failures?,
    })
}
