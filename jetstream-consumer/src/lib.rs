//! The one JetStream consumer runtime of the workspace, used by the process manager, the
//! projection and the executors.
//!
//! - [`Consumer`]: gets or creates a durable pull consumer (the caller's `pull::Config`) once its
//!   stream exists, fetches bounded batches with a deadline, and runs the caller's handler per
//!   message, up to N at once ([`Consumer::run_each`]), or per batch, one after the other
//!   ([`Consumer::run_batches`]). Shutdown through a `CancellationToken`; the handlers still
//!   running are returned ([`InFlight`]) for the caller to drain.
//! - [`Disposition`]: what the handler decided — `Ack`, `Retry { after }` (nak with a delay; by
//!   default the [`Backoff`] for the delivery count), `Term { reason }` (poison: logged as an
//!   error with subject and stream sequence, never delivered again). While a handler runs, the
//!   runtime sends `InProgress` heartbeats if asked ([`Consumer::heartbeat`]).
//! - Redelivery is bounded by the consumer's `max_deliver` when it sets one: a retry of the last
//!   delivery is logged as an error and JetStream stops (publishing its `MAX_DELIVERIES`
//!   advisory). The loop's own errors (stream missing, fetch failed) back off, bounded, with
//!   jitter ([`Backoff`], from `backon`).
//!
//! It knows nothing of the domain or the database: handlers classify their own errors into
//! dispositions.

mod backoff;
mod consumer;
mod disposition;

pub use backoff::Backoff;
pub use consumer::{Consumer, InFlight, wait_for_stream};
pub use disposition::{Delivery, Disposition};
