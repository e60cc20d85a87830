//! The store's indexed queries against a full scan of the same events, on random data with
//! few distinct values per field (so filters match, collide and page), plus eviction, stories
//! and live subscriptions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tapio_event::{
    CorrelationContext, Entity, EntityType, EventType, ImpactContext, KubernetesContext, Severity,
    Timestamp, UnifiedEvent,
};

use super::store::{ApiStore, Cursor, EventFilter, StreamEnd};

/// xorshift64*: reproducible random data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `Some` of one of `n` values `prefix<i>`, or `None` a quarter of the time.
    fn maybe(&mut self, prefix: &str, n: u64) -> Option<String> {
        (self.below(4) != 0).then(|| format!("{prefix}{}", self.below(n)))
    }
}

const SEVERITIES: [Severity; 5] = [
    Severity::Debug,
    Severity::Info,
    Severity::Warning,
    Severity::Error,
    Severity::Critical,
];

fn random_event(rng: &mut Rng, serial: u64) -> UnifiedEvent {
    let kind = EventType::ALL[rng.below(EventType::ALL.len() as u64) as usize];
    // Few distinct timestamps, so that ties exercise the arrival order.
    let mut event = UnifiedEvent::new(
        kind,
        format!("src{}", rng.below(3)),
        Timestamp(1_000 + rng.below(40) as i64),
    );
    event.id = format!("e{serial}");
    if let Some(id) = rng.maybe("pod", 6) {
        let mut entity = Entity::new(EntityType::Pod, id);
        entity.name = rng.maybe("name", 4);
        entity.namespace = rng.maybe("ns", 3);
        event.entity = Some(Box::new(entity));
    }
    if let Some(namespace) = rng.maybe("ns", 3) {
        event.kubernetes = Some(Box::new(KubernetesContext {
            namespace: Some(namespace),
            ..Default::default()
        }));
    }
    if rng.below(2) == 0 {
        event.correlation = Some(Box::new(CorrelationContext {
            correlation_id: rng.maybe("c", 5),
            pattern: rng.maybe("p", 3),
            ..Default::default()
        }));
    }
    if rng.below(2) == 0 {
        event.impact = Some(Box::new(ImpactContext {
            severity: Some(SEVERITIES[rng.below(5) as usize]),
            ..Default::default()
        }));
    }
    event
}

fn random_filter(rng: &mut Rng) -> EventFilter {
    let sometimes = |rng: &mut Rng, prefix: &str, n: u64| {
        if rng.below(3) == 0 {
            rng.maybe(prefix, n)
        } else {
            None
        }
    };
    let entity_prefix = if rng.below(2) == 0 { "pod" } else { "name" };
    EventFilter {
        kind: (rng.below(4) == 0)
            .then(|| EventType::ALL[rng.below(EventType::ALL.len() as u64) as usize]),
        source: sometimes(rng, "src", 3),
        namespace: sometimes(rng, "ns", 3),
        entity: sometimes(rng, entity_prefix, 6),
        pattern: sometimes(rng, "p", 3),
        correlation_id: sometimes(rng, "c", 5),
        min_severity: (rng.below(4) == 0).then(|| SEVERITIES[rng.below(5) as usize]),
        since: (rng.below(3) == 0).then(|| 1_000 + rng.below(40) as i64),
        until: (rng.below(3) == 0).then(|| 1_000 + rng.below(40) as i64),
    }
}

/// Every matching id of the last `max_events` arrivals, newest first by (timestamp, arrival).
fn full_scan(events: &[UnifiedEvent], max_events: usize, filter: &EventFilter) -> Vec<String> {
    let kept = &events[events.len().saturating_sub(max_events)..];
    let mut matching: Vec<(i64, usize, &str)> = kept
        .iter()
        .enumerate()
        .filter(|(_, e)| filter.matches(e))
        .map(|(i, e)| (e.timestamp.as_nanos(), i, e.id.as_str()))
        .collect();
    matching.sort_by_key(|m| std::cmp::Reverse((m.0, m.1)));
    matching
        .into_iter()
        .map(|(_, _, id)| id.to_owned())
        .collect()
}

/// Every page of `filter`, `limit` at a time, concatenated.
fn all_pages(store: &ApiStore, filter: &EventFilter, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = None;
    loop {
        let page = store.query(filter, limit, after);
        assert!(page.events.len() <= limit);
        ids.extend(page.events.iter().map(|e| e.id.clone()));
        match page.next {
            // Through the token, as clients hand it back.
            Some(next) => after = Some(Cursor::parse(&next.token()).expect("a token parses")),
            None => return ids,
        }
    }
}

#[test]
fn indexed_queries_equal_a_full_scan_of_random_data() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..4 {
        let max_events = 150 + round * 100;
        let store = ApiStore::new(max_events, Duration::from_secs(3600), 16);
        let events: Vec<_> = (0..600).map(|i| random_event(&mut rng, i)).collect();
        let now = Instant::now();
        // In batches of varying size, as the sink receives them.
        let mut rest = &events[..];
        while !rest.is_empty() {
            let n = (1 + rng.below(50) as usize).min(rest.len());
            store.insert(rest[..n].iter().cloned().map(Arc::new), now);
            rest = &rest[n..];
        }
        assert_eq!(store.len(), max_events);
        let mut nonempty = 0;
        for _ in 0..300 {
            let filter = random_filter(&mut rng);
            let expected = full_scan(&events, max_events, &filter);
            nonempty += usize::from(!expected.is_empty());
            let limit = 1 + rng.below(30) as usize;
            assert_eq!(
                all_pages(&store, &filter, limit),
                expected,
                "{filter:?}, limit {limit}"
            );
            let first = store.query(&filter, limit, None);
            assert_eq!(first.next.is_some(), expected.len() > limit, "{filter:?}");
        }
        // The random filters are not all trivially empty.
        assert!(
            nonempty > 100,
            "{nonempty} of 300 filters matched something"
        );
    }
}

#[test]
fn retention_evicts_by_arrival_time() {
    let store = ApiStore::new(100, Duration::from_secs(10), 16);
    let start = Instant::now();
    let mut rng = Rng(7);
    store.insert((0..5).map(|i| Arc::new(random_event(&mut rng, i))), start);
    store.insert(
        (5..8).map(|i| Arc::new(random_event(&mut rng, i))),
        start + Duration::from_secs(6),
    );
    store.expire(start + Duration::from_secs(11));
    let ids = all_pages(&store, &EventFilter::default(), 100);
    let mut ids = ids;
    ids.sort();
    assert_eq!(ids, ["e5", "e6", "e7"]);
    store.expire(start + Duration::from_secs(17));
    assert!(store.is_empty());
}

fn tagged(id: &str, kind: EventType, correlation_id: &str, nanos: i64) -> UnifiedEvent {
    let mut event = UnifiedEvent::new(kind, "test", Timestamp(nanos));
    event.id = id.into();
    event.correlation = Some(Box::new(CorrelationContext {
        correlation_id: Some(correlation_id.into()),
        ..Default::default()
    }));
    event
}

#[test]
fn a_story_is_its_summaries_and_its_events() {
    let store = ApiStore::new(100, Duration::from_secs(3600), 16);
    let mut summary = tagged("s", EventType::Correlation, "c1", 50);
    // Listed by the summary without carrying the id (an event the correlator only listed).
    let listed = UnifiedEvent::new(EventType::Process, "test", Timestamp(5));
    let listed = UnifiedEvent {
        id: "listed".into(),
        ..listed
    };
    summary.correlation.as_mut().unwrap().related_events = vec!["a".into(), "listed".into()];
    store.insert(
        [
            listed,
            tagged("a", EventType::Network, "c1", 10),
            tagged("b", EventType::Process, "c1", 20),
            tagged("other", EventType::Process, "c2", 30),
            tagged("only-events", EventType::Process, "c3", 30),
            summary,
        ]
        .into_iter()
        .map(Arc::new),
        Instant::now(),
    );
    let story = store.story("c1").expect("c1 has a summary");
    let ids =
        |events: &[Arc<UnifiedEvent>]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&story.summaries), ["s"]);
    assert_eq!(ids(&story.related), ["b", "a", "listed"]);
    assert!(store.story("c3").is_none(), "no summary, no story");
    assert!(store.story("nope").is_none());
}

#[tokio::test]
async fn subscriptions_get_matching_live_events_and_slow_ones_are_dropped() {
    let store = ApiStore::new(100, Duration::from_secs(3600), 2);
    let network = EventFilter {
        kind: Some(EventType::Network),
        ..Default::default()
    };
    let mut fast = store.subscribe(network.clone());
    let mut slow = store.subscribe(EventFilter::default());
    let event = |id: &str, kind| {
        let mut e = UnifiedEvent::new(kind, "test", Timestamp(1));
        e.id = id.into();
        Arc::new(e)
    };
    store.insert(
        [
            event("n1", EventType::Network),
            event("p1", EventType::Process),
        ],
        Instant::now(),
    );
    assert_eq!(fast.next().await.unwrap().id, "n1");
    store.insert([event("n2", EventType::Network)], Instant::now());
    assert_eq!(fast.next().await.unwrap().id, "n2");
    // `slow` read nothing: its queue of 2 held n1 and p1, so n2 dropped it.
    assert_eq!(store.dropped_clients(), 1);
    assert_eq!(slow.next().await.unwrap().id, "n1");
    assert_eq!(slow.next().await.unwrap().id, "p1");
    assert_eq!(slow.next().await.unwrap_err(), StreamEnd::TooSlow);
    drop(store);
    assert_eq!(fast.next().await.unwrap_err(), StreamEnd::Closed);
}
