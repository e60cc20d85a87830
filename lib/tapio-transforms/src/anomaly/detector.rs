//! The per-series detector: a baseline of counts per interval learned online, and the rule that
//! decides when an interval's count is far enough above it, for long enough, to report.

/// Counts per interval can be tiny (a pod retransmits once an hour), so the baseline's standard
/// deviation is taken as at least one count: otherwise a series that was always 0 would fire on
/// its first event.
const MIN_DEVIATION: f64 = 1.0;

/// When an interval's count is an anomaly: thresholds on the baseline, and persistence.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    /// Intervals a series must have seen before it may fire.
    pub warmup: u32,
    /// The count must be at least this many times the baseline mean…
    pub ratio: f64,
    /// …and at least this many baseline standard deviations above it…
    pub deviations: f64,
    /// …in this many consecutive intervals.
    pub persist: u32,
}

impl Rule {
    /// The EWMA weight of a new interval: a span of `warmup` intervals, so the baseline after
    /// the warm-up reflects about that many of them.
    fn weight(&self) -> f64 {
        2.0 / (f64::from(self.warmup) + 1.0)
    }
}

/// A series' learned rate: an exponentially weighted mean and variance of its counts per
/// interval.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Baseline {
    mean: f64,
    variance: f64,
    /// Intervals learned from (saturating), for the warm-up.
    seen: u32,
    /// Consecutive anomalous intervals so far.
    over: u32,
}

/// What closing one interval found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Finding {
    pub baseline: f64,
    /// Standard deviations above the baseline.
    pub deviation: f64,
}

impl Baseline {
    /// Takes an interval's `count` into account; returns a finding when this interval makes an
    /// episode of `rule.persist` anomalous intervals: once per episode, not for every interval
    /// of it.
    pub fn close(&mut self, count: u64, rule: &Rule) -> Option<Finding> {
        let observed = count as f64;
        let spread = self.variance.sqrt().max(MIN_DEVIATION);
        let deviation = (observed - self.mean) / spread;
        let anomalous = self.seen >= rule.warmup
            && count > 0
            && observed >= rule.ratio * self.mean
            && deviation >= rule.deviations;
        let finding = Finding {
            baseline: self.mean,
            deviation,
        };
        self.over = if anomalous { self.over + 1 } else { 0 };
        // An ongoing anomaly does not teach the baseline, so a burst is not learned as normal
        // while it lasts; one that outlasts a whole warm-up is the new normal and is learned.
        if !anomalous || self.over > rule.warmup {
            self.learn(observed, rule.weight());
        }
        (anomalous && self.over == rule.persist.max(1)).then_some(finding)
    }

    /// Takes `intervals` empty intervals into account (a quiet series): one by one as many as
    /// the baseline remembers, then the rest at once, so a series quiet for a year costs no
    /// more than one quiet for an hour.
    pub fn idle(&mut self, intervals: u64, rule: &Rule) {
        let remembered = u64::from(rule.warmup) * 4;
        for _ in 0..intervals.min(remembered) {
            self.over = 0;
            self.learn(0.0, rule.weight());
        }
        let rest = intervals.saturating_sub(remembered);
        if rest > 0 {
            let decay = (1.0 - rule.weight()).powf(rest as f64);
            self.mean *= decay;
            self.variance *= decay;
            self.seen = self
                .seen
                .saturating_add(u32::try_from(rest).unwrap_or(u32::MAX));
        }
    }

    fn learn(&mut self, observed: f64, weight: f64) {
        if self.seen == 0 {
            self.mean = observed;
            self.variance = 0.0;
        } else {
            let delta = observed - self.mean;
            self.mean += weight * delta;
            self.variance = (1.0 - weight) * (self.variance + weight * delta * delta);
        }
        self.seen = self.seen.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Rule = Rule {
        warmup: 30,
        ratio: 5.0,
        deviations: 6.0,
        persist: 2,
    };

    /// A reproducible Poisson-like count around `mean` (sum of Bernoulli trials).
    fn noisy(rng: &mut u64, mean: f64) -> u64 {
        let trials = (mean * 4.0).ceil() as u64;
        (0..trials)
            .filter(|_| {
                *rng = rng
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((*rng >> 33) as f64 / (1u64 << 31) as f64) < 0.25
            })
            .count() as u64
    }

    #[test]
    fn nothing_fires_during_the_warmup_however_high() {
        let mut baseline = Baseline::default();
        for _ in 0..RULE.warmup {
            assert_eq!(baseline.close(1000, &RULE), None);
        }
    }

    #[test]
    fn a_step_change_fires_once_on_its_second_interval() {
        let mut rng = 7;
        let mut baseline = Baseline::default();
        for _ in 0..100 {
            assert_eq!(baseline.close(noisy(&mut rng, 20.0), &RULE), None);
        }
        assert_eq!(
            baseline.close(200, &RULE),
            None,
            "one interval is not enough"
        );
        let finding = baseline.close(210, &RULE).expect("fires on the second");
        assert!((15.0..25.0).contains(&finding.baseline), "{finding:?}");
        assert!(finding.deviation >= 6.0, "{finding:?}");
        for _ in 0..10 {
            assert_eq!(baseline.close(205, &RULE), None, "once per episode");
        }
    }

    #[test]
    fn a_quiet_series_fires_on_a_burst_of_a_few_events() {
        let mut baseline = Baseline::default();
        for _ in 0..40 {
            baseline.close(0, &RULE);
        }
        assert_eq!(baseline.close(8, &RULE), None);
        assert!(baseline.close(9, &RULE).is_some());
    }

    #[test]
    fn a_new_level_that_lasts_becomes_the_baseline() {
        let mut baseline = Baseline::default();
        for _ in 0..40 {
            baseline.close(10, &RULE);
        }
        let fired = (0..200)
            .filter(|_| baseline.close(100, &RULE).is_some())
            .count();
        assert_eq!(fired, 1);
        for _ in 0..40 {
            baseline.close(100, &RULE);
        }
        assert_eq!(baseline.close(100, &RULE), None);
        assert!(baseline.mean > 90.0, "{baseline:?}");
    }

    /// The false-alarm rate on stationary noise, over 10k quiet intervals each for several
    /// rates: no alarm at all.
    #[test]
    fn stationary_noise_raises_no_alarm_over_10k_intervals() {
        for (seed, mean) in [(1, 0.5), (2, 3.0), (3, 20.0), (4, 200.0)] {
            let mut rng = seed;
            let mut baseline = Baseline::default();
            let alarms = (0..10_000)
                .filter(|_| baseline.close(noisy(&mut rng, mean), &RULE).is_some())
                .count();
            assert_eq!(alarms, 0, "mean {mean}");
        }
    }

    #[test]
    fn idle_intervals_decay_the_baseline() {
        let mut baseline = Baseline::default();
        for _ in 0..40 {
            baseline.close(50, &RULE);
        }
        baseline.idle(1_000_000, &RULE);
        assert!(baseline.mean < 0.01, "{baseline:?}");
        assert_eq!(baseline.seen, 40 + 1_000_000);
    }
}
