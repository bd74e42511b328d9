//! The outputs of the steps, each name spelled once: what the infrastructure step produces
//! ([`InfraOutput`], [`InfraOutputs`]: declared by the Terraform renderer, read by the bootstrap,
//! shown by the read model) and what the bootstrap adds ([`BootstrapOutputs`]).
//!
//! Events keep outputs as the plain `{name: string}` map they were always stored as
//! ([`Outputs`]: `InfraApplied.outputs`, `BootstrapCompleted.outputs`,
//! `OperationJob.infra_outputs`), and the typed forms are parsed from it where they are used.
//! Events are kept forever: a map stays readable whatever outputs a later version adds or
//! drops, where a typed payload would either reject old events or need every field optional.

use std::fmt;

use crate::aggregate::Outputs;

/// One output of the infrastructure step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum InfraOutput {
    VpcId,
    ClusterName,
    ClusterEndpoint,
    DatabaseEndpoint,
    /// The Secrets Manager secret holding the database password: a reference, not the password.
    DatabasePasswordSecretArn,
    RedisEndpoint,
    BucketName,
    /// The cluster's CA bundle (base64): public, it lets a client trust the API endpoint.
    ClusterCertificateAuthority,
    /// The cluster's OIDC issuer URL (for IAM roles of service accounts): public.
    ClusterOidcIssuer,
    /// The IAM role cluster-autoscaler's service account assumes through the cluster's OIDC
    /// provider: an ARN, not a credential. Added after the first environments were applied
    /// ([`InfraOutput::is_required`]).
    ClusterAutoscalerRoleArn,
}

impl InfraOutput {
    /// Every output the infrastructure declares.
    pub const ALL: [InfraOutput; 10] = [
        InfraOutput::VpcId,
        InfraOutput::ClusterName,
        InfraOutput::ClusterEndpoint,
        InfraOutput::DatabaseEndpoint,
        InfraOutput::DatabasePasswordSecretArn,
        InfraOutput::RedisEndpoint,
        InfraOutput::BucketName,
        InfraOutput::ClusterCertificateAuthority,
        InfraOutput::ClusterOidcIssuer,
        InfraOutput::ClusterAutoscalerRoleArn,
    ];

    /// The output's name, in Terraform and in the outputs map.
    pub const fn name(self) -> &'static str {
        match self {
            InfraOutput::VpcId => "vpc_id",
            InfraOutput::ClusterName => "cluster_name",
            InfraOutput::ClusterEndpoint => "cluster_endpoint",
            InfraOutput::DatabaseEndpoint => "database_endpoint",
            InfraOutput::DatabasePasswordSecretArn => "database_password_secret_arn",
            InfraOutput::RedisEndpoint => "redis_endpoint",
            InfraOutput::BucketName => "bucket_name",
            InfraOutput::ClusterCertificateAuthority => "cluster_certificate_authority",
            InfraOutput::ClusterOidcIssuer => "cluster_oidc_issuer",
            InfraOutput::ClusterAutoscalerRoleArn => "cluster_autoscaler_role_arn",
        }
    }

    /// Whether the output is marked sensitive: never reported, so never in [`InfraOutputs`].
    /// Only a secret is sensitive, and the infrastructure outputs none (the database password
    /// stays in Secrets Manager; its ARN is a reference): each output is decided here, so a new
    /// one must be.
    pub const fn is_sensitive(self) -> bool {
        match self {
            InfraOutput::VpcId
            | InfraOutput::ClusterName
            | InfraOutput::ClusterEndpoint
            | InfraOutput::DatabaseEndpoint
            | InfraOutput::DatabasePasswordSecretArn
            | InfraOutput::RedisEndpoint
            | InfraOutput::BucketName
            | InfraOutput::ClusterCertificateAuthority
            | InfraOutput::ClusterOidcIssuer
            | InfraOutput::ClusterAutoscalerRoleArn => false,
        }
    }

    /// Whether every reported outputs map has it. Events are kept forever, and an environment
    /// whose infrastructure was applied before an output existed has a map without it until
    /// its infrastructure is applied again: an output added later is optional when parsed
    /// (an `Option` in [`InfraOutputs`]), and what needs it is skipped, saying so. Each output
    /// is decided here, so a new one must be.
    pub const fn is_required(self) -> bool {
        match self {
            InfraOutput::VpcId
            | InfraOutput::ClusterName
            | InfraOutput::ClusterEndpoint
            | InfraOutput::DatabaseEndpoint
            | InfraOutput::DatabasePasswordSecretArn
            | InfraOutput::RedisEndpoint
            | InfraOutput::BucketName
            | InfraOutput::ClusterCertificateAuthority
            | InfraOutput::ClusterOidcIssuer => true,
            InfraOutput::ClusterAutoscalerRoleArn => false,
        }
    }

    /// The outputs a successful infrastructure step reports: all but the sensitive ones.
    pub fn reported() -> impl Iterator<Item = InfraOutput> {
        Self::ALL
            .into_iter()
            .filter(|output| !output.is_sensitive())
    }
}

impl fmt::Display for InfraOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The reported outputs of the infrastructure step, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfraOutputs {
    pub vpc_id: String,
    pub cluster_name: String,
    pub cluster_endpoint: String,
    pub database_endpoint: String,
    pub database_password_secret_arn: String,
    pub redis_endpoint: String,
    pub bucket_name: String,
    /// Base64, as EKS gives it.
    pub cluster_certificate_authority: String,
    pub cluster_oidc_issuer: String,
    /// `None` for an environment applied before the output existed
    /// ([`InfraOutput::is_required`]).
    pub cluster_autoscaler_role_arn: Option<String>,
}

impl InfraOutputs {
    /// The value of a reported output; `None` for a sensitive one, which it never holds, and
    /// for an optional one the map did not have.
    pub fn get(&self, output: InfraOutput) -> Option<&str> {
        let value = match output {
            InfraOutput::ClusterAutoscalerRoleArn => {
                return self.cluster_autoscaler_role_arn.as_deref();
            }
            InfraOutput::VpcId => &self.vpc_id,
            InfraOutput::ClusterName => &self.cluster_name,
            InfraOutput::ClusterEndpoint => &self.cluster_endpoint,
            InfraOutput::DatabaseEndpoint => &self.database_endpoint,
            InfraOutput::DatabasePasswordSecretArn => &self.database_password_secret_arn,
            InfraOutput::RedisEndpoint => &self.redis_endpoint,
            InfraOutput::BucketName => &self.bucket_name,
            InfraOutput::ClusterCertificateAuthority => &self.cluster_certificate_authority,
            InfraOutput::ClusterOidcIssuer => &self.cluster_oidc_issuer,
        };
        Some(value)
    }
}

/// Some reported outputs of the infrastructure step are not in the map.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the infrastructure outputs lack {}", names(.missing))]
pub struct MissingOutputs {
    /// Every missing output, in [`InfraOutput::ALL`] order.
    pub missing: Vec<InfraOutput>,
}

fn names(outputs: &[InfraOutput]) -> String {
    outputs
        .iter()
        .map(|output| output.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl TryFrom<&Outputs> for InfraOutputs {
    type Error = MissingOutputs;

    /// Reads every reported output (others in the map are ignored); names all missing
    /// required ones.
    fn try_from(outputs: &Outputs) -> Result<Self, MissingOutputs> {
        let missing: Vec<InfraOutput> = InfraOutput::reported()
            .filter(|output| output.is_required() && !outputs.contains_key(output.name()))
            .collect();
        if !missing.is_empty() {
            return Err(MissingOutputs { missing });
        }
        let take = |output: InfraOutput| outputs[output.name()].clone();
        Ok(InfraOutputs {
            vpc_id: take(InfraOutput::VpcId),
            cluster_name: take(InfraOutput::ClusterName),
            cluster_endpoint: take(InfraOutput::ClusterEndpoint),
            database_endpoint: take(InfraOutput::DatabaseEndpoint),
            database_password_secret_arn: take(InfraOutput::DatabasePasswordSecretArn),
            redis_endpoint: take(InfraOutput::RedisEndpoint),
            bucket_name: take(InfraOutput::BucketName),
            cluster_certificate_authority: take(InfraOutput::ClusterCertificateAuthority),
            cluster_oidc_issuer: take(InfraOutput::ClusterOidcIssuer),
            cluster_autoscaler_role_arn: outputs
                .get(InfraOutput::ClusterAutoscalerRoleArn.name())
                .cloned(),
        })
    }
}

impl From<&InfraOutputs> for Outputs {
    fn from(outputs: &InfraOutputs) -> Self {
        InfraOutput::reported()
            .filter_map(|output| Some((output.name().to_owned(), outputs.get(output)?.to_owned())))
            .collect()
    }
}

/// The outputs the bootstrap step reports (added to the infrastructure's on the environment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapOutputs {
    /// Where the Beta9 API answers: `https://<domain>`.
    pub endpoint: String,
    /// The ingress load balancer's address (an AWS hostname): the configured domain's DNS
    /// record points at it (a CNAME). `None` where the cluster has no load balancer (the
    /// sandbox).
    pub load_balancer_hostname: Option<String>,
}

impl BootstrapOutputs {
    /// The name of [`BootstrapOutputs::endpoint`] in the outputs map.
    pub const ENDPOINT: &'static str = "endpoint";
    /// The name of [`BootstrapOutputs::load_balancer_hostname`] in the outputs map.
    pub const LOAD_BALANCER_HOSTNAME: &'static str = "load_balancer_hostname";
}

impl From<&BootstrapOutputs> for Outputs {
    fn from(outputs: &BootstrapOutputs) -> Self {
        let mut map = Outputs::from([(
            BootstrapOutputs::ENDPOINT.to_owned(),
            outputs.endpoint.clone(),
        )]);
        if let Some(hostname) = &outputs.load_balancer_hostname {
            map.insert(
                BootstrapOutputs::LOAD_BALANCER_HOSTNAME.to_owned(),
                hostname.clone(),
            );
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn all_reported() -> Outputs {
        InfraOutput::reported()
            .map(|output| (output.name().to_owned(), format!("{output}-value")))
            .collect()
    }

    #[test]
    fn a_complete_map_parses_and_converts_back_to_the_same_map() {
        let map = all_reported();
        let outputs = InfraOutputs::try_from(&map).unwrap();
        assert_eq!(outputs.cluster_name, "cluster_name-value");
        assert_eq!(outputs.cluster_endpoint, "cluster_endpoint-value");
        assert_eq!(
            outputs.database_password_secret_arn,
            "database_password_secret_arn-value"
        );
        assert_eq!(Outputs::from(&outputs), map);
    }

    #[test]
    fn a_missing_output_is_named_in_the_error() {
        let mut map = all_reported();
        map.remove("cluster_endpoint");
        let err = InfraOutputs::try_from(&map).unwrap_err();
        assert_eq!(err.missing, [InfraOutput::ClusterEndpoint]);
        assert_eq!(
            err.to_string(),
            "the infrastructure outputs lack cluster_endpoint"
        );

        let err = InfraOutputs::try_from(&Outputs::new()).unwrap_err();
        assert_eq!(
            err.missing,
            InfraOutput::reported()
                .filter(|output| output.is_required())
                .collect::<Vec<_>>()
        );
        assert!(
            err.to_string()
                .contains("cluster_name, cluster_endpoint, database_endpoint"),
            "{err}"
        );
    }

    #[test]
    fn other_outputs_are_ignored() {
        let mut map = all_reported();
        map.insert("something_new".to_owned(), "x".to_owned());
        let outputs = InfraOutputs::try_from(&map).unwrap();
        assert_eq!(Outputs::from(&outputs), all_reported());
    }

    #[test]
    fn the_cluster_ca_and_oidc_issuer_are_reported_like_the_rest() {
        let outputs = InfraOutputs::try_from(&all_reported()).unwrap();
        assert_eq!(
            outputs.get(InfraOutput::ClusterCertificateAuthority),
            Some("cluster_certificate_authority-value")
        );
        assert_eq!(outputs.cluster_oidc_issuer, "cluster_oidc_issuer-value");
        let mut map = all_reported();
        map.remove("cluster_certificate_authority");
        let err = InfraOutputs::try_from(&map).unwrap_err();
        assert_eq!(err.missing, [InfraOutput::ClusterCertificateAuthority]);
    }

    #[test]
    fn a_map_of_an_environment_applied_before_the_autoscaler_role_still_parses() {
        let mut map = all_reported();
        map.remove("cluster_autoscaler_role_arn");
        let outputs = InfraOutputs::try_from(&map).unwrap();
        assert_eq!(outputs.cluster_autoscaler_role_arn, None);
        assert_eq!(outputs.get(InfraOutput::ClusterAutoscalerRoleArn), None);
        assert_eq!(Outputs::from(&outputs), map);

        let outputs = InfraOutputs::try_from(&all_reported()).unwrap();
        assert_eq!(
            outputs.cluster_autoscaler_role_arn.as_deref(),
            Some("cluster_autoscaler_role_arn-value")
        );
        assert_eq!(Outputs::from(&outputs), all_reported());
    }

    #[test]
    fn only_outputs_added_later_are_optional() {
        let optional: Vec<InfraOutput> = InfraOutput::ALL
            .into_iter()
            .filter(|output| !output.is_required())
            .collect();
        assert_eq!(optional, [InfraOutput::ClusterAutoscalerRoleArn]);
        let err = InfraOutputs::try_from(&Outputs::new()).unwrap_err();
        assert!(!err.missing.contains(&InfraOutput::ClusterAutoscalerRoleArn));
    }

    #[test]
    fn names_are_unique_and_none_is_sensitive() {
        let names: BTreeSet<&str> = InfraOutput::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(names.len(), InfraOutput::ALL.len());
        assert!(InfraOutput::ALL.iter().all(|o| !o.is_sensitive()));
        assert_eq!(InfraOutput::reported().count(), InfraOutput::ALL.len());
        assert!(!names.contains(BootstrapOutputs::ENDPOINT));
    }

    #[test]
    fn the_bootstrap_reports_its_endpoint_and_load_balancer_by_their_one_names() {
        let mut outputs = BootstrapOutputs {
            endpoint: "https://api.example.com".to_owned(),
            load_balancer_hostname: None,
        };
        assert_eq!(
            Outputs::from(&outputs),
            Outputs::from([("endpoint".to_owned(), "https://api.example.com".to_owned())])
        );
        outputs.load_balancer_hostname = Some("lb.elb.amazonaws.com".to_owned());
        assert_eq!(
            Outputs::from(&outputs)["load_balancer_hostname"],
            "lb.elb.amazonaws.com"
        );
        assert!(!names_of_infra().contains(BootstrapOutputs::LOAD_BALANCER_HOSTNAME));
    }

    fn names_of_infra() -> std::collections::BTreeSet<&'static str> {
        InfraOutput::ALL.iter().map(|o| o.name()).collect()
    }
}
