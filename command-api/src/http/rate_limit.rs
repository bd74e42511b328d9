//! Per-token rate limits of the commands (every authenticated request that is not a read):
//! a GCRA limiter (governor) keyed by the token's actor, so one token cannot crowd out the
//! others; a refused command answers 429 `rate_limited` with `Retry-After`. Reads and streams are
//! not limited here (the connection limit and timeouts of `crate::server` bound them). The keys
//! are authenticated tokens only, so the limiter's memory is bounded by the tokens issued.

use super::AppState;
use super::auth::Principal;
use super::error::AppError;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;

/// Commands per minute and burst of each token, from the settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// `PROVISIONER_RATE_LIMIT_PER_MINUTE`: the sustained rate.
    pub per_minute: NonZeroU32,
    /// `PROVISIONER_RATE_LIMIT_BURST`: how many may come at once after a quiet spell.
    pub burst: NonZeroU32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_minute: NonZeroU32::new(120).expect("not zero"),
            burst: NonZeroU32::new(30).expect("not zero"),
        }
    }
}

/// The limiter shared by a process's requests.
#[derive(Clone)]
pub struct CommandLimiter {
    limit: RateLimit,
    limiter: Arc<RateLimiter<String, HashMapStateStore<String>, DefaultClock>>,
}

impl CommandLimiter {
    pub fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_minute(limit.per_minute).allow_burst(limit.burst);
        Self {
            limit,
            limiter: Arc::new(RateLimiter::hashmap(quota)),
        }
    }

    /// Takes one command of `actor`'s allowance, or says how long until there is one.
    fn check(&self, actor: &str) -> Result<(), AppError> {
        match self.limiter.check_key(&actor.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                crate::metrics::rate_limited();
                tracing::warn!(actor, "command refused: rate limit");
                Err(AppError::RateLimited {
                    per_minute: self.limit.per_minute.get(),
                    retry_after_seconds: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                })
            }
        }
    }
}

/// Whether a request is a command (anything but a read).
fn is_command(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Refuses a token's commands beyond its rate (after authentication: the principal is known).
pub async fn limit_commands(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, AppError> {
    if is_command(request.method())
        && let Some(principal) = request.extensions().get::<Principal>()
    {
        state.commands.check(&principal.actor)?;
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_past_its_burst_is_refused_with_when_to_retry_and_others_are_not() {
        let limiter = CommandLimiter::new(RateLimit {
            per_minute: NonZeroU32::new(6).unwrap(),
            burst: NonZeroU32::new(2).unwrap(),
        });
        assert!(limiter.check("token:a").is_ok());
        assert!(limiter.check("token:a").is_ok());
        let Err(AppError::RateLimited {
            per_minute,
            retry_after_seconds,
        }) = limiter.check("token:a")
        else {
            panic!("the third command in a burst of two passed");
        };
        assert_eq!(per_minute, 6);
        assert!(
            (1..=10).contains(&retry_after_seconds),
            "{retry_after_seconds}"
        );
        assert!(limiter.check("token:b").is_ok());
    }

    #[test]
    fn reads_are_not_commands() {
        assert!(!is_command(&Method::GET));
        assert!(!is_command(&Method::HEAD));
        assert!(is_command(&Method::POST));
        assert!(is_command(&Method::DELETE));
    }
}
