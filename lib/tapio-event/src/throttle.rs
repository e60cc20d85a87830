//! Rate-limited reporting. A flood of bad input or a destination down for an hour must cost a
//! log line every few seconds, not one per event or per retry, while every occurrence is still
//! counted in the metrics. One type serves sources (bad lines) and sinks (failing requests).

use std::mem;
use std::time::{Duration, Instant};

/// Occurrences of one problem since it was last reported: the first is reported at once, later
/// ones at most once per period, each report saying how many it stands for.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    since: usize,
}

impl Throttle {
    /// A throttle letting one report through per `every`.
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            since: 0,
        }
    }

    /// Adds `n` occurrences; returns how many to report if a report is due now.
    pub fn add(&mut self, n: usize) -> Option<usize> {
        self.since += n;
        let due = self.since > 0 && self.last.is_none_or(|last| last.elapsed() >= self.every);
        due.then(|| {
            self.last = Some(Instant::now());
            mem::take(&mut self.since)
        })
    }

    /// Occurrences not reported yet, for a last report at exit.
    pub fn flush(&mut self) -> Option<usize> {
        (self.since > 0).then(|| mem::take(&mut self.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_first_then_at_most_every_period() {
        let mut throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.add(0), None);
        assert_eq!(throttle.add(2), Some(2));
        assert_eq!(throttle.add(3), None);
        assert_eq!(throttle.add(0), None);
        assert_eq!(throttle.flush(), Some(3));
        assert_eq!(throttle.flush(), None);
    }

    #[test]
    fn reports_again_once_the_period_passed() {
        let mut throttle = Throttle::new(Duration::ZERO);
        assert_eq!(throttle.add(1), Some(1));
        assert_eq!(throttle.add(4), Some(4));
    }
}
