//! `EventBatch`, the unit every channel carries. Events sit behind an `Arc` so fan-out to several
//! components shares them; a component that needs to change them gets its own copy only when the
//! batch is still shared (copy on write).

use std::sync::Arc;
use std::time::Instant;

use crate::ack::{AckToken, BatchStatus};
use crate::event::UnifiedEvent;

/// A run of events plus the acknowledgement obligations that travel with them.
#[derive(Debug, Clone, Default)]
pub struct EventBatch {
    events: Arc<Vec<UnifiedEvent>>,
    acks: Vec<AckToken>,
    /// When the batch entered the input buffer of the transform now holding it, so the
    /// transform's latency can be recorded when it sends the batch on.
    entered: Option<Instant>,
}

impl EventBatch {
    /// A batch with no acknowledgement attached (sources that cannot replay).
    pub fn new(events: Vec<UnifiedEvent>) -> Self {
        EventBatch {
            events: Arc::new(events),
            acks: Vec::new(),
            entered: None,
        }
    }

    /// A batch whose delivery the source wants to hear about.
    pub fn with_ack(events: Vec<UnifiedEvent>, ack: AckToken) -> Self {
        EventBatch {
            events: Arc::new(events),
            acks: vec![ack],
            entered: None,
        }
    }

    /// A batch carrying several obligations: a transform that holds events back (a reorder
    /// buffer) releases the tokens of every input batch whose last event leaves with this one.
    pub fn with_acks(events: Vec<UnifiedEvent>, acks: Vec<AckToken>) -> Self {
        EventBatch {
            events: Arc::new(events),
            acks,
            entered: None,
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events, shared with any other copy of this batch.
    pub fn events(&self) -> &[UnifiedEvent] {
        &self.events
    }

    /// The shared events themselves, for a live tap that holds on to them without copying.
    pub(crate) fn shared_events(&self) -> &Arc<Vec<UnifiedEvent>> {
        &self.events
    }

    /// Mutable events; copies them first if another component still shares them.
    pub fn events_mut(&mut self) -> &mut Vec<UnifiedEvent> {
        Arc::make_mut(&mut self.events)
    }

    /// Keeps only the events `keep` accepts and returns how many were removed. The batch keeps
    /// its acknowledgements: the kept events settle them for the whole batch, since the removed
    /// ones were dropped on purpose. A shared batch is copied only when something is removed,
    /// and then only its kept events.
    pub fn retain(&mut self, mut keep: impl FnMut(&UnifiedEvent) -> bool) -> usize {
        let before = self.events.len();
        if let Some(events) = Arc::get_mut(&mut self.events) {
            events.retain(|event| keep(event));
        } else {
            let verdicts: Vec<bool> = self.events.iter().map(&mut keep).collect();
            if verdicts.contains(&false) {
                let kept = self
                    .events
                    .iter()
                    .zip(&verdicts)
                    .filter(|(_, kept)| **kept)
                    .map(|(event, _)| event.clone())
                    .collect();
                self.events = Arc::new(kept);
            }
        }
        before - self.events.len()
    }

    /// Takes the events out, copying them only if another component still shares them; the
    /// batch keeps its acknowledgements, for a transform that splits it with
    /// [`EventBatch::carrying`].
    pub fn take_events(&mut self) -> Vec<UnifiedEvent> {
        let events = std::mem::take(&mut self.events);
        Arc::try_unwrap(events).unwrap_or_else(|shared| shared.as_ref().clone())
    }

    /// A batch of `events` carrying copies of this batch's acknowledgements and its entry
    /// time, for a transform that splits one batch into several (`route`): the source hears
    /// about the batch once every part is settled, with the worst status of any.
    pub fn carrying(&self, events: Vec<UnifiedEvent>) -> EventBatch {
        EventBatch {
            events: Arc::new(events),
            acks: self.acks.clone(),
            entered: self.entered,
        }
    }

    /// Settles every acknowledgement this batch carries with `status`.
    pub fn ack(self, status: BatchStatus) {
        for ack in self.acks {
            ack.ack(status);
        }
    }

    /// When the batch entered the input buffer of the transform holding it, for a transform
    /// that takes batches apart (a reorder buffer) and times the batches it builds instead.
    pub fn entered(&self) -> Option<Instant> {
        self.entered
    }

    /// This batch, timed as if it had entered the transform's buffer at `at`: a transform that
    /// builds its own batches gives them the entry time of their earliest input batch.
    pub fn entered_at(mut self, at: Option<Instant>) -> Self {
        self.entered = at;
        self
    }

    /// Marks when the batch entered a component's input buffer.
    pub(crate) fn set_entered(&mut self, at: Instant) {
        self.entered = Some(at);
    }

    /// When the batch entered the buffer of the component holding it, once: a batch sent on
    /// is timed again by its next buffer.
    pub(crate) fn take_entered(&mut self) -> Option<Instant> {
        self.entered.take()
    }

    /// Splits off the acknowledgements, for sinks that settle them after the events are gone.
    pub fn into_parts(self) -> (Arc<Vec<UnifiedEvent>>, Vec<AckToken>) {
        (self.events, self.acks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;
    use crate::time::Timestamp;

    fn numbered(n: usize) -> Vec<UnifiedEvent> {
        (0..n)
            .map(|i| UnifiedEvent::new(EventType::Process, i.to_string(), Timestamp(1)))
            .collect()
    }

    fn sources(batch: &EventBatch) -> Vec<String> {
        batch.events().iter().map(|e| e.source.clone()).collect()
    }

    #[test]
    fn retain_keeps_order_and_leaves_shared_copies_alone() {
        for shared in [false, true] {
            let mut batch = EventBatch::new(numbered(10));
            let other = shared.then(|| batch.clone());
            let removed = batch.retain(|e| e.source.parse::<u32>().unwrap() % 3 == 0);
            assert_eq!(removed, 6);
            assert_eq!(sources(&batch), ["0", "3", "6", "9"]);
            if let Some(other) = other {
                assert_eq!(other.len(), 10, "the shared copy lost events");
            }
        }
        let mut batch = EventBatch::new(numbered(3));
        let other = batch.clone();
        assert_eq!(batch.retain(|_| true), 0);
        assert_eq!(
            batch.events().as_ptr(),
            other.events().as_ptr(),
            "nothing removed, yet the shared batch was copied"
        );
    }

    #[test]
    fn parts_settle_the_source_with_the_worst_status() {
        let (token, mut receiver) = AckToken::new();
        let mut batch = EventBatch::with_ack(numbered(4), token);
        let mut events = batch.take_events();
        let second = batch.carrying(events.split_off(2));
        let first = batch.carrying(events);
        assert_eq!(sources(&first), ["0", "1"]);
        assert_eq!(sources(&second), ["2", "3"]);
        batch.ack(BatchStatus::Delivered);
        first.ack(BatchStatus::Delivered);
        assert_eq!(receiver.try_status(), None, "settled before every part was");
        second.ack(BatchStatus::Dropped);
        assert_eq!(receiver.try_status(), Some(BatchStatus::Dropped));
    }

    #[test]
    fn copies_only_when_shared() {
        let mut batch = EventBatch::new(vec![UnifiedEvent::new(
            EventType::Process,
            "demo",
            Timestamp(1),
        )]);
        let copy = batch.clone();
        batch.events_mut()[0].source = "changed".into();
        assert_eq!(copy.events()[0].source, "demo");
        assert_eq!(batch.events()[0].source, "changed");
        let before = batch.events().as_ptr();
        batch.events_mut()[0].source = "again".into();
        assert_eq!(before, batch.events().as_ptr(), "unshared batch was copied");
    }
}
