//! Gathers rows from incoming batches into inserts of up to `max_events` rows or `max_bytes`
//! bytes, or whatever waited `timeout`. An incoming batch may be split over several inserts, and
//! several batches may share one: each insert carries a copy of the acknowledgement token of
//! every batch it holds rows of, so a batch is acknowledged only when all its inserts succeeded,
//! even with several inserts in flight.

use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tapio_event::{AckToken, BatchStatus, UnifiedEvent};
use tokio::time::Instant;

use super::schema::Layout;
use crate::util::pool::BufferPool;

/// Rows bound for one `INSERT` — one body of rows (RowBinary or `JSONEachRow`), and where each
/// row ends —
/// and the acknowledgements that settle once they are written.
#[derive(Debug)]
pub(super) struct Chunk {
    /// Every row, back to back: the insert's request body as is.
    pub body: Bytes,
    /// End offset in `body` of each row.
    pub ends: Vec<usize>,
    /// A copy of the token of every batch with rows here, settled once they are written.
    pub acks: Vec<AckToken>,
}

impl Chunk {
    /// How many rows it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Rows `rows`, as one body (shared, not copied).
    pub fn lines(&self, rows: Range<usize>) -> Bytes {
        let start = if rows.start == 0 {
            0
        } else {
            self.ends[rows.start - 1]
        };
        self.body.slice(start..self.ends[rows.end - 1])
    }
}

/// The flush triggers (`batch` options).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// Insert bodies that were sent and can be written again: a body is tens of megabytes.
pub(super) type Spares = BufferPool<BytesMut>;

/// A pool keeping [`MAX_SPARES`] bodies.
pub(super) fn new_spares() -> Spares {
    BufferPool::new(MAX_SPARES)
}

/// Takes back a sent body into `spares`, if nothing else still holds it.
pub(super) fn recycle(spares: &Spares, body: Bytes) {
    if let Ok(buffer) = body.try_into_mut() {
        spares.give(buffer);
    }
}

/// How many sent bodies are kept for reuse.
const MAX_SPARES: usize = 4;

/// Rows waiting for their insert.
#[derive(Debug)]
pub(super) struct NextInsert {
    limits: Limits,
    layout: Layout,
    body: BytesMut,
    spares: Spares,
    ends: Vec<usize>,
    /// Reused for each event's own JSON form.
    scratch: Vec<u8>,
    acks: Vec<AckToken>,
    since: Option<Instant>,
}

impl NextInsert {
    /// Nothing pending yet; rows are written as `layout` says, into bodies that come from (and
    /// go back to) `spares`.
    pub fn new(limits: Limits, layout: Layout, spares: Spares) -> NextInsert {
        NextInsert {
            limits,
            layout,
            body: BytesMut::new(),
            spares,
            ends: Vec::new(),
            scratch: Vec::new(),
            acks: Vec::new(),
            since: None,
        }
    }

    /// Adds a batch's events; returns the inserts that reached `max_events` or `max_bytes`.
    pub fn add(&mut self, events: &[UnifiedEvent], acks: Vec<AckToken>) -> Vec<Chunk> {
        let mut full = Vec::new();
        for event in events {
            self.layout
                .write_row(event, &mut self.scratch, &mut self.body);
            self.ends.push(self.body.len());
            self.since.get_or_insert_with(Instant::now);
            if self.ends.len() >= self.limits.max_events || self.body.len() >= self.limits.max_bytes
            {
                let mut chunk = self.take();
                chunk.acks.extend(acks.iter().cloned());
                full.push(chunk);
            }
        }
        if self.ends.is_empty() {
            // Every row of this batch is in `full`, whose chunks carry copies of its tokens.
            for ack in acks {
                ack.ack(BatchStatus::Delivered);
            }
        } else {
            self.acks.extend(acks);
        }
        full
    }

    /// When the oldest pending row has waited `timeout`; `None` when nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + self.limits.timeout)
    }

    /// Whether no row is pending.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Everything pending, as one insert. The next body is a spare one or starts with the
    /// capacity this one needed, so a steady stream does not grow a buffer row by row.
    pub fn take(&mut self) -> Chunk {
        self.since = None;
        let next = self
            .spares
            .take()
            .unwrap_or_else(|| BytesMut::with_capacity(self.body.len()));
        Chunk {
            body: std::mem::replace(&mut self.body, next).freeze(),
            ends: std::mem::take(&mut self.ends),
            acks: std::mem::take(&mut self.acks),
        }
    }
}
