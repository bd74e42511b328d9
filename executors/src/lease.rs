//! Step leases across executor processes: before a step's tools run, its executor takes the
//! environment's [`StepLease`] in the JetStream key-value bucket `<P>_LEASES` (compare-and-set
//! on the key's revision), renews it at every heartbeat while the step runs, and lets go when
//! the step ends.
//!
//! - A lease that is still fresh and held by another attempt means its holder may be alive:
//!   the job is handed back to try later, and nothing runs.
//! - A lease that lapsed (not renewed for `ttl`) or was released is taken over. When it was
//!   taken over from a holder that never let go, that holder is presumed dead: its attempt
//!   was superseded and its heartbeat lapsed. Only then may a state lock it left be forced
//!   open ([`Takeover`]).
//! - A holder whose renewal finds the lease taken (it was paused past its lease) stops its step
//!   at once and reports nothing; its result, were it to send one, carries its attempt, and the
//!   process manager rejects results of a superseded attempt ([`StepLease::fences_out`]).

use std::time::Duration;

use async_nats::jetstream::kv::{self, Store};
use async_nats::jetstream::{self, stream::StorageType};
use bytes::Bytes;
use domain::OperationId;
use domain::wire::{StepLease, Subjects};

/// The executors' lease bucket and this process's identity.
#[derive(Clone)]
pub struct Leases {
    store: Store,
    executor: String,
    ttl: Duration,
    /// Every lease granted without looking: only with `Exclusion::Disabled`, the test seam
    /// that lets a test show the overlap check can fail.
    bypass: bool,
}

/// What taking the lease found.
#[derive(Debug)]
pub enum Acquired {
    /// The lease is ours at `revision`; `takeover` says whether a holder that never let go was
    /// replaced.
    Held(HeldLease),
    /// Another attempt holds a fresh lease: it may be running; try again later.
    Busy { holder: StepLease },
    /// A newer attempt of this very operation holds it: this delivery is obsolete.
    Superseded { holder: StepLease },
}

/// A lease this process holds.
#[derive(Debug)]
pub struct HeldLease {
    key: String,
    lease: StepLease,
    revision: u64,
    pub takeover: Option<Takeover>,
}

/// The holder replaced: it never let go, and its lease lapsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    pub previous: StepLease,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the lease bucket is unavailable: {0}")]
    Unavailable(String),
    /// Another attempt took the lease over: this one must stop.
    #[error("the lease was taken over by attempt {} of {}", holder.attempt, holder.executor)]
    Lost { holder: Box<StepLease> },
}

impl Leases {
    /// Opens (or creates) the bucket with `replicas` copies, as the streams have them (an
    /// existing bucket with another count is changed to it). Leases lapse after `ttl` without
    /// renewal.
    pub async fn open(
        jetstream: &jetstream::Context,
        subjects: &Subjects,
        executor: String,
        ttl: Duration,
        replicas: usize,
    ) -> Result<Self, LeaseError> {
        let bucket = subjects.leases_bucket();
        let store = match jetstream.get_key_value(&bucket).await {
            Ok(store) => store,
            Err(_) => jetstream
                .create_key_value(kv::Config {
                    bucket: bucket.clone(),
                    description: "which executor runs each environment's step".to_owned(),
                    history: 1,
                    storage: StorageType::File,
                    num_replicas: replicas,
                    ..kv::Config::default()
                })
                .await
                .map_err(|e| LeaseError::Unavailable(e.to_string()))?,
        };
        let status = store
            .status()
            .await
            .map_err(|e| LeaseError::Unavailable(e.to_string()))?;
        if status.info.config.num_replicas != replicas {
            let mut config = status.info.config;
            config.num_replicas = replicas;
            jetstream
                .update_stream(config)
                .await
                .map_err(|e| LeaseError::Unavailable(e.to_string()))?;
        }
        Ok(Leases {
            store,
            executor,
            ttl,
            bypass: false,
        })
    }

    /// These leases, granted without looking (see [`Leases::bypass`]'s field).
    pub fn bypassed(mut self) -> Self {
        self.bypass = true;
        self
    }

    pub fn executor(&self) -> &str {
        &self.executor
    }

    /// Takes the lease of `environment_id` for `attempt` of `operation_id`.
    pub async fn acquire(
        &self,
        environment_id: &str,
        operation_id: &OperationId,
        attempt: u64,
    ) -> Result<Acquired, LeaseError> {
        let mine = StepLease {
            operation_id: operation_id.clone(),
            attempt,
            executor: self.executor.clone(),
            renewed_at_ms: now_ms(),
            released: false,
            ttl_ms: u64::try_from(self.ttl.as_millis()).ok(),
        };
        if self.bypass {
            return Ok(Acquired::Held(HeldLease {
                key: environment_id.to_owned(),
                lease: mine,
                revision: 0,
                takeover: None,
            }));
        }
        for _ in 0..8 {
            let entry = self
                .store
                .entry(environment_id)
                .await
                .map_err(|e| LeaseError::Unavailable(e.to_string()))?;
            let previous = entry.as_ref().and_then(|entry| {
                (entry.operation == kv::Operation::Put)
                    .then(|| serde_json::from_slice::<StepLease>(&entry.value).ok())
                    .flatten()
            });
            let takeover = match &previous {
                None => None,
                Some(holder) if holder.fences_out(operation_id, attempt) => {
                    return Ok(Acquired::Superseded {
                        holder: holder.clone(),
                    });
                }
                Some(holder) if holder.released => None,
                Some(holder) if !self.lapsed(holder) => {
                    return Ok(Acquired::Busy {
                        holder: holder.clone(),
                    });
                }
                Some(holder) => Some(Takeover {
                    previous: holder.clone(),
                }),
            };
            let value = encode(&mine);
            let written = match &entry {
                None => self.store.create(environment_id, value).await.map_err(|e| {
                    (e.kind() == kv::CreateErrorKind::AlreadyExists)
                        .then_some(())
                        .ok_or_else(|| LeaseError::Unavailable(e.to_string()))
                }),
                Some(entry) => self
                    .store
                    .update(environment_id, value, entry.revision)
                    .await
                    .map_err(|e| {
                        (e.kind() == kv::UpdateErrorKind::WrongLastRevision)
                            .then_some(())
                            .ok_or_else(|| LeaseError::Unavailable(e.to_string()))
                    }),
            };
            match written {
                Ok(revision) => {
                    return Ok(Acquired::Held(HeldLease {
                        key: environment_id.to_owned(),
                        lease: mine,
                        revision,
                        takeover,
                    }));
                }
                // Someone else wrote in between: look again.
                Err(Ok(())) => continue,
                Err(Err(error)) => return Err(error),
            }
        }
        Err(LeaseError::Unavailable(
            "the lease kept changing under us".to_owned(),
        ))
    }

    /// Renews `held`; [`LeaseError::Lost`] when another attempt took it over.
    pub async fn renew(&self, held: &mut HeldLease) -> Result<(), LeaseError> {
        let mut renewed = held.lease.clone();
        renewed.renewed_at_ms = now_ms();
        self.write(held, renewed).await
    }

    /// Lets go of `held`: the next step need not wait for it to lapse. Best effort (a lease
    /// not released lapses).
    pub async fn release(&self, mut held: HeldLease) {
        let mut released = held.lease.clone();
        released.renewed_at_ms = now_ms();
        released.released = true;
        if let Err(error) = self.write(&mut held, released).await {
            tracing::warn!(%error, "could not release the step lease; it will lapse");
        }
    }

    /// The lease of `environment_id`, if any.
    pub async fn current(&self, environment_id: &str) -> Result<Option<StepLease>, LeaseError> {
        let value = self
            .store
            .get(environment_id)
            .await
            .map_err(|e| LeaseError::Unavailable(e.to_string()))?;
        Ok(value.and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    async fn write(&self, held: &mut HeldLease, lease: StepLease) -> Result<(), LeaseError> {
        if self.bypass {
            return Ok(());
        }
        match self
            .store
            .update(&held.key, encode(&lease), held.revision)
            .await
        {
            Ok(revision) => {
                held.revision = revision;
                held.lease = lease;
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let holder = self.current(&held.key).await?.unwrap_or(held.lease.clone());
                Err(LeaseError::Lost {
                    holder: Box::new(holder),
                })
            }
            Err(e) => Err(LeaseError::Unavailable(e.to_string())),
        }
    }

    fn lapsed(&self, lease: &StepLease) -> bool {
        let age_ms = now_ms().saturating_sub(lease.renewed_at_ms);
        u128::try_from(age_ms).unwrap_or(0) > self.ttl.as_millis()
    }
}

fn encode(lease: &StepLease) -> Bytes {
    Bytes::from(serde_json::to_vec(lease).expect("a lease encodes"))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// This process's name in leases: host, pid and a random suffix (a restarted process with a
/// recycled pid is someone else).
pub fn executor_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned());
    format!(
        "{host}:{}:{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}
