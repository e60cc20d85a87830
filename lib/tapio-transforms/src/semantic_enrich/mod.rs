//! `type = "semantic_enrich"`: gives every event its meaning and its subject. It sets
//! `semantic.{intent, category, tags, narrative, confidence}` from rules (the user's, then the
//! built-in ones in `builtin_rules.toml`, which cover every kind of event the sources emit), and
//! fills the `entity` of events whose collector could not resolve it from an entity cache it
//! learns from the stream (pod uids and names, pod IPs, sandbox and app container ids, cgroups).
//! Stateful and ordered: one task sees every event in order, so a replay of the same input gives
//! the same output. Events change only in `semantic` and `entity`.
//!
//! ```toml
//! [transforms.enrich]
//! type = "semantic_enrich"
//! inputs = ["cluster"]
//! max_entities = 100000          # keys in the entity cache; least recently used evicted first
//!
//! [[transforms.enrich.rules]]    # tried before the built-in rules
//! when = { source = "kubernetes", "kubernetes.reason" = "Unhealthy", "entity.namespace" = "payments" }
//! intent = "payment-health-check-failure"
//! category = "availability"
//! tags = ["payments", "probe"]
//! confidence = 0.9
//! narrative = "Payments pod {{ entity.name }} failed its probe[[ on {{ entity.node }}]]"
//! ```
//!
//! Rule semantics are described in `rules.rs` and narratives in `narrative.rs`; in short: `when`
//! maps field paths to a value or a list of values (`*` is a wildcard), each field is taken from
//! the first matching rule that sets it, and collectors' own semantic fields are kept unless a
//! user rule sets them.
//!
//! Evictions from the entity cache are counted
//! (`tapio_component_evictions_total{state="entity_cache_keys"}`); the first one is logged at
//! `info` (the cache is full: a larger `max_entities` keeps more), and every batch that evicts
//! logs the count at `debug`. No event is dropped or delayed by the cache.

mod entity_cache;
mod narrative;
mod resolve;
mod rules;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::{
    BufferReceiver, BuildContext, ComponentConfig, ComponentError, ComponentFuture, Transform,
    TransformContext, UnifiedEvent,
};

use crate::util::in_place::run_in_place;

use self::entity_cache::MAX_ENTRIES;
use self::resolve::Resolver;
use self::rules::RuleSet;
pub use self::rules::{OneOrMany, SemanticRule};

/// The built-in rules, as data: read them to see what every kind of event is given.
const BUILTIN_RULES: &str = include_str!("builtin_rules.toml");

/// Options of the `semantic_enrich` transform.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SemanticEnrichConfig {
    /// Most keys the entity cache holds (pod uids, `namespace/name`s, IPs, container ids,
    /// cgroup ids; a pod typically has five or six). Beyond it the least recently used key is
    /// evicted and counted (`tapio_component_evictions_total{state="entity_cache_keys"}`): later
    /// events that would have used it keep their unresolved entity; none is dropped or delayed.
    /// From 1 to 4294967294.
    #[serde(default = "default_max_entities")]
    pub max_entities: usize,
    /// systemd units whose events are about the node itself: they get the node as entity.
    #[serde(default = "default_node_units")]
    pub node_units: Vec<String>,
    /// Your rules (`[[transforms.<name>.rules]]`), tried in order before the built-in ones.
    /// Each field comes from the first matching rule that sets it.
    #[serde(default)]
    pub rules: Vec<SemanticRule>,
    /// Whether the built-in rules apply after yours; without them, events your rules do not
    /// match get no semantic fields.
    #[serde(default = "default_builtin_rules")]
    pub builtin_rules: bool,
}

fn default_max_entities() -> usize {
    100_000
}

fn default_node_units() -> Vec<String> {
    [
        "containerd.service",
        "kubelet.service",
        "docker.service",
        "crio.service",
    ]
    .map(String::from)
    .to_vec()
}

fn default_builtin_rules() -> bool {
    true
}

/// The built-in rule file's shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rules: Vec<SemanticRule>,
}

impl ComponentConfig for SemanticEnrichConfig {
    type Component = dyn Transform;

    /// Checks the options and compiles the rules, so a bad rule stops the pipeline before it
    /// starts; the error names the rule (`rules[2]: …`).
    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Transform>, ComponentError> {
        Ok(Box::new(SemanticEnrich {
            enricher: Enricher::new(self, &cx.name)?,
        }))
    }
}

/// The built transform, waiting for its run.
struct SemanticEnrich {
    enricher: Enricher,
}

impl Transform for SemanticEnrich {
    fn run(self: Box<Self>, input: BufferReceiver, cx: TransformContext) -> ComponentFuture {
        let mut enricher = self.enricher;
        let metrics = Arc::clone(&cx.metrics);
        run_in_place(
            move |events| metrics.add_evicted("entity_cache_keys", enricher.apply(events)),
            input,
            cx,
        )
    }
}

/// The transform's state: compiled rules and the entity cache.
#[derive(Debug)]
struct Enricher {
    rules: RuleSet,
    resolver: Resolver,
    /// The component's name, for its log lines.
    name: String,
}

impl Enricher {
    fn new(config: &SemanticEnrichConfig, name: &str) -> Result<Self, ComponentError> {
        if !(1..=MAX_ENTRIES).contains(&config.max_entities) {
            return Err(ComponentError::config(format!(
                "`max_entities` must be between 1 and {MAX_ENTRIES}, got {}",
                config.max_entities
            )));
        }
        let builtin = if config.builtin_rules {
            toml::from_str::<RuleFile>(BUILTIN_RULES)
                .map_err(|e| ComponentError::runtime(format!("built-in rules do not parse: {e}")))?
                .rules
        } else {
            Vec::new()
        };
        let rules = RuleSet::compile(&config.rules, &builtin).map_err(ComponentError::config)?;
        Ok(Enricher {
            rules,
            resolver: Resolver::new(config.max_entities, config.node_units.clone()),
            name: name.to_owned(),
        })
    }

    /// Resolves and annotates a batch, in order; returns how many cache keys it evicted.
    fn apply(&mut self, events: &mut [UnifiedEvent]) -> u64 {
        let before = self.resolver.cache().evictions();
        let mut evicted = 0;
        for event in events.iter_mut() {
            evicted += self.resolver.resolve(event);
            self.rules.annotate(event);
        }
        if evicted > 0 {
            let cache = self.resolver.cache();
            if before == 0 {
                tracing::info!(
                    component = %self.name,
                    entries = cache.len(),
                    "entity cache is full: evicting least recently used keys (a larger `max_entities` keeps more)"
                );
            }
            tracing::debug!(
                component = %self.name,
                evicted,
                total = cache.evictions(),
                entries = cache.len(),
                "entity cache evictions"
            );
        }
        evicted as u64
    }

    /// Keys evicted from the entity cache so far.
    #[cfg(test)]
    fn evictions(&self) -> u64 {
        self.resolver.cache().evictions()
    }
}
