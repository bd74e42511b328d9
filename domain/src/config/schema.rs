//! The MetaConfig shape: which fields exist where, their defaults, and how they become a spec.

use super::FieldError;
use super::cloud;
use super::rules;
use super::walker::{Errors, Object};
use crate::spec::{
    Beta9Spec, ClusterSpec, DataSpec, DomainName, EnvironmentName, EnvironmentSpec, PostgresSpec,
    Profile, RedisSpec, Size, WorkersSpec,
};
use serde_json::Value;

const PROFILES: &[(&str, Profile)] = &[
    ("small", Profile::Small),
    ("medium", Profile::Medium),
    ("large", Profile::Large),
];

const SIZES: &[(&str, Size)] = &[
    ("small", Size::Small),
    ("medium", Size::Medium),
    ("large", Size::Large),
];

/// Suffix of the default Beta9 domain, `<name>.beta9.local`.
pub(super) const DEFAULT_DOMAIN_SUFFIX: &str = "beta9.local";

/// Validates a whole document; on failure, every problem found.
pub(super) fn environment_spec(document: &Value) -> Result<EnvironmentSpec, Vec<FieldError>> {
    let mut errors = Errors::default();
    let Some(mut root) = Object::root(document, &mut errors) else {
        return Err(errors.into_vec());
    };
    let name = root.required("name", &mut errors).and_then(|field| {
        field
            .validated(&mut errors, rules::environment_name)
            .map(EnvironmentName::new_unchecked)
    });
    let cloud = cloud::cloud(&mut root, &mut errors);
    let cluster = cluster(&mut root, &mut errors);
    let data = data(&mut root, &mut errors);
    let beta9 = beta9(&mut root, name.as_ref(), &mut errors);
    root.finish(&mut errors);

    match (name, cloud, cluster, data, beta9) {
        (Some(name), Some(cloud), Some(cluster), Some(data), Some(beta9)) if errors.is_empty() => {
            Ok(EnvironmentSpec {
                name,
                cloud,
                cluster,
                data,
                beta9,
            })
        }
        _ => {
            // Every reader that returns `None` records why; this only guards against a slip.
            if errors.is_empty() {
                errors.add("", "the document is invalid");
            }
            Err(errors.into_vec())
        }
    }
}

fn cluster(root: &mut Object<'_>, errors: &mut Errors) -> Option<ClusterSpec> {
    let mut cluster = root.section("cluster", errors)?;
    let profile = cluster.or_default("profile", Profile::Small, |field| {
        field.choice(errors, PROFILES)
    });
    cluster.finish(errors);
    Some(ClusterSpec { profile: profile? })
}

fn data(root: &mut Object<'_>, errors: &mut Errors) -> Option<DataSpec> {
    let mut data = root.section("data", errors)?;
    let postgres = postgres(&mut data, errors);
    let redis = redis(&mut data, errors);
    data.finish(errors);
    Some(DataSpec {
        postgres: postgres?,
        redis: redis?,
    })
}

fn postgres(data: &mut Object<'_>, errors: &mut Errors) -> Option<PostgresSpec> {
    let mut postgres = data.section("postgres", errors)?;
    let size = postgres.or_default("size", Size::Small, |field| field.choice(errors, SIZES));
    let multi_az = postgres.or_default("multi_az", false, |field| field.boolean(errors));
    postgres.finish(errors);
    Some(PostgresSpec {
        size: size?,
        multi_az: multi_az?,
    })
}

fn redis(data: &mut Object<'_>, errors: &mut Errors) -> Option<RedisSpec> {
    let mut redis = data.section("redis", errors)?;
    let size = redis.or_default("size", Size::Small, |field| field.choice(errors, SIZES));
    let ha = redis.or_default("ha", false, |field| field.boolean(errors));
    redis.finish(errors);
    Some(RedisSpec {
        size: size?,
        ha: ha?,
    })
}

/// `name` is needed for the default domain; it is `None` when invalid (already reported).
fn beta9(
    root: &mut Object<'_>,
    name: Option<&EnvironmentName>,
    errors: &mut Errors,
) -> Option<Beta9Spec> {
    let mut beta9 = root.section("beta9", errors)?;
    let domain = match beta9.optional("domain") {
        Some(field) => field
            .validated(errors, rules::domain_name)
            .map(DomainName::new_unchecked),
        None => {
            name.map(|name| DomainName::new_unchecked(format!("{name}.{DEFAULT_DOMAIN_SUFFIX}")))
        }
    };
    let workers = workers(&mut beta9, errors);
    beta9.finish(errors);
    Some(Beta9Spec {
        domain: domain?,
        workers: workers?,
    })
}

fn workers(beta9: &mut Object<'_>, errors: &mut Errors) -> Option<WorkersSpec> {
    let mut workers = beta9.section("workers", errors)?;
    let gpu_enabled = workers.or_default("gpu_enabled", false, |field| field.boolean(errors));
    workers.finish(errors);
    Some(WorkersSpec {
        gpu_enabled: gpu_enabled?,
    })
}
