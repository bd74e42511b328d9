//! Previews (`POST /v1/plans`): what an environment would be, computed from a validated spec
//! without recording anything — the infrastructure model, the resources its Terraform
//! configuration declares (rendered by `terraform-stack`, summarised by type) and a monthly
//! cost estimate (`domain::cost`).

use domain::config::FieldError;
use domain::cost::CostEstimate;
use domain::infra_model::InfraModel;
use domain::spec::EnvironmentSpec;
use serde::Serialize;
use terraform_stack::summary::{ResourceSummary, summarise};

/// The environment id a preview renders with: it names and tags resources, which a preview
/// counts but does not show.
const PREVIEW_ID: &str = "env_00000000000000000000000000";

/// One previewed environment: exactly the JSON of `POST /v1/plans`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Plan {
    pub name: String,
    /// `aws` or `sandbox`.
    #[schema(value_type = domain::spec::Provider)]
    pub provider: &'static str,
    pub region: String,
    /// Whether `POST /v1/environments` would accept this document here.
    pub creatable: bool,
    /// Why it would not (the 422's details), empty when it would.
    pub refusals: Vec<FieldError>,
    pub infra_model: InfraModel,
    /// The resources of the rendered Terraform configuration, by type.
    pub resources: ResourceSummary,
    pub cost: CostEstimate,
}

impl Plan {
    /// The preview of `spec`; `refusal` says why creating it here would be refused, if it would.
    pub fn new(spec: &EnvironmentSpec, refusal: Option<FieldError>) -> Self {
        let model = InfraModel::for_spec(spec);
        let target = terraform_stack::Target {
            environment_id: PREVIEW_ID,
            name: spec.name.as_str(),
        };
        let resources = summarise(&terraform_stack::render(target, &model));
        Plan {
            name: spec.name.to_string(),
            provider: spec.cloud.provider().as_str(),
            region: spec.cloud.region().to_string(),
            creatable: refusal.is_none(),
            refusals: refusal.into_iter().collect(),
            cost: CostEstimate::for_model(&model),
            resources,
            infra_model: model,
        }
    }
}
