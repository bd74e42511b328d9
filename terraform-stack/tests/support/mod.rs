//! The models the tests render: every profile, with and without GPU workers, for each provider,
//! built the way the command side builds them (`domain::config::parse`, then
//! `InfraModel::for_spec`).

use domain::config::{Format, parse};
use domain::infra_model::InfraModel;
use domain::spec::{Profile, Provider};
use terraform_stack::Target;

pub const ENV: &str = "env_01jd0000000000000000000000";

pub fn target() -> Target<'static> {
    Target {
        environment_id: ENV,
        name: "production",
    }
}

pub const PROFILES: [Profile; 3] = [Profile::Small, Profile::Medium, Profile::Large];

pub fn profile_name(profile: Profile) -> &'static str {
    match profile {
        Profile::Small => "small",
        Profile::Medium => "medium",
        Profile::Large => "large",
    }
}

/// The model of an environment of `profile` (data services of the same size, highly available
/// above small), with or without GPU workers.
pub fn model(provider: Provider, profile: Profile, gpu: bool) -> InfraModel {
    let size = profile_name(profile);
    let ha = profile != Profile::Small;
    let cloud = match provider {
        Provider::Aws => {
            "cloud:\n  provider: aws\n  region: us-east-1\n  account_id: \"123456789012\"\n  \
             role_arn: arn:aws:iam::123456789012:role/Beta9Provisioner\n  \
             external_id: not-for-the-configuration\n"
        }
        Provider::Sandbox => "cloud:\n  provider: sandbox\n",
    };
    let yaml = format!(
        "name: production\n{cloud}cluster:\n  profile: {size}\ndata:\n  \
         postgres: {{size: {size}, multi_az: {ha}}}\n  redis: {{size: {size}, ha: {ha}}}\n\
         beta9:\n  domain: api.beta9.example.com\n  workers: {{gpu_enabled: {gpu}}}\n"
    );
    let spec = parse(&yaml, Format::Yaml).unwrap_or_else(|e| panic!("{yaml}\n{e:?}"));
    InfraModel::for_spec(&spec)
}
/// Every model the rendering must handle: each provider, profile, with and without GPU.
pub fn every_model() -> Vec<(String, InfraModel)> {
    let mut models = Vec::new();
    for provider in [Provider::Aws, Provider::Sandbox] {
        for profile in PROFILES {
            for gpu in [false, true] {
                let name = format!(
                    "{}_{}{}",
                    provider.as_str(),
                    profile_name(profile),
                    if gpu { "_gpu" } else { "" }
                );
                models.push((name, model(provider, profile, gpu)));
            }
        }
    }
    models
}
