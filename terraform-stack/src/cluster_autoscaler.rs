//! cluster-autoscaler's AWS identity (IAM roles for service accounts): the cluster's IAM OIDC
//! provider, and a role only the autoscaler's service account can assume through it, allowed
//! what the autoscaler needs to scale this cluster's managed node groups — from zero too, as the
//! GPU pool does — and nothing else.
//!
//! The OIDC provider gives no `thumbprint_list`: IAM secures its calls to an OIDC issuer with
//! its own library of trusted root CAs (EKS's issuers included) and, when no thumbprint is
//! given, fills the list in itself. hashicorp/aws lets it be omitted from 5.81 on (optional and
//! computed there, required through 5.80: checked in the provider's schema tag by tag), so the
//! rendering's pin starts at 5.81. A thumbprint written here would only pin a certificate AWS
//! rotates.

use domain::infra_model::{
    CLUSTER_AUTOSCALER_NAMESPACE, CLUSTER_AUTOSCALER_SERVICE_ACCOUNT, InfraModel,
};
use serde_json::{Value, json};

use crate::Document;

/// The audience EKS's projected service account tokens carry for STS.
pub const STS_AUDIENCE: &str = "sts.amazonaws.com";

/// The local value holding the issuer without its scheme, as IAM condition keys name it
/// (`oidc.eks.<region>.amazonaws.com/id/<id>:sub`). A local, because the policy is a JSON
/// string in which a function call's quoted arguments would come out escaped.
pub const ISSUER_HOST_LOCAL: &str = "cluster_oidc_issuer_host";

/// `system:serviceaccount:<namespace>:<name>`, the `sub` of the autoscaler's tokens.
pub fn service_account_subject() -> String {
    format!(
        "system:serviceaccount:{CLUSTER_AUTOSCALER_NAMESPACE}:{CLUSTER_AUTOSCALER_SERVICE_ACCOUNT}"
    )
}

/// The `locals` the resources below refer to.
pub(crate) fn locals() -> Value {
    json!({
        ISSUER_HOST_LOCAL:
            "${trimprefix(aws_eks_cluster.main.identity[0].oidc[0].issuer, \"https://\")}",
    })
}

/// The OIDC provider, the role, and its inline policy.
pub(crate) fn irsa(doc: &mut Document<'_>, model: &InfraModel) {
    let slug = doc.slug.clone();
    doc.add(
        "aws_iam_openid_connect_provider",
        "cluster",
        json!({
            "url": "${aws_eks_cluster.main.identity[0].oidc[0].issuer}",
            "client_id_list": [STS_AUDIENCE],
        }),
    );
    let issuer = format!("${{local.{ISSUER_HOST_LOCAL}}}");
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": "${aws_iam_openid_connect_provider.cluster.arn}"},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                format!("{issuer}:sub"): service_account_subject(),
                format!("{issuer}:aud"): STS_AUDIENCE,
            }},
        }],
    });
    doc.add(
        "aws_iam_role",
        "cluster_autoscaler",
        json!({
            "name": format!("{slug}-cluster-autoscaler"),
            "assume_role_policy": trust.to_string(),
        }),
    );
    doc.add(
        "aws_iam_role_policy",
        "cluster_autoscaler",
        json!({
            "name": "cluster-autoscaler",
            "role": "${aws_iam_role.cluster_autoscaler.id}",
            "policy": policy(model).to_string(),
        }),
    );
}

/// What the autoscaler may do, after its AWS README's policy for auto-discovery: read the
/// groups and instance types (Describe calls take no resource), change only the groups EKS
/// tagged as this cluster's (`k8s.io/cluster-autoscaler/<cluster>`, which managed node groups
/// carry), and read this cluster's node groups' labels and taints to scale one up from zero.
fn policy(model: &InfraModel) -> Value {
    let mut node_groups = vec!["${aws_eks_node_group.cpu.arn}"];
    if model.cluster.gpu_nodes.is_some() {
        node_groups.push("${aws_eks_node_group.gpu.arn}");
    }
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Describe",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:DescribeAutoScalingGroups",
                    "autoscaling:DescribeAutoScalingInstances",
                    "autoscaling:DescribeLaunchConfigurations",
                    "autoscaling:DescribeScalingActivities",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplateVersions",
                    "ec2:GetInstanceTypesFromInstanceRequirements",
                ],
                "Resource": "*",
            },
            {
                "Sid": "ScaleThisClustersGroups",
                "Effect": "Allow",
                "Action": [
                    "autoscaling:SetDesiredCapacity",
                    "autoscaling:TerminateInstanceInAutoScalingGroup",
                ],
                "Resource": "*",
                "Condition": {"StringEquals": {
                    "aws:ResourceTag/k8s.io/cluster-autoscaler/${aws_eks_cluster.main.name}":
                        "owned",
                }},
            },
            {
                "Sid": "ReadThisClustersNodeGroups",
                "Effect": "Allow",
                "Action": "eks:DescribeNodegroup",
                "Resource": node_groups,
            },
        ],
    })
}
