//! Per-tenant policy: how many active environments a tenant may have, and with which providers
//! and in which regions it may request them.
//!
//! The quota is enforced where the name is, in the event's own transaction (the `events`
//! trigger of migration 0008 counts the tenant's active names after taking a per-tenant lock), so
//! concurrent creates cannot overshoot it; the trigger reads the limits from `tenant_quotas`,
//! which [`TenantPolicy::publish`] writes from the settings when the API starts (the row of
//! tenant `*` is the default). Regions are checked here, before anything is recorded.

use domain::config::FieldError;
use domain::spec::{EnvironmentSpec, Provider};
use domain::tenant::TenantId;
use sqlx::PgPool;
use std::collections::BTreeMap;

/// The default quota of active environments per tenant.
pub const DEFAULT_MAX_ENVIRONMENTS_PER_TENANT: u32 = 25;

/// The tenants' limits, from the settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantPolicy {
    /// `PROVISIONER_MAX_ENVIRONMENTS_PER_TENANT`: every tenant's quota without an override.
    pub max_environments: u32,
    /// `PROVISIONER_TENANT_QUOTAS`: per-tenant overrides.
    pub quotas: BTreeMap<TenantId, u32>,
    /// `PROVISIONER_ALLOWED_REGIONS`: the regions environments may be requested in; empty
    /// allows every region the document's rules accept.
    pub allowed_regions: Vec<String>,
    /// `PROVISIONER_TENANT_REGIONS`: a tenant's own allowed regions, in place of the above.
    pub tenant_regions: BTreeMap<TenantId, Vec<String>>,
    /// `PROVISIONER_TENANT_PROVIDERS`: the providers a tenant may use, of those the deployment
    /// enables (`PROVISIONER_PROVIDERS`); a tenant not named may use every enabled one.
    pub tenant_providers: BTreeMap<TenantId, Vec<Provider>>,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        Self {
            max_environments: DEFAULT_MAX_ENVIRONMENTS_PER_TENANT,
            quotas: BTreeMap::new(),
            allowed_regions: Vec::new(),
            tenant_regions: BTreeMap::new(),
            tenant_providers: BTreeMap::new(),
        }
    }
}

impl TenantPolicy {
    /// The quota of `tenant`.
    pub fn quota(&self, tenant: &TenantId) -> u32 {
        self.quotas
            .get(tenant)
            .copied()
            .unwrap_or(self.max_environments)
    }

    /// Refuses a spec `tenant` may not request: a provider outside the tenant's, or a region
    /// outside the tenant's (else the deployment's) allowed ones, naming the field, the allowed
    /// values and the setting. `None` (a preview by an admin) checks the deployment's regions.
    pub fn check(
        &self,
        spec: &EnvironmentSpec,
        tenant: Option<&TenantId>,
    ) -> Result<(), FieldError> {
        let provider = spec.cloud.provider();
        if let Some((tenant, providers)) =
            tenant.and_then(|t| self.tenant_providers.get(t).map(|p| (t, p)))
            && !providers.contains(&provider)
        {
            let allowed: Vec<&str> = providers.iter().map(|p| p.as_str()).collect();
            return Err(FieldError {
                path: "cloud.provider".into(),
                message: format!(
                    "provider {} is not allowed for tenant {tenant} (allowed: {}; see \
                     PROVISIONER_TENANT_PROVIDERS)",
                    provider.as_str(),
                    allowed.join(", ")
                ),
            });
        }
        let (allowed, setting) = match tenant.and_then(|t| self.tenant_regions.get(t)) {
            Some(own) => (own, "PROVISIONER_TENANT_REGIONS"),
            None => (&self.allowed_regions, "PROVISIONER_ALLOWED_REGIONS"),
        };
        let region = spec.cloud.region().as_str();
        if allowed.is_empty() || allowed.iter().any(|r| r == region) {
            return Ok(());
        }
        Err(FieldError {
            path: "cloud.region".into(),
            message: format!(
                "region {region} is not allowed here (allowed: {}; see {setting})",
                allowed.join(", ")
            ),
        })
    }

    /// Writes the quotas where the `events` trigger reads them: the whole table, replaced in
    /// one transaction (the default as tenant `*`). Replicas starting together take turns (a
    /// lock for the transaction), so none trips over another's rows.
    pub async fn publish(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "SELECT pg_advisory_xact_lock(hashtextextended('provisioner-tenant-quotas', 0))",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM tenant_quotas")
            .execute(&mut *tx)
            .await?;
        let rows = std::iter::once(("*", self.max_environments)).chain(
            self.quotas
                .iter()
                .map(|(tenant, quota)| (tenant.as_str(), *quota)),
        );
        for (tenant, quota) in rows {
            sqlx::query("INSERT INTO tenant_quotas (tenant, max_environments) VALUES ($1, $2)")
                .bind(tenant)
                .bind(i32::try_from(quota).unwrap_or(i32::MAX))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }
}

/// Parses a per-tenant list setting: `tenant=a|b` pairs separated by commas
/// (`acme=us-east-1|eu-west-1,globex=eu-west-1`), each value checked by `value`.
pub fn parse_tenant_lists<T>(
    text: &str,
    value: impl Fn(&str) -> Result<T, String>,
) -> Result<BTreeMap<TenantId, Vec<T>>, String> {
    let mut lists = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (tenant, values) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not tenant=value|value"))?;
        let tenant = TenantId::parse(tenant.trim()).map_err(|error| error.to_string())?;
        let values = values
            .split('|')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(&value)
            .collect::<Result<Vec<T>, String>>()?;
        if values.is_empty() {
            return Err(format!("tenant {tenant} has an empty list"));
        }
        if lists.insert(tenant.clone(), values).is_some() {
            return Err(format!("tenant {tenant} is given twice"));
        }
    }
    Ok(lists)
}

/// Parses `PROVISIONER_TENANT_QUOTAS`: `tenant=count` pairs separated by commas
/// (`acme=50,globex=5`); empty for none.
pub fn parse_quotas(text: &str) -> Result<BTreeMap<TenantId, u32>, String> {
    let mut quotas = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (tenant, count) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not tenant=count"))?;
        let tenant = TenantId::parse(tenant.trim()).map_err(|error| error.to_string())?;
        let count = count
            .trim()
            .parse::<u32>()
            .map_err(|_| format!("the quota of {tenant} must be a whole number, not {count:?}"))?;
        if quotas.insert(tenant.clone(), count).is_some() {
            return Err(format!("tenant {tenant} is given twice"));
        }
    }
    Ok(quotas)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(region: &str) -> EnvironmentSpec {
        domain::config::parse(
            &format!("name: demo\ncloud:\n  provider: sandbox\n  region: {region}\n"),
            domain::config::Format::Yaml,
        )
        .unwrap()
    }

    #[test]
    fn quotas_parse_from_tenant_count_pairs() {
        let quotas = parse_quotas(" acme=50, globex=0 ,").unwrap();
        assert_eq!(quotas.len(), 2);
        assert_eq!(quotas[&TenantId::parse("acme").unwrap()], 50);
        assert!(parse_quotas("").unwrap().is_empty());
        for bad in ["acme", "acme=x", "Acme=1", "acme=1,acme=2", "acme=-1"] {
            assert!(parse_quotas(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_tenant_without_an_override_has_the_default_quota() {
        let policy = TenantPolicy {
            quotas: parse_quotas("acme=3").unwrap(),
            ..TenantPolicy::default()
        };
        assert_eq!(policy.quota(&TenantId::parse("acme").unwrap()), 3);
        assert_eq!(
            policy.quota(&TenantId::default()),
            DEFAULT_MAX_ENVIRONMENTS_PER_TENANT
        );
    }

    #[test]
    fn regions_outside_the_allowed_list_are_refused_naming_the_list() {
        let policy = TenantPolicy {
            allowed_regions: vec!["us-east-1".into(), "eu-west-1".into()],
            ..TenantPolicy::default()
        };
        assert!(policy.check(&spec("us-east-1"), None).is_ok());
        let refused = policy.check(&spec("us-west-2"), None).unwrap_err();
        assert_eq!(refused.path, "cloud.region");
        assert!(
            refused.message.contains("allowed: us-east-1, eu-west-1"),
            "{}",
            refused.message
        );
        assert!(
            TenantPolicy::default()
                .check(&spec("us-west-2"), None)
                .is_ok()
        );
    }

    #[test]
    fn a_tenants_own_providers_and_regions_take_the_place_of_the_deployments() {
        let acme = TenantId::parse("acme").unwrap();
        let policy = TenantPolicy {
            allowed_regions: vec!["us-east-1".into()],
            tenant_regions: parse_tenant_lists("acme=eu-west-1|us-west-2", |r| Ok(r.to_owned()))
                .unwrap(),
            tenant_providers: BTreeMap::from([(acme.clone(), vec![Provider::Aws])]),
            ..TenantPolicy::default()
        };
        let refused = policy.check(&spec("us-west-2"), Some(&acme)).unwrap_err();
        assert_eq!(refused.path, "cloud.provider");
        assert!(
            refused
                .message
                .contains("not allowed for tenant acme (allowed: aws"),
            "{}",
            refused.message
        );
        let other = TenantId::parse("globex").unwrap();
        assert!(policy.check(&spec("us-east-1"), Some(&other)).is_ok());
        let refused = policy.check(&spec("us-west-2"), Some(&other)).unwrap_err();
        assert!(
            refused.message.contains("PROVISIONER_ALLOWED_REGIONS"),
            "{}",
            refused.message
        );
        let sandbox_ok = TenantPolicy {
            tenant_providers: BTreeMap::new(),
            ..policy
        };
        assert!(sandbox_ok.check(&spec("us-west-2"), Some(&acme)).is_ok());
        assert!(sandbox_ok.check(&spec("us-east-1"), Some(&acme)).is_err());
        for bad in ["acme", "acme=", "Acme=x", "acme=a,acme=b"] {
            assert!(
                parse_tenant_lists(bad, |r| Ok(r.to_owned())).is_err(),
                "{bad}"
            );
        }
    }
}
