//! The runner shared by transforms that change each batch's events in place and keep their
//! order (`semantic_enrich`, `impact_assess`): the batch, acknowledgements included, is forwarded
//! as it is, so acknowledgements need no bookkeeping.

use tapio_event::{BufferReceiver, ComponentFuture, TransformContext, UnifiedEvent};

/// Runs `apply` on every batch from `input` and forwards the batch; ends with the input.
pub(crate) fn run_in_place(
    mut apply: impl FnMut(&mut Vec<UnifiedEvent>) + Send + 'static,
    mut input: BufferReceiver,
    mut cx: TransformContext,
) -> ComponentFuture {
    Box::pin(async move {
        while let Some(mut batch) = input.recv().await {
            apply(batch.events_mut());
            if cx.out.send(batch).await.is_err() {
                break;
            }
        }
        Ok(())
    })
}
