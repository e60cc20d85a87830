//! Capped exponential backoff, one shape for every retry loop: sinks retrying a write, sources
//! reconnecting to a bus, a disk buffer waiting for space, the API pausing after a failed accept.

use std::time::Duration;

/// Waits that double from `initial` up to `max`, and start over after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `initial`; no wait ever exceeds `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// How long to wait before the next attempt; each call doubles the following wait.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// The wait [`Backoff::next_delay`] will give next, for a log line announcing it.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// An attempt succeeded: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_starts_over_after_a_reset() {
        let max = Duration::from_secs(30);
        let mut backoff = Backoff::new(Duration::from_millis(100), max);
        let delays: Vec<_> = (0..12).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(*delays.last().unwrap(), max);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        backoff.reset();
        assert_eq!(backoff.peek(), Duration::from_millis(100));
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }
}
