//! Every (entity, signal) series the transform counts, bounded: counts per interval of event
//! time, closed when the watermark passes the interval's end (or when a later event of the same
//! series arrives first), each closed interval judged by the series' [`Baseline`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use tapio_event::Entity;

use super::Signal;
use super::detector::{Baseline, Finding, Rule};

/// One series: a signal on one entity.
struct Series {
    /// The entity as the anomaly event names it (no attributes).
    entity: Entity,
    signal: Signal,
    /// The interval being counted (index of `interval` lengths since the epoch).
    open: i64,
    count: u64,
    /// Whether `open` was already judged (the watermark passed it); the next event opens the
    /// next interval it falls in.
    closed: bool,
    baseline: Baseline,
    /// Bumped when the slot is reused, so queued references to the old series are ignored.
    generation: u32,
}

/// An interval the detector judged anomalous.
pub(super) struct Anomaly {
    pub entity: Entity,
    pub signal: Signal,
    /// Index of the interval that made it fire.
    pub interval: i64,
    pub observed: u64,
    pub finding: Finding,
}

/// The bounded store of series.
pub(super) struct SeriesStore {
    rule: Rule,
    max_series: usize,
    slots: Vec<Series>,
    /// Entity id → the slot of each signal's series (`NONE` for none).
    by_entity: HashMap<Box<str>, [u32; Signal::ALL.len()]>,
    /// Open intervals by index, earliest first: `(interval, slot, generation)`.
    open: BinaryHeap<Reverse<(i64, u32, u32)>>,
    /// Series whose interval was closed by the watermark and which got no event since, oldest
    /// first: the first to evict.
    idle: VecDeque<(u32, u32)>,
}

const NONE: u32 = u32::MAX;

impl SeriesStore {
    /// An empty store of at most `max_series` series (at least one).
    pub fn new(rule: Rule, max_series: usize) -> Self {
        SeriesStore {
            rule,
            max_series: max_series.max(1),
            slots: Vec::new(),
            by_entity: HashMap::new(),
            open: BinaryHeap::new(),
            idle: VecDeque::new(),
        }
    }

    /// Counts one event of `signal` about `entity` in `interval`; anomalies found by intervals
    /// this closes go to `found`. Returns whether a series was evicted to make room. An event
    /// in an interval its series already judged is not counted.
    pub fn count(
        &mut self,
        entity: &Entity,
        signal: Signal,
        interval: i64,
        found: &mut Vec<Anomaly>,
    ) -> bool {
        let slot = self
            .by_entity
            .get(entity.id.as_str())
            .map_or(NONE, |slots| slots[signal as usize]);
        if slot == NONE {
            return self.insert(entity, signal, interval);
        }
        let series = &mut self.slots[slot as usize];
        if interval < series.open || (interval == series.open && series.closed) {
            return false;
        }
        if interval > series.open {
            if !series.closed {
                let judged = judge(series, &self.rule);
                found.extend(judged);
            }
            let skipped = u64::try_from(interval - series.open - 1).unwrap_or(0);
            series.baseline.idle(skipped, &self.rule);
            series.open = interval;
            series.count = 0;
            series.closed = false;
            self.open.push(Reverse((interval, slot, series.generation)));
        }
        self.slots[slot as usize].count += 1;
        false
    }

    /// Judges every open interval that ends at or before interval index `before` starts.
    pub fn close_before(&mut self, before: i64, found: &mut Vec<Anomaly>) {
        while let Some(&Reverse((interval, slot, generation))) = self.open.peek() {
            if interval >= before {
                break;
            }
            self.open.pop();
            let series = &mut self.slots[slot as usize];
            if series.generation != generation || series.open != interval || series.closed {
                continue;
            }
            found.extend(judge(series, &self.rule));
            self.idle.push_back((slot, generation));
        }
    }

    /// Judges every interval still open: the end of input.
    pub fn close_all(&mut self, found: &mut Vec<Anomaly>) {
        self.close_before(i64::MAX, found);
    }

    /// Starts a series for `entity` and `signal` with one event in `interval`, evicting the
    /// least recently active series when full; returns whether it evicted.
    fn insert(&mut self, entity: &Entity, signal: Signal, interval: i64) -> bool {
        let series = Series {
            entity: Entity {
                attributes: Default::default(),
                ..entity.clone()
            },
            signal,
            open: interval,
            count: 1,
            closed: false,
            baseline: Baseline::default(),
            generation: 0,
        };
        let (slot, evicted) = if self.slots.len() < self.max_series {
            self.slots.push(series);
            (self.slots.len() - 1, false)
        } else {
            let victim = self.victim();
            let old = &mut self.slots[victim];
            if let Some(slots) = self.by_entity.get_mut(old.entity.id.as_str()) {
                slots[old.signal as usize] = NONE;
                if slots.iter().all(|&s| s == NONE) {
                    self.by_entity.remove(old.entity.id.as_str());
                }
            }
            let generation = old.generation.wrapping_add(1);
            *old = Series {
                generation,
                ..series
            };
            (victim, true)
        };
        let slot = u32::try_from(slot).expect("max_series fits u32, checked at build");
        let generation = self.slots[slot as usize].generation;
        self.by_entity
            .entry(entity.id.as_str().into())
            .or_insert([NONE; Signal::ALL.len()])[signal as usize] = slot;
        self.open.push(Reverse((interval, slot, generation)));
        evicted
    }

    /// The slot to reuse: the series idle the longest, else the one whose open interval is the
    /// oldest.
    fn victim(&mut self) -> usize {
        while let Some((slot, generation)) = self.idle.pop_front() {
            let series = &self.slots[slot as usize];
            if series.generation == generation && series.closed {
                return slot as usize;
            }
        }
        while let Some(Reverse((interval, slot, generation))) = self.open.pop() {
            let series = &self.slots[slot as usize];
            if series.generation == generation && series.open == interval && !series.closed {
                return slot as usize;
            }
        }
        0
    }
}

/// Judges `series`' open interval and marks it closed.
fn judge(series: &mut Series, rule: &Rule) -> Option<Anomaly> {
    series.closed = true;
    let finding = series.baseline.close(series.count, rule)?;
    Some(Anomaly {
        entity: series.entity.clone(),
        signal: series.signal,
        interval: series.open,
        observed: series.count,
        finding,
    })
}
