//! `provisioner plan -f FILE`: a preview (`POST /v1/plans`) printed for people — whether it
//! could be created here, the model's main choices, the resources by type and the cost.

use super::output::{self, Format};
use crate::settings::{ClientArgs, Secrets};
use clap::Args;
use serde_json::Value;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The MetaConfig file (YAML, or JSON when it ends in `.json`).
    #[arg(short, long)]
    file: PathBuf,
    /// The same as `-o json` (kept for scripts written before `-o`).
    #[arg(long, hide = true)]
    json: bool,
}

pub async fn run(args: PlanArgs, secrets: Secrets) -> anyhow::Result<i32> {
    let format = if args.json {
        Format::Json
    } else {
        args.client.output
    };
    let client = super::verbs::client(args.client, &secrets)?;
    let (document, content_type) = super::verbs::read_document(&args.file)?;
    let plan = client.plan(document, content_type).await?;
    output::emit(format, &plan, text)?;
    Ok(0)
}

fn str_of(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

fn nodes(pool: &str, group: &Value) -> String {
    format!(
        "{pool} nodes {} × {} ({}..{})",
        str_of(&group["instance_type"]),
        group["desired_nodes"],
        group["min_nodes"],
        group["max_nodes"]
    )
}

/// The summary of a plan (the JSON of `POST /v1/plans`).
pub fn text(plan: &Value) -> String {
    let mut out = String::new();
    let creatable = if plan["creatable"] == true {
        "yes"
    } else {
        "no"
    };
    let _ = writeln!(
        out,
        "Plan for {} ({}, {}); can be created here: {creatable}",
        str_of(&plan["name"]),
        str_of(&plan["provider"]),
        str_of(&plan["region"]),
    );
    for refusal in plan["refusals"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {}: {}",
            str_of(&refusal["path"]),
            str_of(&refusal["message"])
        );
    }

    let model = &plan["infra_model"];
    let network = &model["network"];
    let cluster = &model["cluster"];
    let postgres = &model["postgres"];
    let redis = &model["redis"];
    let _ = writeln!(out, "\nInfrastructure");
    let _ = writeln!(
        out,
        "  network     {} availability zones, NAT {}",
        network["availability_zones"],
        str_of(&network["nat"]),
    );
    let mut pools = nodes("cpu", &cluster["cpu_nodes"]);
    if cluster["gpu_nodes"].is_object() {
        pools = format!("{pools}; {}", nodes("gpu", &cluster["gpu_nodes"]));
    }
    let _ = writeln!(
        out,
        "  kubernetes  {} — {pools}",
        str_of(&cluster["kubernetes_version"])
    );
    let _ = writeln!(
        out,
        "  postgres    {} {}, {} GB, {}",
        str_of(&postgres["instance_class"]),
        str_of(&postgres["engine_version"]),
        postgres["allocated_storage_gb"],
        if postgres["multi_az"] == true {
            "Multi-AZ"
        } else {
            "Single-AZ"
        },
    );
    let _ = writeln!(
        out,
        "  redis       {} × {}{}",
        str_of(&redis["node_type"]),
        redis["num_cache_nodes"],
        if redis["automatic_failover"] == true {
            ", automatic failover"
        } else {
            ""
        },
    );

    let resources = &plan["resources"];
    let _ = writeln!(out, "\nResources ({})", resources["total"]);
    for (rtype, count) in resources["by_type"].as_object().into_iter().flatten() {
        let _ = writeln!(out, "  {rtype:<52} {count:>3}");
    }

    let cost = &plan["cost"];
    let _ = writeln!(
        out,
        "\nMonthly cost estimate ({})",
        str_of(&cost["currency"])
    );
    for item in cost["items"].as_array().into_iter().flatten() {
        let price = item["unit_price"].as_str().unwrap_or("no price");
        let hours = match item["per_month"].as_u64() {
            Some(1) | None => String::new(),
            Some(n) => format!(" × {n} h"),
        };
        let rate = format!(
            "{} × {price}/{}{hours}",
            item["quantity"],
            str_of(&item["unit"])
        );
        let _ = writeln!(
            out,
            "  {:<44} {rate:<36} {:>10}",
            str_of(&item["item"]),
            str_of(&item["monthly"]),
        );
    }
    for (label, amount) in [
        ("total", &cost["monthly_total"]),
        (
            "with every node group at its maximum",
            &cost["monthly_at_max_scale"],
        ),
    ] {
        let _ = writeln!(out, "  {label:<81} {:>10}", str_of(amount));
    }
    let basis = &cost["basis"];
    let assumptions = &cost["assumptions"];
    let _ = writeln!(out, "  Basis: {}.", str_of(&basis["note"]));
    let _ = writeln!(
        out,
        "  Assumed: {} GB/month through NAT, {} GB in S3. Not included: {}.",
        assumptions["nat_data_gb_per_month"],
        assumptions["s3_stored_gb"],
        cost["excluded"]
            .as_array()
            .into_iter()
            .flatten()
            .map(str_of)
            .collect::<Vec<_>>()
            .join("; "),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::config::{self, Format};

    #[test]
    fn the_summary_shows_refusals_choices_resources_and_cost() {
        let spec = config::parse(
            "name: production\ncloud:\n  provider: sandbox\ncluster:\n  profile: medium\n\
             data:\n  postgres: {size: medium, multi_az: true}\nbeta9:\n  workers: {gpu_enabled: true}\n",
            Format::Yaml,
        )
        .unwrap();
        let refusal = domain::config::FieldError {
            path: "cloud.provider".into(),
            message: "provider aws is not enabled".into(),
        };
        let plan =
            serde_json::to_value(command_api::plans::Plan::new(&spec, Some(refusal))).unwrap();
        let text = text(&plan);
        for expected in [
            "Plan for production (sandbox, sandbox-local); can be created here: no",
            "cloud.provider: provider aws is not enabled",
            "3 availability zones, NAT per_az",
            "cpu nodes m6i.xlarge × 3 (2..6); gpu nodes g5.2xlarge × 1 (0..4)",
            "db.r6g.large 16.4, 100 GB, Multi-AZ",
            "aws_eks_node_group",
            "EKS nodes (gpu): g5.2xlarge",
            "1.212/node-hour × 730 h",
            "the sandbox bills nothing",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        let total = plan["cost"]["monthly_total"].as_str().unwrap();
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with("total") && l.ends_with(total)),
            "{text}"
        );
    }
}
