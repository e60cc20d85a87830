//! Gathers rows from incoming batches into inserts of up to `max_events` rows or `max_bytes`
//! bytes, or whatever waited `timeout`. An incoming batch may be split over several inserts, and
//! several batches may share one: each insert carries a copy of the acknowledgement token of
//! every batch it holds rows of, so a batch is acknowledged only when all its inserts succeeded,
//! even with several inserts in flight.

use std::time::Duration;

use tapio_event::{AckToken, BatchStatus, UnifiedEvent};
use tokio::time::Instant;

use super::schema::Row;

/// Rows bound for one `INSERT`, and the acknowledgements that settle once they are written.
#[derive(Debug)]
pub(super) struct Chunk {
    pub rows: Vec<Row>,
    pub acks: Vec<AckToken>,
}

/// The flush triggers (`batch` options).
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// Rows waiting for their insert.
#[derive(Debug)]
pub(super) struct Pending {
    limits: Limits,
    rows: Vec<Row>,
    bytes: usize,
    acks: Vec<AckToken>,
    since: Option<Instant>,
}

impl Pending {
    /// Nothing pending yet.
    pub fn new(limits: Limits) -> Pending {
        Pending {
            limits,
            rows: Vec::new(),
            bytes: 0,
            acks: Vec::new(),
            since: None,
        }
    }

    /// Adds a batch's events; returns the inserts that reached `max_events` or `max_bytes`.
    pub fn add(&mut self, events: &[UnifiedEvent], acks: Vec<AckToken>) -> Vec<Chunk> {
        let mut full = Vec::new();
        for event in events {
            let row = Row::new(event);
            self.bytes += row.line.len();
            self.rows.push(row);
            self.since.get_or_insert_with(Instant::now);
            if self.rows.len() >= self.limits.max_events || self.bytes >= self.limits.max_bytes {
                let mut chunk = self.take();
                chunk.acks.extend(acks.iter().cloned());
                full.push(chunk);
            }
        }
        if self.rows.is_empty() {
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
        self.rows.is_empty()
    }

    /// Everything pending, as one insert.
    pub fn take(&mut self) -> Chunk {
        self.bytes = 0;
        self.since = None;
        Chunk {
            rows: std::mem::take(&mut self.rows),
            acks: std::mem::take(&mut self.acks),
        }
    }
}
