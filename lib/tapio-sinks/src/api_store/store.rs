//! The store itself: a window of the most recent events (at most `max_events`, none older than
//! `retention` since it arrived), in arrival order, with one time-ordered index per filterable
//! key so a query walks only the candidates of its most selective filter, and the live
//! subscriptions `StreamEvents` reads.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use tapio_event::{ComponentMetrics, EventType, Severity, UnifiedEvent};
use tokio::sync::mpsc;

/// An event's place in time order: its timestamp, then its arrival, so that two events of the
/// same nanosecond still have one order and a page boundary between them is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    nanos: i64,
    seq: u64,
}

impl Cursor {
    /// The page token form, `<nanos>.<seq>`, that [`Cursor::parse`] reads back.
    pub fn token(self) -> String {
        format!("{}.{}", self.nanos, self.seq)
    }

    /// Reads a token [`Cursor::token`] wrote; `None` when it is not one.
    pub fn parse(token: &str) -> Option<Cursor> {
        let (nanos, seq) = token.split_once('.')?;
        Some(Cursor {
            nanos: nanos.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

/// What an event must match; unset fields match everything. Shared by queries and streams.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// The event's type.
    pub kind: Option<EventType>,
    /// The event's `source`.
    pub source: Option<String>,
    /// The entity's namespace, or the Kubernetes object's.
    pub namespace: Option<String>,
    /// The entity's id or name.
    pub entity: Option<String>,
    /// `correlation.pattern`.
    pub pattern: Option<String>,
    /// `correlation.correlation_id`.
    pub correlation_id: Option<String>,
    /// `impact.severity` at least this.
    pub min_severity: Option<Severity>,
    /// Not before (inclusive), nanoseconds since the Unix epoch.
    pub since: Option<i64>,
    /// Not after (inclusive), nanoseconds since the Unix epoch.
    pub until: Option<i64>,
}

/// The event's namespaces: the entity's and the Kubernetes object's (usually the same).
fn namespaces(event: &UnifiedEvent) -> impl Iterator<Item = &str> {
    let entity = event.entity.as_ref().and_then(|e| e.namespace.as_deref());
    let kube = event
        .kubernetes
        .as_ref()
        .and_then(|k| k.namespace.as_deref());
    entity
        .into_iter()
        .chain(kube.filter(|k| Some(*k) != entity))
}

/// The event's entity keys: its id and, when different, its name.
fn entities(event: &UnifiedEvent) -> impl Iterator<Item = &str> {
    event.entity.iter().flat_map(|e| {
        std::iter::once(e.id.as_str()).chain(e.name.as_deref().filter(|n| *n != e.id))
    })
}

fn pattern(event: &UnifiedEvent) -> Option<&str> {
    event.correlation.as_ref()?.pattern.as_deref()
}

fn correlation_id(event: &UnifiedEvent) -> Option<&str> {
    event.correlation.as_ref()?.correlation_id.as_deref()
}

impl EventFilter {
    /// Whether `event` passes every set field.
    pub fn matches(&self, event: &UnifiedEvent) -> bool {
        let nanos = event.timestamp.as_nanos();
        self.kind.is_none_or(|k| k == event.kind)
            && self.source.as_ref().is_none_or(|s| *s == event.source)
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| namespaces(event).any(|e| e == n))
            && self
                .entity
                .as_ref()
                .is_none_or(|n| entities(event).any(|e| e == n))
            && self
                .pattern
                .as_ref()
                .is_none_or(|p| pattern(event) == Some(p))
            && self
                .correlation_id
                .as_ref()
                .is_none_or(|c| correlation_id(event) == Some(c))
            && self.min_severity.is_none_or(|min| {
                event
                    .impact
                    .as_ref()
                    .and_then(|i| i.severity)
                    .is_some_and(|s| s >= min)
            })
            && self.since.is_none_or(|s| nanos >= s)
            && self.until.is_none_or(|u| nanos <= u)
    }
}

/// A page of results, newest first, and where the next page starts when there is one.
#[derive(Debug, Clone)]
pub struct Page {
    /// The page's events, newest first.
    pub events: Vec<Arc<UnifiedEvent>>,
    /// Where the next page starts; `None`: this was the last.
    pub next: Option<Cursor>,
}

/// A summary and the stored events of its story.
#[derive(Debug, Clone)]
pub struct Story {
    /// The story's summaries (a group can be summarised more than once), newest first.
    pub summaries: Vec<Arc<UnifiedEvent>>,
    /// The stored events tagged with the story's id or listed in its summaries, newest first.
    pub related: Vec<Arc<UnifiedEvent>>,
}

/// One index: per key, the events carrying it in time order.
type Index = HashMap<String, BTreeSet<Cursor>>;

/// The indexes a filter field can use.
#[derive(Default)]
struct Indexes {
    kind: HashMap<EventType, BTreeSet<Cursor>>,
    source: Index,
    namespace: Index,
    entity: Index,
    pattern: Index,
    correlation_id: Index,
}

/// Adds or removes `key` in `index` under `value`, dropping sets that become empty.
fn update(index: &mut Index, value: &str, key: Cursor, add: bool) {
    if add {
        index.entry(value.to_owned()).or_default().insert(key);
    } else if let Some(set) = index.get_mut(value) {
        set.remove(&key);
        if set.is_empty() {
            index.remove(value);
        }
    }
}

impl Indexes {
    fn apply(&mut self, event: &UnifiedEvent, key: Cursor, add: bool) {
        let kind = self.kind.entry(event.kind).or_default();
        if add {
            kind.insert(key);
        } else {
            kind.remove(&key);
        }
        update(&mut self.source, &event.source, key, add);
        for namespace in namespaces(event) {
            update(&mut self.namespace, namespace, key, add);
        }
        for entity in entities(event) {
            update(&mut self.entity, entity, key, add);
        }
        if let Some(pattern) = pattern(event) {
            update(&mut self.pattern, pattern, key, add);
        }
        if let Some(id) = correlation_id(event) {
            update(&mut self.correlation_id, id, key, add);
        }
    }

    /// The smallest candidate set `filter`'s indexed fields allow (`None`: none is set, walk
    /// everything in time order). A set field with no events gives the empty set.
    fn candidates<'a>(
        &'a self,
        filter: &EventFilter,
        empty: &'a BTreeSet<Cursor>,
    ) -> Option<&'a BTreeSet<Cursor>> {
        let lookup = |index: &'a Index, value: &Option<String>| {
            value
                .as_ref()
                .map(|v| index.get(v.as_str()).unwrap_or(empty))
        };
        [
            filter.kind.map(|k| self.kind.get(&k).unwrap_or(empty)),
            lookup(&self.source, &filter.source),
            lookup(&self.namespace, &filter.namespace),
            lookup(&self.entity, &filter.entity),
            lookup(&self.pattern, &filter.pattern),
            lookup(&self.correlation_id, &filter.correlation_id),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|set| set.len())
    }
}

struct Stored {
    key: Cursor,
    arrived: Instant,
    event: Arc<UnifiedEvent>,
}

/// The window and its indexes, behind the store's lock.
struct Window {
    next_seq: u64,
    /// In arrival order; `events[i]` has `seq == first_seq + i`.
    events: VecDeque<Stored>,
    by_time: BTreeSet<Cursor>,
    by_id: HashMap<String, Cursor>,
    indexes: Indexes,
}

impl Window {
    fn get(&self, key: Cursor) -> &Arc<UnifiedEvent> {
        let first = self.events.front().map_or(0, |s| s.key.seq);
        &self.events[usize::try_from(key.seq - first).expect("a window fits in memory")].event
    }

    /// Removes the oldest arrival.
    fn pop(&mut self) -> bool {
        let Some(stored) = self.events.pop_front() else {
            return false;
        };
        self.by_time.remove(&stored.key);
        if self.by_id.get(&stored.event.id) == Some(&stored.key) {
            self.by_id.remove(&stored.event.id);
        }
        self.indexes.apply(&stored.event, stored.key, false);
        true
    }
}

/// A live subscription's sending side.
struct Subscriber {
    filter: EventFilter,
    queue: mpsc::Sender<Arc<UnifiedEvent>>,
    dropped: Arc<AtomicBool>,
}

/// What a [`Subscription`] yields when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The client did not keep up: its queue filled, so the store stopped feeding it rather
    /// than slow the pipeline.
    TooSlow,
    /// The store is gone (the pipeline stopped).
    Closed,
}

/// Live events matching a filter, as they reach the store.
pub struct Subscription {
    queue: mpsc::Receiver<Arc<UnifiedEvent>>,
    dropped: Arc<AtomicBool>,
}

impl Subscription {
    /// The next event, or why there are no more.
    pub async fn next(&mut self) -> Result<Arc<UnifiedEvent>, StreamEnd> {
        match self.queue.recv().await {
            Some(event) => Ok(event),
            None if self.dropped.load(Ordering::Acquire) => Err(StreamEnd::TooSlow),
            None => Err(StreamEnd::Closed),
        }
    }
}

/// The shared handle: the `api_store` sink writes it, the API reads it. Cloning is cheap.
#[derive(Clone)]
pub struct ApiStore(Arc<Shared>);

struct Shared {
    max_events: usize,
    retention: Duration,
    stream_queue: usize,
    window: RwLock<Window>,
    subscribers: Mutex<Vec<Subscriber>>,
    /// Set once the sink runs, for counting what the store does.
    metrics: OnceLock<Arc<ComponentMetrics>>,
    dropped_clients: AtomicU64,
}

impl ApiStore {
    /// An empty store holding at most `max_events` events, none longer than `retention`, and
    /// queueing at most `stream_queue` events per live subscription.
    pub fn new(max_events: usize, retention: Duration, stream_queue: usize) -> ApiStore {
        ApiStore(Arc::new(Shared {
            max_events,
            retention,
            stream_queue,
            window: RwLock::new(Window {
                next_seq: 0,
                events: VecDeque::new(),
                by_time: BTreeSet::new(),
                by_id: HashMap::new(),
                indexes: Indexes::default(),
            }),
            subscribers: Mutex::new(Vec::new()),
            metrics: OnceLock::new(),
            dropped_clients: AtomicU64::new(0),
        }))
    }

    /// Where the store counts evictions and dropped stream clients (the sink's counters).
    pub fn attach_metrics(&self, metrics: Arc<ComponentMetrics>) {
        let _ = self.0.metrics.set(metrics);
    }

    fn window(&self) -> std::sync::RwLockReadGuard<'_, Window> {
        self.0.window.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `events` (evicting the oldest beyond `max_events` or `retention`) and hands
    /// each to the live subscriptions it matches.
    pub fn insert(&self, events: impl IntoIterator<Item = Arc<UnifiedEvent>>, now: Instant) {
        let events: Vec<_> = events.into_iter().collect();
        self.publish(&events);
        let mut window = self.0.window.write().unwrap_or_else(|e| e.into_inner());
        for event in events {
            let key = Cursor {
                nanos: event.timestamp.as_nanos(),
                seq: window.next_seq,
            };
            window.next_seq += 1;
            window.by_time.insert(key);
            window.by_id.insert(event.id.clone(), key);
            window.indexes.apply(&event, key, true);
            window.events.push_back(Stored {
                key,
                arrived: now,
                event,
            });
        }
        let mut evicted = 0;
        while window.events.len() > self.0.max_events && window.pop() {
            evicted += 1;
        }
        evicted += Self::expire_locked(&mut window, self.0.retention, now);
        self.count(evicted, window.events.len());
    }

    /// Drops what arrived more than `retention` before `now`.
    pub fn expire(&self, now: Instant) {
        let mut window = self.0.window.write().unwrap_or_else(|e| e.into_inner());
        let evicted = Self::expire_locked(&mut window, self.0.retention, now);
        self.count(evicted, window.events.len());
    }

    fn expire_locked(window: &mut Window, retention: Duration, now: Instant) -> u64 {
        let mut evicted = 0;
        while window
            .events
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.arrived) > retention)
        {
            window.pop();
            evicted += 1;
        }
        evicted
    }

    fn count(&self, evicted: u64, held: usize) {
        if let Some(metrics) = self.0.metrics.get() {
            if evicted > 0 {
                metrics.add_evicted("events", evicted);
            }
            metrics.set_state_size("events", held as u64);
        }
    }

    /// Hands `events` to the subscriptions that match them; a subscription whose queue is full
    /// is dropped and counted, so a slow client never slows the pipeline. Costs one check of
    /// an empty list when nobody streams.
    fn publish(&self, events: &[Arc<UnifiedEvent>]) {
        let mut subscribers = self.0.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if subscribers.is_empty() {
            return;
        }
        subscribers.retain(|subscriber| {
            for event in events.iter().filter(|e| subscriber.filter.matches(e)) {
                match subscriber.queue.try_send(Arc::clone(event)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        subscriber.dropped.store(true, Ordering::Release);
                        self.0.dropped_clients.fetch_add(1, Ordering::Relaxed);
                        if let Some(metrics) = self.0.metrics.get() {
                            metrics.add_errors("slow_stream_client", 1);
                        }
                        tracing::warn!("a StreamEvents client fell behind and was dropped");
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }

    /// Live events matching `filter` from now on.
    pub fn subscribe(&self, filter: EventFilter) -> Subscription {
        let (queue, receiver) = mpsc::channel(self.0.stream_queue.max(1));
        let dropped = Arc::new(AtomicBool::new(false));
        self.0
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Subscriber {
                filter,
                queue,
                dropped: Arc::clone(&dropped),
            });
        Subscription {
            queue: receiver,
            dropped,
        }
    }

    /// Stream clients dropped for falling behind, since the store was made.
    pub fn dropped_clients(&self) -> u64 {
        self.0.dropped_clients.load(Ordering::Relaxed)
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        self.window().events.len()
    }

    /// Whether the store holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// At most `limit` events matching `filter`, newest first, starting after `after` (a
    /// previous page's `next`). Walks only the smallest index the filter can use, within the
    /// filter's time bounds.
    pub fn query(&self, filter: &EventFilter, limit: usize, after: Option<Cursor>) -> Page {
        let window = self.window();
        let empty = BTreeSet::new();
        let set = window
            .indexes
            .candidates(filter, &empty)
            .unwrap_or(&window.by_time);
        let low = Cursor {
            nanos: filter.since.unwrap_or(i64::MIN),
            seq: 0,
        };
        let high = Cursor {
            nanos: filter.until.unwrap_or(i64::MAX),
            seq: u64::MAX,
        };
        // After a page: strictly older than the last event it returned.
        let upper = match after {
            Some(after) if after <= high => Bound::Excluded(after),
            _ => Bound::Included(high),
        };
        let empty_range = match upper {
            Bound::Excluded(a) => a <= low,
            _ => high < low,
        };
        if empty_range {
            return Page {
                events: Vec::new(),
                next: None,
            };
        }
        let mut events = Vec::new();
        let mut last = None;
        let mut next = None;
        for key in set.range((Bound::Included(low), upper)).rev() {
            let event = window.get(*key);
            if !filter.matches(event) {
                continue;
            }
            if events.len() == limit {
                next = last;
                break;
            }
            events.push(Arc::clone(event));
            last = Some(*key);
        }
        Page { events, next }
    }

    /// The story `correlation_id`: its summaries and its stored events; `None` when the store
    /// holds no summary with that id.
    pub fn story(&self, correlation_id: &str) -> Option<Story> {
        let window = self.window();
        let tagged = window.indexes.correlation_id.get(correlation_id)?;
        let (summaries, mut related): (Vec<_>, Vec<_>) = tagged
            .iter()
            .rev()
            .map(|key| (*key, window.get(*key)))
            .partition(|(_, e)| e.kind == EventType::Correlation);
        if summaries.is_empty() {
            return None;
        }
        let listed = summaries
            .iter()
            .flat_map(|(_, s)| s.correlation.iter().flat_map(|c| &c.related_events))
            .filter_map(|id| window.by_id.get(id).map(|key| (*key, window.get(*key))));
        let mut seen: HashSet<Cursor> = related.iter().map(|(k, _)| *k).collect();
        let extra: Vec<_> = listed.filter(|(k, _)| seen.insert(*k)).collect();
        related.extend(extra);
        related.sort_by_key(|(key, _)| std::cmp::Reverse(*key));
        Some(Story {
            summaries: summaries.into_iter().map(|(_, e)| Arc::clone(e)).collect(),
            related: related.into_iter().map(|(_, e)| Arc::clone(e)).collect(),
        })
    }
}
