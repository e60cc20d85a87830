//! The reorder buffer (DESIGN.md section 5, step 1) and the acknowledgements of the events it
//! holds. Events wait until the watermark (largest timestamp seen − `allowed_lateness`) passes
//! them and leave in event-time order; at most `max_events` wait, and beyond that the oldest
//! leaves early (see `max_buffered_events` in `CorrelateConfig` for why). Held events sit in
//! a slab; the heap orders small `(time, rank, arrival, slot)` entries, so sifting never moves
//! events.
//!
//! Among events of one instant, those whose subject `semantic_enrich` resolved leave before
//! those it could not (no entity, or a `host`), then in arrival order. An unresolved event links
//! only through the aliases it carries (a container id, a cgroup, an address), and the event
//! that ties such an alias to its pod is often stamped with the same instant: a container's
//! first `exec` and the systemd scope whose slice names the pod. Collectors are independent, so
//! the exec often arrives first; in arrival order it would open a group of its own and leave
//! with that group's id before the scope merged it into the pod's. Resolved first, it joins the
//! pod's group and leaves with the pod's id. Nothing is held longer for it: the rank only orders
//! events the watermark releases together.
//!
//! An input batch's acknowledgement tokens are held in a [`Tickets`] entry counting the batch's
//! events still inside; when its last event leaves, the tokens travel on with the batch that
//! carries that event.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use tapio_event::{AckToken, EntityType, Timestamp, UnifiedEvent};

/// Which input batch's acknowledgements an event answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket(usize);

impl Ticket {
    /// The event's batch carried no acknowledgement.
    pub(crate) const NONE: Ticket = Ticket(usize::MAX);
}

struct HeldBatch {
    /// Events of the batch not yet emitted.
    left: usize,
    acks: Vec<AckToken>,
}

/// Acknowledgements of input batches with events still held.
#[derive(Default)]
pub(crate) struct Tickets {
    pending: Vec<Option<HeldBatch>>,
    free: Vec<usize>,
}

impl Tickets {
    /// Holds `acks` until `events` events have been settled; a batch without events hands its
    /// tokens straight to `released`.
    pub(crate) fn open(
        &mut self,
        events: usize,
        acks: Vec<AckToken>,
        released: &mut Vec<AckToken>,
    ) -> Ticket {
        if acks.is_empty() {
            return Ticket::NONE;
        }
        if events == 0 {
            released.extend(acks);
            return Ticket::NONE;
        }
        let pending = Some(HeldBatch { left: events, acks });
        match self.free.pop() {
            Some(index) => {
                self.pending[index] = pending;
                Ticket(index)
            }
            None => {
                self.pending.push(pending);
                Ticket(self.pending.len() - 1)
            }
        }
    }

    /// One event of `ticket`'s batch has been emitted; the batch's tokens go to `released`
    /// with its last one.
    pub(crate) fn settle(&mut self, ticket: Ticket, released: &mut Vec<AckToken>) {
        let Some(entry) = self.pending.get_mut(ticket.0) else {
            return;
        };
        let Some(pending) = entry.as_mut() else {
            return;
        };
        pending.left -= 1;
        if pending.left == 0 {
            if let Some(done) = entry.take() {
                released.extend(done.acks);
            }
            self.free.push(ticket.0);
        }
    }
}

/// An event waiting for the watermark, with the acknowledgement it answers for.
pub(crate) struct Held {
    pub(crate) event: UnifiedEvent,
    pub(crate) ticket: Ticket,
    /// When its input batch entered the transform's buffer, so the batch it leaves in is
    /// timed from its earliest event (the transform's latency metric).
    pub(crate) entered: Option<Instant>,
}

/// Events waiting to be processed in event-time order.
pub(crate) struct Reorder {
    lateness: i64,
    /// Events held at most, whatever the watermark says.
    max_events: usize,
    slots: Vec<Option<Held>>,
    free: Vec<usize>,
    /// `(time, rank, arrival, slot)`: see [`instant_rank`].
    order: BinaryHeap<Reverse<(Timestamp, u8, u64, usize)>>,
    arrivals: u64,
    newest: Option<Timestamp>,
}

impl Reorder {
    /// An empty buffer holding events `lateness` nanoseconds behind the newest one, and never
    /// more than `max_events` (at least 1) of them.
    pub(crate) fn new(lateness: i64, max_events: usize) -> Self {
        Reorder {
            lateness,
            max_events,
            slots: Vec::new(),
            free: Vec::new(),
            order: BinaryHeap::new(),
            arrivals: 0,
            newest: None,
        }
    }

    /// Events held.
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Holds `event` until the watermark passes it; when that makes one more than
    /// `max_events`, returns the oldest held event, which leaves before the watermark.
    pub(crate) fn push(&mut self, held: Held) -> Option<Held> {
        let at = held.event.timestamp;
        let rank = instant_rank(&held.event);
        self.newest = Some(self.newest.map_or(at, |newest| newest.max(at)));
        let held = Some(held);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = held;
                slot
            }
            None => {
                self.slots.push(held);
                self.slots.len() - 1
            }
        };
        self.arrivals += 1;
        self.order.push(Reverse((at, rank, self.arrivals, slot)));
        if self.order.len() > self.max_events {
            return self.pop_oldest();
        }
        None
    }

    /// The oldest held event if the watermark has passed it.
    pub(crate) fn pop_ready(&mut self) -> Option<Held> {
        let watermark = self.newest?.0.saturating_sub(self.lateness);
        let &Reverse((at, _, _, _)) = self.order.peek()?;
        if at.0 > watermark {
            return None;
        }
        self.pop_oldest()
    }

    /// The oldest held event, watermark or not (idle flush and end of input).
    pub(crate) fn pop_oldest(&mut self) -> Option<Held> {
        let Reverse((_, _, _, slot)) = self.order.pop()?;
        self.free.push(slot);
        self.slots[slot].take()
    }
}

/// Where an event goes among the events of its instant: 0 when its subject is resolved, 1
/// when it can link only through its aliases (see the module documentation).
fn instant_rank(event: &UnifiedEvent) -> u8 {
    match event.entity.as_deref() {
        Some(entity) if entity.kind != EntityType::Host => 0,
        _ => 1,
    }
}
