//! What-if analysis for the API's `AnalyzeEvents` and `PredictImpact`: given events go through
//! freshly built copies of the config's own `semantic_enrich → correlate → impact_assess`
//! transforms (the first of each type the config declares, in that order), never through the
//! running pipeline, so asking changes no live state and sees exactly the configured rules.

use std::sync::Arc;

use tapio_event::buffer::{WhenFull, buffer};
use tapio_event::{
    BuildContext, ComponentKind, ComponentMetrics, EventBatch, Fanout, ImpactContext, Outputs,
    TransformContext, UnifiedEvent,
};
use tapio_transforms::TransformConfig;

use crate::config::{Config, TransformComponent};
use crate::unit_tests::collector;

/// The chain's transforms, in order; cloning is cheap.
#[derive(Clone, Default)]
pub struct Analyzer {
    chain: Arc<Vec<TransformComponent>>,
    node_name: String,
}

/// Events an analysis takes at most: a private copy is built per call, so a call must stay
/// small.
pub const MAX_ANALYZE_EVENTS: usize = 10_000;

impl Analyzer {
    /// The first `semantic_enrich`, `correlate` and `impact_assess` of `config`, those it has.
    pub fn from_config(config: &Config) -> Analyzer {
        let first = |wanted: fn(&TransformConfig) -> bool| {
            config
                .transforms
                .iter()
                .find(|t| wanted(&t.config))
                .cloned()
        };
        let chain = [
            first(|c| matches!(c, TransformConfig::SemanticEnrich(_))),
            first(|c| matches!(c, TransformConfig::Correlate(_))),
            first(|c| matches!(c, TransformConfig::ImpactAssess(_))),
        ];
        Analyzer {
            chain: Arc::new(chain.into_iter().flatten().collect()),
            node_name: config.node_name.clone(),
        }
    }

    /// The chain's transform names, in order (empty: the config has none of them).
    pub fn chain(&self) -> Vec<&str> {
        self.chain.iter().map(|t| t.name.as_str()).collect()
    }

    /// What the chain emits for `events`: the events, enriched, tagged and scored, and the
    /// summaries of the stories they complete (flushed at the end of the input).
    pub async fn analyze(&self, events: Vec<UnifiedEvent>) -> Result<Vec<UnifiedEvent>, String> {
        if self.chain.is_empty() {
            return Err(
                "the config has no semantic_enrich, correlate or impact_assess transform to analyze with"
                    .into(),
            );
        }
        run_chain(&self.chain, &self.node_name, events).await
    }

    /// The impact `impact_assess`'s rules give `event`; `None` when they give none.
    pub async fn predict_impact(
        &self,
        event: UnifiedEvent,
    ) -> Result<Option<ImpactContext>, String> {
        let Some(impact) = self
            .chain
            .iter()
            .find(|t| matches!(t.config, TransformConfig::ImpactAssess(_)))
        else {
            return Err("the config has no impact_assess transform to score with".into());
        };
        let id = event.id.clone();
        let out = run_chain(std::slice::from_ref(impact), &self.node_name, vec![event]).await?;
        Ok(out
            .into_iter()
            .find(|e| e.id == id)
            .and_then(|e| e.impact.map(|i| *i)))
    }
}

/// Runs `events` through fresh copies of `chain`, each transform's default output into the
/// next; returns what the last emitted.
async fn run_chain(
    chain: &[TransformComponent],
    node_name: &str,
    events: Vec<UnifiedEvent>,
) -> Result<Vec<UnifiedEvent>, String> {
    if events.len() > MAX_ANALYZE_EVENTS {
        return Err(format!(
            "at most {MAX_ANALYZE_EVENTS} events can be analyzed at once, got {}",
            events.len()
        ));
    }
    let room = events.len().max(1) * 4 + 1024;
    let (last, collected) = collector();
    let mut next = last;
    let mut tasks = Vec::new();
    for component in chain.iter().rev() {
        let metrics = Arc::new(ComponentMetrics::new(
            &component.name,
            component.config.type_name(),
            ComponentKind::Transform,
        ));
        let (tx, rx) = buffer(room, WhenFull::Block, Arc::clone(&metrics));
        let context = BuildContext {
            name: component.name.clone(),
            data_dir: std::env::temp_dir(),
            node_name: node_name.to_owned(),
        };
        let transform = component
            .config
            .build(&context)
            .map_err(|e| format!("transforms.{}: {e}", component.name))?;
        // Named outputs (a route's) lead nowhere here: only the default output continues.
        let named = component
            .config
            .named_outputs()
            .into_iter()
            .map(|output| (output, Fanout::new(Vec::new())))
            .collect();
        let cx = TransformContext {
            out: Outputs::new(Fanout::new(vec![next]), named, Arc::clone(&metrics)),
            metrics,
        };
        tasks.push(tokio::spawn(transform.run(rx, cx)));
        next = tx;
    }
    next.send(EventBatch::new(events))
        .await
        .map_err(|_| "the chain stopped reading its input".to_owned())?;
    drop(next);
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("a transform failed: {error}")),
            Err(join) => return Err(format!("a transform panicked: {join}")),
        }
    }
    collected
        .await
        .map_err(|e| format!("collecting the chain's output failed: {e}"))
}
