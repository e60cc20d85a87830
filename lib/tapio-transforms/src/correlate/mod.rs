//! `correlate`: groups events that belong to one story and names the story when a known
//! sequence completes (DESIGN.md section 5, the normative algorithm; issue 3 the contract).
//!
//! - Events pass a reorder buffer and are processed in event-time order once the watermark
//!   (largest timestamp seen − `allowed_lateness`) passes them; on `idle_flush` without input
//!   and at the end of input the buffer flushes. An event older than events already processed
//!   is processed at once and counted as late.
//! - An event joins the open group its keys reach (a pod by id and `namespace/name` and by the
//!   container ids, cgroups and IPs its events carry; a node by name, for events about the node
//!   itself) when it falls within `window` of the group's latest event; a group closes after
//!   `max_group_duration`; keys reaching two open groups merge them and the older
//!   `correlation_id` survives. Events with nothing to link by (no entity, or an unresolved
//!   `host` carrying no alias) form a group of their own.
//! - Aliases count in event time, whatever the arrival order: an event the enricher could not
//!   resolve because it arrived before the event that teaches its alias (a first `exec` before
//!   its container's scope unit) joins the pod's group and leaves about the pod. At one instant,
//!   resolved events are processed before unresolved ones, so such an event is placed after the
//!   alias is known (`engine.rs`, `Keys`, and `reorder.rs` say why the fix lives here).
//! - Every event leaves as soon as it is processed, with `correlation.correlation_id`; when a
//!   group completes a catalog pattern, one summary (`type = "correlation"`) follows at once.
//! - State is bounded by `max_groups` (least recently active evicted) and `max_group_keys`
//!   (later keys not linked), and expires after `window` of event time; the reorder buffer
//!   holds at most `max_buffered_events` (the oldest leaves early beyond it); held events keep
//!   their batches' acknowledgements until they leave.
//!
//! Replaying the same input gives the same bytes: windows use event time only, and ids derive
//! from input ids and pattern names. Late events and evictions are logged at debug level;
//! evicted groups, refused keys and early releases are counted as the component's evictions
//! (they drop nothing, so they are not counted as drops).

mod catalog;
mod engine;
mod groups;
mod recurrence;
mod reorder;
mod summary;
#[cfg(test)]
mod tests;

use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::{
    BufferReceiver, BuildContext, ComponentConfig, ComponentError, ComponentFuture,
    ComponentMetrics, ConfigDuration, Transform, TransformContext,
};

pub use catalog::{Matcher, PatternConfig, StepConfig};
use engine::{Correlator, Output, Stats};

/// Options of `[transforms.<name>]` with `type = "correlate"`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrelateConfig {
    /// Session window on event time: an event joins its entity's group when it happened within
    /// this long of the group's latest event; a group expires after this long without events.
    #[serde(default = "default_window")]
    pub window: ConfigDuration,
    /// How long an event may arrive behind the newest one and still be processed in
    /// event-time order. Events wait this long in the reorder buffer (latency and memory:
    /// throughput × lateness).
    #[serde(default = "default_allowed_lateness")]
    pub allowed_lateness: ConfigDuration,
    /// A group closes after spanning this much event time even under steady traffic, so a
    /// later incident on a busy pod gets its own group.
    #[serde(default = "default_max_group_duration")]
    pub max_group_duration: ConfigDuration,
    /// Events the reorder buffer holds at most (at least 1). When event time does not advance
    /// (a replay of old data, a stalled or skewed clock) the watermark never releases anything,
    /// so without a bound the buffer would grow with the input. At the bound, the oldest held
    /// event (in event-time order) is processed at once, before the watermark passes it, and
    /// counted (`tapio_component_evictions_total{state="reorder_buffer_events"}`). Releasing
    /// rather than refusing to read keeps both order and backpressure: every event read lets
    /// at most one out, and sending it waits for downstream room, while a buffer that stopped
    /// reading could only wait for `idle_flush` to drain it. Order is lost only for an event
    /// that arrives behind more than this many newer ones; it is then processed as late.
    ///
    /// Default: 65536, sixteen input buffers' worth (a transform's input buffer holds 4096
    /// events): the default 5 s `allowed_lateness` is kept whole up to ~13k events/s (a busy
    /// node), and a full buffer of ~1 KiB events stays within ~64 MiB.
    #[serde(default = "default_max_buffered_events")]
    pub max_buffered_events: usize,
    /// Open groups kept at most; beyond it the least recently active group is evicted,
    /// counted (`tapio_component_evictions_total{state="correlation_groups"}`). Its later
    /// events open a new group with a new `correlation_id`; no event is dropped.
    #[serde(default = "default_max_groups")]
    pub max_groups: usize,
    /// Keys one group links by at most (at least 1): its entity's id and `namespace/name`,
    /// and the container ids, cgroups and IPs its events carry. Keys come from event data, so a
    /// long-lived busy group (many restarts, a stream of new addresses) could otherwise collect
    /// them without end. At the bound a new key is not linked, counted
    /// (`tapio_component_evictions_total{state="correlation_group_keys"}`): the group keeps
    /// the keys it learned first (its entity's own), and a later event reachable only through
    /// the refused key opens a group of its own. Default: 64, several times what a pod
    /// shows within `max_group_duration` (uid, name, an IP, a sandbox and a few containers
    /// with their restarts).
    #[serde(default = "default_max_group_keys")]
    pub max_group_keys: usize,
    /// Event ids a summary lists at most in `related_events` (the events that matched a step
    /// first); `related_events_omitted` counts the rest.
    #[serde(default = "default_max_related_events")]
    pub max_related_events: usize,
    /// Wall-clock time without input after which the reorder buffer is flushed, so a quiet
    /// stream is not held back waiting for newer events.
    #[serde(default = "default_idle_flush")]
    pub idle_flush: ConfigDuration,
    /// Whether the built-in catalog (`catalog.toml`) is used; `patterns` add to it.
    #[serde(default = "default_builtin_patterns")]
    pub builtin_patterns: bool,
    /// User patterns (`[[transforms.<name>.patterns]]`), in the catalog's format; one named
    /// like a built-in pattern replaces it.
    #[serde(default, deserialize_with = "catalog::unique_names")]
    pub patterns: Vec<PatternConfig>,
}

fn default_window() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(60))
}

fn default_allowed_lateness() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

fn default_max_group_duration() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(600))
}

fn default_max_buffered_events() -> usize {
    65_536
}

fn default_max_groups() -> usize {
    100_000
}

fn default_max_group_keys() -> usize {
    64
}

fn default_max_related_events() -> usize {
    1000
}

fn default_idle_flush() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}

fn default_builtin_patterns() -> bool {
    true
}

impl Default for CorrelateConfig {
    fn default() -> Self {
        CorrelateConfig {
            window: default_window(),
            allowed_lateness: default_allowed_lateness(),
            max_group_duration: default_max_group_duration(),
            max_buffered_events: default_max_buffered_events(),
            max_groups: default_max_groups(),
            max_group_keys: default_max_group_keys(),
            max_related_events: default_max_related_events(),
            idle_flush: default_idle_flush(),
            builtin_patterns: default_builtin_patterns(),
            patterns: Vec::new(),
        }
    }
}

/// A duration as nanoseconds of event time.
fn nanos(duration: ConfigDuration) -> i64 {
    i64::try_from(duration.0.as_nanos()).unwrap_or(i64::MAX)
}

impl CorrelateConfig {
    fn correlator(&self) -> Result<Correlator, ComponentError> {
        let invalid = |message: &str| Err(ComponentError::config(message.to_owned()));
        if self.window.0.is_zero() {
            return invalid("`window` must be longer than 0s");
        }
        if self.max_group_duration.0.is_zero() {
            return invalid("`max_group_duration` must be longer than 0s");
        }
        if self.idle_flush.0.is_zero() {
            return invalid("`idle_flush` must be longer than 0s");
        }
        if self.max_buffered_events == 0 {
            return invalid("correlate: `max_buffered_events` must be at least 1");
        }
        if self.max_groups == 0 {
            return invalid("`max_groups` must be at least 1");
        }
        if self.max_group_keys == 0 {
            return invalid("correlate: `max_group_keys` must be at least 1");
        }
        let catalog = catalog::Catalog::new(self.builtin_patterns, &self.patterns)
            .map_err(|e| ComponentError::config(e.to_string()))?;
        let limits = groups::Limits {
            window: nanos(self.window),
            max_duration: nanos(self.max_group_duration),
            max_groups: self.max_groups,
            max_keys: self.max_group_keys,
            max_related: self.max_related_events,
        };
        Ok(Correlator::new(
            catalog,
            limits,
            nanos(self.allowed_lateness),
            self.max_buffered_events,
        ))
    }
}

impl ComponentConfig for CorrelateConfig {
    type Component = dyn Transform;

    /// Checks the options and builds the running transform.
    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Transform>, ComponentError> {
        Ok(Box::new(CorrelateTransform {
            correlator: self.correlator()?,
            idle_flush: self.idle_flush.0,
            name: cx.name.clone(),
        }))
    }
}

/// The running transform: one ordered task owning the correlator.
struct CorrelateTransform {
    correlator: Correlator,
    idle_flush: Duration,
    name: String,
}

impl Transform for CorrelateTransform {
    fn run(
        self: Box<Self>,
        mut input: BufferReceiver,
        mut cx: TransformContext,
    ) -> ComponentFuture {
        let CorrelateTransform {
            mut correlator,
            idle_flush,
            name,
        } = *self;
        Box::pin(async move {
            let mut logged = Stats::default();
            loop {
                let mut out = Output::default();
                let next = if correlator.is_holding() {
                    tokio::time::timeout(idle_flush, input.recv()).await
                } else {
                    Ok(input.recv().await)
                };
                match next {
                    Ok(Some(batch)) => correlator.push_batch(batch, &mut out),
                    Ok(None) => break,
                    Err(_idle) => correlator.flush(&mut out),
                }
                report_progress(&name, correlator.stats(), &mut logged, &cx.metrics);
                if !out.is_empty() && cx.out.send(out.into_batch()).await.is_err() {
                    // Nothing reads our output any more; held tokens are dropped as failed.
                    return Ok(());
                }
            }
            let mut out = Output::default();
            correlator.flush(&mut out);
            if !out.is_empty() {
                // A closed output at the very end leaves nothing else to do.
                let _ = cx.out.send(out.into_batch()).await;
            }
            let stats = correlator.stats();
            report_progress(&name, stats, &mut logged, &cx.metrics);
            tracing::debug!(
                component = %name,
                late_events = stats.late_events,
                evicted_groups = stats.evicted_groups,
                released_early = stats.released_early,
                summaries = stats.summaries,
                "correlate finished"
            );
            Ok(())
        })
    }
}

/// Logs late events and evictions once per batch that saw new ones, never per event, and adds
/// the new evictions and early releases to the component's counters.
fn report_progress(name: &str, stats: Stats, logged: &mut Stats, metrics: &ComponentMetrics) {
    if stats.late_events == logged.late_events
        && stats.evicted_groups == logged.evicted_groups
        && stats.refused_keys == logged.refused_keys
        && stats.released_early == logged.released_early
        && stats.evicted_recurrences == logged.evicted_recurrences
    {
        return;
    }
    metrics.add_evicted(
        "correlation_groups",
        stats.evicted_groups - logged.evicted_groups,
    );
    metrics.add_evicted(
        "correlation_group_keys",
        stats.refused_keys - logged.refused_keys,
    );
    metrics.add_evicted(
        "reorder_buffer_events",
        stats.released_early - logged.released_early,
    );
    metrics.add_evicted(
        "recurrence_series",
        stats.evicted_recurrences - logged.evicted_recurrences,
    );
    tracing::debug!(
        component = %name,
        late_events = stats.late_events,
        evicted_groups = stats.evicted_groups,
        refused_keys = stats.refused_keys,
        released_early = stats.released_early,
        open_groups = stats.open_groups,
        "correlate: late events, evicted groups, refused keys or early releases"
    );
    *logged = stats;
}
