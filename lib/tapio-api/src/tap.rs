//! Live taps over the API: `GET /v1/tap` (NDJSON, what `tapio tap` reads) and `StreamEvents`
//! with `tap` set. Both open a [`Tap`] here, so they refuse the same requests with the same
//! words and end the same way: after `limit` events, or when the client fell behind and the
//! pipeline dropped it.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use futures::stream::BoxStream;
use hyper::body::Frame;
use tapio_event::tap::{TapDirection, TapSubscription, Tapped, Taps};
use tapio_event::{ComponentKind, ComponentMetrics};
use tapio_sinks::api_store::EventFilter;

use crate::params::BadParam;
use crate::{BoxError, Caller};

/// Batches a tap holds for its client before the client counts as too slow: a few hundred
/// milliseconds of a busy pipeline, so a reader that keeps up is never dropped.
const TAP_QUEUE_BATCHES: usize = 256;

/// What a tap delivers: the events of one batch (filtered, at most what the limit leaves),
/// or the news that the client was dropped for reading too slowly.
pub(crate) enum TapItem {
    Batch(Tapped),
    Dropped,
}

/// What the client is told when it was dropped.
pub(crate) const DROPPED: &str =
    "the tap client fell behind the pipeline and was dropped; tap fewer components or read faster";

/// A tap request: which components, which side, which events, how many.
pub(crate) struct Tap<'a> {
    pub(crate) pattern: &'a str,
    pub(crate) direction: TapDirection,
    pub(crate) filter: EventFilter,
    pub(crate) limit: Option<usize>,
}

impl Tap<'_> {
    /// Starts the tap, refusing a pattern that is no glob or that matches no component
    /// running now on that side (the names that would match are listed).
    pub(crate) fn open(
        self,
        taps: &Taps,
        running: &[Arc<ComponentMetrics>],
        caller: &Caller,
    ) -> Result<BoxStream<'static, TapItem>, BadParam> {
        let has_side = |kind: ComponentKind| match self.direction {
            TapDirection::Outputs => kind != ComponentKind::Sink,
            TapDirection::Inputs => kind != ComponentKind::Source,
        };
        let subscription = taps
            .subscribe(self.pattern, self.direction, TAP_QUEUE_BATCHES)
            .map_err(|e| BadParam(format!("`component`: {e}")))?;
        let candidates: Vec<&str> = running
            .iter()
            .filter(|component| has_side(component.kind))
            .map(|component| component.name.as_str())
            .collect();
        if !candidates.iter().any(|name| subscription.watches(name)) {
            let side = match self.direction {
                TapDirection::Outputs => "outputs (sources and transforms)",
                TapDirection::Inputs => "inputs (transforms and sinks)",
            };
            return Err(BadParam(format!(
                "`component` {:?} matches no running component with {side}; they are: {}",
                self.pattern,
                candidates.join(", ")
            )));
        }
        tracing::info!(client = %caller.address, token = %caller.token, component = self.pattern, direction = ?self.direction, "tap opened");
        Ok(stream(subscription, self.filter, self.limit))
    }
}

/// The body of `GET /v1/tap`: one NDJSON line per event, `{"component": …, "output": …,
/// "event": …}` (`output` null for the default one), one chunk per batch; a last
/// `{"error": …}` line when the client was dropped.
pub(crate) fn ndjson(
    items: BoxStream<'static, TapItem>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + 'static {
    items.map(|item| {
        let mut out = Vec::new();
        match item {
            TapItem::Batch(tapped) => {
                let head = format!(
                    "{{\"component\":{},\"output\":{},\"event\":",
                    serde_json::Value::from(&*tapped.component),
                    serde_json::to_string(&tapped.output.as_deref()).expect("names serialise"),
                );
                for event in tapped.events.iter() {
                    out.extend_from_slice(head.as_bytes());
                    tapio_event::codec::encode_json(event, &mut out);
                    out.extend_from_slice(b"}\n");
                }
            }
            TapItem::Dropped => {
                out.extend_from_slice(
                    format!("{{\"error\":{}}}\n", serde_json::Value::from(DROPPED)).as_bytes(),
                );
            }
        }
        Ok(Frame::data(Bytes::from(out)))
    })
}

/// The tap's batches, filtered and cut at `limit` events.
fn stream(
    subscription: TapSubscription,
    filter: EventFilter,
    limit: Option<usize>,
) -> BoxStream<'static, TapItem> {
    let filter = Arc::new(filter);
    let state = (Some(subscription), limit.unwrap_or(usize::MAX));
    futures::stream::unfold(state, move |(subscription, left)| {
        let filter = Arc::clone(&filter);
        async move {
            let mut subscription = subscription.filter(|_| left > 0)?;
            loop {
                let Some(mut tapped) = subscription.recv().await else {
                    return subscription
                        .was_dropped()
                        .then_some((TapItem::Dropped, (None, 0)));
                };
                let wanted = |event: &tapio_event::UnifiedEvent| filter.matches(event);
                if !tapped.events.iter().all(wanted) || tapped.events.len() > left {
                    let kept: Vec<_> = tapped
                        .events
                        .iter()
                        .filter(|e| wanted(e))
                        .take(left)
                        .cloned()
                        .collect();
                    tapped.events = Arc::new(kept);
                }
                if tapped.events.is_empty() {
                    continue;
                }
                let left = left - tapped.events.len();
                return Some((TapItem::Batch(tapped), (Some(subscription), left)));
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_event::buffer::buffer;
    use tapio_event::tap::TapPoint;
    use tapio_event::{
        ComponentMetrics, EventBatch, EventType, Fanout, Timestamp, UnifiedEvent, WhenFull,
    };

    fn caller() -> Caller {
        Caller {
            address: "test".into(),
            token: "-".into(),
        }
    }

    fn running() -> Vec<Arc<ComponentMetrics>> {
        [
            ("in", "demo", ComponentKind::Source),
            ("enrich", "semantic_enrich", ComponentKind::Transform),
            ("out", "blackhole", ComponentKind::Sink),
        ]
        .into_iter()
        .map(|(name, kind_name, kind)| Arc::new(ComponentMetrics::new(name, kind_name, kind)))
        .collect()
    }

    #[test]
    fn a_pattern_that_matches_nothing_on_that_side_is_refused_with_the_names() {
        let taps = Taps::default();
        let tap = |pattern, direction| Tap {
            pattern,
            direction,
            filter: EventFilter::default(),
            limit: None,
        };
        let refused = |pattern, direction| {
            tap(pattern, direction)
                .open(&taps, &running(), &caller())
                .err()
                .unwrap()
                .0
        };
        let message = refused("out", TapDirection::Outputs);
        assert!(message.contains("in, enrich"), "{message}");
        assert!(refused("in", TapDirection::Inputs).contains("enrich, out"));
        assert!(refused("[", TapDirection::Inputs).contains("not a valid glob"));
        assert!(
            tap("en*", TapDirection::Inputs)
                .open(&taps, &running(), &caller())
                .is_ok()
        );
        // Refused taps leave nothing behind; the open one is still live until dropped.
        assert_eq!(taps.clients(), 0);
    }

    #[tokio::test]
    async fn events_are_filtered_and_cut_at_the_limit_across_batches() {
        let taps = Taps::default();
        let metrics = Arc::new(ComponentMetrics::new(
            "out",
            "blackhole",
            ComponentKind::Sink,
        ));
        let (tx, mut rx) = buffer(100, WhenFull::Block, metrics);
        let mut fanout =
            Fanout::keyed(vec![("out".into(), tx)]).tapped(TapPoint::new(taps.clone(), "in", None));
        let filter = EventFilter {
            kind: Some(EventType::Network),
            ..EventFilter::default()
        };
        let mut stream = Tap {
            pattern: "in",
            direction: TapDirection::Outputs,
            filter,
            limit: Some(3),
        }
        .open(&taps, &running(), &caller())
        .unwrap();
        for _ in 0..3 {
            let events = [EventType::Network, EventType::Process]
                .into_iter()
                .map(|kind| UnifiedEvent::new(kind, "demo", Timestamp(1)))
                .collect();
            fanout.send(EventBatch::new(events)).await.unwrap();
            assert!(
                rx.recv().await.is_some(),
                "the pipeline still gets every batch"
            );
        }
        let mut seen = 0;
        while let Some(item) = stream.next().await {
            let TapItem::Batch(tapped) = item else {
                panic!("not dropped")
            };
            assert!(tapped.events.iter().all(|e| e.kind == EventType::Network));
            seen += tapped.events.len();
        }
        assert_eq!(seen, 3);
        assert_eq!(taps.clients(), 0, "the tap ends at its limit");
    }
}
