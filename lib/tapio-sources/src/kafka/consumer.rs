//! The consumer side of the `kafka` source. librdkafka wants one thread polling its consumer:
//! that thread ([`Poller`]) decodes messages into per-partition batches, hands them to the
//! source's task, keeps the [`Offsets`] bookkeeping and stores offsets as sinks acknowledge, and
//! serves rebalances ([`Context`]): before partitions are taken away it waits (up to
//! `drain_timeout`) for their batches in flight and commits what was delivered, so the next owner
//! starts right after it.
//!
//! Backpressure: when the source's task has no room, the poller stops polling; librdkafka
//! prefetches at most `queued.max.messages.kbytes`. A stall longer than [`PAUSE_AFTER`] pauses
//! every assigned partition and polls again (fetching nothing more), so the consumer stays in its
//! group — librdkafka leaves the group when it is not polled for `max.poll.interval.ms` — and
//! serves rebalances during a long outage downstream.

use std::collections::VecDeque;
use std::mem;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tapio_event::codec::Decoder;
use tapio_event::{
    AckToken, ComponentError, ComponentMetrics, EventBatch, Timestamp, UnifiedEvent,
};
use tapio_kafka::{forward_error, forward_log};
use tokio::sync::mpsc;

use super::offsets::{Offsets, Partition};
use crate::util::lines::{Decoding, Problems};

/// The most messages one poll round collects before its batches are handed over.
const ROUND_MAX: usize = 2000;

/// How long one poll waits for a message when there is nothing else to do; also how often the
/// poller notices a stop and acknowledgements that arrived.
const POLL_WAIT: Duration = Duration::from_millis(50);

/// How long the poller waits for room downstream before it pauses the partitions. Shorter
/// stalls (a slow insert) just wait: pausing makes librdkafka drop what it prefetched and fetch
/// it again on resume, and rebalances wait at most this long for the poller.
const PAUSE_AFTER: Duration = Duration::from_secs(2);

/// How often a drain (before a rebalance, at shutdown) looks at acknowledgements again.
const DRAIN_CHECK: Duration = Duration::from_millis(5);

/// What the poller hands to the source's task: one partition's events and its undecodable
/// messages, both carrying the batch's acknowledgement token.
pub(super) struct Outgoing {
    /// For the default output; `None` when every message of the batch failed to decode.
    pub events: Option<EventBatch>,
    /// For the `errors` output; `None` when every message decoded.
    pub errors: Option<EventBatch>,
}

/// The consumer's context: librdkafka's log, and rebalances.
pub(super) struct Context {
    /// The source's name, in every log line about it.
    pub component: String,
    /// How long a revocation or the final commit waits for acknowledgements.
    pub drain_timeout: Duration,
    /// Batches in flight and what was delivered; shared with the rebalance callbacks, which run
    /// on the polling thread inside `poll` (never hold the lock across `poll`).
    pub offsets: Mutex<Offsets>,
    /// Partitions revoked since the poller last looked, with the assignment they were revoked
    /// from: their batches of that assignment not yet handed over go.
    pub revoked: Mutex<Vec<(Partition, u64)>>,
    /// Counts assignments, so that a poller holding back can pause a new assignment too.
    pub assignments: AtomicU64,
    /// Set once the final commit is done: the revocation at close has nothing left to drain.
    pub closing: AtomicBool,
}

impl Context {
    fn offsets(&self) -> MutexGuard<'_, Offsets> {
        self.offsets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn revoked(&self) -> MutexGuard<'_, Vec<(Partition, u64)>> {
        self.revoked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores the offsets that acknowledgements moved; librdkafka commits them every
    /// `commit_interval`.
    fn store_settled(&self, consumer: &BaseConsumer<Context>) {
        let moved = self.offsets().settle();
        for (partition, offset) in moved {
            // `rd_kafka_offset_store` stores `offset + 1`, the next message to read.
            if let Err(error) = consumer.store_offset(&partition.topic, partition.partition, offset)
            {
                tracing::debug!(component = %self.component, topic = %partition.topic, partition = partition.partition, %error, "offset not stored (partition no longer assigned)");
            }
        }
    }

    /// Waits up to `drain_timeout` until `waiting` says nothing is outstanding, storing offsets
    /// as acknowledgements arrive; returns whether everything arrived.
    fn drain(&self, consumer: &BaseConsumer<Context>, waiting: impl Fn(&Offsets) -> bool) -> bool {
        let deadline = Instant::now() + self.drain_timeout;
        loop {
            self.store_settled(consumer);
            if !waiting(&self.offsets()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(DRAIN_CHECK);
        }
    }

    /// Commits `offsets` (each the last delivered message's) synchronously.
    fn commit(&self, consumer: &BaseConsumer<Context>, offsets: &[(Partition, i64)]) {
        if offsets.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (partition, offset) in offsets {
            if let Err(error) = list.add_partition_offset(
                &partition.topic,
                partition.partition,
                next_to_read(*offset),
            ) {
                tracing::warn!(component = %self.component, %error, "cannot commit an offset");
            }
        }
        match consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => {
                tracing::debug!(component = %self.component, partitions = offsets.len(), "offsets committed")
            }
            Err(error) => tracing::warn!(
                component = %self.component,
                %error,
                "committing offsets failed; the next owner of these partitions may read some \
                 delivered messages again"
            ),
        }
    }

    /// Before partitions go: waits for their batches in flight, then commits what was delivered.
    fn revoke(&self, consumer: &BaseConsumer<Context>, list: &TopicPartitionList) {
        let partitions: Vec<Partition> = list.elements().iter().map(partition_of).collect();
        let assignment = self.assignments.load(Ordering::Acquire);
        self.revoked()
            .extend(partitions.iter().map(|p| (p.clone(), assignment)));
        if self.closing.load(Ordering::Acquire) {
            return;
        }
        let drained = self.drain(consumer, |offsets| offsets.is_waiting_for(&partitions));
        if !drained {
            tracing::warn!(
                component = %self.component,
                timeout = ?self.drain_timeout,
                "sinks did not acknowledge every batch of the revoked partitions in time; their \
                 next owner reads the unacknowledged messages again"
            );
        }
        let delivered = self.offsets().release(&partitions);
        if consumer.assignment_lost() {
            tracing::warn!(component = %self.component, "the group took the partitions away (session lost); offsets not committed");
        } else {
            self.commit(consumer, &delivered);
        }
    }
}

/// The committed position after the last delivered message, `last_delivered + 1`. The offset
/// comes from the broker; at `i64::MAX`, where nothing follows, it stays there (the message is
/// read again, never skipped) instead of overflowing inside librdkafka's callback.
pub(super) fn next_to_read(last_delivered: i64) -> Offset {
    Offset::Offset(last_delivered.saturating_add(1))
}

/// The topic partition of a list element.
fn partition_of(element: &rdkafka::topic_partition_list::TopicPartitionListElem<'_>) -> Partition {
    Partition {
        topic: Arc::from(element.topic()),
        partition: element.partition(),
    }
}

/// A readable list of partitions for logs: `topic[0,1,2]`.
fn describe(list: &TopicPartitionList) -> String {
    let mut text = String::new();
    for element in list.elements() {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&format!("{}[{}]", element.topic(), element.partition()));
    }
    text
}

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        forward_log(&self.component, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        forward_error(&self.component, &error, reason);
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            self.revoke(consumer, list);
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                self.assignments.fetch_add(1, Ordering::AcqRel);
                tracing::info!(component = %self.component, partitions = %describe(list), "partitions assigned");
            }
            Rebalance::Revoke(list) => {
                tracing::info!(component = %self.component, partitions = %describe(list), "partitions revoked");
            }
            Rebalance::Error(error) => {
                tracing::warn!(component = %self.component, %error, "rebalance failed");
            }
        }
    }
}

/// One partition's messages of a poll round.
struct Building {
    partition: Partition,
    /// The assignment (count) the messages were read under: after a revocation and a new
    /// assignment within one round, the partition's messages before and after are kept apart.
    assignment: u64,
    events: Vec<UnifiedEvent>,
    errors: Vec<UnifiedEvent>,
    last_offset: i64,
}

/// The polling thread's state.
pub(super) struct Poller {
    /// Shared with the start-up healthcheck only; closed (leaving the group) when dropped.
    pub consumer: Arc<BaseConsumer<Context>>,
    /// Names, or `^`-prefixed regular expressions, to subscribe to.
    pub topics: Vec<String>,
    /// How a message's payload becomes an event.
    pub decoding: Decoding,
    /// Whether anything reads the `errors` output (error events are only built then).
    pub keep_errors: bool,
    /// The source's counters (messages read, decode errors).
    pub metrics: Arc<ComponentMetrics>,
    /// To the source's task, which forwards to the outputs; a full channel is backpressure.
    pub out: mpsc::Sender<Outgoing>,
    /// Set by the source's task when shutdown is asked for.
    pub stop: Arc<AtomicBool>,
    /// The runtime the source's task runs on, to wait for room in `out` from this thread.
    pub runtime: tokio::runtime::Handle,
}

impl Poller {
    /// Subscribes and polls until asked to stop (or nothing reads the output any more), then
    /// waits for what was sent to be acknowledged, commits it and leaves the group.
    pub fn run(self) -> Result<(), ComponentError> {
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&topics).map_err(|error| {
            ComponentError::runtime(format!("cannot subscribe to {topics:?}: {error}"))
        })?;
        let mut decoder = Decoder::default();
        let mut building: Vec<Building> = Vec::new();
        let mut ready: VecDeque<Building> = VecDeque::new();
        let mut paused_for: Option<u64> = None;
        let mut full_since: Option<Instant> = None;
        let mut problems = Problems::default();
        while !self.stop.load(Ordering::Acquire) {
            if !self.hand_over(&mut ready) {
                break;
            }
            if ready.is_empty() {
                full_since = None;
                self.pause(false, &mut paused_for);
                self.poll_round(POLL_WAIT, &mut decoder, &mut building, &mut problems);
            } else if full_since.get_or_insert_with(Instant::now).elapsed() >= PAUSE_AFTER {
                self.pause(true, &mut paused_for);
                self.poll_round(Duration::ZERO, &mut decoder, &mut building, &mut problems);
            }
            ready.extend(building.drain(..));
            self.forget_revoked(&mut ready);
            self.context().store_settled(&self.consumer);
        }
        problems.flush(&self.context().component);
        self.finish()
    }

    fn context(&self) -> &Context {
        self.consumer.context()
    }

    /// Passes ready batches on while the source's task has room; when it has none, waits a
    /// moment for some. Returns `false` once nothing reads them any more.
    fn hand_over(&self, ready: &mut VecDeque<Building>) -> bool {
        while !ready.is_empty() {
            let permit = match self.out.try_reserve() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Closed(())) => return false,
                Err(mpsc::error::TrySendError::Full(())) => {
                    let wait = tokio::time::timeout(POLL_WAIT, self.out.reserve());
                    match self.runtime.block_on(wait) {
                        Ok(Ok(permit)) => permit,
                        Ok(Err(_)) => return false,
                        Err(_) => return true,
                    }
                }
            };
            if let Some(batch) = ready.pop_front() {
                permit.send(self.register(batch));
            }
        }
        true
    }

    /// Wraps a batch with a fresh acknowledgement token and records it as in flight.
    fn register(&self, batch: Building) -> Outgoing {
        let Building {
            partition,
            events,
            errors,
            last_offset,
            ..
        } = batch;
        let (token, receiver) = AckToken::new();
        let (events, errors) = match (events.is_empty(), errors.is_empty()) {
            (false, false) => (
                Some(EventBatch::with_ack(events, token.clone())),
                Some(EventBatch::with_ack(errors, token)),
            ),
            (false, true) => (Some(EventBatch::with_ack(events, token)), None),
            (true, false) => (None, Some(EventBatch::with_ack(errors, token))),
            (true, true) => {
                token.ack(tapio_event::BatchStatus::Delivered);
                (None, None)
            }
        };
        self.context()
            .offsets()
            .sent(partition, last_offset, Some(receiver));
        Outgoing { events, errors }
    }

    /// Pauses the assignment (again after every new assignment) or resumes it.
    fn pause(&self, pause: bool, paused_for: &mut Option<u64>) {
        let assignment = self.context().assignments.load(Ordering::Acquire);
        match (pause, *paused_for) {
            (true, Some(paused)) if paused == assignment => return,
            (false, None) => return,
            _ => {}
        }
        let Ok(list) = self.consumer.assignment() else {
            return;
        };
        let result = if pause {
            *paused_for = Some(assignment);
            self.consumer.pause(&list)
        } else {
            *paused_for = None;
            self.consumer.resume(&list)
        };
        if let Err(error) = result {
            tracing::warn!(component = %self.context().component, %error, "cannot pause or resume the partitions");
        }
    }

    /// Polls up to [`ROUND_MAX`] messages (waiting `wait` for the first) into `building`.
    fn poll_round(
        &self,
        wait: Duration,
        decoder: &mut Decoder,
        building: &mut Vec<Building>,
        problems: &mut Problems,
    ) {
        let read_at = Timestamp::now();
        let mut last_error = None;
        let mut timeout = wait;
        let (mut read, mut bad) = (0, 0);
        for _ in 0..ROUND_MAX {
            match self.consumer.poll(timeout) {
                None => break,
                Some(Ok(message)) => {
                    read += 1;
                    if !self.decode(&message, read_at, decoder, building, &mut last_error) {
                        bad += 1;
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(component = %self.context().component, %error, "consuming failed; retrying");
                    break;
                }
            }
            timeout = Duration::ZERO;
        }
        self.metrics.add_events_in(read);
        problems.undecodable(&self.context().component, bad, last_error, &self.metrics);
    }

    /// Adds one message to its partition's batch; returns whether it decoded (if not, its error
    /// goes to `last_error`).
    fn decode(
        &self,
        message: &BorrowedMessage<'_>,
        read_at: Timestamp,
        decoder: &mut Decoder,
        building: &mut Vec<Building>,
        last_error: &mut Option<String>,
    ) -> bool {
        let (topic, partition) = (message.topic(), message.partition());
        let assignment = self.context().assignments.load(Ordering::Acquire);
        let index = match building.iter().position(|b| {
            b.partition.partition == partition
                && b.assignment == assignment
                && &*b.partition.topic == topic
        }) {
            Some(index) => index,
            None => {
                building.push(Building {
                    partition: Partition {
                        topic: Arc::from(topic),
                        partition,
                    },
                    assignment,
                    events: Vec::new(),
                    errors: Vec::new(),
                    last_offset: message.offset(),
                });
                building.len() - 1
            }
        };
        let batch = &mut building[index];
        batch.last_offset = message.offset();
        let payload = message.payload().unwrap_or_default();
        let decoded = match self.decoding {
            Decoding::Text => Ok(decoder.wrap_text(payload, "kafka", read_at)),
            Decoding::Json => decoder.decode_json(payload, read_at).map_err(|e| e.0),
        };
        match decoded {
            Ok(event) => {
                batch.events.push(event);
                true
            }
            Err(error) => {
                if self.keep_errors {
                    let event = decoder.error_event(payload, "kafka", &error, read_at);
                    batch.errors.push(event);
                }
                *last_error = Some(error);
                false
            }
        }
    }

    /// Drops the batches of partitions revoked since the last look: they were never handed over,
    /// so their offsets were not committed and the partitions' next owner reads them.
    fn forget_revoked(&self, ready: &mut VecDeque<Building>) {
        let revoked = mem::take(&mut *self.context().revoked());
        if !revoked.is_empty() {
            ready.retain(|batch| {
                !revoked.iter().any(|(partition, assignment)| {
                    *partition == batch.partition && batch.assignment <= *assignment
                })
            });
        }
    }

    /// At stop: lets the source's task finish, waits for the acknowledgements of what was sent,
    /// commits them, and closes the consumer (leaving the group, so its partitions move on at
    /// once).
    fn finish(self) -> Result<(), ComponentError> {
        let Poller { consumer, out, .. } = self;
        drop(out);
        let context = consumer.context();
        if !context.drain(&consumer, Offsets::is_waiting) {
            tracing::warn!(
                component = %context.component,
                timeout = ?context.drain_timeout,
                "sinks did not acknowledge everything in time; unacknowledged messages will be \
                 read again after the restart"
            );
        }
        let delivered = context.offsets().delivered();
        context.commit(&consumer, &delivered);
        context.closing.store(true, Ordering::Release);
        drop(consumer);
        Ok(())
    }
}
