//! Sending the parts of one input batch to several outputs (`route`, `rhai`): each part is a
//! batch carrying copies of the input batch's acknowledgements, so the source hears about the
//! batch once every part is settled, with the worst status of any.

use tapio_event::{BatchStatus, EventBatch, TransformContext, UnifiedEvent};

/// Where a part goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Destination<'a> {
    /// The transform's default output.
    Default,
    /// A named output (`<transform>.<output>`).
    Named(&'a str),
}

/// Sends every non-empty part of `batch` to its destination and settles `batch` itself: as
/// delivered when a part went out (the parts hold the obligations now), as dropped on purpose
/// when none did.
pub(crate) async fn send_parts<'a>(
    batch: EventBatch,
    parts: impl IntoIterator<Item = (Destination<'a>, Vec<UnifiedEvent>)>,
    cx: &mut TransformContext,
) {
    let mut sent = false;
    for (destination, events) in parts {
        if events.is_empty() {
            continue;
        }
        sent = true;
        let part = batch.carrying(events);
        match destination {
            // A default output nothing reads any more is the consumer's failure, reported by
            // the runtime; the part's acknowledgements settle as failed when it is dropped.
            Destination::Default => drop(cx.out.send(part).await),
            Destination::Named(output) => cx.out.send_to(output, part).await,
        }
    }
    batch.ack(if sent {
        BatchStatus::Delivered
    } else {
        BatchStatus::Dropped
    });
}

/// Records on an event sent to `errors` what failed, as sources do for what they cannot
/// decode: `application.error` (the message, with the script position where there is one) and
/// `application.error_component` (the transform's name).
pub(crate) fn attach_error(event: &mut UnifiedEvent, component: &str, message: String) {
    let application = event.application.get_or_insert_with(Default::default);
    application.insert("error".into(), message.into());
    application.insert("error_component".into(), component.into());
}
