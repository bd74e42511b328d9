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
        })
    }
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
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(|token| state.auth.authenticate(token.trim()))
        .ok_or(AppError::Unauthorized)?;
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}
