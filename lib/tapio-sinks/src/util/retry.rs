//! The backoff every sink retries a failed write with: a write that fails is retried until it
//! succeeds, while the sink's buffer fills and backpressure reaches the sources.

use std::time::Duration;

pub(crate) use tapio_event::backoff::Backoff;

/// The first wait after a failed write, and the longest.
const INITIAL: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(30);

/// A sink's backoff: doubling from 100 ms up to 30 s.
pub(crate) fn sink_backoff() -> Backoff {
    Backoff::new(INITIAL, MAX)
}
