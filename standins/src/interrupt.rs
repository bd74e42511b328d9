//! SIGINT/SIGTERM handling: a flag the long-running steps poll between short sleeps.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

/// The longest a stand-in sleeps without looking at the flag; bounds how late it notices a signal.
pub const SLICE: Duration = Duration::from_millis(50);

/// Set once SIGINT or SIGTERM arrived (or [`Interrupt::trigger`] was called in a test).
#[derive(Clone, Debug, Default)]
pub struct Interrupt(Arc<AtomicBool>);

/// The sleep was cut short by an interruption.
#[derive(Debug, PartialEq, Eq)]
pub struct Interrupted;

impl Interrupt {
    /// A flag no signal sets; for tests.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag on the first SIGINT or SIGTERM; a second one exits at once with status 1,
    /// as terraform does on a second interrupt.
    pub fn install_signal_handlers() -> io::Result<Self> {
        let interrupt = Self::new();
        for signal in [SIGINT, SIGTERM] {
            // Order matters: the shutdown hook sees the flag set by the previous signal.
            flag::register_conditional_shutdown(signal, 1, Arc::clone(&interrupt.0))?;
            flag::register(signal, Arc::clone(&interrupt.0))?;
        }
        Ok(interrupt)
    }

    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps `duration` in slices of at most [`SLICE`], returning early when interrupted.
    pub fn sleep(&self, duration: Duration) -> Result<(), Interrupted> {
        let deadline = Instant::now() + duration;
        loop {
            if self.is_set() {
                return Err(Interrupted);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(SLICE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_runs_its_full_duration_when_nothing_interrupts() {
        let started = Instant::now();
        assert_eq!(Interrupt::new().sleep(Duration::from_millis(120)), Ok(()));
        assert!(started.elapsed() >= Duration::from_millis(120));
    }

    #[test]
    fn sleep_returns_within_a_slice_of_an_interrupt() {
        let interrupt = Interrupt::new();
        let setter = interrupt.clone();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60));
            setter.trigger();
        });
        let started = Instant::now();
        assert_eq!(interrupt.sleep(Duration::from_secs(5)), Err(Interrupted));
        assert!(started.elapsed() < Duration::from_millis(300));
        handle.join().unwrap();
    }
}
