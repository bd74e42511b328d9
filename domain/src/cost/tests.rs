//! The cost model: every model this build produces is priced, multi-AZ doubles RDS, GPU nodes
//! cost what the table says, and no estimate of a cluster is $0.

use super::*;
use crate::config::{self, Format};
use crate::infra_model::InfraModel;

const CONTRACT_EXAMPLE: &str = r#"
name: production
cloud:
  provider: aws
  region: us-east-1
  account_id: "123456789012"
  role_arn: "arn:aws:iam::123456789012:role/Beta9Provisioner"
cluster:
  profile: medium
data:
  postgres: {size: medium, multi_az: true}
  redis: {size: medium, ha: true}
beta9:
  domain: api.beta9.example.com
  workers: {gpu_enabled: true}
"#;

fn model(yaml: &str) -> InfraModel {
    InfraModel::for_spec(&config::parse(yaml, Format::Yaml).expect("a valid document"))
}

/// The model of an aws environment in `region` with these choices.
/// The small profile with small, single-node data services in `region`, with or without GPUs.
fn small_model(region: &str, gpu: bool) -> InfraModel {
    aws_model(region, "small", "small", false, "small", false, gpu)
}

fn aws_model(
    region: &str,
    profile: &str,
    pg: &str,
    multi_az: bool,
    redis: &str,
    ha: bool,
    gpu: bool,
) -> InfraModel {
    model(&format!(
        "name: combo\ncloud:\n  provider: aws\n  region: {region}\n  account_id: \"123456789012\"\n  \
         role_arn: arn:aws:iam::123456789012:role/Beta9Provisioner\n\
         cluster:\n  profile: {profile}\n\
         data:\n  postgres: {{size: {pg}, multi_az: {multi_az}}}\n  redis: {{size: {redis}, ha: {ha}}}\n\
         beta9:\n  domain: api.example.com\n  workers: {{gpu_enabled: {gpu}}}\n"
    ))
}

/// Every model `infra_model` can produce: each profile, size, HA and GPU choice.
fn every_model() -> Vec<InfraModel> {
    let sizes = ["small", "medium", "large"];
    let mut models = Vec::new();
    for profile in sizes {
        for pg in sizes {
            for redis in sizes {
                for flags in 0..8u8 {
                    let (multi_az, ha, gpu) = (flags & 1 != 0, flags & 2 != 0, flags & 4 != 0);
                    models.push(aws_model(
                        "us-east-1",
                        profile,
                        pg,
                        multi_az,
                        redis,
                        ha,
                        gpu,
                    ));
                }
            }
        }
    }
    models
}

fn item<'e>(estimate: &'e CostEstimate, prefix: &str) -> &'e LineItem {
    estimate
        .items
        .iter()
        .find(|i| i.item.starts_with(prefix))
        .unwrap_or_else(|| panic!("no item {prefix:?} in {:#?}", estimate.items))
}

#[test]
fn every_model_this_build_produces_is_fully_priced_and_never_free() {
    let models = every_model();
    assert_eq!(models.len(), 3 * 3 * 3 * 8);
    for model in &models {
        let estimate = CostEstimate::for_model(model);
        assert!(
            estimate.unpriced.is_empty(),
            "{:?} in {model:#?}",
            estimate.unpriced
        );
        assert!(estimate.items.iter().all(|i| i.unit_price.is_some()));
        assert!(estimate.monthly_total_cents > 0, "{model:#?}");
        assert_eq!(
            estimate.monthly_total_cents,
            estimate.items.iter().map(|i| i.monthly_cents).sum::<u64>()
        );
        assert!(estimate.monthly_at_max_scale_cents >= estimate.monthly_total_cents);
    }
}

#[test]
fn the_contract_example_adds_up_to_the_hand_computed_total() {
    let estimate = CostEstimate::for_model(&model(CONTRACT_EXAMPLE));
    let cents: Vec<(&str, u64)> = estimate
        .items
        .iter()
        .map(|i| (i.item.as_str(), i.monthly_cents))
        .collect();
    assert_eq!(
        cents,
        [
            ("EKS control plane", 7_300),                      // 0.10 × 730
            ("EKS nodes (cpu): m6i.xlarge", 42_048),           // 3 × 0.192 × 730
            ("EKS nodes (gpu): g5.2xlarge", 88_476),           // 1 × 1.212 × 730
            ("NAT gateways", 9_855),                           // 3 × 0.045 × 730
            ("NAT gateways' public IPv4 addresses", 1_095),    // 3 × 0.005 × 730
            ("NAT data processed (assumed)", 900),             // 200 GB × 0.045
            ("RDS PostgreSQL Multi-AZ: db.r6g.large", 32_850), // 2 × 0.225 × 730
            ("RDS gp3 storage Multi-AZ", 2_300),               // 2 × 100 GB × 0.115
            ("ElastiCache nodes: cache.r6g.large", 30_076),    // 2 × 0.206 × 730
            ("S3 Standard storage (assumed)", 230),            // 100 GB × 0.023
        ]
    );
    assert_eq!(estimate.monthly_total_cents, 215_130);
    assert_eq!(estimate.monthly_total, "2151.30");
    assert_eq!(estimate.currency, "USD");
    assert_eq!(estimate.basis.prices_region, "us-east-1");
    assert_eq!(estimate.basis.as_of, US_EAST_1.as_of);
}

#[test]
fn multi_az_doubles_the_database_instance_and_its_storage() {
    for pg in ["small", "medium", "large"] {
        let single = CostEstimate::for_model(&aws_model(
            "us-east-1",
            "small",
            pg,
            false,
            "small",
            false,
            false,
        ));
        let multi = CostEstimate::for_model(&aws_model(
            "us-east-1",
            "small",
            pg,
            true,
            "small",
            false,
            false,
        ));
        let (one, two) = (
            item(&single, "RDS PostgreSQL"),
            item(&multi, "RDS PostgreSQL"),
        );
        assert_eq!(two.monthly_cents, 2 * one.monthly_cents, "{pg}");
        assert!(two.item.contains("Multi-AZ") && one.item.contains("Single-AZ"));
        let (one, two) = (item(&single, "RDS gp3"), item(&multi, "RDS gp3"));
        assert_eq!(two.monthly_cents, 2 * one.monthly_cents, "{pg}");
        assert_eq!(
            multi.monthly_total_cents - single.monthly_total_cents,
            item(&single, "RDS PostgreSQL").monthly_cents + item(&single, "RDS gp3").monthly_cents
        );
    }
}

#[test]
fn gpu_nodes_are_priced_at_their_instance_type() {
    let without = CostEstimate::for_model(&aws_model(
        "us-east-1",
        "large",
        "small",
        false,
        "small",
        false,
        false,
    ));
    let with = CostEstimate::for_model(&aws_model(
        "us-east-1",
        "large",
        "small",
        false,
        "small",
        false,
        true,
    ));
    assert!(without.items.iter().all(|i| !i.item.contains("(gpu)")));
    let gpu = item(&with, "EKS nodes (gpu)");
    assert_eq!(gpu.item, "EKS nodes (gpu): g5.12xlarge");
    assert_eq!(gpu.quantity, 2);
    assert_eq!(gpu.unit_price.as_deref(), Some("5.672"));
    assert_eq!(gpu.monthly_cents, 828_112); // 2 × 5.672 × 730
    assert_eq!(
        with.monthly_total_cents - without.monthly_total_cents,
        gpu.monthly_cents
    );

    // A small profile's GPU pool starts empty: nothing now, its maximum under autoscaling.
    let small = CostEstimate::for_model(&small_model("us-east-1", true));
    assert_eq!(item(&small, "EKS nodes (gpu)").monthly_cents, 0);
    let small_without = CostEstimate::for_model(&small_model("us-east-1", false));
    assert_eq!(
        small.monthly_at_max_scale_cents - small_without.monthly_at_max_scale_cents,
        146_876 // 2 × 1.006 × 730
    );
}

#[test]
fn another_region_is_estimated_with_the_tables_prices_and_says_so() {
    let here = CostEstimate::for_model(&small_model("us-east-1", false));
    let there = CostEstimate::for_model(&small_model("eu-west-1", false));
    assert_eq!(there.basis.region, "eu-west-1");
    assert_eq!(there.basis.prices_region, "us-east-1");
    assert!(
        there.basis.note.contains("no eu-west-1 prices"),
        "{}",
        there.basis.note
    );
    assert!(!here.basis.note.contains("no "), "{}", here.basis.note);
    assert_eq!(there.monthly_total_cents, here.monthly_total_cents);

    let sandbox = CostEstimate::for_model(&model("name: demo\ncloud:\n  provider: sandbox\n"));
    assert_eq!(sandbox.basis.region, crate::config::SANDBOX_REGION);
    assert!(
        sandbox.basis.note.contains("sandbox bills nothing"),
        "{}",
        sandbox.basis.note
    );
    assert!(sandbox.monthly_total_cents > 0);
}

#[test]
fn a_type_without_a_price_is_listed_as_unpriced_not_invented() {
    let table = PriceTable {
        ec2_hour: &[("m6i.large", MicroUsd(96_000))],
        ..US_EAST_1
    };
    let model = small_model("us-east-1", true);
    let estimate = CostEstimate::with_table(&model, &table);
    assert_eq!(estimate.unpriced, ["EKS nodes (gpu): g5.xlarge"]);
    let gpu = item(&estimate, "EKS nodes (gpu)");
    assert_eq!((gpu.unit_price.as_deref(), gpu.monthly_cents), (None, 0));
}

#[test]
fn amounts_print_as_dollars_and_cents() {
    assert_eq!(MicroUsd(100_000).dollars(), "0.10");
    assert_eq!(MicroUsd(96_000).dollars(), "0.096");
    assert_eq!(MicroUsd(1_006_000).dollars(), "1.006");
    assert_eq!(MicroUsd(5_000).dollars(), "0.005");
    assert_eq!(MicroUsd(2_000_000).dollars(), "2.00");
    assert_eq!(dollars(0), "0.00");
    assert_eq!(dollars(5), "0.05");
    assert_eq!(dollars(215_130), "2151.30");
}

#[test]
fn an_estimate_round_trips_through_json() {
    let estimate = CostEstimate::for_model(&model(CONTRACT_EXAMPLE));
    let json = serde_json::to_value(&estimate).unwrap();
    assert_eq!(json["monthly_total"], "2151.30");
    assert!(json.get("unpriced").is_none(), "empty lists are left out");
    let back: CostEstimate = serde_json::from_value(json).unwrap();
    assert_eq!(back, estimate);
}
