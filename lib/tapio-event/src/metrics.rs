//! Per-component counters: the one instrumentation rule of DESIGN.md. Every component updates
//! its own `ComponentMetrics` (atomics, updated per batch, never per event on a hot path); the
//! API serves them as Prometheus text and the CLI prints them as the `--summary` table.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

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
        }
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
        }
    }
}

/// Counters stay usable even if a panicking component poisoned the lock.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
