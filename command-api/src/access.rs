//! Who may do what: API tokens, each with a tenant, a role and an expiry, and the principal a
//! request runs as.
//!
//! A token is 32 random bytes, shown once when created (`bp9_` + base64url) and stored only as
//! its SHA-256 digest: with 256 bits of entropy nobody can guess one from a leaked table, so a
//! fast unkeyed hash is enough (a slow or keyed one would add nothing). A request's token is
//! looked up by its digest (an index lookup, so its time says nothing about near misses); the
//! bootstrap admin token from the settings is compared by digest in constant time. Revocation
//! and expiry take effect on the next request (no cache).

use chrono::{DateTime, Duration, Utc};
use domain::tenant::{Role, TenantId};
use domain::text::shown;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

/// The prefix of every token this provisioner issues (so secret scanners can recognise one).
pub const TOKEN_PREFIX: &str = "bp9_";
/// The longest token name.
pub const MAX_TOKEN_NAME_CHARS: usize = 100;
/// The longest and the default lifetime of a token, in days.
pub const MAX_TOKEN_DAYS: u32 = 365;
pub const DEFAULT_TOKEN_DAYS: u32 = 90;

/// Who a request runs as: the events' actor, the tenant it acts in and what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Recorded as the events' actor: `token:admin` (the bootstrap token) or `token:<id>`.
    pub actor: String,
    /// The tenant its environments belong to (an admin's own; it sees every tenant's).
    pub tenant: TenantId,
    pub role: Role,
}

impl Principal {
    /// The bootstrap admin (`PROVISIONER_ADMIN_TOKEN`), of the default tenant.
    pub fn bootstrap_admin() -> Self {
        Self {
            actor: "token:admin".into(),
            tenant: TenantId::default(),
            role: Role::Admin,
        }
    }

    /// Whether its role allows at least `role`'s operations.
    pub fn has(&self, role: Role) -> bool {
        self.role >= role
    }

    /// The tenant whose environments it may see, `None` for an admin (every tenant's).
    pub fn scope(&self) -> Option<&TenantId> {
        (self.role != Role::Admin).then_some(&self.tenant)
    }

    /// Whether it may see an environment of `tenant`. Everything that answers about one
    /// environment asks this, and answers "not found" when not: existence does not leak.
    pub fn sees(&self, tenant: &str) -> bool {
        self.scope().is_none_or(|own| own.as_str() == tenant)
    }
}

/// A token as listed: never the token itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// `tok_<ulid>`.
    pub id: String,
    pub name: String,
    pub tenant: TenantId,
    pub role: Role,
    /// The actor that created it.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Set once revoked; a revoked token authenticates nothing.
    pub revoked_at: Option<DateTime<Utc>>,
    /// The actor that revoked it.
    pub revoked_by: Option<String>,
}

/// A new token: its details and, this once, the token.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// The bearer token. Shown only in this answer; only its digest is kept.
    pub token: String,
}

/// What an admin asks for.
#[derive(Clone, Debug)]
pub struct NewToken {
    pub name: String,
    pub tenant: TenantId,
    pub role: Role,
    pub days: u32,
}

/// Why a token request was refused, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenInputError {
    #[error(
        "name {} must be 1-{MAX_TOKEN_NAME_CHARS} characters without control characters",
        shown(.0)
    )]
    Name(String),
    #[error("expires_in_days must be 1-{MAX_TOKEN_DAYS}, not {0}")]
    Days(u64),
}

impl TokenInputError {
    pub fn field(&self) -> &'static str {
        match self {
            TokenInputError::Name(_) => "name",
            TokenInputError::Days(_) => "expires_in_days",
        }
    }
}

impl NewToken {
    /// Checks the admin's values; the tenant and role are typed already.
    pub fn new(
        name: &str,
        tenant: TenantId,
        role: Role,
        days: Option<u64>,
    ) -> Result<Self, TokenInputError> {
        let trimmed = name.trim();
        if trimmed.is_empty()
            || trimmed.chars().count() > MAX_TOKEN_NAME_CHARS
            || trimmed.chars().any(char::is_control)
        {
            return Err(TokenInputError::Name(name.to_owned()));
        }
        let days = days.unwrap_or(u64::from(DEFAULT_TOKEN_DAYS));
        if !(1..=u64::from(MAX_TOKEN_DAYS)).contains(&days) {
            return Err(TokenInputError::Days(days));
        }
        Ok(Self {
            name: trimmed.to_owned(),
            tenant,
            role,
            days: days as u32,
        })
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The tokens: the bootstrap admin's digest and the table of issued ones.
#[derive(Clone)]
pub struct Tokens {
    admin_digest: [u8; 32],
    pool: PgPool,
}

type TokenRow = (
    String,
    String,
    String,
    String,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<String>,
);

const TOKEN_COLUMNS: &str =
    "id, name, tenant, role, created_by, created_at, expires_at, revoked_at, revoked_by";

/// A stored token's tenant and role, typed; a row the table's checks should have refused is a
/// decode error.
fn tenant_and_role(tenant: &str, role: &str) -> Result<(TenantId, Role), sqlx::Error> {
    let corrupt = |error: domain::tenant::TenantInputError| sqlx::Error::Decode(Box::new(error));
    Ok((
        TenantId::parse(tenant).map_err(corrupt)?,
        role.parse().map_err(corrupt)?,
    ))
}

fn info(row: TokenRow) -> Result<TokenInfo, sqlx::Error> {
    let (id, name, tenant, role, created_by, created_at, expires_at, revoked_at, revoked_by) = row;
    let (tenant, role) = tenant_and_role(&tenant, &role)?;
    Ok(TokenInfo {
        id,
        name,
        tenant,
        role,
        created_by,
        created_at,
        expires_at,
        revoked_at,
        revoked_by,
    })
}

impl Tokens {
    pub fn new(admin_token: &str, pool: PgPool) -> Self {
        Self {
            admin_digest: digest(admin_token),
            pool,
        }
    }

    /// The principal of a bearer token, or `None` when it is unknown, revoked or expired.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, sqlx::Error> {
        let presented = digest(token);
        if bool::from(presented.ct_eq(&self.admin_digest)) {
            return Ok(Some(Principal::bootstrap_admin()));
        }
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT id, tenant, role FROM api_tokens
              WHERE digest = $1 AND revoked_at IS NULL AND expires_at > now()",
        )
        .bind(&presented[..])
        .fetch_optional(&self.pool)
        .await?;
        let Some((id, tenant, role)) = row else {
            return Ok(None);
        };
        let (tenant, role) = tenant_and_role(&tenant, &role)?;
        Ok(Some(Principal {
            actor: format!("token:{id}"),
            tenant,
            role,
        }))
    }

    /// Issues a token; the answer holds the token itself, which is kept nowhere.
    pub async fn create(&self, by: &Principal, new: NewToken) -> Result<CreatedToken, sqlx::Error> {
        use base64::Engine as _;
        let secret: [u8; 32] = rand::random();
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let now = Utc::now();
        let info = TokenInfo {
            id: format!("tok_{}", ulid::Ulid::new().to_string().to_lowercase()),
            name: new.name,
            tenant: new.tenant,
            role: new.role,
            created_by: by.actor.clone(),
            created_at: now,
            expires_at: now + Duration::days(i64::from(new.days)),
            revoked_at: None,
            revoked_by: None,
        };
        sqlx::query(
            "INSERT INTO api_tokens
                 (id, digest, tenant, role, name, created_by, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&info.id)
        .bind(&digest(&token)[..])
        .bind(info.tenant.as_str())
        .bind(info.role.as_str())
        .bind(&info.name)
        .bind(&info.created_by)
        .bind(info.created_at)
        .bind(info.expires_at)
        .execute(&self.pool)
        .await?;
        tracing::info!(
            token_id = info.id,
            tenant = %info.tenant,
            role = %info.role,
            actor = by.actor,
            "token created"
        );
        Ok(CreatedToken { info, token })
    }

    /// Every token (of `tenant` when given), oldest first; at most `limit`.
    pub async fn list(
        &self,
        tenant: Option<&TenantId>,
        limit: u32,
    ) -> Result<Vec<TokenInfo>, sqlx::Error> {
        let rows: Vec<TokenRow> = sqlx::query_as(&format!(
            "SELECT {TOKEN_COLUMNS} FROM api_tokens
              WHERE $1::text IS NULL OR tenant = $1
              ORDER BY created_at, id LIMIT $2"
        ))
        .bind(tenant.map(TenantId::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(info).collect()
    }

    /// Revokes a token; `None` when there is no such token. Revoking twice keeps the first time.
    pub async fn revoke(&self, by: &Principal, id: &str) -> Result<Option<TokenInfo>, sqlx::Error> {
        let row: Option<TokenRow> = sqlx::query_as(&format!(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()),
                                   revoked_by = coalesce(revoked_by, $2)
              WHERE id = $1 RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(id)
        .bind(&by.actor)
        .fetch_optional(&self.pool)
        .await?;
        let revoked = row.map(info).transpose()?;
        if let Some(token) = &revoked {
            tracing::info!(token_id = token.id, actor = by.actor, "token revoked");
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, tenant: &str) -> Principal {
        Principal {
            actor: "token:tok_1".into(),
            tenant: TenantId::parse(tenant).unwrap(),
            role,
        }
    }

    #[test]
    fn an_admin_sees_every_tenant_and_others_only_their_own() {
        assert!(Principal::bootstrap_admin().sees("acme"));
        assert_eq!(Principal::bootstrap_admin().scope(), None);
        for role in [Role::Viewer, Role::Operator] {
            let p = principal(role, "acme");
            assert!(p.sees("acme"));
            assert!(!p.sees("globex"));
            assert!(!p.sees("default"));
        }
    }

    #[test]
    fn roles_include_the_ones_below() {
        let operator = principal(Role::Operator, "acme");
        assert!(operator.has(Role::Viewer) && operator.has(Role::Operator));
        assert!(!operator.has(Role::Admin));
        assert!(!principal(Role::Viewer, "acme").has(Role::Operator));
    }

    #[test]
    fn token_names_and_lifetimes_are_bounded() {
        let tenant = TenantId::default();
        assert!(NewToken::new("ci", tenant.clone(), Role::Viewer, None).is_ok());
        assert_eq!(
            NewToken::new("ci", tenant.clone(), Role::Viewer, None)
                .unwrap()
                .days,
            DEFAULT_TOKEN_DAYS
        );
        for bad in ["", "  ", "a\nb", &"x".repeat(101)] {
            let error = NewToken::new(bad, tenant.clone(), Role::Viewer, None).unwrap_err();
            assert_eq!(error.field(), "name");
        }
        for days in [0, 366, u64::MAX] {
            let error = NewToken::new("ci", tenant.clone(), Role::Viewer, Some(days)).unwrap_err();
            assert_eq!(error.field(), "expires_in_days", "{days}");
        }
    }
}
