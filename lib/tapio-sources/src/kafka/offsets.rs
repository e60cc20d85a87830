//! Which offsets the `kafka` source may commit. Batches are tracked in the order they were sent;
//! a partition's offset moves past a batch only once every sink settled it and everything sent
//! before it, so a commit never covers an event that was not delivered. A failed batch freezes
//! its partition's offset until the partition is let go of: the next owner reads from there.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use tapio_event::{AckReceiver, PendingAck};

/// A topic partition, its topic shared between every batch of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Partition {
    /// The topic's name.
    pub topic: Arc<str>,
    /// The partition's number within it.
    pub partition: i32,
}

struct Sent {
    partition: Partition,
    /// Offset of the batch's last message.
    last_offset: i64,
    ack: PendingAck,
}

/// The committable offset of every partition and the batches still waiting for their sinks.
#[derive(Default)]
pub(super) struct Offsets {
    queue: VecDeque<Sent>,
    /// Per partition, the offset of the last message delivered with everything before it.
    delivered: HashMap<Partition, i64>,
    /// Partitions with a failed batch: nothing past it is committed.
    frozen: HashSet<Partition>,
}

impl Offsets {
    /// Records a batch of `partition` ending at `last_offset`; with no `ack`, its messages made no
    /// event anyone must acknowledge (they are settled at once).
    pub fn sent(&mut self, partition: Partition, last_offset: i64, ack: Option<AckReceiver>) {
        self.queue.push_back(Sent {
            partition,
            last_offset,
            ack: PendingAck::new(ack),
        });
    }

    /// Whether any batch is still waiting.
    pub fn is_waiting(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether a batch of one of `partitions` is still waiting.
    pub fn is_waiting_for(&self, partitions: &[Partition]) -> bool {
        self.queue
            .iter()
            .any(|sent| partitions.contains(&sent.partition))
    }

    /// Settles every batch whose turn has come, without waiting; returns the offsets that moved
    /// (each the last delivered message's offset), for the consumer's offset store.
    pub fn settle(&mut self) -> Vec<(Partition, i64)> {
        let mut moved: Vec<(Partition, i64)> = Vec::new();
        while let Some(front) = self.queue.front_mut() {
            if !front.ack.is_known() {
                break;
            }
            let Some(sent) = self.queue.pop_front() else {
                break;
            };
            if self.frozen.contains(&sent.partition) {
                continue;
            }
            if !sent.ack.status().is_settled() {
                let offset = self.delivered.get(&sent.partition).copied().unwrap_or(-1);
                tracing::warn!(
                    topic = %sent.partition.topic,
                    partition = sent.partition.partition,
                    committed_up_to = offset,
                    "a batch from this partition was not delivered; its offset is not committed \
                     past it, so the partition's next owner reads it again"
                );
                self.frozen.insert(sent.partition);
                continue;
            }
            self.delivered
                .insert(sent.partition.clone(), sent.last_offset);
            match moved.iter_mut().find(|(p, _)| *p == sent.partition) {
                Some((_, offset)) => *offset = sent.last_offset,
                None => moved.push((sent.partition, sent.last_offset)),
            }
        }
        moved
    }

    /// Lets go of `partitions` (revoked): forgets their waiting batches, whose sinks may still
    /// deliver them but whose offsets now belong to the next owner, and returns what was
    /// delivered of them, the offsets to commit before they go.
    pub fn release(&mut self, partitions: &[Partition]) -> Vec<(Partition, i64)> {
        self.queue
            .retain(|sent| !partitions.contains(&sent.partition));
        for partition in partitions {
            self.frozen.remove(partition);
        }
        partitions
            .iter()
            .filter_map(|p| Some((p.clone(), self.delivered.remove(p)?)))
            .collect()
    }

    /// Every partition's delivered offset, for the final commit.
    pub fn delivered(&self) -> Vec<(Partition, i64)> {
        let mut all: Vec<_> = self
            .delivered
            .iter()
            .map(|(p, offset)| (p.clone(), *offset))
            .collect();
        all.sort();
        all
    }
}

#[cfg(test)]
mod tests {
    use tapio_event::{AckToken, BatchStatus};

    use super::*;

    fn partition(n: i32) -> Partition {
        Partition {
            topic: Arc::from("events"),
            partition: n,
        }
    }

    fn send(offsets: &mut Offsets, p: i32, last: i64) -> AckToken {
        let (token, receiver) = AckToken::new();
        offsets.sent(partition(p), last, Some(receiver));
        token
    }

    #[test]
    fn offsets_move_only_over_a_settled_prefix() {
        let mut offsets = Offsets::default();
        let first = send(&mut offsets, 0, 9);
        let second = send(&mut offsets, 0, 19);
        second.ack(BatchStatus::Delivered);
        assert!(offsets.settle().is_empty(), "the first batch is still out");
        first.ack(BatchStatus::Dropped);
        assert_eq!(offsets.settle(), vec![(partition(0), 19)]);
        assert!(!offsets.is_waiting());
    }

    #[test]
    fn batches_without_events_settle_at_once_in_their_turn() {
        let mut offsets = Offsets::default();
        let first = send(&mut offsets, 1, 4);
        offsets.sent(partition(1), 5, None);
        offsets.sent(partition(2), 7, None);
        assert!(offsets.settle().is_empty());
        first.ack(BatchStatus::Delivered);
        assert_eq!(offsets.settle(), vec![(partition(1), 5), (partition(2), 7)]);
    }

    #[test]
    fn a_failed_batch_freezes_its_partition_only() {
        let mut offsets = Offsets::default();
        send(&mut offsets, 0, 9).ack(BatchStatus::Delivered);
        drop(send(&mut offsets, 0, 19));
        send(&mut offsets, 1, 3).ack(BatchStatus::Delivered);
        send(&mut offsets, 0, 29).ack(BatchStatus::Delivered);
        assert_eq!(offsets.settle(), vec![(partition(0), 9), (partition(1), 3)]);
        assert_eq!(
            offsets.delivered(),
            vec![(partition(0), 9), (partition(1), 3)]
        );
    }

    #[test]
    fn release_forgets_waiting_batches_and_returns_what_was_delivered() {
        let mut offsets = Offsets::default();
        send(&mut offsets, 0, 9).ack(BatchStatus::Delivered);
        offsets.settle();
        let late = send(&mut offsets, 0, 19);
        let other = send(&mut offsets, 1, 5);
        assert!(offsets.is_waiting_for(&[partition(0)]));
        assert_eq!(offsets.release(&[partition(0)]), vec![(partition(0), 9)]);
        assert!(!offsets.is_waiting_for(&[partition(0)]));
        late.ack(BatchStatus::Delivered);
        other.ack(BatchStatus::Delivered);
        assert_eq!(offsets.settle(), vec![(partition(1), 5)]);
        assert_eq!(offsets.delivered(), vec![(partition(1), 5)]);
    }
}
