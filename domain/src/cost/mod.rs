//! What an environment costs per month: a documented AWS price table ([`PriceTable`],
//! [`US_EAST_1`]) and the estimate of an [`InfraModel`] under it ([`CostEstimate::for_model`]).
//!
//! Money is integer: unit prices in millionths of a dollar ([`MicroUsd`]), amounts in cents, each
//! line item rounded to the cent once and the total the sum of the items, so what is shown adds
//! up. The estimate is a list-price, on-demand, before-tax figure for what the model asks for;
//! what it leaves out (traffic out of AWS, node volumes, logs, secrets) is said in
//! [`CostEstimate::excluded`].
//!
//! The table holds one region's prices. An environment in another region is estimated with them
//! and says so in its [`Basis`]: no price of another region is invented.

use crate::infra_model::{InfraModel, NatLayout, NodeGroupModel};
use crate::spec::Provider;
use serde::{Deserialize, Serialize};

/// A price in millionths of a US dollar (`MicroUsd(96_000)` is $0.096).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MicroUsd(pub u64);

impl MicroUsd {
    /// As dollars, with at least two decimals and no trailing zeros beyond them: `"0.096"`,
    /// `"0.10"`, `"1.006"`.
    pub fn dollars(self) -> String {
        let whole = self.0 / 1_000_000;
        let fraction = format!("{:06}", self.0 % 1_000_000);
        let kept = fraction.trim_end_matches('0');
        let kept = if kept.len() < 2 { &fraction[..2] } else { kept };
        format!("{whole}.{kept}")
    }
}

/// An amount in cents as dollars: `"1234.56"`.
pub fn dollars(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Where a group of prices was read.
pub mod sources {
    pub const EKS: &str = "https://aws.amazon.com/eks/pricing/";
    pub const EC2: &str = "https://aws.amazon.com/ec2/pricing/on-demand/";
    pub const VPC: &str = "https://aws.amazon.com/vpc/pricing/";
    pub const RDS: &str = "https://aws.amazon.com/rds/postgresql/pricing/";
    pub const ELASTICACHE: &str = "https://aws.amazon.com/elasticache/pricing/";
    pub const S3: &str = "https://aws.amazon.com/s3/pricing/";
}

/// One region's on-demand list prices for everything an [`InfraModel`] can ask for.
#[derive(Clone, Copy, Debug)]
pub struct PriceTable {
    /// The region the prices are for.
    pub region: &'static str,
    /// When they were read from the sources (`YYYY-MM-DD`).
    pub as_of: &'static str,
    /// The hours AWS bills a month as (its own pricing pages use 730).
    pub hours_per_month: u64,
    /// An EKS cluster under standard Kubernetes version support, per hour.
    pub eks_cluster_hour: MicroUsd,
    /// EC2 Linux instances, per hour.
    pub ec2_hour: &'static [(&'static str, MicroUsd)],
    /// A NAT gateway, per hour.
    pub nat_gateway_hour: MicroUsd,
    /// Data processed by a NAT gateway, per GB.
    pub nat_data_gb: MicroUsd,
    /// A public IPv4 address (each NAT gateway's Elastic IP), per hour.
    pub public_ipv4_hour: MicroUsd,
    /// RDS for PostgreSQL Single-AZ instances, per hour (Multi-AZ with one standby: twice).
    pub rds_postgres_hour: &'static [(&'static str, MicroUsd)],
    /// RDS gp3 storage Single-AZ, per GB-month (Multi-AZ: twice).
    pub rds_gp3_gb_month: MicroUsd,
    /// ElastiCache (Redis OSS) on-demand nodes, per hour.
    pub elasticache_hour: &'static [(&'static str, MicroUsd)],
    /// S3 Standard storage (first 50 TB), per GB-month.
    pub s3_standard_gb_month: MicroUsd,
}

/// AWS's published on-demand prices in US East (N. Virginia), USD, before tax, as listed on the
/// pages in [`sources`] on `as_of`. They were transcribed, not fetched by a tool (the machine
/// that wrote them had no access to the pages); g5.xlarge ($1.006/h), db.t4g.medium ($0.065/h)
/// and RDS gp3 ($0.115/GB-month) were cross-checked against third-party pages quoting the same
/// us-east-1 prices in mid-2026. Check them all against the sources when updating, and update
/// them together, with `as_of`. Every instance type `infra_model` can produce has a price here
/// (a test walks every profile, size and GPU choice).
pub const US_EAST_1: PriceTable = PriceTable {
    region: "us-east-1",
    as_of: "2025-06-01",
    hours_per_month: 730,
    eks_cluster_hour: MicroUsd(100_000),
    ec2_hour: &[
        ("m6i.large", MicroUsd(96_000)),
        ("m6i.xlarge", MicroUsd(192_000)),
        ("m6i.2xlarge", MicroUsd(384_000)),
        ("g5.xlarge", MicroUsd(1_006_000)),
        ("g5.2xlarge", MicroUsd(1_212_000)),
        ("g5.12xlarge", MicroUsd(5_672_000)),
    ],
    nat_gateway_hour: MicroUsd(45_000),
    nat_data_gb: MicroUsd(45_000),
    public_ipv4_hour: MicroUsd(5_000),
    rds_postgres_hour: &[
        ("db.t4g.medium", MicroUsd(65_000)),
        ("db.r6g.large", MicroUsd(225_000)),
        ("db.r6g.2xlarge", MicroUsd(899_000)),
    ],
    rds_gp3_gb_month: MicroUsd(115_000),
    elasticache_hour: &[
        ("cache.t4g.small", MicroUsd(32_000)),
        ("cache.r6g.large", MicroUsd(206_000)),
        ("cache.r6g.xlarge", MicroUsd(411_000)),
    ],
    s3_standard_gb_month: MicroUsd(23_000),
};

/// Data processed by the NAT gateways each month, assumed (image pulls and other traffic out of
/// the private subnets); the real figure depends on the workloads.
pub const ASSUMED_NAT_DATA_GB_PER_MONTH: u64 = 200;
/// Data kept in the environment's bucket, assumed.
pub const ASSUMED_S3_STORED_GB: u64 = 100;

/// What the estimate leaves out.
pub const EXCLUDED: &[&str] = &[
    "data transfer out of AWS and between availability zones",
    "EBS volumes of the nodes",
    "RDS backups beyond the free allowance, snapshots",
    "Secrets Manager, KMS, CloudWatch and S3 request charges",
    "taxes, discounts, savings plans and reserved capacity",
];

fn price(list: &[(&'static str, MicroUsd)], name: &str) -> Option<MicroUsd> {
    list.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

/// Which prices an estimate used, and for what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Basis {
    /// The region whose prices were used.
    pub prices_region: String,
    /// The environment's own region (`sandbox-local` for the sandbox).
    pub region: String,
    /// When the prices were read.
    pub as_of: String,
    /// One sentence on how to read the figures.
    pub note: String,
}

/// The assumed quantities behind usage-priced items.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Assumptions {
    pub hours_per_month: u64,
    pub nat_data_gb_per_month: u64,
    pub s3_stored_gb: u64,
}

/// One priced part of the model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LineItem {
    /// What it is, e.g. `"EKS nodes (gpu): g5.xlarge"`.
    pub item: String,
    /// How many units are billed.
    pub quantity: u64,
    /// What one unit is, e.g. `"node-hour"`, `"GB-month"`.
    pub unit: String,
    /// The price of one unit in dollars (`"0.096"`); `None` if the table has none.
    pub unit_price: Option<String>,
    /// Units billed per month per quantity (730 for hourly items, 1 otherwise).
    pub per_month: u64,
    /// The item's monthly amount in cents; 0 when unpriced.
    pub monthly_cents: u64,
    /// The same in dollars (`"70.08"`).
    pub monthly: String,
    /// Where the price comes from.
    pub source: String,
}

/// A monthly cost estimate of an [`InfraModel`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(description = "A monthly cost estimate of an environment's infrastructure.")]
pub struct CostEstimate {
    /// Always `"USD"`.
    pub currency: String,
    /// The sum of the items' cents.
    pub monthly_total_cents: u64,
    /// The same in dollars.
    pub monthly_total: String,
    /// The total with every node group at its maximum size (what autoscaling may reach).
    pub monthly_at_max_scale_cents: u64,
    pub monthly_at_max_scale: String,
    pub basis: Basis,
    pub assumptions: Assumptions,
    /// Node groups are priced at their desired size.
    pub items: Vec<LineItem>,
    /// What the table has no price for (always empty for models this build produces).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unpriced: Vec<String>,
    /// What the estimate does not cover.
    pub excluded: Vec<String>,
}

/// Collects line items.
struct Items<'t> {
    table: &'t PriceTable,
    items: Vec<LineItem>,
    unpriced: Vec<String>,
}

impl Items<'_> {
    /// Adds `quantity` units at `price`, each billed `per_month` times a month.
    fn add(
        &mut self,
        item: String,
        quantity: u64,
        unit: &str,
        price: Option<MicroUsd>,
        per_month: u64,
        source: &str,
    ) {
        let micros = price.map_or(0, |p| quantity * per_month * p.0);
        // To the nearest cent, halves up.
        let monthly_cents = (micros + 5_000) / 10_000;
        if price.is_none() {
            self.unpriced.push(item.clone());
        }
        self.items.push(LineItem {
            item,
            quantity,
            unit: unit.to_owned(),
            unit_price: price.map(MicroUsd::dollars),
            per_month,
            monthly_cents,
            monthly: dollars(monthly_cents),
            source: source.to_owned(),
        });
    }

    fn hourly(
        &mut self,
        item: String,
        quantity: u64,
        unit: &str,
        price: Option<MicroUsd>,
        source: &str,
    ) {
        let hours = self.table.hours_per_month;
        self.add(item, quantity, unit, price, hours, source);
    }

    fn nodes(&mut self, pool: &str, nodes: &NodeGroupModel, size: impl Fn(&NodeGroupModel) -> u16) {
        let price = price(self.table.ec2_hour, &nodes.instance_type);
        self.hourly(
            format!("EKS nodes ({pool}): {}", nodes.instance_type),
            u64::from(size(nodes)),
            "node-hour",
            price,
            sources::EC2,
        );
    }

    fn total(&self) -> u64 {
        self.items.iter().map(|i| i.monthly_cents).sum()
    }
}

impl CostEstimate {
    /// The monthly estimate of `model` with [`US_EAST_1`] prices.
    pub fn for_model(model: &InfraModel) -> Self {
        Self::with_table(model, &US_EAST_1)
    }

    /// The monthly estimate of `model` with `table`'s prices.
    pub fn with_table(model: &InfraModel, table: &PriceTable) -> Self {
        let at_max = items(model, table, |n| n.max_nodes);
        let items = items(model, table, |n| n.desired_nodes);
        let total = items.total();
        let max_total = at_max.total();
        CostEstimate {
            currency: "USD".to_owned(),
            monthly_total_cents: total,
            monthly_total: dollars(total),
            monthly_at_max_scale_cents: max_total,
            monthly_at_max_scale: dollars(max_total),
            basis: basis(model, table),
            assumptions: Assumptions {
                hours_per_month: table.hours_per_month,
                nat_data_gb_per_month: ASSUMED_NAT_DATA_GB_PER_MONTH,
                s3_stored_gb: ASSUMED_S3_STORED_GB,
            },
            items: items.items,
            unpriced: items.unpriced,
            excluded: EXCLUDED.iter().map(|e| (*e).to_owned()).collect(),
        }
    }
}

fn basis(model: &InfraModel, table: &PriceTable) -> Basis {
    let prices = format!(
        "AWS on-demand list prices in {} as of {}",
        table.region, table.as_of
    );
    let note = match model.provider {
        Provider::Sandbox => format!(
            "the sandbox bills nothing: this is what the same resources would cost on AWS, at {prices}"
        ),
        Provider::Aws if model.region == table.region => prices,
        Provider::Aws => format!(
            "{prices}; the table has no {} prices, so the figures are {}'s, not {}'s",
            model.region, table.region, model.region
        ),
    };
    Basis {
        prices_region: table.region.to_owned(),
        region: model.region.clone(),
        as_of: table.as_of.to_owned(),
        note,
    }
}

/// The line items of `model`, node groups at `size` (desired or max).
fn items<'t>(
    model: &InfraModel,
    table: &'t PriceTable,
    size: impl Fn(&NodeGroupModel) -> u16 + Copy,
) -> Items<'t> {
    let mut items = Items {
        table,
        items: Vec::new(),
        unpriced: Vec::new(),
    };
    items.hourly(
        "EKS control plane".to_owned(),
        1,
        "cluster-hour",
        Some(table.eks_cluster_hour),
        sources::EKS,
    );
    items.nodes("cpu", &model.cluster.cpu_nodes, size);
    if let Some(gpu) = &model.cluster.gpu_nodes {
        items.nodes("gpu", gpu, size);
    }

    let nat_gateways = match model.network.nat {
        NatLayout::Single => 1,
        NatLayout::PerAz => u64::from(model.network.availability_zones),
    };
    items.hourly(
        "NAT gateways".to_owned(),
        nat_gateways,
        "gateway-hour",
        Some(table.nat_gateway_hour),
        sources::VPC,
    );
    items.hourly(
        "NAT gateways' public IPv4 addresses".to_owned(),
        nat_gateways,
        "address-hour",
        Some(table.public_ipv4_hour),
        sources::VPC,
    );
    items.add(
        "NAT data processed (assumed)".to_owned(),
        ASSUMED_NAT_DATA_GB_PER_MONTH,
        "GB",
        Some(table.nat_data_gb),
        1,
        sources::VPC,
    );

    let pg = &model.postgres;
    // Multi-AZ keeps a standby of the same class and storage: twice the price.
    let copies = if pg.multi_az { 2 } else { 1 };
    let az = if pg.multi_az { "Multi-AZ" } else { "Single-AZ" };
    items.hourly(
        format!("RDS PostgreSQL {az}: {}", pg.instance_class),
        copies,
        "instance-hour",
        price(table.rds_postgres_hour, &pg.instance_class),
        sources::RDS,
    );
    items.add(
        format!("RDS gp3 storage {az}"),
        copies * u64::from(pg.allocated_storage_gb),
        "GB-month",
        Some(table.rds_gp3_gb_month),
        1,
        sources::RDS,
    );

    let redis = &model.redis;
    items.hourly(
        format!("ElastiCache nodes: {}", redis.node_type),
        u64::from(redis.num_cache_nodes),
        "node-hour",
        price(table.elasticache_hour, &redis.node_type),
        sources::ELASTICACHE,
    );
    items.add(
        "S3 Standard storage (assumed)".to_owned(),
        ASSUMED_S3_STORED_GB,
        "GB-month",
        Some(table.s3_standard_gb_month),
        1,
        sources::S3,
    );
    items
}

#[cfg(test)]
mod tests;
