//! `filter`: keeps the events that pass a [`Condition`] and drops the rest, counted as
//! `filtered` (`tapio_component_dropped_total{reason="filtered"}`), which is a choice of the
//! user and not an error. The batch is forwarded with its acknowledgements; one with no event
//! left is settled as dropped on purpose, so the source moves on past it.

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::{
    BatchStatus, BufferReceiver, BuildContext, ComponentConfig, ComponentError, ComponentFuture,
    ERRORS_OUTPUT, EventBatch, Transform, TransformContext,
};

use crate::util::condition::Condition;
use crate::util::split::{Destination, attach_error, send_parts};

/// Why an event is missing downstream of a `filter`, as the dropped counter names it.
pub(crate) const FILTERED: &str = "filtered";
/// The error kind of events a Rhai condition failed on (`filter`, `route`).
pub(crate) const CONDITION_ERROR: &str = "condition";

/// Options of the `filter` transform.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The test an event must pass to be kept: a field test such as
    /// `{ field = "impact.severity", in = ["error", "critical"] }`, or a Rhai expression such as
    /// `'event.impact?.severity == "critical"'`. Events a Rhai expression fails on (it throws,
    /// hits a bound or is not a boolean) go to `<name>.errors`.
    pub condition: Condition,
}

impl ComponentConfig for FilterConfig {
    type Component = dyn Transform;

    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Transform>, ComponentError> {
        Ok(Box::new(Filter {
            condition: self.condition.clone(),
            name: cx.name.clone(),
        }))
    }
}

struct Filter {
    condition: Condition,
    /// The transform's name, for the events its condition fails on.
    name: String,
}

impl Filter {
    /// Filters `batch` with a Rhai condition: the events it fails on go to `errors`.
    async fn filter_by_script(&self, mut batch: EventBatch, cx: &mut TransformContext) {
        let (mut kept, mut failed, mut filtered) = (Vec::new(), Vec::new(), 0);
        for mut event in batch.take_events() {
            match self.condition.test(&mut event) {
                Ok(true) => kept.push(event),
                Ok(false) => filtered += 1,
                Err(message) => {
                    attach_error(&mut event, &self.name, message);
                    failed.push(event);
                }
            }
        }
        if filtered > 0 {
            cx.metrics.add_dropped(FILTERED, filtered);
        }
        if !failed.is_empty() {
            cx.metrics.add_errors(CONDITION_ERROR, failed.len());
        }
        let parts = [
            (Destination::Default, kept),
            (Destination::Named(ERRORS_OUTPUT), failed),
        ];
        send_parts(batch, parts, cx).await;
    }
}

impl Transform for Filter {
    fn run(
        self: Box<Self>,
        mut input: BufferReceiver,
        mut cx: TransformContext,
    ) -> ComponentFuture {
        Box::pin(async move {
            while let Some(mut batch) = input.recv().await {
                let Some(field) = self.condition.as_field() else {
                    self.filter_by_script(batch, &mut cx).await;
                    continue;
                };
                let filtered = batch.retain(|event| field.matches(event));
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
    use tapio_event::{AckToken, Severity, Timestamp, UnifiedEvent};

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
    async fn a_rhai_condition_filters_alike_and_sends_failures_to_errors() {
        let mut rng = Rng::new(5);
        let batches = random_batches(&mut rng, 300);
        let expected: Vec<String> = batches
            .iter()
            .flat_map(|b| b.events())
            .filter(|e| is_severe(e) && e.source != "7")
            .map(|e| e.source.clone())
            .collect();
        let got = run(
            filter(
                r#"condition = '(event.source == "7" && event.seven()) || event.impact?.severity in ["error", "critical"]'"#,
            ),
            &[ERRORS_OUTPUT],
            batches,
        )
        .await;
        assert_eq!(got.sources(""), expected);
        assert_eq!(got.sources(ERRORS_OUTPUT), ["7"]);
        let failed = &got.outputs[ERRORS_OUTPUT][0].events()[0];
        let error = failed.application.as_ref().unwrap()["error"].to_string();
        assert!(error.contains("seven"), "{error}");
        assert!(error.contains("script line 1, column"), "{error}");
        assert_eq!(got.metrics.errors.get(CONDITION_ERROR), Some(&1));
        assert_eq!(
            got.metrics.dropped.get(FILTERED).copied(),
            Some(299 - expected.len() as u64)
        );
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
