//! `type = "demo"`: a simulated Kubernetes cluster, so a pipeline can be tried, tested and
//! benchmarked without a cluster. Each event looks as the real collector would make it: its
//! `source` is the simulated collector (`kubernetes`, `cni`, `systemd`, `ebpf`), and it carries only
//! the entity that collector knows (Kubernetes and CNI know the pod, eBPF and container scopes only
//! the host). Between background traffic (TCP connections, short-lived processes, pod rollouts)
//! it plays the five incident patterns of the `correlate` catalog: pod-deployment-sequence,
//! network-failure-cascade, oom-kill-cascade, crash-loop and node-runtime-failure.
//!
//! ```toml
//! [sources.cluster]
//! type = "demo"
//! rate = 2000                              # events per second; unlimited by default
//! seed = 42                                # with start_time: the same events every run
//! start_time = "2026-01-01T00:00:00Z"
//! ```
//!
//! Event time comes from a simulated clock that advances 1–4 ms per event whatever the `rate`, so
//! a story (a few simulated seconds) spans about a thousand events.

mod cluster;
mod events;
mod scenario;
mod simulation;
#[cfg(test)]
mod tests;

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::id::IdGenerator;
use tapio_event::{
    BuildContext, ComponentConfig, ComponentError, ComponentFuture, EventBatch, Source,
    SourceContext, Timestamp,
};
use tokio::time::{Duration, Instant, MissedTickBehavior};

use self::cluster::{MAX_NODES, MAX_PODS_PER_NODE};
use self::simulation::{STEP_NANOS, Settings, Simulation};

/// How often a rate-limited source sends the events that have fallen due.
const TICK: Duration = Duration::from_millis(20);
const MAX_BATCH_SIZE: usize = 1_000_000;

/// Options of the `demo` source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Stop after this many events; the source then ends, and with it `tapio run` once the sinks
    /// have drained. Unset: unlimited.
    #[serde(default)]
    pub count: Option<u64>,
    /// Events per second, sent in bursts every 20 ms; the simulated clock then advances about
    /// 1/rate per event, keeping pace with the wall clock. Unset: as fast as downstream takes
    /// them (for throughput tests), with 1–4 ms of simulated time per event.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Pods in the simulated cluster, spread over the deployments (shop/api, shop/web,
    /// payments/checkout, …) and the nodes; at most 200 per node.
    #[serde(default = "default_pods")]
    pub pods: usize,
    /// Nodes in the simulated cluster, named `worker-1` … `worker-N`; at most 254 (each has the
    /// pod CIDR `10.244.<n>.0/24`).
    #[serde(default = "default_nodes")]
    pub nodes: usize,
    /// Incidents started per 1000 events, taking turns through the five patterns (a turn is
    /// retried later when the pods or nodes picked are already in an incident); 0 disables
    /// them. Pod rollouts go on regardless, as background. From 0 to 1000.
    #[serde(default = "default_incident_rate")]
    pub incident_rate: f64,
    /// Seed of every random choice and of the event ids; with `start_time` set, every run
    /// produces the same events byte for byte. Unset: a new seed each run.
    #[serde(default)]
    pub seed: Option<u64>,
    /// RFC 3339 time of the simulated clock's start (e.g. `"2026-01-01T00:00:00Z"`). Should
    /// the clock reach 2262-04-11T23:47:16.854775807Z, the last time an event can carry, the
    /// source stops there with a warning. Unset: the time the source starts.
    #[serde(default)]
    pub start_time: Option<String>,
    /// Events per batch sent downstream; larger batches cost less per event. From 1 to
    /// 1000000.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_pods() -> usize {
    50
}

fn default_nodes() -> usize {
    3
}

fn default_incident_rate() -> f64 {
    5.0
}

fn default_batch_size() -> usize {
    1000
}

impl ComponentConfig for DemoConfig {
    type Component = dyn Source;

    /// Checks the options, so a bad one stops the pipeline before it starts; the cluster and its
    /// clock are set up when the source runs.
    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>, ComponentError> {
        let invalid = |message: String| Err(ComponentError::config(message));
        if !(1..=MAX_NODES).contains(&self.nodes) {
            return invalid(format!(
                "`nodes` must be between 1 and {MAX_NODES}, got {}",
                self.nodes
            ));
        }
        let max_pods = self.nodes * MAX_PODS_PER_NODE;
        if !(1..=max_pods).contains(&self.pods) {
            return invalid(format!(
                "`pods` must be between 1 and {max_pods} ({MAX_PODS_PER_NODE} per node), got {}",
                self.pods
            ));
        }
        if !(0.0..=1000.0).contains(&self.incident_rate) {
            return invalid(format!(
                "`incident_rate` is incidents per 1000 events and must be between 0 and 1000, got {}",
                self.incident_rate
            ));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return invalid(format!(
                "`rate` must be a positive number of events per second (leave it out for unlimited), got {rate}"
            ));
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return invalid(format!(
                "`batch_size` must be between 1 and {MAX_BATCH_SIZE}, got {}",
                self.batch_size
            ));
        }
        let start_time = match &self.start_time {
            None => None,
            Some(text) => match Timestamp::parse_rfc3339(text) {
                Ok(start) if start.as_nanos() > 0 => Some(start),
                Ok(_) => {
                    return invalid(format!(
                        "`start_time` {text:?} must be after 1970-01-01T00:00:00Z"
                    ));
                }
                Err(e) => return invalid(format!("`start_time` {text:?}: {e}")),
            },
        };
        Ok(Box::new(DemoSource {
            settings: Settings {
                pods: self.pods,
                nodes: self.nodes,
                incident_rate: self.incident_rate,
                seed: self
                    .seed
                    .unwrap_or_else(|| IdGenerator::from_entropy().next_u64()),
                step_nanos: self.rate.map_or(STEP_NANOS, |rate| {
                    let mean = 1e9 / rate;
                    // Float-to-integer casts saturate, so a tiny rate makes huge steps, not
                    // wrapped ones; the clock then ends the simulation at the end of time.
                    (
                        (mean * 0.5) as u64,
                        ((mean * 1.5).max(1.0) as u64).saturating_add(1),
                    )
                }),
            },
            count: self.count,
            rate: self.rate,
            start_time,
            batch_size: self.batch_size,
            name: cx.name.clone(),
        }))
    }
}

/// The built source: validated settings, waiting for its run.
struct DemoSource {
    settings: Settings,
    count: Option<u64>,
    rate: Option<f64>,
    start_time: Option<Timestamp>,
    batch_size: usize,
    /// The component's name, for the line saying the simulated clock ran out.
    name: String,
}

impl Source for DemoSource {
    fn run(self: Box<Self>, cx: SourceContext) -> ComponentFuture {
        Box::pin(self.generate(cx))
    }
}

impl DemoSource {
    /// Sends `count` events (or until shutdown or until nothing reads them), paced when a rate is
    /// set: every tick, the events due since the start go out.
    async fn generate(self: Box<Self>, mut cx: SourceContext) -> Result<(), ComponentError> {
        let start = self.start_time.unwrap_or_else(Timestamp::now);
        let mut simulation = Simulation::new(&self.settings, start);
        let mut left = self.count.unwrap_or(u64::MAX);
        let Some(rate) = self.rate else {
            self.send(&mut simulation, &mut cx, left).await;
            return Ok(());
        };
        let began = Instant::now();
        let mut sent = 0u64;
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        while left > 0 {
            tokio::select! {
                _ = ticks.tick() => {}
                () = cx.shutdown.triggered() => break,
            }
            let due = ((began.elapsed().as_secs_f64() * rate) as u64)
                .saturating_sub(sent)
                .min(left);
            if !self.send(&mut simulation, &mut cx, due).await {
                break;
            }
            sent += due;
            left -= due;
        }
        Ok(())
    }

    /// Sends `n` events in batches; false once the source should stop (shutdown, or nothing
    /// reads its output any more).
    async fn send(&self, simulation: &mut Simulation, cx: &mut SourceContext, n: u64) -> bool {
        let mut left = n;
        while left > 0 {
            if cx.shutdown.is_triggered() {
                return false;
            }
            let len = left.min(self.batch_size as u64) as usize;
            let mut events = Vec::with_capacity(len);
            simulation.fill(&mut events, len);
            let clock_ran_out = events.len() < len;
            if !events.is_empty() && cx.out.send(EventBatch::new(events)).await.is_err() {
                return false;
            }
            if clock_ran_out {
                tracing::warn!(
                    source = %self.name,
                    "the simulated clock reached {}, the last time an event can carry; the demo source stops",
                    Timestamp::MAX
                );
                return false;
            }
            left -= len as u64;
        }
        true
    }
}
