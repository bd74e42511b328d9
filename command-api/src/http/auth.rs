//! Bearer-token authentication and the role checks. Tokens and principals are
//! [`crate::access`]'s; here the header is read, bounded and refused, a failure counted
//! (`api_auth_failures_total{reason}`) and logged without the token, and the principal put in
//! the request's extensions for the handlers.

pub use crate::access::{Principal, Tokens};

use super::AppState;
use super::error::AppError;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use domain::tenant::Role;

/// The role checks, each the one place that says so: 403 `forbidden` naming the role needed.
pub trait RequireRole {
    /// At least `role`.
    fn require(&self, role: Role) -> Result<(), AppError>;

    /// Admins only (the runbook's operations and the tokens).
    fn require_admin(&self) -> Result<(), AppError> {
        self.require(Role::Admin)
    }
}

impl RequireRole for Principal {
    fn require(&self, role: Role) -> Result<(), AppError> {
        if self.has(role) {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "this operation needs the {role} role; this token is {}",
                self.role
            )))
        }
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

/// Why a request was not authenticated: the label of `api_auth_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// Not `Bearer <one word>`, not ASCII, or too long.
    Malformed,
    /// A well-formed token nobody issued, or one revoked or expired.
    Rejected,
}

impl AuthFailure {
    pub const ALL: [AuthFailure; 3] = [
        AuthFailure::Missing,
        AuthFailure::Malformed,
        AuthFailure::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Rejected => "rejected",
        }
    }
}

/// Rejects requests without a valid `Authorization: Bearer <token>`; otherwise stores the
/// [`Principal`] in the request's extensions. A refusal is counted and logged at warn with its
/// reason and the route, never the header's value.
pub async fn require_bearer(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, AppError> {
    let token = match request.headers().get(header::AUTHORIZATION) {
        None => Err(AuthFailure::Missing),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or(AuthFailure::Malformed),
    };
    let principal = match token {
        Ok(token) => state
            .auth
            .authenticate(token)
            .await?
            .ok_or(AuthFailure::Rejected),
        Err(failure) => Err(failure),
    };
    match principal {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            Ok(next.run(request).await)
        }
        Err(failure) => {
            crate::metrics::auth_failed(failure);
            tracing::warn!(reason = failure.as_str(), "authentication failed");
            Err(AppError::Unauthorized)
        }
    }
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
        assert!(Principal::bootstrap_admin().require_admin().is_ok());
        let operator = Principal {
            actor: "token:tok_1".into(),
            tenant: domain::tenant::TenantId::default(),
            role: Role::Operator,
        };
        assert!(operator.require(Role::Operator).is_ok());
        let Err(AppError::Forbidden(message)) = operator.require_admin() else {
            panic!("an operator passed the admin check");
        };
        assert_eq!(
            message,
            "this operation needs the admin role; this token is operator"
        );
    }
}
