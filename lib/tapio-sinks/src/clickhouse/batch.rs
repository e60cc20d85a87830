//! Gathers rows from incoming batches into inserts of up to `max_events` rows or `max_bytes`
//! bytes, or whatever waited `timeout`. An incoming batch may be split over several inserts, and
//! several batches may share one: each insert carries a copy of the acknowledgement token of
//! every batch it holds rows of, so a batch is acknowledged only when all its inserts succeeded,
//! even with several inserts in flight.

use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tapio_event::{AckToken, BatchStatus, UnifiedEvent};
use tokio::time::Instant;

use super::schema::write_row;

/// Rows bound for one `INSERT` — one body of `JSONEachRow` lines, and where each line ends —
/// and the acknowledgements that settle once they are written.
#[derive(Debug)]
pub(super) struct Chunk {
    /// Every row's line, back to back: the insert's request body as is.
    pub body: Bytes,
    /// End offset in `body` of each row's line.
    pub ends: Vec<usize>,
    /// A copy of the token of every batch with rows here, settled once they are written.
    pub acks: Vec<AckToken>,
}

impl Chunk {
    /// How many rows it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// The lines of rows `rows`, as one body (shared, not copied).
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

/// Insert bodies that were sent and can be written again: a body is tens of megabytes, and a
/// fresh one costs a page fault per 4 KiB as it fills (a sixth of the sink's CPU in perf).
#[derive(Debug, Default, Clone)]
pub(super) struct Spares(Arc<Mutex<Vec<BytesMut>>>);

impl Spares {
    /// Takes back a sent body, if nothing else still holds it.
    pub fn recycle(&self, body: Bytes) {
        if let Ok(mut buffer) = body.try_into_mut() {
            buffer.clear();
            let mut spares = self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if spares.len() < MAX_SPARES {
                spares.push(buffer);
            }
        }
    }

    /// A body to write into: a spare one, or a new one of `capacity`.
    fn take(&self, capacity: usize) -> BytesMut {
        let spare = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        spare.unwrap_or_else(|| BytesMut::with_capacity(capacity))
    }
}

/// How many sent bodies are kept for reuse.
const MAX_SPARES: usize = 4;

/// Rows waiting for their insert.
#[derive(Debug)]
pub(super) struct Pending {
    limits: Limits,
    body: BytesMut,
    spares: Spares,
    ends: Vec<usize>,
    /// Reused for each event's own JSON form.
    scratch: Vec<u8>,
    acks: Vec<AckToken>,
    since: Option<Instant>,
}

impl Pending {
    /// Nothing pending yet; bodies come from (and go back to) `spares`.
    pub fn new(limits: Limits, spares: Spares) -> Pending {
        Pending {
            limits,
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
            write_row(event, &mut self.scratch, &mut (&mut self.body).writer());
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
        let next = self.spares.take(self.body.len());
        Chunk {
            body: std::mem::replace(&mut self.body, next).freeze(),
            ends: std::mem::take(&mut self.ends),
            acks: std::mem::take(&mut self.acks),
        }
    }
}
