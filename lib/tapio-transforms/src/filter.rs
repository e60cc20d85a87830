//! `filter`: keeps the events that pass a [`Condition`] and drops the rest, counted as
//! `filtered` (`tapio_component_dropped_total{reason="filtered"}`), which is a choice of the
//! user and not an error. The batch is forwarded with its acknowledgements; one with no event
//! left is settled as dropped on purpose, so the source moves on past it.

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::{
    BatchStatus, BufferReceiver, BuildContext, ComponentConfig, ComponentError, ComponentFuture,
    Transform, TransformContext,
};

use crate::util::condition::Condition;

/// Why an event is missing downstream of a `filter`, as the dropped counter names it.
pub(crate) const FILTERED: &str = "filtered";

/// Options of the `filter` transform.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The test an event must pass to be kept, e.g.
    /// `{ field = "impact.severity", in = ["error", "critical"] }`.
    pub condition: Condition,
}

impl ComponentConfig for FilterConfig {
    type Component = dyn Transform;

    fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Transform>, ComponentError> {
        Ok(Box::new(Filter {
            condition: self.condition.clone(),
        }))
    }
}

struct Filter {
    condition: Condition,
}

impl Transform for Filter {
    fn run(
        self: Box<Self>,
        mut input: BufferReceiver,
        mut cx: TransformContext,
    ) -> ComponentFuture {
        Box::pin(async move {
            while let Some(mut batch) = input.recv().await {
                let filtered = batch.retain(|event| self.condition.matches(event));
                if filtered > 0 {
                    cx.metrics.add_dropped(FILTERED, filtered);
                }
                if batch.is_empty() {
                    batch.ack(BatchStatus::Dropped);
                } else if cx.out.send(batch).await.is_err() {
                    break;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::testing::{Rng, random_batches, run};
    use tapio_event::{AckToken, EventBatch, Severity, Timestamp, UnifiedEvent};

    fn filter(condition: &str) -> Box<dyn Transform> {
        let config: FilterConfig = toml::from_str(condition).unwrap();
        let cx = BuildContext {
            name: "f".into(),
            data_dir: std::env::temp_dir(),
            node_name: "n".into(),
        };
        config.build(&cx).unwrap()
    }

    fn is_severe(event: &UnifiedEvent) -> bool {
        event
            .impact
            .as_ref()
            .and_then(|i| i.severity)
            .is_some_and(|s| matches!(s, Severity::Error | Severity::Critical))
    }

    #[tokio::test]
    async fn keeps_exactly_the_matching_events_in_order() {
        for seed in 1..20 {
            let mut rng = Rng::new(seed);
            let batches = random_batches(&mut rng, 200);
            let expected: Vec<String> = batches
                .iter()
                .flat_map(|b| b.events())
                .filter(|e| is_severe(e))
                .map(|e| e.source.clone())
                .collect();
            let got = run(
                filter(r#"condition = { field = "impact.severity", in = ["error", "critical"] }"#),
                &[],
                batches,
            )
            .await;
            assert_eq!(got.sources(""), expected, "seed {seed}");
            assert_eq!(
                got.metrics.dropped.get(FILTERED).copied().unwrap_or(0),
                200 - expected.len() as u64,
                "seed {seed}"
            );
            assert_eq!(
                got.metrics.errors_total(),
                0,
                "filtered events are not errors"
            );
        }
    }

    #[tokio::test]
    async fn acknowledgements_follow_the_kept_events() {
        let event = |source: &str, pid: u32| {
            let mut event =
                UnifiedEvent::new(tapio_event::EventType::Process, source, Timestamp(1));
            event.process = Some(Box::new(tapio_event::ProcessContext {
                pid: Some(pid),
                ..Default::default()
            }));
            event
        };
        let (all_dropped, all_dropped_status) = AckToken::new();
        let (partly, mut partly_status) = AckToken::new();
        let batches = vec![
            EventBatch::with_ack(vec![event("a", 2), event("b", 3)], all_dropped),
            EventBatch::with_ack(vec![event("c", 1), event("d", 2)], partly),
        ];
        let got = run(
            filter(r#"condition = { field = "process.pid", equals = 1 }"#),
            &[],
            batches,
        )
        .await;
        assert_eq!(
            all_dropped_status.status().await,
            tapio_event::BatchStatus::Dropped
        );
        assert_eq!(got.sources(""), ["c"]);
        assert_eq!(
            partly_status.try_status(),
            None,
            "settled before the sink wrote it"
        );
        for batch in got.outputs.into_values().flatten() {
            batch.ack(tapio_event::BatchStatus::Delivered);
        }
        assert_eq!(
            partly_status.status().await,
            tapio_event::BatchStatus::Delivered
        );
    }
}
