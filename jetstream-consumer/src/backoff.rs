//! Bounded exponential back-off with jitter, from `backon`: the delay of a message retried
//! without an explicit delay (by its delivery count) and the pause of a consumer loop after a
//! NATS error (by the number of errors in a row).

use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;

/// Delays that double from `min` up to `max`, each with a random jitter of up to as much again
/// (so at most `2 × max`).
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
}

impl Backoff {
    /// `min` for the first attempt, doubling up to `max` (`max` is raised to `min` if lower).
    pub const fn new(min: Duration, max: Duration) -> Self {
        let max = if max.as_nanos() < min.as_nanos() {
            min
        } else {
            max
        };
        Self { min, max }
    }

    pub fn min(&self) -> Duration {
        self.min
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before attempt `attempt + 1` after `attempt` failed ones (`attempt` ≥ 1; 0 counts
    /// as 1): `min · 2^(attempt-1)`, capped at `max`, plus jitter.
    pub fn delay(&self, attempt: u64) -> Duration {
        let nth = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        // Past the cap every delay is the cap (plus jitter): no need to walk further.
        let doublings_to_cap = self.doublings_to_cap();
        self.builder()
            .build()
            .nth(nth.min(doublings_to_cap))
            .unwrap_or(self.max)
    }

    /// The builder for `backon`'s own retry combinators (unbounded attempts; the caller bounds
    /// them with `with_max_times` where it needs to).
    pub fn builder(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.min)
            .with_max_delay(self.max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
    }

    fn doublings_to_cap(&self) -> usize {
        let mut delay = self.min;
        let mut doublings = 0;
        while delay < self.max && doublings < 64 {
            delay = delay.saturating_mul(2);
            doublings += 1;
        }
        doublings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_min_up_to_max_with_jitter_of_at_most_as_much_again() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..50 {
            let first = backoff.delay(1);
            assert!(first >= Duration::from_millis(100) && first < Duration::from_millis(200));
            let third = backoff.delay(3);
            assert!(third >= Duration::from_millis(400) && third < Duration::from_millis(800));
            let late = backoff.delay(1_000_000);
            assert!(late >= Duration::from_secs(1) && late < Duration::from_secs(2));
        }
        assert!(
            backoff.delay(0) < Duration::from_millis(200),
            "0 counts as 1"
        );
    }

    #[test]
    fn jitter_spreads_the_delays() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: std::collections::BTreeSet<_> = (0..20).map(|_| backoff.delay(2)).collect();
        assert!(delays.len() > 1, "jitter makes delays differ: {delays:?}");
    }

    #[test]
    fn a_max_below_min_is_raised_to_min() {
        let backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(backoff.max(), Duration::from_secs(2));
    }
}
