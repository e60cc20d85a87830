//! End-to-end acknowledgements. A source that can replay (file, kafka) attaches an [`AckToken`]
//! to each batch it sends; fan-out clones the token, each sink acknowledges its copy once the
//! events are durably written, and when the last copy is gone the source learns the batch's
//! worst status through its [`AckReceiver`]. A copy dropped without an explicit acknowledgement
//! (a crashed sink, a drain cut short) counts as `Failed`, so a position is never committed for
//! events that were not written.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::oneshot;

/// The outcome of a batch, ordered from best to worst; a batch's status is the worst of its copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum BatchStatus {
    /// Written durably by every sink that received it.
    Delivered = 0,
    /// Dropped on purpose (a `drop_newest` buffer, or no sink downstream); the source may move on.
    Dropped = 1,
    /// Not written; the source must not commit past it.
    Failed = 2,
}

impl BatchStatus {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => BatchStatus::Delivered,
            1 => BatchStatus::Dropped,
            _ => BatchStatus::Failed,
        }
    }

    /// Whether a source may commit past a batch with this status.
    pub fn is_settled(self) -> bool {
        self != BatchStatus::Failed
    }
}

struct AckState {
    worst: AtomicU8,
    notify: Option<oneshot::Sender<BatchStatus>>,
}

impl Drop for AckState {
    fn drop(&mut self) {
        if let Some(notify) = self.notify.take() {
            // The source may have stopped listening (shutdown); nothing to tell then.
            let _ = notify.send(BatchStatus::from_u8(*self.worst.get_mut()));
        }
    }
}

/// One copy of a batch's acknowledgement obligation.
pub struct AckToken {
    shared: Arc<AckState>,
    settled: bool,
}

/// Resolves to the final status of a batch once every copy of its token is gone.
pub struct AckReceiver(oneshot::Receiver<BatchStatus>);

impl AckToken {
    /// A fresh obligation and the receiver the source waits on.
    pub fn new() -> (AckToken, AckReceiver) {
        let (notify, receiver) = oneshot::channel();
        let shared = Arc::new(AckState {
            worst: AtomicU8::new(BatchStatus::Delivered as u8),
            notify: Some(notify),
        });
        (
            AckToken {
                shared,
                settled: false,
            },
            AckReceiver(receiver),
        )
    }

    /// Settles this copy with `status`.
    pub fn ack(mut self, status: BatchStatus) {
        self.shared.worst.fetch_max(status as u8, Ordering::AcqRel);
        self.settled = true;
    }
}

impl Clone for AckToken {
    fn clone(&self) -> Self {
        AckToken {
            shared: Arc::clone(&self.shared),
            settled: false,
        }
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if !self.settled {
            self.shared
                .worst
                .fetch_max(BatchStatus::Failed as u8, Ordering::AcqRel);
        }
    }
}

impl std::fmt::Debug for AckToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckToken")
    }
}

impl AckReceiver {
    /// Waits for the batch's final status.
    pub async fn status(self) -> BatchStatus {
        self.0.await.unwrap_or(BatchStatus::Failed)
    }

    /// The status if it is already known, without waiting.
    pub fn try_status(&mut self) -> Option<BatchStatus> {
        match self.0.try_recv() {
            Ok(status) => Some(status),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(BatchStatus::Failed),
        }
    }
}

impl std::future::Future for AckReceiver {
    type Output = BatchStatus;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<BatchStatus> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|result| result.unwrap_or(BatchStatus::Failed))
    }
}

/// A sent batch's fate as a replaying source tracks it in send order: settled at once (input that
/// made no event) or once its receiver resolves. Sources commit positions by walking these in
/// order, so they share this bookkeeping.
pub struct PendingAck {
    waiting: Option<AckReceiver>,
    status: BatchStatus,
}

impl PendingAck {
    /// A batch waiting on `receiver`, or, with `None`, one that is settled as delivered.
    pub fn new(receiver: Option<AckReceiver>) -> Self {
        PendingAck {
            waiting: receiver,
            status: BatchStatus::Delivered,
        }
    }

    /// Whether the status is known, checking without waiting.
    pub fn is_known(&mut self) -> bool {
        if let Some(receiver) = &mut self.waiting {
            match receiver.try_status() {
                Some(status) => self.status = status,
                None => return false,
            }
            self.waiting = None;
        }
        true
    }

    /// Waits until the status is known. Cancel-safe: dropped mid-way, nothing is lost.
    pub async fn known(&mut self) {
        if let Some(receiver) = &mut self.waiting {
            self.status = receiver.await;
            self.waiting = None;
        }
    }

    /// The final status; `Failed` while it is not known yet.
    pub fn status(&self) -> BatchStatus {
        if self.waiting.is_some() {
            BatchStatus::Failed
        } else {
            self.status
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_when_every_copy_is_settled() {
        let (token, mut receiver) = AckToken::new();
        let copy = token.clone();
        token.ack(BatchStatus::Delivered);
        assert_eq!(receiver.try_status(), None);
        copy.ack(BatchStatus::Delivered);
        assert_eq!(receiver.status().await, BatchStatus::Delivered);
    }

    #[tokio::test]
    async fn worst_copy_wins() {
        let (token, receiver) = AckToken::new();
        let copy = token.clone();
        token.ack(BatchStatus::Dropped);
        copy.ack(BatchStatus::Delivered);
        assert_eq!(receiver.status().await, BatchStatus::Dropped);
    }

    #[tokio::test]
    async fn pending_ack_follows_its_receiver() {
        let (token, receiver) = AckToken::new();
        let mut pending = PendingAck::new(Some(receiver));
        assert!(!pending.is_known());
        assert_eq!(pending.status(), BatchStatus::Failed);
        token.ack(BatchStatus::Dropped);
        pending.known().await;
        assert!(pending.is_known());
        assert_eq!(pending.status(), BatchStatus::Dropped);
        assert_eq!(PendingAck::new(None).status(), BatchStatus::Delivered);
    }

    #[tokio::test]
    async fn dropping_unsettled_copy_fails_the_batch() {
        let (token, receiver) = AckToken::new();
        let copy = token.clone();
        token.ack(BatchStatus::Delivered);
        drop(copy);
        assert_eq!(receiver.status().await, BatchStatus::Failed);
    }
}
