//! The validated environment spec. Every value here has passed [`crate::config::parse`];
//! commands and events carry only these types.
//!
//! Deserialization is deliberately lenient (no re-validation): specs are stored inside events
//! forever, and tightening a rule later must not make old events unreadable. Rules are enforced
//! once, at the edge, by the constructors in `config`.

use serde::{Deserialize, Serialize};

macro_rules! string_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a value that a `config` validator has already checked.
            pub(crate) fn new_unchecked(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_newtype!(
    /// 1-40 chars of `[a-z0-9-]`, starting with a letter.
    EnvironmentName
);
string_newtype!(
    /// A region from the allowed list.
    Region
);
string_newtype!(
    /// 12 digits.
    AwsAccountId
);
string_newtype!(
    /// `arn:aws:iam::<account>:role/<path/name>`, account equal to the spec's account id.
    RoleArn
);
/// The optional STS external id (2-1224 chars of `[\w+=,.@:/-]`): the customer's shared
/// secret with the provisioner. Its `Debug` never shows it and it has no `Display`, so a log line
/// or error message cannot print it by accident; [`ExternalId::expose`] is the one way out.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExternalId(String);

impl ExternalId {
    /// Wraps a value that a `config` validator has already checked.
    pub(crate) fn new_unchecked(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, from what [`crate::sealed::open`] found sealed apart.
    pub(crate) fn from_opened(value: String) -> Self {
        Self(value)
    }

    /// The value itself, for the one place that must send it (STS, Terraform's variables).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ExternalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExternalId(<redacted>)")
    }
}
/// How a stored spec refers to the external id. A request's document carries the value
/// ([`ExternalIdRef::Plain`], as parsed); the API seals it apart from the events (the secrets
/// bucket, under the environment's id, see [`crate::sealed`]) and records only the marker
/// [`ExternalIdRef::Sealed`] — `{"sealed": true}` — so events, jobs, read models and streams
/// never hold it. Events recorded before that change hold the value itself, as a string: they
/// still load as `Plain`, and their environments' jobs still carry it (the events stream keeps
/// them as they were written); a read model shows such a value as [`ExternalIdRef::Redacted`]
/// — `{"redacted": true}` — never the value.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum ExternalIdRef {
    /// The value, as parsed from a request, or as recorded before it was sealed.
    Plain(ExternalId),
    /// Sealed and kept apart, under the environment's id.
    Sealed,
    /// Shown in place of a plain value, in read models.
    Redacted,
}

impl ExternalIdRef {
    /// This reference as a read model may show it: never the value.
    pub fn redacted(&self) -> ExternalIdRef {
        match self {
            ExternalIdRef::Sealed => ExternalIdRef::Sealed,
            ExternalIdRef::Plain(_) | ExternalIdRef::Redacted => ExternalIdRef::Redacted,
        }
    }
}

impl std::fmt::Debug for ExternalIdRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExternalIdRef::Plain(id) => write!(f, "Plain({id:?})"),
            ExternalIdRef::Sealed => f.write_str("Sealed"),
            ExternalIdRef::Redacted => f.write_str("Redacted"),
        }
    }
}

/// The stored forms of [`ExternalIdRef`]: a string (the value), `{"sealed": true}` or
/// `{"redacted": true}`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StoredExternalIdRef {
    Plain(ExternalId),
    Marker(Marker),
}

#[derive(Default, Serialize, Deserialize)]
struct Marker {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    sealed: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    redacted: bool,
}

impl Serialize for ExternalIdRef {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let stored = match self {
            ExternalIdRef::Plain(id) => StoredExternalIdRef::Plain(id.clone()),
            ExternalIdRef::Sealed => StoredExternalIdRef::Marker(Marker {
                sealed: true,
                ..Marker::default()
            }),
            ExternalIdRef::Redacted => StoredExternalIdRef::Marker(Marker {
                redacted: true,
                ..Marker::default()
            }),
        };
        stored.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ExternalIdRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Lenient, as every stored form: a marker that says neither is taken as redacted (the
        // value is not here, whatever it says).
        Ok(match StoredExternalIdRef::deserialize(deserializer)? {
            StoredExternalIdRef::Plain(id) => ExternalIdRef::Plain(id),
            StoredExternalIdRef::Marker(Marker { sealed: true, .. }) => ExternalIdRef::Sealed,
            StoredExternalIdRef::Marker(_) => ExternalIdRef::Redacted,
        })
    }
}

string_newtype!(
    /// A DNS name for the Beta9 API.
    DomainName
);

/// Cluster size class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    Small,
    Medium,
    Large,
}

/// Size class of a managed data service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    Small,
    Medium,
    Large,
}

/// A step of the pipeline; also the phase a failure happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Infra,
    Bootstrap,
    Destroy,
}

impl Step {
    /// Every step, in pipeline order.
    pub const ALL: [Step; 3] = [Step::Infra, Step::Bootstrap, Step::Destroy];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Infra => "infra",
            Step::Bootstrap => "bootstrap",
            Step::Destroy => "destroy",
        }
    }
}

/// Which cloud, and how to reach it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum CloudSpec {
    Aws(AwsCloud),
    Sandbox(SandboxCloud),
}

impl CloudSpec {
    pub fn provider(&self) -> Provider {
        match self {
            CloudSpec::Aws(_) => Provider::Aws,
            CloudSpec::Sandbox(_) => Provider::Sandbox,
        }
    }

    pub fn region(&self) -> &Region {
        match self {
            CloudSpec::Aws(aws) => &aws.region,
            CloudSpec::Sandbox(sandbox) => &sandbox.region,
        }
    }

    /// The role in the customer's account that the executor assumes; only real clouds have one.
    pub fn customer_role(&self) -> Option<CustomerRole> {
        match self {
            CloudSpec::Aws(aws) => Some(CustomerRole {
                account_id: aws.account_id.clone(),
                role_arn: aws.role_arn.clone(),
                external_id: aws.external_id.clone(),
            }),
            CloudSpec::Sandbox(_) => None,
        }
    }

    /// Takes the external id's value out of the spec, leaving the marker that it is sealed
    /// apart ([`ExternalIdRef::Sealed`]): what the API does before anything is recorded.
    /// `None` when there is no value here (no external id, or already sealed).
    pub fn seal_external_id(&mut self) -> Option<ExternalId> {
        let CloudSpec::Aws(aws) = self else {
            return None;
        };
        match aws.external_id.take() {
            Some(ExternalIdRef::Plain(id)) => {
                aws.external_id = Some(ExternalIdRef::Sealed);
                Some(id)
            }
            other => {
                aws.external_id = other;
                None
            }
        }
    }

    /// Whether the spec holds an external id's value (which events must not).
    pub fn holds_external_id(&self) -> bool {
        matches!(
            self,
            CloudSpec::Aws(AwsCloud {
                external_id: Some(ExternalIdRef::Plain(_)),
                ..
            })
        )
    }

    /// This cloud as a read model may show it (the external id redacted).
    pub fn redacted(&self) -> CloudSpec {
        match self {
            CloudSpec::Aws(aws) => CloudSpec::Aws(AwsCloud {
                external_id: aws.external_id.as_ref().map(ExternalIdRef::redacted),
                ..aws.clone()
            }),
            CloudSpec::Sandbox(_) => self.clone(),
        }
    }

    /// The fault-injection knobs; only the sandbox has them.
    pub fn simulation(&self) -> Option<&Simulation> {
        match self {
            CloudSpec::Aws(_) => None,
            CloudSpec::Sandbox(sandbox) => Some(&sandbox.simulate),
        }
    }
}

/// The provider name alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Aws,
    Sandbox,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Sandbox => "sandbox",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsCloud {
    pub region: Region,
    pub account_id: AwsAccountId,
    pub role_arn: RoleArn,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<ExternalIdRef>,
}

/// How an executor reaches the customer's account: assume `role_arn` (with `external_id`), and
/// the identity it gets must belong to `account_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRole {
    pub account_id: AwsAccountId,
    pub role_arn: RoleArn,
    /// Sealed apart on every job recorded since issue 10 (the executor opens it from the
    /// secrets bucket); the value itself on older ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<ExternalIdRef>,
}

impl CustomerRole {
    /// The external id's value, when this role holds it (not only the marker that it is sealed).
    pub fn external_id_value(&self) -> Option<&ExternalId> {
        match &self.external_id {
            Some(ExternalIdRef::Plain(id)) => Some(id),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SandboxCloud {
    pub region: Region,
    #[serde(default)]
    pub simulate: Simulation,
}

/// The file in a sandbox workdir that holds the environment's [`Simulation`] as JSON: written by
/// the executor, read by the stand-ins.
pub const SIMULATE_FILE: &str = "simulate.json";

/// Sandbox fault injection: how long each step takes, which step fails and how often. The one
/// contract of `simulate.json` ([`SIMULATE_FILE`]) between the executor and the stand-ins.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Simulation {
    /// Seconds each apply/bootstrap/destroy step takes; `None` means the stand-ins' small default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<Step>,
    /// How many times `fail` fails before it succeeds; `None` means always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_times: Option<u32>,
    /// How many of the first terraform runs (`plan`, `apply`, `destroy`) in the workdir fail
    /// with a cloud API throttling error, the kind of failure a retry gets past.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transient_failures: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub profile: Profile,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostgresSpec {
    pub size: Size,
    pub multi_az: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisSpec {
    pub size: Size,
    pub ha: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSpec {
    pub postgres: PostgresSpec,
    pub redis: RedisSpec,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkersSpec {
    pub gpu_enabled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beta9Spec {
    pub domain: DomainName,
    pub workers: WorkersSpec,
}

/// A complete, validated request for an environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentSpec {
    pub name: EnvironmentName,
    pub cloud: CloudSpec,
    pub cluster: ClusterSpec,
    pub data: DataSpec,
    pub beta9: Beta9Spec,
}

impl EnvironmentSpec {
    /// This spec as a read model shows it: an external id's value (of an environment recorded
    /// before it was sealed apart) redacted.
    pub fn redacted(&self) -> EnvironmentSpec {
        EnvironmentSpec {
            cloud: self.cloud.redacted(),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn aws(external_id: Option<ExternalIdRef>) -> CloudSpec {
        CloudSpec::Aws(AwsCloud {
            region: Region::new_unchecked("us-east-1"),
            account_id: AwsAccountId::new_unchecked("123456789012"),
            role_arn: RoleArn::new_unchecked("arn:aws:iam::123456789012:role/r"),
            external_id,
        })
    }

    fn plain() -> ExternalIdRef {
        ExternalIdRef::Plain(ExternalId::new_unchecked("canary-ext"))
    }

    #[test]
    fn each_form_of_the_external_id_is_stored_as_documented_and_read_back() {
        for (reference, stored) in [
            (plain(), json!("canary-ext")),
            (ExternalIdRef::Sealed, json!({"sealed": true})),
            (ExternalIdRef::Redacted, json!({"redacted": true})),
        ] {
            assert_eq!(serde_json::to_value(&reference).unwrap(), stored);
            let back: ExternalIdRef = serde_json::from_value(stored).unwrap();
            assert_eq!(back, reference);
        }
        // Lenient: a marker that says neither is not the value.
        let odd: ExternalIdRef = serde_json::from_value(json!({"other": 1})).unwrap();
        assert_eq!(odd, ExternalIdRef::Redacted);
        assert_eq!(format!("{:?}", plain()), "Plain(ExternalId(<redacted>))");
    }

    #[test]
    fn sealing_takes_the_value_out_and_a_view_never_shows_one() {
        let mut cloud = aws(Some(plain()));
        assert!(cloud.holds_external_id());
        assert_eq!(
            serde_json::to_value(cloud.redacted()).unwrap()["external_id"],
            json!({"redacted": true})
        );
        let taken = cloud.seal_external_id().expect("the value");
        assert_eq!(taken.expose(), "canary-ext");
        assert_eq!(cloud, aws(Some(ExternalIdRef::Sealed)));
        assert!(!cloud.holds_external_id());
        assert!(cloud.seal_external_id().is_none(), "nothing left to take");
        assert_eq!(cloud.redacted(), cloud);
        let mut none = aws(None);
        assert!(none.seal_external_id().is_none());
        assert_eq!(none, aws(None));
    }
}
