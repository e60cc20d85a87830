//! The bounded buffer in front of a component, counted in events rather than batches so memory
//! stays bounded however big batches are. All upstream edges of a component share its buffer (the
//! user sizes one `buffer.max_events` per sink). With `when_full = "block"` a full buffer makes the
//! sender wait, which stalls the source (backpressure); with `"drop_newest"` the batch that does
//! not fit is dropped, counted and acknowledged as dropped; with `"overflow"` it goes to the
//! buffer's overflow (a disk buffer the topology puts behind it), so a slow sink never stalls
//! the fan-out it shares with faster ones.

use std::sync::Arc;
use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

use crate::ack::BatchStatus;
use crate::batch::EventBatch;
use crate::metrics::{ComponentKind, ComponentMetrics};

/// What a full buffer does with a new batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: backpressure reaches the sources.
    #[default]
    Block,
    /// Drop the batch that does not fit, counting its events as `buffer_full` drops.
    DropNewest,
    /// Hand the batch that does not fit to the buffer's overflow (a memory buffer's own disk
    /// buffer), waiting only when that is full too. Order between the two is not kept.
    Overflow,
}

/// The receiving component has gone away (it failed or finished).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

struct Queued {
    batch: EventBatch,
    permits: u32,
    entered: Instant,
}

/// Writes into one component's buffer; cloned for each upstream edge.
#[derive(Clone)]
pub struct BufferSender {
    queue: mpsc::UnboundedSender<Queued>,
    room: Arc<Semaphore>,
    max_events: u32,
    when_full: WhenFull,
    /// Where batches go when this buffer is full and `when_full` is `Overflow`.
    overflow: Option<Box<BufferSender>>,
    metrics: Arc<ComponentMetrics>,
}

/// Reads a component's buffer; ends when every sender is gone and the buffer is empty.
pub struct BufferReceiver {
    queue: mpsc::UnboundedReceiver<Queued>,
    room: Arc<Semaphore>,
    max_events: u32,
    metrics: Arc<ComponentMetrics>,
}

/// A buffer of `max_events` in front of the component whose counters are `metrics`.
pub fn buffer(
    max_events: usize,
    when_full: WhenFull,
    metrics: Arc<ComponentMetrics>,
) -> (BufferSender, BufferReceiver) {
    let max_events = max_events.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize)) as u32;
    let (tx, rx) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(max_events as usize));
    metrics.set_buffer_max(max_events as usize);
    (
        BufferSender {
            queue: tx,
            room: Arc::clone(&room),
            max_events,
            when_full,
            overflow: None,
            metrics: Arc::clone(&metrics),
        },
        BufferReceiver {
            queue: rx,
            room,
            max_events,
            metrics,
        },
    )
}

impl BufferSender {
    /// This sender spilling to `overflow` when the buffer is full (`when_full = "overflow"`).
    pub fn with_overflow(mut self, overflow: BufferSender) -> BufferSender {
        self.overflow = Some(Box::new(overflow));
        self
    }

    /// A sender into the same buffer that always waits for room: what drains the overflow back
    /// into the buffer uses it, so nothing it sends spills again.
    pub fn blocking(&self) -> BufferSender {
        BufferSender {
            queue: self.queue.clone(),
            room: Arc::clone(&self.room),
            max_events: self.max_events,
            when_full: WhenFull::Block,
            overflow: None,
            metrics: Arc::clone(&self.metrics),
        }
    }

    /// Queues `batch`, waiting for room, dropping it or handing it to the overflow as the
    /// buffer's policy says. A batch larger than the whole buffer waits for an empty buffer and
    /// then goes in alone.
    pub async fn send(&self, batch: EventBatch) -> Result<(), Closed> {
        if batch.is_empty() {
            batch.ack(BatchStatus::Delivered);
            return Ok(());
        }
        let permits = (batch.len() as u64).min(u64::from(self.max_events)) as u32;
        let granted = match (self.when_full, &self.overflow) {
            (WhenFull::Block, _) | (WhenFull::Overflow, None) => {
                self.room.acquire_many(permits).await.ok()
            }
            (WhenFull::DropNewest, _) => match self.room.try_acquire_many(permits) {
                Ok(granted) => Some(granted),
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    self.metrics.add_dropped("buffer_full", batch.len());
                    batch.ack(BatchStatus::Dropped);
                    return Ok(());
                }
                Err(tokio::sync::TryAcquireError::Closed) => None,
            },
            (WhenFull::Overflow, Some(overflow)) => match self.room.try_acquire_many(permits) {
                Ok(granted) => Some(granted),
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    // The overflow never has one of its own, so this does not recurse further.
                    return Box::pin(overflow.send(batch)).await;
                }
                Err(tokio::sync::TryAcquireError::Closed) => None,
            },
        };
        let Some(granted) = granted else {
            return Err(Closed);
        };
        granted.forget();
        self.queue
            .send(Queued {
                batch,
                permits,
                entered: Instant::now(),
            })
            .map_err(|_| Closed)?;
        self.report_fill();
        Ok(())
    }

    fn report_fill(&self) {
        let free = self.room.available_permits() as u32;
        self.metrics
            .set_buffer_events(self.max_events.saturating_sub(free) as usize);
    }
}

impl BufferReceiver {
    /// The next batch, or `None` once every sender is gone and the buffer is drained.
    pub async fn recv(&mut self) -> Option<EventBatch> {
        let queued = self.queue.recv().await?;
        Some(self.release(queued))
    }

    /// The next batch if one is waiting, without waiting: lets a sink gather what piled up
    /// while it was busy into one bigger write.
    pub fn try_recv(&mut self) -> Option<EventBatch> {
        let queued = self.queue.try_recv().ok()?;
        Some(self.release(queued))
    }

    /// Frees a received batch's room in the buffer and counts it.
    fn release(&mut self, queued: Queued) -> EventBatch {
        self.room.add_permits(queued.permits as usize);
        let free = self.room.available_permits() as u32;
        self.metrics
            .set_buffer_events(self.max_events.saturating_sub(free) as usize);
        self.metrics.add_events_in(queued.batch.len());
        let mut batch = queued.batch;
        // A sink's part ends when it takes the batch; a transform's when it sends it on.
        if self.metrics.kind == ComponentKind::Sink {
            self.metrics.observe_latency(queued.entered.elapsed());
        } else {
            batch.set_entered(queued.entered);
        }
        batch
    }
}

impl Drop for BufferReceiver {
    fn drop(&mut self) {
        // Wake senders blocked on a buffer nobody will read again.
        self.room.close();
    }
}

/// One output of a component: every buffer downstream of it. Sending shares the batch (an `Arc`
/// clone per extra consumer) and waits on each consumer in turn, so the slowest `block` consumer
/// sets the pace, as backpressure should.
#[derive(Clone, Default)]
pub struct Fanout {
    consumers: Vec<BufferSender>,
}

impl Fanout {
    /// An output feeding `consumers`.
    pub fn new(consumers: Vec<BufferSender>) -> Self {
        Fanout { consumers }
    }

    /// Whether anything reads this output.
    pub fn is_connected(&self) -> bool {
        !self.consumers.is_empty()
    }

    /// Delivers `batch` to every consumer. Consumers that have gone away are forgotten; when none
    /// is left the batch is acknowledged as dropped and `Err(Closed)` tells the producer to stop.
    pub async fn send(&mut self, batch: EventBatch) -> Result<(), Closed> {
        if self.consumers.is_empty() {
            batch.ack(BatchStatus::Dropped);
            return Err(Closed);
        }
        let last = self.consumers.len() - 1;
        let mut closed = Vec::new();
        for (index, consumer) in self.consumers[..last].iter().enumerate() {
            if consumer.send(batch.clone()).await.is_err() {
                closed.push(index);
            }
        }
        if self.consumers[last].send(batch).await.is_err() {
            closed.push(last);
        }
        for index in closed.into_iter().rev() {
            self.consumers.remove(index);
        }
        if self.consumers.is_empty() {
            Err(Closed)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::AckToken;
    use crate::event::{EventType, UnifiedEvent};
    use crate::time::Timestamp;
    use std::time::Duration;

    fn events(n: usize) -> Vec<UnifiedEvent> {
        (0..n)
            .map(|i| UnifiedEvent::new(EventType::Process, "test", Timestamp(i as i64 + 1)))
            .collect()
    }

    fn metrics() -> Arc<ComponentMetrics> {
        Arc::new(ComponentMetrics::new(
            "sink",
            "blackhole",
            ComponentKind::Sink,
        ))
    }

    #[tokio::test]
    async fn try_recv_takes_what_is_waiting_and_frees_its_room() {
        let (tx, mut rx) = buffer(10, WhenFull::Block, metrics());
        assert!(rx.try_recv().is_none());
        tx.send(EventBatch::new(events(6))).await.unwrap();
        assert_eq!(rx.try_recv().unwrap().len(), 6);
        assert!(rx.try_recv().is_none());
        tokio::time::timeout(Duration::from_secs(1), tx.send(EventBatch::new(events(10))))
            .await
            .expect("room was freed")
            .unwrap();
    }

    #[tokio::test]
    async fn block_waits_for_room_counted_in_events() {
        let (tx, mut rx) = buffer(10, WhenFull::Block, metrics());
        tx.send(EventBatch::new(events(6))).await.unwrap();
        let blocked = tokio::time::timeout(
            Duration::from_millis(50),
            tx.send(EventBatch::new(events(6))),
        );
        assert!(
            blocked.await.is_err(),
            "second batch fit into a full buffer"
        );
        assert_eq!(rx.recv().await.unwrap().len(), 6);
        tokio::time::timeout(Duration::from_secs(1), tx.send(EventBatch::new(events(6))))
            .await
            .expect("room was freed")
            .unwrap();
    }

    #[tokio::test]
    async fn drop_newest_counts_and_acks_dropped() {
        let metrics = metrics();
        let (tx, _rx) = buffer(5, WhenFull::DropNewest, Arc::clone(&metrics));
        tx.send(EventBatch::new(events(5))).await.unwrap();
        let (token, receiver) = AckToken::new();
        tx.send(EventBatch::with_ack(events(3), token))
            .await
            .unwrap();
        assert_eq!(receiver.status().await, BatchStatus::Dropped);
        assert_eq!(metrics.snapshot().dropped.get("buffer_full"), Some(&3));
        assert_eq!(metrics.snapshot().buffer_events, 5);
    }

    #[tokio::test]
    async fn overflow_takes_what_does_not_fit_and_blocking_senders_wait_instead() {
        let (tx, mut rx) = buffer(5, WhenFull::Overflow, metrics());
        let (spill_tx, mut spill_rx) = buffer(100, WhenFull::Block, metrics());
        let back = tx.blocking();
        let tx = tx.with_overflow(spill_tx);
        tx.send(EventBatch::new(events(4))).await.unwrap();
        tx.send(EventBatch::new(events(3))).await.unwrap();
        assert_eq!(
            spill_rx.try_recv().unwrap().len(),
            3,
            "the batch did not spill"
        );
        let blocked = tokio::time::timeout(
            Duration::from_millis(50),
            back.send(EventBatch::new(events(3))),
        );
        assert!(
            blocked.await.is_err(),
            "the blocking sender spilled or overfilled"
        );
        assert_eq!(rx.recv().await.unwrap().len(), 4);
        tx.send(EventBatch::new(events(1))).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().len(), 1);
        assert!(spill_rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn oversized_batch_goes_in_alone() {
        let (tx, mut rx) = buffer(4, WhenFull::Block, metrics());
        tx.send(EventBatch::new(events(9))).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().len(), 9);
    }

    #[tokio::test]
    async fn fanout_shares_events_and_reports_closed_consumers() {
        let (a_tx, mut a_rx) = buffer(10, WhenFull::Block, metrics());
        let (b_tx, b_rx) = buffer(10, WhenFull::Block, metrics());
        let mut out = Fanout::new(vec![a_tx, b_tx]);
        drop(b_rx);
        out.send(EventBatch::new(events(2))).await.unwrap();
        assert_eq!(a_rx.recv().await.unwrap().len(), 2);
        drop(a_rx);
        assert_eq!(out.send(EventBatch::new(events(1))).await, Err(Closed));
    }

    #[tokio::test]
    async fn receiver_ends_after_senders_are_gone() {
        let (tx, mut rx) = buffer(10, WhenFull::Block, metrics());
        tx.send(EventBatch::new(events(1))).await.unwrap();
        drop(tx);
        assert!(rx.recv().await.is_some());
        assert!(rx.recv().await.is_none());
    }
}
