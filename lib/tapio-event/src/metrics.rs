//! Per-component counters: the one instrumentation rule of DESIGN.md. Every component updates
//! its own `ComponentMetrics` (atomics, updated per batch, never per event on a hot path); the
//! API serves them as Prometheus text and the CLI prints them as the `--summary` table.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in microseconds: from a batch handed on at
/// once (100 µs) to one held by a reorder buffer or a stalled destination (10 s). A fixed set
/// keeps recording to one atomic add per bucket search, with nothing allocated.
pub const LATENCY_BUCKETS_MICROS: [u64; 11] = [
    100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000, 10_000_000,
];

/// Which part of the graph a component is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ComponentKind {
    Source,
    Transform,
    Sink,
}

impl ComponentKind {
    /// The config section name, also the metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Source => "source",
            ComponentKind::Transform => "transform",
            ComponentKind::Sink => "sink",
        }
    }
}

/// Live counters of one component.
#[derive(Debug)]
pub struct ComponentMetrics {
    /// The component's name in the config.
    pub name: String,
    /// Its `type`.
    pub component_type: String,
    pub kind: ComponentKind,
    events_in: AtomicU64,
    events_out: AtomicU64,
    bytes_out: AtomicU64,
    buffer_events: AtomicU64,
    buffer_max: AtomicU64,
    dropped: Mutex<BTreeMap<&'static str, u64>>,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    evicted: Mutex<BTreeMap<&'static str, u64>>,
    warnings: Mutex<BTreeMap<&'static str, u64>>,
    state_sizes: Mutex<BTreeMap<&'static str, u64>>,
    latency: Latency,
}

/// How long batches take through a component, as a cumulative histogram: from entering the
/// component's input buffer to being sent on an output (transforms) or being taken for writing
/// (sinks), so a slow stage shows where events wait.
#[derive(Debug, Default)]
struct Latency {
    /// One count per bucket of [`LATENCY_BUCKETS_MICROS`] plus one for longer (`+Inf`), not
    /// cumulative; the snapshot adds them up.
    buckets: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

/// A copy of a component's latency histogram, in the cumulative form Prometheus expects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Batches at or under each bound of [`LATENCY_BUCKETS_MICROS`], cumulative.
    pub cumulative: Vec<u64>,
    /// Every batch observed (the `+Inf` bucket).
    pub count: u64,
    /// Their latencies added up, in microseconds.
    pub sum_micros: u64,
}

/// A point-in-time copy of a component's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub name: String,
    pub component_type: String,
    pub kind: ComponentKind,
    pub events_in: u64,
    pub events_out: u64,
    pub bytes_out: u64,
    pub buffer_events: u64,
    pub buffer_max: u64,
    /// Dropped events by reason (`buffer_full`, `no_downstream`, …).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Errored events by kind (`decode`, `oversized_line`, `write`, …).
    pub errors: BTreeMap<&'static str, u64>,
    /// Entries a component pushed out of its bounded state at the bound, by what they were
    /// (`entity_cache_keys`, `correlation_groups`, `reorder_buffer_events`, …). Nothing is
    /// lost with them, but a steady count says the bound is too small for the traffic.
    pub evicted: BTreeMap<&'static str, u64>,
    /// Warnings a component logged, by kind (`relist`, `api_error`, …): the log says what
    /// happened, the count how often.
    pub warnings: BTreeMap<&'static str, u64>,
    /// Objects a component holds in its state now, by what they are (`pods`, `nodes`, …).
    pub state_sizes: BTreeMap<&'static str, u64>,
    /// Per-batch latency through the component.
    pub latency: LatencySnapshot,
}

impl MetricsSnapshot {
    /// All dropped events, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// All errored events, whatever the kind.
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl ComponentMetrics {
    /// Fresh counters for the component `name` of `component_type`.
    pub fn new(
        name: impl Into<String>,
        component_type: impl Into<String>,
        kind: ComponentKind,
    ) -> Self {
        ComponentMetrics {
            name: name.into(),
            component_type: component_type.into(),
            kind,
            events_in: AtomicU64::new(0),
            events_out: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            buffer_events: AtomicU64::new(0),
            buffer_max: AtomicU64::new(0),
            dropped: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            evicted: Mutex::new(BTreeMap::new()),
            warnings: Mutex::new(BTreeMap::new()),
            state_sizes: Mutex::new(BTreeMap::new()),
            latency: Latency::default(),
        }
    }

    /// Records one batch's time through the component.
    pub fn observe_latency(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS_MICROS.partition_point(|&bound| bound < micros);
        self.latency.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Events received from upstream (or read, for a source).
    pub fn add_events_in(&self, n: usize) {
        self.events_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Events passed downstream (or written, for a sink).
    pub fn add_events_out(&self, n: usize) {
        self.events_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes written out (sinks).
    pub fn add_bytes_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Events dropped on purpose, with why.
    pub fn add_dropped(&self, reason: &'static str, n: usize) {
        if n > 0 {
            *lock(&self.dropped).entry(reason).or_default() += n as u64;
        }
    }

    /// Events that failed, with the kind of failure.
    pub fn add_errors(&self, kind: &'static str, n: usize) {
        if n > 0 {
            *lock(&self.errors).entry(kind).or_default() += n as u64;
        }
    }

    /// Entries of bounded state pushed out at the bound, with what they were.
    pub fn add_evicted(&self, what: &'static str, n: u64) {
        if n > 0 {
            *lock(&self.evicted).entry(what).or_default() += n;
        }
    }

    /// One warning of `kind` was logged.
    pub fn add_warning(&self, kind: &'static str) {
        *lock(&self.warnings).entry(kind).or_default() += 1;
    }

    /// Records how many `what` the component's state holds now.
    pub fn set_state_size(&self, what: &'static str, n: u64) {
        lock(&self.state_sizes).insert(what, n);
    }

    /// Declares the capacity of the component's input buffer.
    pub fn set_buffer_max(&self, max_events: usize) {
        self.buffer_max.store(max_events as u64, Ordering::Relaxed);
    }

    /// Records how many events wait in the component's input buffer.
    pub fn set_buffer_events(&self, n: usize) {
        self.buffer_events.store(n as u64, Ordering::Relaxed);
    }

    /// A consistent-enough copy for reporting.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            name: self.name.clone(),
            component_type: self.component_type.clone(),
            kind: self.kind,
            events_in: self.events_in.load(Ordering::Relaxed),
            events_out: self.events_out.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            buffer_events: self.buffer_events.load(Ordering::Relaxed),
            buffer_max: self.buffer_max.load(Ordering::Relaxed),
            dropped: lock(&self.dropped).clone(),
            errors: lock(&self.errors).clone(),
            evicted: lock(&self.evicted).clone(),
            warnings: lock(&self.warnings).clone(),
            state_sizes: lock(&self.state_sizes).clone(),
            latency: self.latency.snapshot(),
        }
    }
}

impl Latency {
    fn snapshot(&self) -> LatencySnapshot {
        let mut total = 0;
        let mut cumulative = Vec::with_capacity(LATENCY_BUCKETS_MICROS.len());
        for bucket in &self.buckets[..LATENCY_BUCKETS_MICROS.len()] {
            total += bucket.load(Ordering::Relaxed);
            cumulative.push(total);
        }
        total += self.buckets[LATENCY_BUCKETS_MICROS.len()].load(Ordering::Relaxed);
        LatencySnapshot {
            cumulative,
            count: total,
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// Counters stay usable even if a panicking component poisoned the lock.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_cumulative_buckets() {
        let metrics = ComponentMetrics::new("t", "test", ComponentKind::Transform);
        metrics.observe_latency(Duration::from_micros(50));
        metrics.observe_latency(Duration::from_micros(100));
        metrics.observe_latency(Duration::from_millis(3));
        metrics.observe_latency(Duration::from_secs(60));
        let latency = metrics.snapshot().latency;
        assert_eq!(latency.count, 4);
        assert_eq!(latency.sum_micros, 50 + 100 + 3_000 + 60_000_000);
        assert_eq!(latency.cumulative[0], 2, "<= 100µs");
        assert_eq!(latency.cumulative[1], 2, "<= 500µs");
        assert_eq!(latency.cumulative[3], 3, "<= 5ms");
        assert_eq!(
            *latency.cumulative.last().unwrap(),
            3,
            "60 s is only in +Inf"
        );
    }
}
