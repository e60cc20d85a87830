//! The running topology. Building wires every component: each sink gets one bounded buffer that
//! all its inputs share, each source output becomes a [`Fanout`] over the buffers reading it.
//! Running spawns the tasks (sinks first, so nothing is sent into a void), watches them, and on a
//! stop request or a component failure asks the sources to stop; sinks then drain what is
//! buffered and end once their inputs are gone. A drain that outlives the grace period is cut.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tapio_event::buffer::{BufferSender, buffer};
use tapio_event::metrics::ComponentKind;
use tapio_event::{
    BufferReceiver, BuildContext, ComponentError, ComponentFuture, ComponentMetrics, Fanout,
    Outputs, ShutdownSignal, Sink, SinkContext, Source, SourceContext, Transform, TransformContext,
    WhenFull,
};
use tokio::task::JoinHandle;

use tapio_sinks::SinkConfig;
use tapio_sinks::api_store::ApiStore;
use tapio_sources::SourceConfig;
use tapio_sources::api::ApiIngest;

use crate::analyze::Analyzer;
use crate::config::{BufferType, Config, SinkComponent};
use crate::disk_buffer;
use crate::health::{Health, HealthState};

/// How a run ended; the CLI maps it to an exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every component finished and every buffer drained (exit 0).
    Completed,
    /// Components failed, panicked or failed their healthcheck; what could be drained was
    /// drained. Their errors' kinds decide the exit code.
    Failed(Vec<ComponentFailure>),
    /// The drain did not finish within the grace period (exit 75); these were still running.
    DrainTimedOut(Vec<String>),
}

/// One component's error, named once as the config names it (`sinks.archive`), so that the
/// component's own message never has to repeat who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentFailure {
    /// `<kind>s.<name>`, or the global option (`data_dir`) the problem is about.
    pub component: String,
    pub error: ComponentError,
}

impl ComponentFailure {
    pub(crate) fn new(kind: ComponentKind, name: &str, error: ComponentError) -> Self {
        ComponentFailure {
            component: format!("{}s.{name}", kind.as_str()),
            error,
        }
    }
}

impl std::fmt::Display for ComponentFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.component, self.error)
    }
}

/// A source built and wired to its outputs, not yet running.
pub(crate) struct BuiltSource {
    pub(crate) source: Box<dyn Source>,
    pub(crate) outputs: Outputs,
    pub(crate) metrics: Arc<ComponentMetrics>,
}

/// A transform built, with its input buffer and outputs, not yet running.
pub(crate) struct BuiltTransform {
    transform: Box<dyn Transform>,
    input: BufferReceiver,
    outputs: Outputs,
    metrics: Arc<ComponentMetrics>,
}

/// A sink built, with its input buffer, not yet running.
pub(crate) struct BuiltSink {
    pub(crate) sink: Box<dyn Sink>,
    pub(crate) input: BufferReceiver,
    pub(crate) metrics: Arc<ComponentMetrics>,
}

/// Events a transform's input buffer holds: a couple of batches, enough to keep it busy while
/// bounding what a chain of transforms holds in memory.
const TRANSFORM_BUFFER_EVENTS: usize = 4096;

/// What the API (L4) reads and writes inside the pipeline: the store of the `api_store` sink
/// and the intake of the `api` source, when the config declares them. Handed up from here
/// because layers only look down: the API cannot reach into the sinks' and sources' building.
#[derive(Clone, Default)]
pub struct ApiHandles {
    /// The `api_store` sink's store, by sink name.
    pub store: Option<(String, ApiStore)>,
    /// The `api` source's intake, by source name.
    pub ingest: Option<(String, ApiIngest)>,
    /// Private copies of the config's intelligence chain, for `AnalyzeEvents` and
    /// `PredictImpact`.
    pub analyzer: Analyzer,
}

/// A built, wired pipeline that has not started yet.
pub struct Topology {
    pub(crate) api: ApiHandles,
    pub(crate) sources: Vec<BuiltSource>,
    pub(crate) transforms: Vec<BuiltTransform>,
    pub(crate) sinks: Vec<BuiltSink>,
    /// The disk buffers' tasks, named `<sink>.buffer`.
    pub(crate) buffers: Vec<(String, ComponentFuture)>,
    pub(crate) grace: Duration,
}

/// A sink's input: the sender upstream writes to, the receiver the sink reads, and the task of
/// its disk buffer when it has one. A disk buffer sits between the two (upstream → disk →
/// sink); an overflow beside the memory buffer, taking what does not fit and feeding it back.
fn sink_buffer(
    config: &Config,
    component: &SinkComponent,
    metrics: &Arc<ComponentMetrics>,
) -> Result<(BufferSender, BufferReceiver, Option<ComponentFuture>), ComponentError> {
    let options = &component.buffer;
    let Some(disk) = options.disk() else {
        let (tx, rx) = buffer(options.max_events, options.when_full, Arc::clone(metrics));
        return Ok((tx, rx, None));
    };
    let open = |out: BufferSender| {
        disk_buffer::open(
            &config.data_dir,
            &component.name,
            disk,
            Arc::clone(metrics),
            out,
        )
        .map_err(|error| {
            ComponentError::unavailable(format!(
                "cannot open its disk buffer under {}: {error}",
                disk_buffer::segment::buffer_dir(&config.data_dir, &component.name).display()
            ))
        })
    };
    if options.kind == BufferType::Disk {
        let (out, rx) = buffer(
            disk_buffer::READ_AHEAD_EVENTS,
            WhenFull::Block,
            Arc::clone(metrics),
        );
        let (tx, run) = open(out)?;
        Ok((tx, rx, Some(run)))
    } else {
        let (tx, rx) = buffer(options.max_events, WhenFull::Overflow, Arc::clone(metrics));
        let (spill, run) = open(tx.blocking())?;
        Ok((tx.with_overflow(spill), rx, Some(run)))
    }
}

/// Takes `handle` as the API's one `what`; a second is a config error, since the API serves
/// one store and one intake.
fn claim<T>(
    slot: &mut Option<(String, T)>,
    name: &str,
    handle: T,
    what: &str,
) -> Result<(), ComponentError> {
    if let Some((first, _)) = slot {
        return Err(ComponentError::config(format!(
            "only one {what} is allowed (the API serves one), and `{first}` is one already"
        )));
    }
    *slot = Some((name.to_owned(), handle));
    Ok(())
}

impl Topology {
    /// Builds every component; on failure returns one error per component that could not be
    /// built, each naming its component once.
    pub fn build(config: &Config) -> Result<Topology, Vec<ComponentFailure>> {
        let keeps_state = config.sources.iter().any(|s| s.config.uses_data_dir())
            || config
                .sinks
                .iter()
                .any(|s| s.config.uses_data_dir() || s.buffer.disk().is_some());
        if keeps_state && let Err(error) = ensure_writable(&config.data_dir) {
            return Err(vec![ComponentFailure {
                component: "data_dir".to_owned(),
                error: ComponentError::unavailable(format!(
                    "{}: {error}; set `data_dir` to a writable directory",
                    config.data_dir.display()
                )),
            }]);
        }
        let context = |name: &str| BuildContext {
            name: name.to_owned(),
            data_dir: config.data_dir.clone(),
            node_name: config.node_name.clone(),
        };
        let counters = |name: &str, type_name: &str, kind| {
            Arc::new(ComponentMetrics::new(name, type_name, kind))
        };
        // Every consumer's buffer exists before any producer is wired to it.
        let mut senders: HashMap<&str, BufferSender> = HashMap::new();
        let mut inputs: HashMap<&str, (BufferReceiver, Arc<ComponentMetrics>)> = HashMap::new();
        let mut problems = Vec::new();
        let mut buffers = Vec::new();
        for component in &config.sinks {
            let metrics = counters(
                &component.name,
                component.config.type_name(),
                ComponentKind::Sink,
            );
            match sink_buffer(config, component, &metrics) {
                Ok((tx, rx, disk)) => {
                    senders.insert(&component.name, tx);
                    inputs.insert(&component.name, (rx, metrics));
                    buffers.extend(disk.map(|run| (format!("{}.buffer", component.name), run)));
                }
                Err(error) => problems.push(ComponentFailure::new(
                    ComponentKind::Sink,
                    &component.name,
                    error,
                )),
            }
        }
        for component in &config.transforms {
            let metrics = counters(
                &component.name,
                component.config.type_name(),
                ComponentKind::Transform,
            );
            let (tx, rx) = buffer(
                TRANSFORM_BUFFER_EVENTS,
                WhenFull::Block,
                Arc::clone(&metrics),
            );
            senders.insert(&component.name, tx);
            inputs.insert(&component.name, (rx, metrics));
        }
        let graph = &config.graph;
        let fanout = |from: usize, output: Option<&str>| {
            Fanout::new(
                graph
                    .consumers(from, output)
                    .filter_map(|to| senders.get(graph.nodes[to].name.as_str()).cloned())
                    .collect(),
            )
        };
        let outputs = |name: &str, metrics: &Arc<ComponentMetrics>| {
            let index = graph
                .index_of(name)
                .expect("every component is a graph node");
            let named = graph.nodes[index]
                .named_outputs
                .iter()
                .map(|output| (output.clone(), fanout(index, Some(output))))
                .collect();
            Outputs::new(fanout(index, None), named, Arc::clone(metrics))
        };
        let mut api = ApiHandles {
            analyzer: Analyzer::from_config(config),
            ..ApiHandles::default()
        };
        let mut sinks = Vec::new();
        for component in &config.sinks {
            let Some((input, metrics)) = inputs.remove(component.name.as_str()) else {
                continue;
            };
            let built = match &component.config {
                SinkConfig::ApiStore(store) => store.build_shared().and_then(|(store, sink)| {
                    claim(&mut api.store, &component.name, store, "api_store sink")?;
                    Ok(sink)
                }),
                other => other.build(&context(&component.name)),
            };
            match built {
                Ok(sink) => sinks.push(BuiltSink {
                    sink,
                    input,
                    metrics,
                }),
                Err(error) => problems.push(ComponentFailure::new(
                    ComponentKind::Sink,
                    &component.name,
                    error,
                )),
            }
        }
        let mut transforms = Vec::new();
        for component in &config.transforms {
            let (input, metrics) = inputs
                .remove(component.name.as_str())
                .expect("created above");
            match component.config.build(&context(&component.name)) {
                Ok(transform) => transforms.push(BuiltTransform {
                    transform,
                    input,
                    outputs: outputs(&component.name, &metrics),
                    metrics,
                }),
                Err(error) => problems.push(ComponentFailure::new(
                    ComponentKind::Transform,
                    &component.name,
                    error,
                )),
            }
        }
        let mut sources = Vec::new();
        for component in &config.sources {
            let metrics = counters(
                &component.name,
                component.config.type_name(),
                ComponentKind::Source,
            );
            let built = match &component.config {
                SourceConfig::Api(intake) => intake.build_shared().and_then(|(ingest, source)| {
                    claim(&mut api.ingest, &component.name, ingest, "api source")?;
                    Ok(source)
                }),
                other => other.build(&context(&component.name)),
            };
            match built {
                Ok(source) => sources.push(BuiltSource {
                    source,
                    outputs: outputs(&component.name, &metrics),
                    metrics,
                }),
                Err(error) => problems.push(ComponentFailure::new(
                    ComponentKind::Source,
                    &component.name,
                    error,
                )),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Topology {
            api,
            sources,
            transforms,
            sinks,
            buffers,
            grace: config.shutdown_grace_period,
        })
    }

    /// The store and intake the API serves, handed up before the pipeline runs.
    pub fn api_handles(&self) -> ApiHandles {
        self.api.clone()
    }

    /// Every component's counters, sources first, for `/metrics` and `--summary`.
    pub fn metrics(&self) -> Vec<Arc<ComponentMetrics>> {
        let sources = self.sources.iter().map(|s| Arc::clone(&s.metrics));
        let transforms = self.transforms.iter().map(|t| Arc::clone(&t.metrics));
        let sinks = self.sinks.iter().map(|s| Arc::clone(&s.metrics));
        sources.chain(transforms).chain(sinks).collect()
    }

    /// Runs until every component has finished, draining on `stop` or on the first failure.
    /// Sources start, and health turns `running`, only once every sink's healthcheck passed:
    /// a destination that does not answer fails the start with its own message.
    pub async fn run(self, stop: impl Future<Output = ()>, health: &Health) -> Outcome {
        tokio::pin!(stop);
        let checks = self.sinks.iter().map(|built| {
            let name = built.metrics.name.clone();
            let check = built.sink.healthcheck();
            async move {
                check
                    .await
                    .map_err(|error| ComponentFailure::new(ComponentKind::Sink, &name, error))
            }
        });
        let unhealthy: Vec<ComponentFailure> = tokio::select! {
            results = futures::future::join_all(checks) => results.into_iter().filter_map(Result::err).collect(),
            () = &mut stop => {
                tracing::info!("stop requested during the sinks' healthchecks");
                return Outcome::Completed;
            }
        };
        if !unhealthy.is_empty() {
            for failure in &unhealthy {
                tracing::error!("{failure}");
            }
            return Outcome::Failed(unhealthy);
        }
        let (trigger, signal) = ShutdownSignal::new();
        let mut tasks = FuturesUnordered::new();
        let mut handles = Vec::new();
        let mut watch = |name: String, kind: ComponentKind, handle: JoinHandle<_>| {
            handles.push((name.clone(), handle.abort_handle()));
            tasks.push(async move { (name, kind, handle.await) });
        };
        for (name, run) in self.buffers {
            watch(name, ComponentKind::Sink, tokio::spawn(run));
        }
        for built in self.sinks {
            let name = built.metrics.name.clone();
            let cx = SinkContext {
                metrics: built.metrics,
            };
            watch(
                name,
                ComponentKind::Sink,
                tokio::spawn(built.sink.run(built.input, cx)),
            );
        }
        for built in self.transforms {
            let name = built.metrics.name.clone();
            let cx = TransformContext {
                out: built.outputs,
                metrics: built.metrics,
            };
            watch(
                name,
                ComponentKind::Transform,
                tokio::spawn(built.transform.run(built.input, cx)),
            );
        }
        for built in self.sources {
            let name = built.metrics.name.clone();
            let cx = SourceContext {
                out: built.outputs,
                shutdown: signal.clone(),
                metrics: built.metrics,
            };
            watch(
                name,
                ComponentKind::Source,
                tokio::spawn(built.source.run(cx)),
            );
        }
        drop(signal);
        health.set(HealthState::Running);
        tracing::info!(components = handles.len(), "pipeline running");

        let mut failures = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        let begin_drain = |deadline: &mut Option<tokio::time::Instant>| {
            if deadline.is_none() {
                trigger.trigger();
                health.set(HealthState::Draining);
                *deadline = Some(tokio::time::Instant::now() + self.grace);
            }
        };
        loop {
            let timeout = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                finished = tasks.next() => {
                    let Some((name, kind, result)) = finished else { break };
                    let problem = match result {
                        Ok(Ok(())) => None,
                        Ok(Err(error)) => Some(ComponentFailure::new(kind, &name, error)),
                        Err(join) if join.is_panic() => Some(ComponentFailure::new(kind, &name, ComponentError::runtime(format!("panicked: {}", panic_message(join))))),
                        Err(_) => None,
                    };
                    handles.retain(|(n, _)| *n != name);
                    match problem {
                        Some(problem) => {
                            tracing::error!("{} failed: {}; draining the rest of the pipeline", problem.component, problem.error);
                            failures.push(problem);
                            begin_drain(&mut deadline);
                        }
                        None => tracing::debug!(component = %name, "finished"),
                    }
                }
                () = &mut stop, if deadline.is_none() => {
                    tracing::info!(grace_period = ?self.grace, "stop requested; draining buffers");
                    begin_drain(&mut deadline);
                }
                () = timeout => {
                    let pending: Vec<String> = handles.iter().map(|(n, _)| n.clone()).collect();
                    for (_, handle) in &handles {
                        handle.abort();
                    }
                    tracing::error!(still_running = ?pending, "drain did not finish within the grace period");
                    return Outcome::DrainTimedOut(pending);
                }
            }
        }
        if failures.is_empty() {
            Outcome::Completed
        } else {
            Outcome::Failed(failures)
        }
    }
}

fn panic_message(join: tokio::task::JoinError) -> String {
    let payload = join.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}

/// Creates `dir` if missing and proves it writable with a probe file.
fn ensure_writable(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(".tapio-write-probe");
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(probe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_event::{BatchStatus, EventBatch, EventType, Timestamp, UnifiedEvent, WhenFull};

    /// Sends one batch, then panics or waits for shutdown as told.
    struct ScriptedSource {
        panic_after_send: bool,
    }

    impl Source for ScriptedSource {
        fn run(self: Box<Self>, mut cx: SourceContext) -> ComponentFuture {
            Box::pin(async move {
                let event = UnifiedEvent::new(EventType::Process, "test", Timestamp(1));
                let _ = cx.out.send(EventBatch::new(vec![event; 10])).await;
                assert!(!self.panic_after_send, "scripted failure");
                cx.shutdown.triggered().await;
                Ok(())
            })
        }
    }

    /// Counts what it receives; never finishes if `stuck`; refuses its healthcheck unless
    /// `healthy`.
    struct CountingSink {
        stuck: bool,
        healthy: bool,
    }

    impl Sink for CountingSink {
        fn healthcheck(&self) -> futures::future::BoxFuture<'static, Result<(), ComponentError>> {
            let healthy = self.healthy;
            Box::pin(async move {
                if healthy {
                    Ok(())
                } else {
                    Err(ComponentError::unavailable("nobody answers at 127.0.0.1:1"))
                }
            })
        }

        fn run(self: Box<Self>, mut input: BufferReceiver, cx: SinkContext) -> ComponentFuture {
            Box::pin(async move {
                while let Some(batch) = input.recv().await {
                    cx.metrics.add_events_out(batch.len());
                    batch.ack(BatchStatus::Delivered);
                }
                if self.stuck {
                    std::future::pending::<()>().await;
                }
                Ok(())
            })
        }
    }

    fn topology(panic_after_send: bool, stuck: bool) -> (Topology, Arc<ComponentMetrics>) {
        checked_topology(panic_after_send, stuck, true)
    }

    fn checked_topology(
        panic_after_send: bool,
        stuck: bool,
        healthy: bool,
    ) -> (Topology, Arc<ComponentMetrics>) {
        let sink_metrics = Arc::new(ComponentMetrics::new(
            "sink",
            "counting",
            ComponentKind::Sink,
        ));
        let source_metrics = Arc::new(ComponentMetrics::new(
            "source",
            "scripted",
            ComponentKind::Source,
        ));
        let (tx, rx) = buffer(100, WhenFull::Block, Arc::clone(&sink_metrics));
        let outputs = Outputs::new(Fanout::new(vec![tx]), vec![], Arc::clone(&source_metrics));
        let topology = Topology {
            api: Default::default(),
            sources: vec![BuiltSource {
                source: Box::new(ScriptedSource { panic_after_send }),
                outputs,
                metrics: source_metrics,
            }],
            transforms: Vec::new(),
            sinks: vec![BuiltSink {
                sink: Box::new(CountingSink { stuck, healthy }),
                input: rx,
                metrics: Arc::clone(&sink_metrics),
            }],
            buffers: Vec::new(),
            grace: Duration::from_millis(300),
        };
        (topology, sink_metrics)
    }

    #[tokio::test]
    async fn a_panicking_source_is_reported_after_the_sink_drains() {
        let (topology, sink) = topology(true, false);
        let outcome = topology
            .run(std::future::pending(), &Health::default())
            .await;
        let Outcome::Failed(problems) = outcome else {
            panic!("{outcome:?}")
        };
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(problems, ["sources.source: panicked: scripted failure"]);
        assert_eq!(sink.snapshot().events_out, 10);
    }

    #[tokio::test]
    async fn a_stop_request_drains_and_completes() {
        let (topology, sink) = topology(false, false);
        let health = Health::default();
        let outcome = topology
            .run(tokio::time::sleep(Duration::from_millis(50)), &health)
            .await;
        assert_eq!(outcome, Outcome::Completed);
        assert_eq!(health.get(), HealthState::Draining);
        assert_eq!(sink.snapshot().events_out, 10);
    }

    #[tokio::test]
    async fn a_drain_that_outlives_the_grace_period_is_cut() {
        let (topology, _) = topology(false, true);
        let outcome = topology
            .run(
                tokio::time::sleep(Duration::from_millis(50)),
                &Health::default(),
            )
            .await;
        assert_eq!(outcome, Outcome::DrainTimedOut(vec!["sink".to_string()]));
    }

    #[tokio::test]
    async fn a_failing_healthcheck_stops_the_start_before_any_source_runs() {
        let (topology, sink) = checked_topology(false, false, false);
        let health = Health::default();
        let outcome = topology.run(std::future::pending(), &health).await;
        let Outcome::Failed(problems) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].error.kind(),
            tapio_event::ErrorKind::Unavailable
        );
        assert_eq!(
            problems[0].to_string(),
            "sinks.sink: nobody answers at 127.0.0.1:1"
        );
        assert_ne!(health.get(), HealthState::Running);
        assert_eq!(sink.snapshot().events_in, 0, "a source ran");
    }

    #[tokio::test]
    async fn a_sink_times_the_batches_it_takes() {
        let (topology, sink) = topology(false, false);
        let outcome = topology
            .run(
                tokio::time::sleep(Duration::from_millis(50)),
                &Health::default(),
            )
            .await;
        assert_eq!(outcome, Outcome::Completed);
        assert_eq!(sink.snapshot().latency.count, 1, "one batch of 10 was sent");
    }

    /// Builds the pipeline of `text`, a config expected to be valid.
    fn build(text: &str) -> Result<Topology, Vec<ComponentFailure>> {
        let loaded = crate::load_str("t.toml", text, |_| None);
        Topology::build(&loaded.config.expect("a valid config"))
    }

    #[test]
    fn the_api_store_and_intake_are_handed_up_and_only_one_of_each_is_allowed() {
        let one =
            "[sources.in]\ntype = \"api\"\n\n[sinks.a]\ntype = \"api_store\"\ninputs = [\"in\"]\n";
        let handles = build(one).expect("builds").api_handles();
        assert_eq!(handles.store.map(|(name, _)| name).as_deref(), Some("a"));
        assert_eq!(handles.ingest.map(|(name, _)| name).as_deref(), Some("in"));
        let two = format!("{one}\n[sinks.b]\ntype = \"api_store\"\ninputs = [\"in\"]\n");
        let problems = build(&two).err().expect("two stores are refused");
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].to_string(),
            "sinks.b: only one api_store sink is allowed (the API serves one), and `a` is one already"
        );
        assert_eq!(problems[0].error.kind(), tapio_event::ErrorKind::Config);
    }
}
