//! Bookkeeping of the jobs this process runs: one lock per environment (never two steps of one
//! environment at once here) and the cancellation token of each running operation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;

/// Whether jobs of one environment wait for each other in this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Exclusion {
    /// Never two steps of one environment at once (what an executor always runs with).
    #[default]
    PerEnvironment,
    /// No waiting at all, neither here nor for the step lease across processes: a test seam,
    /// so a test can show that the overlap check sees two steps of one environment running at
    /// once. Never chosen by the `provisioner` binary.
    Disabled,
}

/// One async mutex per environment id, created on first use and dropped when unused.
#[derive(Debug, Default)]
pub struct EnvironmentLocks {
    exclusion: Exclusion,
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// Holds an environment's lock; dropping it releases the lock (and forgets an unused one).
#[derive(Debug)]
pub struct EnvironmentGuard<'a> {
    owner: &'a EnvironmentLocks,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl EnvironmentLocks {
    pub fn new(exclusion: Exclusion) -> Self {
        Self {
            exclusion,
            locks: Mutex::default(),
        }
    }

    /// Waits until no other job of `environment_id` runs in this process (returns at once
    /// with [`Exclusion::Disabled`]).
    pub async fn lock(&self, environment_id: &str) -> EnvironmentGuard<'_> {
        if self.exclusion == Exclusion::Disabled {
            return EnvironmentGuard {
                owner: self,
                key: environment_id.to_owned(),
                guard: None,
            };
        }
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(locks.entry(environment_id.to_owned()).or_default())
        };
        let guard = mutex.lock_owned().await;
        EnvironmentGuard {
            owner: self,
            key: environment_id.to_owned(),
            guard: Some(guard),
        }
    }

    /// How many environments have a lock entry (held or waited for).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for EnvironmentGuard<'_> {
    fn drop(&mut self) {
        let mut locks = self
            .owner
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        drop(self.guard.take());
        // Only the map holds it: nobody holds or waits for this environment any more.
        if locks
            .get(&self.key)
            .is_some_and(|mutex| Arc::strong_count(mutex) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

/// The cancellation token of every operation running (or about to run) in this process.
#[derive(Debug, Default)]
pub struct RunningOperations {
    /// Operation id → its token and how many registrations share it.
    tokens: Mutex<HashMap<String, (CancellationToken, usize)>>,
}

/// Keeps an operation registered; dropping it unregisters the operation.
#[derive(Debug)]
pub struct Registration<'a> {
    owner: &'a RunningOperations,
    operation_id: String,
    token: CancellationToken,
}

impl RunningOperations {
    /// Registers `operation_id`; its token fires when [`RunningOperations::cancel`] names it.
    /// A redelivered job of an operation already registered here shares the same token.
    pub fn register(&self, operation_id: &str) -> Registration<'_> {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        let (token, count) = tokens.entry(operation_id.to_owned()).or_default();
        *count += 1;
        Registration {
            owner: self,
            operation_id: operation_id.to_owned(),
            token: token.clone(),
        }
    }

    /// Cancels the operation if it runs here; returns whether it did.
    pub fn cancel(&self, operation_id: &str) -> bool {
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        match tokens.get(operation_id) {
            Some((token, _)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

impl Registration<'_> {
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut tokens = self
            .owner
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, count)) = tokens.get_mut(&self.operation_id) {
            *count -= 1;
            if *count == 0 {
                tokens.remove(&self.operation_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn jobs_of_one_environment_run_one_at_a_time() {
        let locks = Arc::new(EnvironmentLocks::default());
        let first = locks.lock("env_a").await;
        let waiter = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move {
                let _second = locks.lock("env_a").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the second job waits for the first");
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(locks.is_empty(), "unused locks are forgotten");
    }

    #[tokio::test]
    async fn with_exclusion_disabled_jobs_of_one_environment_do_not_wait() {
        let locks = EnvironmentLocks::new(Exclusion::Disabled);
        let _first = locks.lock("env_a").await;
        let second = tokio::time::timeout(Duration::from_millis(100), locks.lock("env_a")).await;
        assert!(second.is_ok());
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn jobs_of_different_environments_do_not_wait_for_each_other() {
        let locks = EnvironmentLocks::default();
        let _a = locks.lock("env_a").await;
        let b = tokio::time::timeout(Duration::from_millis(100), locks.lock("env_b")).await;
        assert!(b.is_ok());
        assert_eq!(locks.len(), 2);
    }

    #[test]
    fn cancelling_fires_the_registered_token_only() {
        let running = RunningOperations::default();
        let a = running.register("op_a");
        let b = running.register("op_b");
        assert!(running.cancel("op_a"));
        assert!(a.token().is_cancelled());
        assert!(!b.token().is_cancelled());
        assert!(!running.cancel("op_unknown"));
        drop(a);
        assert!(!running.cancel("op_a"), "unregistered on drop");
    }

    #[test]
    fn a_redelivered_job_shares_the_token_of_the_running_one() {
        let running = RunningOperations::default();
        let first = running.register("op_a");
        let again = running.register("op_a");
        drop(first);
        assert!(
            running.cancel("op_a"),
            "still registered by the redelivered job"
        );
        assert!(again.token().is_cancelled());
    }
}
