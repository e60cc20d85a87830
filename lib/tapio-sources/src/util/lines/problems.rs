//! Counting, reporting (rate-limited) and routing the inputs a source could not decode.

use std::mem;
use std::time::Duration;

use tapio_event::throttle::Throttle;
use tapio_event::{ComponentMetrics, ERRORS_OUTPUT, EventBatch, Outputs};

use super::decoding::Decoded;

/// At most one warning per kind of problem this often, however many lines are bad.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(5);
/// Counts, reports and routes the bad lines of one source.
#[derive(Debug)]
pub(crate) struct Problems {
    undecodable: Throttle,
    oversized: Throttle,
    last_error: Option<String>,
}

impl Default for Problems {
    fn default() -> Self {
        Problems {
            undecodable: Throttle::new(WARN_EVERY),
            oversized: Throttle::new(WARN_EVERY),
            last_error: None,
        }
    }
}

impl Problems {
    /// Accounts for a decoded chunk read from `origin` (counters, rate-limited warnings) and sends
    /// its error events to the `errors` output. The good batches are left to the caller.
    pub async fn report(
        &mut self,
        decoded: &mut Decoded,
        origin: &str,
        out: &mut Outputs,
        metrics: &ComponentMetrics,
    ) {
        metrics.add_events_in(decoded.lines);
        self.undecodable(
            origin,
            decoded.undecodable,
            decoded.last_error.take(),
            metrics,
        );
        metrics.add_errors("oversized_line", decoded.oversized);
        let oversized = self.oversized.add(decoded.oversized);
        self.warn(origin, None, oversized);
        for errors in mem::take(&mut decoded.errors) {
            out.send_to(ERRORS_OUTPUT, EventBatch::new(errors)).await;
        }
    }

    /// Counts `count` inputs that did not decode, the last of them failing with `last_error`,
    /// and warns about them (rate-limited). Sources that decode record by record (`kafka`) call
    /// it directly; line sources through [`Problems::report`].
    pub fn undecodable(
        &mut self,
        origin: &str,
        count: usize,
        last_error: Option<String>,
        metrics: &ComponentMetrics,
    ) {
        metrics.add_errors("decode", count);
        if last_error.is_some() {
            self.last_error = last_error;
        }
        let due = self.undecodable.add(count);
        self.warn(origin, due, None);
    }

    /// Reports what the last rate-limited warnings left out; called when the source stops.
    pub fn flush(&mut self, origin: &str) {
        let undecodable = self.undecodable.flush();
        let oversized = self.oversized.flush();
        self.warn(origin, undecodable, oversized);
    }

    fn warn(&self, origin: &str, undecodable: Option<usize>, oversized: Option<usize>) {
        if let Some(skipped) = undecodable {
            let last_error = self.last_error.as_deref().unwrap_or("?");
            tracing::warn!(
                origin,
                skipped,
                last_error,
                "skipped input that is not UnifiedEvent JSON (counted as errors, kind \"decode\", and sent to the `errors` output if anything reads it)"
            );
        }
        if let Some(skipped) = oversized {
            tracing::warn!(
                origin,
                skipped,
                "skipped lines longer than max_line_bytes (counted as errors, kind \"oversized_line\")"
            );
        }
    }
}
