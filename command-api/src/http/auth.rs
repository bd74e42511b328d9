//! Bearer-token authentication. Today there is one principal, the admin, whose token comes from
//! `PROVISIONER_ADMIN_TOKEN`; tenants and their tokens come later. Tokens are compared by their
//! SHA-256 digests, so the comparison time does not depend on how much of a guess matches.

use super::AppState;
use super::error::AppError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

/// Who a valid token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Recorded as the events' actor, e.g. `token:admin`.
    pub actor: String,
    /// Whether this principal may run the admin-only operations (the runbook's: cancel,
    /// force-unlock, mark-failed, mark-destroyed, requeue-stuck). Today every token is the
    /// admin's; tenants and roles (issue 10) set it per token.
    pub admin: bool,
}

impl Principal {
    /// The one place that says "admin only": 403 for any other principal.
    pub fn require_admin(&self) -> Result<(), AppError> {
        if self.admin {
            Ok(())
        } else {
            Err(AppError::Forbidden(
                "this operation is for admins only".to_owned(),
            ))
        }
    }
}

/// The accepted tokens, kept only as digests.
#[derive(Clone)]
pub struct Tokens {
    admin_digest: [u8; 32],
}

impl Tokens {
    pub fn new(admin_token: &str) -> Self {
        Self {
            admin_digest: Sha256::digest(admin_token.as_bytes()).into(),
        }
    }

    fn authenticate(&self, token: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        (digest == self.admin_digest).then(|| Principal {
            actor: "token:admin".into(),
            admin: true,
        })
    }
}

/// The longest `Authorization` header looked at; a longer one is refused unread.
pub const MAX_AUTHORIZATION_LEN: usize = 4096;

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 7235) and spaces around the token are tolerated; the token itself is one word.
fn bearer_token(value: &str) -> Option<&str> {
    if value.len() > MAX_AUTHORIZATION_LEN {
        return None;
    }
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    let token = token.trim_matches([' ', '\t']);
    let one_word = !token.is_empty() && !token.contains([' ', '\t']);
    (scheme.eq_ignore_ascii_case("bearer") && one_word).then_some(token)
}

/// Rejects requests without a valid `Authorization: Bearer <token>`; otherwise stores the
/// [`Principal`] in the request's extensions.
pub async fn require_bearer(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, AppError> {
    let principal = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(bearer_token)
        .and_then(|token| state.auth.authenticate(token))
        .ok_or(AppError::Unauthorized)?;
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_spaces_are_tolerated() {
        for value in [
            "Bearer t0ken",
            "bearer t0ken",
            "BEARER t0ken",
            "bEaReR t0ken",
            "Bearer   t0ken  ",
            "  Bearer\tt0ken",
        ] {
            assert_eq!(bearer_token(value), Some("t0ken"), "{value:?}");
        }
    }

    #[test]
    fn other_schemes_missing_or_split_tokens_and_huge_headers_are_refused() {
        for value in [
            "",
            "Bearer",
            "Bearer ",
            "Bearer    ",
            "Bearert0ken",
            "Basic dXNlcjpwYXNz",
            "Bearer two words",
            "Token t0ken",
        ] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
        let huge = format!("Bearer {}", "x".repeat(MAX_AUTHORIZATION_LEN));
        assert_eq!(bearer_token(&huge), None);
    }

    #[test]
    fn only_an_admin_passes_the_admin_check() {
        let admin = Tokens::new("s3cret").authenticate("s3cret").unwrap();
        assert!(admin.require_admin().is_ok());
        let tenant = Principal {
            actor: "token:tenant".into(),
            admin: false,
        };
        assert!(matches!(
            tenant.require_admin(),
            Err(AppError::Forbidden(_))
        ));
    }

    #[test]
    fn only_the_admin_token_authenticates() {
        let tokens = Tokens::new("s3cret");
        assert!(tokens.authenticate("s3cret").is_some());
        assert!(tokens.authenticate("s3cre").is_none());
        assert!(tokens.authenticate("S3CRET").is_none());
    }
}
