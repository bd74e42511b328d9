//! The customer role's permission policy (deploy/iam/customer-role-permissions.json) covers
//! what the stack renders: every resource and data source type of every aws profile is mapped to
//! the IAM actions Terraform's provider needs to create, read, update and delete it, and each of
//! those actions is allowed by a statement of the policy. A type the table does not know yet
//! fails the test, so a new resource type comes with its permissions.

mod support;

use domain::spec::Provider;
use serde_json::Value;
use std::collections::BTreeSet;
use support::{every_model, target};

const POLICY: &str = include_str!("../../deploy/iam/customer-role-permissions.json");

/// Each type the stack may render → the IAM actions its lifecycle needs.
const REQUIRED: &[(&str, &[&str])] = &[
    ("aws_availability_zones", &["ec2:DescribeAvailabilityZones"]),
    (
        "aws_vpc",
        &[
            "ec2:CreateVpc",
            "ec2:CreateTags",
            "ec2:DescribeVpcs",
            "ec2:DescribeVpcAttribute",
            "ec2:ModifyVpcAttribute",
            "ec2:DeleteVpc",
        ],
    ),
    (
        "aws_subnet",
        &[
            "ec2:CreateSubnet",
            "ec2:DescribeSubnets",
            "ec2:ModifySubnetAttribute",
            "ec2:DeleteSubnet",
        ],
    ),
    (
        "aws_internet_gateway",
        &[
            "ec2:CreateInternetGateway",
            "ec2:AttachInternetGateway",
            "ec2:DescribeInternetGateways",
            "ec2:DetachInternetGateway",
            "ec2:DeleteInternetGateway",
        ],
    ),
    (
        "aws_eip",
        &[
            "ec2:AllocateAddress",
            "ec2:DescribeAddresses",
            "ec2:ReleaseAddress",
        ],
    ),
    (
        "aws_nat_gateway",
        &[
            "ec2:CreateNatGateway",
            "ec2:DescribeNatGateways",
            "ec2:DeleteNatGateway",
        ],
    ),
    (
        "aws_route_table",
        &[
            "ec2:CreateRouteTable",
            "ec2:DescribeRouteTables",
            "ec2:DeleteRouteTable",
        ],
    ),
    (
        "aws_route",
        &["ec2:CreateRoute", "ec2:ReplaceRoute", "ec2:DeleteRoute"],
    ),
    (
        "aws_route_table_association",
        &["ec2:AssociateRouteTable", "ec2:DisassociateRouteTable"],
    ),
    (
        "aws_security_group",
        &[
            "ec2:CreateSecurityGroup",
            "ec2:DescribeSecurityGroups",
            "ec2:RevokeSecurityGroupEgress",
            "ec2:DeleteSecurityGroup",
        ],
    ),
    (
        "aws_vpc_security_group_ingress_rule",
        &[
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:DescribeSecurityGroupRules",
            "ec2:RevokeSecurityGroupIngress",
        ],
    ),
    (
        "aws_eks_cluster",
        &[
            "eks:CreateCluster",
            "eks:DescribeCluster",
            "eks:TagResource",
            "eks:DeleteCluster",
            "iam:PassRole",
            "iam:CreateServiceLinkedRole",
        ],
    ),
    (
        "aws_eks_node_group",
        &[
            "eks:CreateNodegroup",
            "eks:DescribeNodegroup",
            "eks:UpdateNodegroupConfig",
            "eks:DeleteNodegroup",
            "iam:PassRole",
        ],
    ),
    (
        "aws_iam_role",
        &[
            "iam:CreateRole",
            "iam:GetRole",
            "iam:TagRole",
            "iam:ListRolePolicies",
            "iam:ListAttachedRolePolicies",
            "iam:ListInstanceProfilesForRole",
            "iam:DeleteRole",
        ],
    ),
    (
        "aws_iam_role_policy",
        &[
            "iam:PutRolePolicy",
            "iam:GetRolePolicy",
            "iam:DeleteRolePolicy",
        ],
    ),
    (
        "aws_iam_role_policy_attachment",
        &[
            "iam:AttachRolePolicy",
            "iam:ListAttachedRolePolicies",
            "iam:DetachRolePolicy",
        ],
    ),
    (
        "aws_iam_openid_connect_provider",
        &[
            "iam:CreateOpenIDConnectProvider",
            "iam:GetOpenIDConnectProvider",
            "iam:TagOpenIDConnectProvider",
            "iam:DeleteOpenIDConnectProvider",
        ],
    ),
    (
        "aws_db_subnet_group",
        &[
            "rds:CreateDBSubnetGroup",
            "rds:DescribeDBSubnetGroups",
            "rds:AddTagsToResource",
            "rds:DeleteDBSubnetGroup",
        ],
    ),
    (
        "aws_db_instance",
        &[
            "rds:CreateDBInstance",
            "rds:DescribeDBInstances",
            "rds:ListTagsForResource",
            "rds:ModifyDBInstance",
            "rds:CreateDBSnapshot",
            "rds:DeleteDBInstance",
            // manage_master_user_password: RDS makes the secret on the caller's behalf.
            "secretsmanager:CreateSecret",
            "secretsmanager:TagResource",
        ],
    ),
    (
        "aws_elasticache_subnet_group",
        &[
            "elasticache:CreateCacheSubnetGroup",
            "elasticache:DescribeCacheSubnetGroups",
            "elasticache:DeleteCacheSubnetGroup",
        ],
    ),
    (
        "aws_elasticache_replication_group",
        &[
            "elasticache:CreateReplicationGroup",
            "elasticache:DescribeReplicationGroups",
            "elasticache:AddTagsToResource",
            "elasticache:ModifyReplicationGroup",
            "elasticache:DeleteReplicationGroup",
        ],
    ),
    (
        "aws_s3_bucket",
        &[
            "s3:CreateBucket",
            "s3:ListBucket",
            "s3:GetBucketTagging",
            "s3:PutBucketTagging",
            "s3:GetBucketPolicy",
            "s3:GetBucketAcl",
            "s3:DeleteBucket",
        ],
    ),
    (
        "aws_s3_bucket_versioning",
        &["s3:PutBucketVersioning", "s3:GetBucketVersioning"],
    ),
    (
        "aws_s3_bucket_lifecycle_configuration",
        &[
            "s3:PutLifecycleConfiguration",
            "s3:GetLifecycleConfiguration",
        ],
    ),
    (
        "aws_s3_bucket_public_access_block",
        &[
            "s3:PutBucketPublicAccessBlock",
            "s3:GetBucketPublicAccessBlock",
        ],
    ),
    (
        "aws_s3_bucket_server_side_encryption_configuration",
        &[
            "s3:PutEncryptionConfiguration",
            "s3:GetEncryptionConfiguration",
        ],
    ),
];

/// What the executor itself does with the assumed session (executors::beta9_secrets): Beta9's
/// encryption key as `beta9/<env_id>/encryption-key`, and the database password RDS keeps.
const EXECUTOR_SESSION: &[&str] = &[
    "secretsmanager:CreateSecret",
    "secretsmanager:GetSecretValue",
    "secretsmanager:DeleteSecret",
    "secretsmanager:TagResource",
];

/// Every resource and data source type of every rendered aws profile.
fn rendered_types() -> BTreeSet<String> {
    let mut types = BTreeSet::new();
    for (_, model) in every_model() {
        if model.provider != Provider::Aws {
            continue;
        }
        let config = terraform_stack::render(target(), &model);
        for block in ["resource", "data"] {
            if let Some(of_type) = config[block].as_object() {
                types.extend(of_type.keys().cloned());
            }
        }
    }
    types
}

/// The actions the policy's Allow statements name (patterns, maybe with `*`).
fn allowed_patterns(policy: &Value) -> Vec<String> {
    let statements = policy["Statement"].as_array().expect("a Statement list");
    let mut patterns = Vec::new();
    for statement in statements {
        if statement["Effect"] != "Allow" {
            continue;
        }
        match &statement["Action"] {
            Value::String(action) => patterns.push(action.clone()),
            Value::Array(actions) => {
                patterns.extend(actions.iter().filter_map(Value::as_str).map(str::to_owned));
            }
            other => panic!("a statement's Action is {other}"),
        }
    }
    patterns
}

/// IAM's action match: case-insensitive, `*` any run of characters, `?` one.
fn matches(pattern: &str, action: &str) -> bool {
    fn go(p: &[u8], a: &[u8]) -> bool {
        match (p.first(), a.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], a) || (!a.is_empty() && go(p, &a[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &a[1..]),
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => go(&p[1..], &a[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), action.as_bytes())
}

/// What is wrong with `policy` for `types`: a type with no entry in [`REQUIRED`], an action no
/// statement allows.
fn uncovered(types: &BTreeSet<String>, policy: &Value) -> Vec<String> {
    let patterns = allowed_patterns(policy);
    let allowed = |action: &str| patterns.iter().any(|p| matches(p, action));
    let mut problems = Vec::new();
    for rtype in types {
        match REQUIRED.iter().find(|(known, _)| known == rtype) {
            None => problems.push(format!(
                "terraform-stack renders {rtype}, which the IAM table does not know: add its \
                 actions to REQUIRED in terraform-stack/tests/iam_policy.rs and allow them in \
                 deploy/iam/customer-role-permissions.json"
            )),
            Some((_, actions)) => problems.extend(
                actions
                    .iter()
                    .filter(|action| !allowed(action))
                    .map(|action| {
                        format!("{rtype} needs {action}, which the policy does not allow")
                    }),
            ),
        }
    }
    problems.extend(
        EXECUTOR_SESSION
            .iter()
            .filter(|action| !allowed(action))
            .map(|action| format!("the executor's session needs {action}")),
    );
    problems
}

fn policy() -> Value {
    serde_json::from_str(POLICY).expect("the customer policy is JSON")
}

#[test]
fn the_customer_policy_allows_every_action_the_rendered_stack_needs() {
    let types = rendered_types();
    assert!(types.contains("aws_eks_cluster"), "{types:?}");
    let problems = uncovered(&types, &policy());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_type_of_a_service_the_policy_does_not_cover_is_reported() {
    let mut types = rendered_types();
    types.insert("aws_sqs_queue".to_owned());
    let problems = uncovered(&types, &policy());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("aws_sqs_queue"), "{problems:?}");

    // A known type whose action the policy lost is reported too.
    let mut policy = policy();
    for statement in policy["Statement"].as_array_mut().unwrap() {
        if let Value::Array(actions) = &mut statement["Action"] {
            actions.retain(|action| action != "rds:CreateDBInstance");
        }
    }
    let problems = uncovered(&rendered_types(), &policy);
    assert_eq!(
        problems,
        vec!["aws_db_instance needs rds:CreateDBInstance, which the policy does not allow"]
    );
}

#[test]
fn the_customer_policy_grants_no_whole_service_and_no_wildcard_action() {
    for pattern in allowed_patterns(&policy()) {
        let (_, action) = pattern.split_once(':').unwrap_or(("", &pattern));
        assert!(
            !action.starts_with('*') && pattern != "*",
            "{pattern} allows a whole service"
        );
    }
}

#[test]
fn the_action_match_is_iams() {
    assert!(matches("ec2:Describe*", "ec2:DescribeVpcs"));
    assert!(matches("EC2:describevpcs", "ec2:DescribeVpcs"));
    assert!(!matches("ec2:Describe*", "ec2:CreateVpc"));
    assert!(!matches("ec2:CreateVpc", "ec2:CreateVpcEndpoint"));
}
