//! The bounded buffer in front of a component, counted in events rather than batches so memory
//! stays bounded however big batches are. All upstream edges of a component share its buffer (the
//! user sizes one `buffer.max_events` per sink). With `when_full = "block"` a full buffer makes the
//! sender wait, which stalls the source (backpressure); with `"drop_newest"` the batch that does
//! not fit is dropped, counted and acknowledged as dropped; with `"overflow"` it goes to the
//! buffer's overflow (a disk buffer the topology puts behind it), so a slow sink never stalls
//! the fan-out it shares with faster ones.
//!
//! A reload rewires a running pipeline through the same types: a [`Fanout`]'s consumers can be
//! connected and disconnected while its producer runs, and a sink's [`BufferReceiver`] can be
//! lent ([`loan`]) so that the topology gets the buffer back, contents and all, when the sink
//! it fed is stopped to be replaced.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::ack::BatchStatus;
use crate::batch::EventBatch;
use crate::metrics::{ComponentKind, ComponentMetrics};
use crate::tap::TapPoint;

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

/// A handle on a buffer that does not keep it open: the topology remembers every consumer's
/// buffer this way, so a component still ends once its real upstreams are gone.
#[derive(Clone)]
pub struct WeakBufferSender {
    queue: mpsc::WeakUnboundedSender<Queued>,
    room: Arc<Semaphore>,
    max_events: u32,
    when_full: WhenFull,
    /// Weak too: a strong one would keep the overflow (a disk buffer) open, and with it, through
    /// what the overflow feeds back, this buffer.
    overflow: Option<Box<WeakBufferSender>>,
    metrics: Arc<ComponentMetrics>,
}

impl WeakBufferSender {
    /// A sender again, while anything else still sends into the buffer (and its overflow);
    /// `None` once the buffer has been closed for good.
    pub fn upgrade(&self) -> Option<BufferSender> {
        let overflow = match &self.overflow {
            Some(overflow) => Some(Box::new(overflow.upgrade()?)),
            None => None,
        };
        Some(BufferSender {
            queue: self.queue.upgrade()?,
            room: Arc::clone(&self.room),
            max_events: self.max_events,
            when_full: self.when_full,
            overflow,
            metrics: Arc::clone(&self.metrics),
        })
    }
}

/// Reads a component's buffer; ends when every sender is gone and the buffer is empty, or,
/// when it is on [`loan`], once the lender asks for it back.
pub struct BufferReceiver {
    /// Always `Some` until dropped: `Drop` moves it back to the lender.
    core: Option<ReceiverCore>,
    loan: Option<Loan>,
}

/// What a receiver reads: the queue and the room it frees.
struct ReceiverCore {
    queue: mpsc::UnboundedReceiver<Queued>,
    room: Arc<Semaphore>,
    max_events: u32,
    metrics: Arc<ComponentMetrics>,
}

/// The topology's side of a lent [`BufferReceiver`]: asks the sink reading it to stop reading
/// and receives the buffer back, with whatever it still holds, once the sink dropped it.
pub struct Lender {
    recall: watch::Sender<bool>,
    back: oneshot::Receiver<BufferReceiver>,
}

/// The receiver's side of a loan, given to it with [`BufferReceiver::on_loan`].
pub struct Loan {
    recalled: watch::Receiver<bool>,
    back: oneshot::Sender<BufferReceiver>,
}

/// A new loan: the lender keeps the [`Lender`], the receiver handed to the sink carries the
/// [`Loan`].
pub fn loan() -> (Lender, Loan) {
    let (recall, recalled) = watch::channel(false);
    let (back_tx, back) = oneshot::channel();
    (
        Lender { recall, back },
        Loan {
            recalled,
            back: back_tx,
        },
    )
}

impl Lender {
    /// Asks the borrower to stop: its next `recv` returns `None` (as at the end of its input),
    /// so it flushes what it holds and ends; what it has not taken stays in the buffer.
    pub fn recall(&self) {
        let _ = self.recall.send(true);
    }

    /// The receiver, once the borrower dropped it (it ended, failed or panicked); `None` if it
    /// was lent on to someone else.
    pub async fn returned(self) -> Option<BufferReceiver> {
        self.back.await.ok()
    }
}

/// Resolves once the lender recalled the receiver; never when the lender went away without.
async fn recalled(loan: &mut Loan) {
    if loan.recalled.wait_for(|recalled| *recalled).await.is_err() {
        std::future::pending::<()>().await;
    }
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
            core: Some(ReceiverCore {
                queue: rx,
                room,
                max_events,
                metrics,
            }),
            loan: None,
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

    /// A handle that does not keep the buffer open (see [`WeakBufferSender`]).
    pub fn downgrade(&self) -> WeakBufferSender {
        WeakBufferSender {
            queue: self.queue.downgrade(),
            room: Arc::clone(&self.room),
            max_events: self.max_events,
            when_full: self.when_full,
            overflow: self.overflow.as_ref().map(|o| Box::new(o.downgrade())),
            metrics: Arc::clone(&self.metrics),
        }
    }

    /// Whether `other` writes into the same buffer.
    pub fn same_buffer(&self, other: &BufferSender) -> bool {
        self.queue.same_channel(&other.queue)
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
    /// The next batch, or `None` once every sender is gone and the buffer is drained, or once
    /// a lender recalled this receiver.
    pub async fn recv(&mut self) -> Option<EventBatch> {
        let core = self.core.as_mut()?;
        let queued = match &mut self.loan {
            None => core.queue.recv().await?,
            Some(loan) => tokio::select! {
                biased;
                () = recalled(loan) => return None,
                queued = core.queue.recv() => queued?,
            },
        };
        Some(core.release(queued))
    }

    /// The next batch if one is waiting, without waiting: lets a sink gather what piled up
    /// while it was busy into one bigger write.
    pub fn try_recv(&mut self) -> Option<EventBatch> {
        if self
            .loan
            .as_ref()
            .is_some_and(|loan| *loan.recalled.borrow())
        {
            return None;
        }
        let core = self.core.as_mut()?;
        let queued = core.queue.try_recv().ok()?;
        Some(core.release(queued))
    }

    /// This receiver on `loan`: when dropped it goes back to the lender instead of closing
    /// the buffer.
    pub fn on_loan(mut self, loan: Loan) -> BufferReceiver {
        self.loan = Some(loan);
        self
    }
}

impl ReceiverCore {
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
        let Some(core) = self.core.take() else {
            return;
        };
        match self.loan.take() {
            // Refused when the lender is gone: the receiver it hands back then drops as an
            // unlent one and closes the buffer.
            Some(loan) => drop(loan.back.send(BufferReceiver {
                core: Some(core),
                loan: None,
            })),
            // Wake senders blocked on a buffer nobody will read again.
            None => core.room.close(),
        }
    }
}

/// One output of a component: every buffer downstream of it. Sending shares the batch (an `Arc`
/// clone per extra consumer) and waits on each consumer in turn, so the slowest `block` consumer
/// sets the pace, as backpressure should. Clones share one list of consumers, which the
/// topology rewires on a reload while the producer runs: a send uses the list as it was when
/// the send began, the next send the list as it is then, so a swapped consumer gets every
/// batch from one point on and its predecessor every batch before it.
#[derive(Clone, Default)]
pub struct Fanout {
    consumers: Arc<Mutex<Arc<Vec<Consumer>>>>,
    /// Where this output is in the graph, for live taps; `None` outside a topology.
    tap: Option<Arc<TapPoint>>,
}

/// A consumer of an output: the component it feeds (the topology's key for rewiring it) and
/// its buffer.
#[derive(Clone)]
struct Consumer {
    key: String,
    sender: BufferSender,
}

impl Fanout {
    /// An output feeding `consumers`, which are never rewired.
    pub fn new(consumers: Vec<BufferSender>) -> Self {
        Fanout::keyed(consumers.into_iter().map(|c| (String::new(), c)).collect())
    }

    /// An output feeding `consumers`, each under the name of the component it feeds.
    pub fn keyed(consumers: Vec<(String, BufferSender)>) -> Self {
        let consumers = consumers
            .into_iter()
            .map(|(key, sender)| Consumer { key, sender })
            .collect();
        Fanout {
            consumers: Arc::new(Mutex::new(Arc::new(consumers))),
            tap: None,
        }
    }

    /// This output, shown to the live taps at `point`.
    pub fn tapped(mut self, point: TapPoint) -> Self {
        self.tap = Some(Arc::new(point));
        self
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Arc<Vec<Consumer>>> {
        self.consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether anything reads this output.
    pub fn is_connected(&self) -> bool {
        !self.list().is_empty()
    }

    /// The components this output feeds.
    pub fn keys(&self) -> Vec<String> {
        self.list().iter().map(|c| c.key.clone()).collect()
    }

    /// Feeds `sender` as `key`, in place of what fed `key` before (from the next send on).
    pub fn connect(&self, key: &str, sender: BufferSender) {
        let mut list = self.list();
        let mut consumers: Vec<Consumer> = list.iter().filter(|c| c.key != key).cloned().collect();
        consumers.push(Consumer {
            key: key.to_owned(),
            sender,
        });
        *list = Arc::new(consumers);
    }

    /// Stops feeding `key` (from the next send on); its buffer closes once no other producer
    /// and no send in progress holds it.
    pub fn disconnect(&self, key: &str) {
        let mut list = self.list();
        let consumers: Vec<Consumer> = list.iter().filter(|c| c.key != key).cloned().collect();
        *list = Arc::new(consumers);
    }

    /// Delivers `batch` to every consumer. Consumers that have gone away are forgotten; when none
    /// is left the batch is acknowledged as dropped and `Err(Closed)` tells the producer to stop.
    pub async fn send(&mut self, batch: EventBatch) -> Result<(), Closed> {
        let consumers = Arc::clone(&self.list());
        if let Some(point) = &self.tap {
            point.offer(
                consumers.iter().map(|c| c.key.as_str()),
                batch.shared_events(),
            );
        }
        let Some((last, rest)) = consumers.split_last() else {
            batch.ack(BatchStatus::Dropped);
            return Err(Closed);
        };
        let mut closed = Vec::new();
        for consumer in rest {
            if consumer.sender.send(batch.clone()).await.is_err() {
                closed.push(&consumer.sender);
            }
        }
        if last.sender.send(batch).await.is_err() {
            closed.push(&last.sender);
        }
        if closed.is_empty() {
            return Ok(());
        }
        let mut list = self.list();
        let open: Vec<Consumer> = list
            .iter()
            .filter(|c| !closed.iter().any(|gone| gone.same_buffer(&c.sender)))
            .cloned()
            .collect();
        let empty = open.is_empty();
        *list = Arc::new(open);
        if empty { Err(Closed) } else { Ok(()) }
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

    #[tokio::test]
    async fn a_rewired_fanout_feeds_the_new_consumer_from_the_next_send_on() {
        let (old_tx, mut old_rx) = buffer(10, WhenFull::Block, metrics());
        let (new_tx, mut new_rx) = buffer(10, WhenFull::Block, metrics());
        let mut out = Fanout::keyed(vec![("t".into(), old_tx)]);
        let wiring = out.clone();
        out.send(EventBatch::new(events(2))).await.unwrap();
        wiring.connect("t", new_tx);
        assert_eq!(wiring.keys(), ["t"]);
        out.send(EventBatch::new(events(3))).await.unwrap();
        assert_eq!(old_rx.recv().await.unwrap().len(), 2);
        assert!(
            old_rx.recv().await.is_none(),
            "the replaced consumer's buffer stayed open"
        );
        assert_eq!(new_rx.recv().await.unwrap().len(), 3);
        wiring.disconnect("t");
        assert!(!out.is_connected());
        assert_eq!(out.send(EventBatch::new(events(1))).await, Err(Closed));
    }

    #[tokio::test]
    async fn a_recalled_receiver_comes_back_with_what_it_still_holds() {
        let (tx, rx) = buffer(10, WhenFull::Block, metrics());
        let (lender, loan) = loan();
        let mut rx = rx.on_loan(loan);
        tx.send(EventBatch::new(events(2))).await.unwrap();
        tx.send(EventBatch::new(events(3))).await.unwrap();
        assert_eq!(rx.recv().await.unwrap().len(), 2);
        lender.recall();
        assert!(rx.recv().await.is_none(), "recalled, yet still reading");
        assert!(rx.try_recv().is_none());
        drop(rx);
        let mut back = lender.returned().await.expect("handed back");
        tx.send(EventBatch::new(events(1))).await.unwrap();
        assert_eq!(back.recv().await.unwrap().len(), 3);
        assert_eq!(back.recv().await.unwrap().len(), 1);
        let weak = tx.downgrade();
        assert!(weak.upgrade().is_some());
        drop(tx);
        assert!(
            weak.upgrade().is_none(),
            "a weak sender kept the buffer open"
        );
        assert!(back.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_weak_sender_keeps_neither_the_buffer_nor_its_overflow_open() {
        let (tx, _rx) = buffer(5, WhenFull::Overflow, metrics());
        let (spill_tx, mut spill_rx) = buffer(100, WhenFull::Block, metrics());
        let tx = tx.with_overflow(spill_tx);
        let weak = tx.downgrade();
        let again = weak.upgrade().expect("still open");
        again.send(EventBatch::new(events(5))).await.unwrap();
        again.send(EventBatch::new(events(2))).await.unwrap();
        assert_eq!(
            spill_rx.recv().await.unwrap().len(),
            2,
            "the upgrade lost its overflow"
        );
        drop((tx, again));
        assert!(
            spill_rx.recv().await.is_none(),
            "a weak sender kept the overflow open"
        );
    }
}
