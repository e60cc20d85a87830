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

    /// Mutable events; copies them first if another component still shares them.
    pub fn events_mut(&mut self) -> &mut Vec<UnifiedEvent> {
        Arc::make_mut(&mut self.events)
    }

    /// Settles every acknowledgement this batch carries with `status`.
    pub fn ack(self, status: BatchStatus) {
        for ack in self.acks {
            ack.ack(status);
        }
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
