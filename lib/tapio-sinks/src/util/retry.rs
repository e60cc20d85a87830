//! Capped exponential backoff shared by sinks: a write that fails is retried until it succeeds,
//! while the sink's buffer fills and backpressure reaches the sources.

use std::time::Duration;

/// Backoff between retries: doubling from `INITIAL` up to `MAX`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
}

const INITIAL: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(30);

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff { next: INITIAL }
    }

    /// How long to wait before the next attempt; each call doubles the following wait.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut backoff = Backoff::new();
        let delays: Vec<_> = (0..12).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert_eq!(delays[1], Duration::from_millis(200));
        assert_eq!(*delays.last().unwrap(), MAX);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
    }
}
