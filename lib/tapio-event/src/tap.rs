//! Live taps (`tapio tap`, `GET /v1/tap`): a copy of the batches crossing a point of the graph,
//! for a person debugging a running pipeline. Every [`Fanout`](crate::Fanout) the topology wires
//! carries a [`TapPoint`]; while nobody taps, a send pays one relaxed atomic load. A tap names
//! components by glob and matches them when a batch passes, not when it subscribes, so it keeps
//! seeing a component that a reload rebuilt. A tap shares the batch's events (no copy) and is
//! fed with `try_send`: a client that reads slower than the pipeline produces is dropped and
//! counted, and the pipeline never waits for it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use crate::event::UnifiedEvent;

/// Which side of a component a tap watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapDirection {
    /// What the component sends (a source's or transform's outputs, named ones included).
    Outputs,
    /// What the component receives from everything upstream (a transform's or sink's input).
    Inputs,
}

/// One batch a tap saw: where, and the events (shared with the pipeline).
#[derive(Debug, Clone)]
pub struct Tapped {
    /// The component the batch left (outputs) or is entering (inputs).
    pub component: Arc<str>,
    /// The named output it left on (`errors`, a route's name), `None` for the default output.
    pub output: Option<Arc<str>>,
    /// The batch's events.
    pub events: Arc<Vec<UnifiedEvent>>,
}

/// The registry of live taps, one per pipeline, kept across reloads; cheap to clone.
#[derive(Clone, Default)]
pub struct Taps {
    inner: Arc<TapsInner>,
}

#[derive(Default)]
struct TapsInner {
    /// How many taps are live: the one value a send reads while nobody taps.
    active: AtomicUsize,
    subscribers: Mutex<Vec<Subscriber>>,
    next_id: AtomicU64,
    /// Taps dropped because their client read too slowly.
    dropped_clients: AtomicU64,
}

struct Subscriber {
    id: u64,
    pattern: glob::Pattern,
    direction: TapDirection,
    sender: mpsc::Sender<Tapped>,
    /// Set when the tap is dropped for being slow, so its client can say why it ended.
    dropped: Arc<AtomicBool>,
}

/// A tap pattern that is not a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPattern(pub String);

impl std::fmt::Display for BadPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Taps {
    /// A tap on the components whose name matches the glob `pattern` (`*`, `?`, `[a-z]`), on
    /// `direction`'s side, holding at most `capacity` batches its client has not read yet.
    pub fn subscribe(
        &self,
        pattern: &str,
        direction: TapDirection,
        capacity: usize,
    ) -> Result<TapSubscription, BadPattern> {
        let pattern = glob::Pattern::new(pattern)
            .map_err(|e| BadPattern(format!("{pattern:?} is not a valid glob: {e}")))?;
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicBool::new(false));
        self.subscribers().push(Subscriber {
            id,
            pattern: pattern.clone(),
            direction,
            sender,
            dropped: Arc::clone(&dropped),
        });
        self.inner.active.fetch_add(1, Ordering::Relaxed);
        Ok(TapSubscription {
            id,
            pattern,
            receiver,
            dropped,
            taps: self.clone(),
        })
    }

    /// Whether any tap is live; what a send checks before anything else.
    pub fn is_active(&self) -> bool {
        self.inner.active.load(Ordering::Relaxed) != 0
    }

    /// Live taps now.
    pub fn clients(&self) -> usize {
        self.inner.active.load(Ordering::Relaxed)
    }

    /// Taps dropped so far because their client read too slowly.
    pub fn dropped_clients(&self) -> u64 {
        self.inner.dropped_clients.load(Ordering::Relaxed)
    }

    fn subscribers(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands `events`, leaving `producer` on `output` towards `consumers`, to every tap that
    /// watches one of them; drops the taps whose client has fallen behind.
    fn offer<'a>(
        &self,
        producer: &Arc<str>,
        output: &Option<Arc<str>>,
        consumers: impl Iterator<Item = &'a str> + Clone,
        events: &Arc<Vec<UnifiedEvent>>,
    ) {
        let mut subscribers = self.subscribers();
        let before = subscribers.len();
        subscribers.retain(|subscriber| {
            let deliver = |component: Arc<str>| {
                subscriber.sender.try_send(Tapped {
                    component,
                    output: output.clone(),
                    events: Arc::clone(events),
                })
            };
            let sent = match subscriber.direction {
                TapDirection::Outputs if subscriber.pattern.matches(producer) => {
                    deliver(Arc::clone(producer))
                }
                TapDirection::Outputs => Ok(()),
                TapDirection::Inputs => consumers
                    .clone()
                    .filter(|consumer| subscriber.pattern.matches(consumer))
                    .try_for_each(|consumer| deliver(Arc::from(consumer))),
            };
            match sent {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    subscriber.dropped.store(true, Ordering::Relaxed);
                    self.inner.dropped_clients.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        let removed = before - subscribers.len();
        if removed > 0 {
            self.inner.active.fetch_sub(removed, Ordering::Relaxed);
        }
    }

    /// Forgets the tap `id` when its client has gone (it may have been dropped already).
    fn unsubscribe(&self, id: u64) {
        let mut subscribers = self.subscribers();
        if let Some(index) = subscribers.iter().position(|s| s.id == id) {
            subscribers.swap_remove(index);
            self.inner.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A live tap; dropping it ends the tap.
pub struct TapSubscription {
    id: u64,
    pattern: glob::Pattern,
    receiver: mpsc::Receiver<Tapped>,
    dropped: Arc<AtomicBool>,
    taps: Taps,
}

impl TapSubscription {
    /// The next batch the tap saw; `None` once the tap was dropped for being slow (see
    /// [`TapSubscription::was_dropped`]).
    pub async fn recv(&mut self) -> Option<Tapped> {
        self.receiver.recv().await
    }

    /// Whether the tap watches the component `name` (on its side).
    pub fn watches(&self, name: &str) -> bool {
        self.pattern.matches(name)
    }

    /// Whether the tap ended because its client fell behind the pipeline.
    pub fn was_dropped(&self) -> bool {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for TapSubscription {
    fn drop(&mut self) {
        self.taps.unsubscribe(self.id);
    }
}

/// Where a fanout sits in the graph, for the taps: the producer and its output, in the one
/// registry of the pipeline.
pub struct TapPoint {
    taps: Taps,
    producer: Arc<str>,
    output: Option<Arc<str>>,
}

impl TapPoint {
    /// The point where `producer`'s `output` (`None`: the default one) leaves it.
    pub fn new(taps: Taps, producer: &str, output: Option<&str>) -> TapPoint {
        TapPoint {
            taps,
            producer: Arc::from(producer),
            output: output.map(Arc::from),
        }
    }

    /// Offers a batch crossing this point towards `consumers` to the live taps; one relaxed
    /// load when there are none.
    pub(crate) fn offer<'a>(
        &self,
        consumers: impl Iterator<Item = &'a str> + Clone,
        events: &Arc<Vec<UnifiedEvent>>,
    ) {
        if self.taps.is_active() {
            self.taps
                .offer(&self.producer, &self.output, consumers, events);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;
    use crate::time::Timestamp;

    fn events(n: usize) -> Arc<Vec<UnifiedEvent>> {
        Arc::new(
            (0..n)
                .map(|i| UnifiedEvent::new(EventType::Process, "t", Timestamp(i as i64 + 1)))
                .collect(),
        )
    }

    #[tokio::test]
    async fn outputs_and_inputs_are_matched_by_glob_when_a_batch_passes() {
        let taps = Taps::default();
        let point = TapPoint::new(taps.clone(), "enrich", None);
        let mut outputs = taps.subscribe("enr*", TapDirection::Outputs, 8).unwrap();
        let mut inputs = taps.subscribe("sink_?", TapDirection::Inputs, 8).unwrap();
        let mut nothing = taps.subscribe("other", TapDirection::Outputs, 8).unwrap();
        assert_eq!(taps.clients(), 3);
        point.offer(["sink_a", "sink_b", "store"].into_iter(), &events(2));

        let seen = outputs.recv().await.unwrap();
        assert_eq!(&*seen.component, "enrich");
        assert_eq!(seen.events.len(), 2);
        let entering: Vec<String> = [inputs.recv().await, inputs.recv().await]
            .into_iter()
            .map(|t| t.unwrap().component.to_string())
            .collect();
        assert_eq!(entering, ["sink_a", "sink_b"]);
        assert!(inputs.receiver.try_recv().is_err());
        assert!(nothing.receiver.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_slow_client_is_dropped_and_counted_without_blocking() {
        let taps = Taps::default();
        let point = TapPoint::new(taps.clone(), "src", Some("errors"));
        let mut slow = taps.subscribe("*", TapDirection::Outputs, 2).unwrap();
        let mut fast = taps.subscribe("*", TapDirection::Outputs, 100).unwrap();
        for _ in 0..5 {
            point.offer(std::iter::empty(), &events(1));
        }
        assert!(slow.was_dropped());
        assert!(!fast.was_dropped());
        assert_eq!(taps.dropped_clients(), 1);
        assert_eq!(taps.clients(), 1);
        // What it had is still readable, then its stream ends.
        assert!(slow.recv().await.is_some());
        assert!(slow.recv().await.is_some());
        assert!(slow.recv().await.is_none());
        let seen = fast.recv().await.unwrap();
        assert_eq!(seen.output.as_deref(), Some("errors"));
        drop(slow);
        assert_eq!(taps.clients(), 1);
    }

    #[test]
    fn ending_a_tap_makes_sends_free_again() {
        let taps = Taps::default();
        let tap = taps.subscribe("*", TapDirection::Inputs, 1).unwrap();
        assert!(taps.is_active());
        drop(tap);
        assert!(!taps.is_active());
        assert!(taps.subscribe("[", TapDirection::Inputs, 1).is_err());
    }
}
