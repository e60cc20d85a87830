//! The running topology. Building wires every component: each sink gets one bounded buffer that
//! all its inputs share, each source output becomes a [`Fanout`] over the buffers reading it.
//! Running spawns the tasks (sinks first, so nothing is sent into a void), watches them, and on a
//! stop request or a component failure asks the sources to stop; sinks then drain what is
//! buffered and end once their inputs are gone. A drain that outlives the grace period is cut.
//!
//! While running, a [`ReloadRequest`] applies a new config: what [`Diff`] finds changed is built
//! first (a component that cannot be built, or a sink whose healthcheck fails, refuses the whole
//! reload and nothing changes), then started, the unchanged producers' fanouts are rewired to
//! the new consumers, and what was removed or replaced is stopped: sources by their own
//! shutdown signal, transforms and sinks by the end of their input, each within the grace
//! period. A sink rebuilt on its buffer gets the buffer back from its predecessor (a recalled
//! [`Lender`]), so nothing buffered or in flight is lost.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tapio_event::buffer::{BufferSender, Lender, WeakBufferSender, buffer, loan};
use tapio_event::metrics::ComponentKind;
use tapio_event::tap::{TapPoint, Taps};
use tapio_event::{
    BufferReceiver, BuildContext, ComponentError, ComponentFuture, ComponentMetrics, Fanout,
    Outputs, ShutdownSignal, ShutdownTrigger, Sink, SinkContext, Source, SourceContext, Transform,
    TransformContext, WhenFull,
};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinError};
use tokio::time::Instant;

use tapio_sinks::SinkConfig;
use tapio_sinks::api_store::ApiStore;
use tapio_sources::SourceConfig;
use tapio_sources::api::ApiIngest;

use crate::analyze::Analyzer;
use crate::config::{BufferType, Config, SinkComponent};
use crate::disk_buffer;
use crate::graph::Graph;
use crate::health::{Health, HealthState};
use crate::reload::{Change, Diff, ReloadRequest, Reloaded};

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

/// How the built components are connected, kept so that a reload can rewire them.
#[derive(Default)]
pub(crate) struct Wiring {
    /// The buffer of each transform and sink built with a new one, by name.
    inputs: HashMap<String, BufferSender>,
    /// The outputs of each source and transform built (`None` the default one), by name.
    outputs: HashMap<String, Vec<(Option<String>, Fanout)>>,
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
    /// The live taps on every component's outputs and inputs (`tapio tap`).
    pub taps: Taps,
}

/// A built, wired pipeline that has not started yet.
pub struct Topology {
    pub(crate) api: ApiHandles,
    pub(crate) sources: Vec<BuiltSource>,
    pub(crate) transforms: Vec<BuiltTransform>,
    pub(crate) sinks: Vec<BuiltSink>,
    /// Sinks built anew to run on the buffer their predecessor had (a reload's).
    rebuilt: Vec<(Box<dyn Sink>, Arc<ComponentMetrics>)>,
    /// The disk buffers' tasks, by the name of their sink.
    pub(crate) buffers: Vec<(String, ComponentFuture)>,
    pub(crate) grace: Duration,
    wiring: Wiring,
    /// The config it was built from, which reloads compare with; `None` for a topology put
    /// together by hand (a dead-letter replay), which cannot reload.
    config: Option<Config>,
}

/// The counters of every running component, which a reload changes; what `/metrics` and
/// `--summary` read.
#[derive(Default)]
pub struct ComponentList(RwLock<Vec<Arc<ComponentMetrics>>>);

impl ComponentList {
    /// A list of `metrics`.
    pub fn new(metrics: Vec<Arc<ComponentMetrics>>) -> Self {
        ComponentList(RwLock::new(metrics))
    }

    /// The components now.
    pub fn get(&self) -> Vec<Arc<ComponentMetrics>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, metrics: Vec<Arc<ComponentMetrics>>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = metrics;
    }
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

/// What a build takes from the running pipeline instead of making it anew.
#[derive(Default)]
struct Reuse {
    /// Components that keep running: not built; producers are wired to their buffers (`None`
    /// for a source).
    kept: HashMap<String, Option<BufferSender>>,
    /// Sinks built anew on the buffer they have.
    rebuilt: HashMap<String, BufferSender>,
    /// Counters of the components built anew under their old name, which continue when the
    /// type stayed the same (a rebuilt sink's always do: its buffer counts into them).
    metrics: HashMap<String, Arc<ComponentMetrics>>,
    /// The pipeline's live taps, which outlive a reload: new components are tapped as well.
    taps: Taps,
}

/// A producer's outputs wired from `graph` to the buffers in `senders`, each shown to `taps`,
/// and a handle on each for rewiring.
fn wire(
    graph: &Graph,
    senders: &HashMap<String, BufferSender>,
    taps: &Taps,
    name: &str,
    metrics: &Arc<ComponentMetrics>,
) -> (Outputs, Vec<(Option<String>, Fanout)>) {
    let index = graph
        .index_of(name)
        .expect("every component is a graph node");
    let fanout = |output: Option<&str>| {
        Fanout::keyed(
            graph
                .consumers(index, output)
                .filter_map(|to| {
                    let consumer = &graph.nodes[to].name;
                    senders.get(consumer).map(|s| (consumer.clone(), s.clone()))
                })
                .collect(),
        )
        .tapped(TapPoint::new(taps.clone(), name, output))
    };
    let default = fanout(None);
    let named: Vec<(String, Fanout)> = graph.nodes[index]
        .named_outputs
        .iter()
        .map(|output| (output.clone(), fanout(Some(output))))
        .collect();
    let handles = std::iter::once((None, default.clone()))
        .chain(named.iter().map(|(o, f)| (Some(o.clone()), f.clone())))
        .collect();
    (Outputs::new(default, named, Arc::clone(metrics)), handles)
}

impl Topology {
    /// Builds every component; on failure returns one error per component that could not be
    /// built, each naming its component once.
    pub fn build(config: &Config) -> Result<Topology, Vec<ComponentFailure>> {
        build_parts(config, &Reuse::default())
    }

    /// A topology of pieces wired by hand (a dead-letter replay, tests): it runs and drains
    /// like a built one but cannot reload.
    pub(crate) fn from_parts(
        sources: Vec<BuiltSource>,
        sinks: Vec<BuiltSink>,
        grace: Duration,
    ) -> Topology {
        Topology {
            api: ApiHandles::default(),
            sources,
            transforms: Vec::new(),
            sinks,
            rebuilt: Vec::new(),
            buffers: Vec::new(),
            grace,
            wiring: Wiring::default(),
            config: None,
        }
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
    pub async fn run(self, stop: impl Future<Output = ()>, health: &Health) -> Outcome {
        let (_no_reloads, reloads) = mpsc::unbounded_channel();
        self.run_reloading(stop, reloads, health, &ComponentList::default())
            .await
    }

    /// [`Topology::run`], applying each config that arrives on `reloads` (one at a time: the
    /// next is taken once what the previous one stopped has finished). `components` follows
    /// the running components. Sources start, and health turns `running`, only once every
    /// sink's healthcheck passed: a destination that does not answer fails the start with its
    /// own message.
    pub async fn run_reloading(
        self,
        stop: impl Future<Output = ()>,
        mut reloads: mpsc::UnboundedReceiver<ReloadRequest>,
        health: &Health,
        components: &ComponentList,
    ) -> Outcome {
        tokio::pin!(stop);
        let unhealthy = tokio::select! {
            unhealthy = healthchecks(self.sinks.iter().map(|s| (&*s.sink, &s.metrics))) => unhealthy,
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
        let mut running = Running {
            tasks: FuturesUnordered::new(),
            handles: HashMap::new(),
            next_id: 0,
            live: HashMap::new(),
            finished: HashMap::new(),
            retiring: HashMap::new(),
            grace: self.grace,
            config: None,
            health,
            api: self.api.clone(),
        };
        running.config = self.config.clone();
        running.start(self, None);
        health.set(HealthState::Running);
        tracing::info!(components = running.handles.len(), "pipeline running");

        let mut failures = Vec::new();
        let mut draining: Option<Instant> = None;
        let mut reloads_open = true;
        loop {
            let next_deadline = running.retiring.values().copied().chain(draining).min();
            let timeout = async {
                match next_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let settled = running.retiring.is_empty();
            tokio::select! {
                finished = running.tasks.next() => {
                    let Some((id, result)) = finished else { break };
                    if let Some(problem) = running.finished(id, result) {
                        tracing::error!("{} failed: {}; draining the rest of the pipeline", problem.component, problem.error);
                        failures.push(problem);
                        running.begin_drain(&mut draining);
                    }
                }
                () = &mut stop, if draining.is_none() => {
                    tracing::info!(grace_period = ?running.grace, "stop requested; draining buffers");
                    running.begin_drain(&mut draining);
                }
                request = reloads.recv(), if reloads_open && settled && draining.is_none() => {
                    let Some(request) = request else {
                        reloads_open = false;
                        continue;
                    };
                    let result = running.reload(request.config).await;
                    match &result {
                        Ok(reloaded) => {
                            components.set(running.metrics());
                            tracing::info!("config reloaded: {}", reloaded.summary);
                        }
                        Err(problems) => {
                            for problem in problems {
                                tracing::error!("reload refused: {problem}");
                            }
                        }
                    }
                    running.health.count_reload(result.is_ok());
                    running.settle();
                    let _ = request.reply.send(result);
                }
                () = timeout => {
                    if draining.is_some_and(|at| at <= Instant::now()) {
                        let pending: Vec<String> = running.handles.values().map(|t| t.label.clone()).collect();
                        for task in running.handles.values() {
                            task.abort.abort();
                        }
                        tracing::error!(still_running = ?pending, "drain did not finish within the grace period");
                        return Outcome::DrainTimedOut(pending);
                    }
                    running.cut_overdue();
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

/// Runs every sink's healthcheck at once; the failures, each naming its sink.
async fn healthchecks<'a>(
    sinks: impl Iterator<Item = (&'a dyn Sink, &'a Arc<ComponentMetrics>)>,
) -> Vec<ComponentFailure> {
    let checks = sinks.map(|(sink, metrics)| {
        let name = metrics.name.clone();
        let check = sink.healthcheck();
        async move {
            check
                .await
                .map_err(|error| ComponentFailure::new(ComponentKind::Sink, &name, error))
        }
    });
    futures::future::join_all(checks)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect()
}

/// Builds the components of `config` that `reuse` does not keep, wired to new buffers and to
/// the kept ones.
fn build_parts(config: &Config, reuse: &Reuse) -> Result<Topology, Vec<ComponentFailure>> {
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
    let context = |name: &str| build_context(config, name);
    let counters = |name: &str, type_name: &str, kind| match reuse.metrics.get(name) {
        Some(metrics) if metrics.component_type == type_name && metrics.kind == kind => {
            Arc::clone(metrics)
        }
        _ => Arc::new(ComponentMetrics::new(name, type_name, kind)),
    };
    let kept = |name: &str| reuse.kept.contains_key(name);
    // Every consumer's buffer exists before any producer is wired to it.
    let mut senders: HashMap<String, BufferSender> = reuse
        .kept
        .iter()
        .filter_map(|(name, sender)| Some((name.clone(), sender.clone()?)))
        .chain(reuse.rebuilt.iter().map(|(n, s)| (n.clone(), s.clone())))
        .collect();
    let mut wiring = Wiring::default();
    let mut inputs: HashMap<&str, (BufferReceiver, Arc<ComponentMetrics>)> = HashMap::new();
    let mut problems = Vec::new();
    let mut buffers = Vec::new();
    for component in &config.sinks {
        if kept(&component.name) || reuse.rebuilt.contains_key(&component.name) {
            continue;
        }
        let metrics = counters(
            &component.name,
            component.config.type_name(),
            ComponentKind::Sink,
        );
        match sink_buffer(config, component, &metrics) {
            Ok((tx, rx, disk)) => {
                senders.insert(component.name.clone(), tx.clone());
                wiring.inputs.insert(component.name.clone(), tx);
                inputs.insert(&component.name, (rx, metrics));
                buffers.extend(disk.map(|run| (component.name.clone(), run)));
            }
            Err(error) => problems.push(ComponentFailure::new(
                ComponentKind::Sink,
                &component.name,
                error,
            )),
        }
    }
    for component in config.transforms.iter().filter(|c| !kept(&c.name)) {
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
        senders.insert(component.name.clone(), tx.clone());
        wiring.inputs.insert(component.name.clone(), tx);
        inputs.insert(&component.name, (rx, metrics));
    }
    let mut outputs = |name: &str, metrics: &Arc<ComponentMetrics>| {
        let (outputs, handles) = wire(&config.graph, &senders, &reuse.taps, name, metrics);
        wiring.outputs.insert(name.to_owned(), handles);
        outputs
    };
    let mut sinks = Vec::new();
    let mut rebuilt = Vec::new();
    let mut api = ApiHandles {
        analyzer: Analyzer::from_config(config),
        taps: reuse.taps.clone(),
        ..ApiHandles::default()
    };
    for component in config.sinks.iter().filter(|c| !kept(&c.name)) {
        let built = match &component.config {
            // One at most: the config loader refuses a second.
            SinkConfig::ApiStore(store) => store.build_shared().map(|(store, sink)| {
                api.store = Some((component.name.clone(), store));
                sink
            }),
            other => other.build(&context(&component.name)),
        };
        let built = match built {
            Ok(sink) => sink,
            Err(error) => {
                problems.push(ComponentFailure::new(
                    ComponentKind::Sink,
                    &component.name,
                    error,
                ));
                continue;
            }
        };
        if reuse.rebuilt.contains_key(&component.name) {
            // The buffer counts into its old counters, so the rebuilt sink keeps them.
            let metrics = reuse
                .metrics
                .get(&component.name)
                .cloned()
                .unwrap_or_else(|| {
                    counters(
                        &component.name,
                        component.config.type_name(),
                        ComponentKind::Sink,
                    )
                });
            rebuilt.push((built, metrics));
        } else if let Some((input, metrics)) = inputs.remove(component.name.as_str()) {
            sinks.push(BuiltSink {
                sink: built,
                input,
                metrics,
            });
        }
    }
    let mut transforms = Vec::new();
    for component in config.transforms.iter().filter(|c| !kept(&c.name)) {
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
    for component in config.sources.iter().filter(|c| !kept(&c.name)) {
        let metrics = counters(
            &component.name,
            component.config.type_name(),
            ComponentKind::Source,
        );
        let built = match &component.config {
            SourceConfig::Api(intake) => intake.build_shared().map(|(ingest, source)| {
                api.ingest = Some((component.name.clone(), ingest));
                source
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
        rebuilt,
        buffers,
        grace: config.shutdown_grace_period,
        wiring,
        config: Some(config.clone()),
    })
}

/// Resolves once a task has finished (or was cut).
#[derive(Clone)]
struct Done(watch::Receiver<bool>);

impl Done {
    async fn wait(mut self) {
        let _ = self.0.wait_for(|done| *done).await;
    }
}

/// Fires [`Done`] when dropped: at the end of its task, however it ends.
struct Finishing(watch::Sender<bool>);

impl Drop for Finishing {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// A spawned task the run loop watches.
struct Task {
    /// The component it belongs to.
    component: String,
    kind: ComponentKind,
    /// Its name in messages: the component's, or `<sink>.buffer` for a disk buffer.
    label: String,
    abort: AbortHandle,
    done: Done,
}

/// What the running topology knows of a running component, to rewire, replace or stop it.
struct Live {
    kind: ComponentKind,
    metrics: Arc<ComponentMetrics>,
    /// Its buffer (transforms and sinks), for producers a reload connects to it.
    input: Option<WeakBufferSender>,
    /// Its outputs (sources and transforms), for rewiring.
    outputs: Vec<(Option<String>, Fanout)>,
    /// Stops it (sources).
    stop: Option<ShutdownTrigger>,
    /// Gets its buffer back (sinks).
    lender: Option<Lender>,
    /// The task that is the component.
    main: u64,
    /// A sink's disk buffer task.
    buffer_task: Option<u64>,
}

/// Where a starting sink's receiver comes from.
enum SinkInput {
    /// Its own new buffer.
    Ready(BufferReceiver),
    /// Its own new buffer, once the sink it replaces has finished with the destination.
    After(Done, BufferReceiver),
    /// Its predecessor's buffer, once the predecessor hands it back.
    HandedBack(Lender),
}

type Finished = (u64, Result<Result<(), ComponentError>, JoinError>);

/// Builds a replaced source again once its predecessor has stopped: a source may read, when
/// it is built, state its predecessor writes as it stops (the `file` source's checkpoints).
/// The build a reload makes first only proves that it builds.
type Rebuild = Box<dyn FnOnce() -> Result<Box<dyn Source>, ComponentError> + Send>;

/// What a reload's new components start after: the instances they replace (by name), and
/// the config to build a replaced source from again.
struct Successors<'c> {
    predecessors: HashMap<String, Done>,
    config: &'c Config,
}

impl Successors<'_> {
    /// The predecessor of source `name` and how to build it again, if a reload replaces one.
    fn rebuild(&self, name: &str) -> Option<(Done, Rebuild)> {
        let done = self.predecessors.get(name)?.clone();
        let component = self.config.sources.iter().find(|c| c.name == name)?;
        let config = component.config.clone();
        let cx = build_context(self.config, name);
        Some((done, Box::new(move || config.build(&cx))))
    }
}

/// What building component `name` of `config` gets.
fn build_context(config: &Config, name: &str) -> BuildContext {
    BuildContext {
        name: name.to_owned(),
        data_dir: config.data_dir.clone(),
        node_name: config.node_name.clone(),
    }
}

/// The run loop's state: every task, the live components, and those a reload stopped, each
/// with the moment it is cut if still running.
struct Running<'h> {
    tasks: FuturesUnordered<BoxFuture<'static, Finished>>,
    handles: HashMap<u64, Task>,
    next_id: u64,
    live: HashMap<String, Live>,
    /// Components that ended on their own (a source whose input ended, and what it fed), with
    /// their counters: a reload that keeps them unchanged does not start them again.
    finished: HashMap<String, Arc<ComponentMetrics>>,
    retiring: HashMap<u64, Instant>,
    grace: Duration,
    config: Option<Config>,
    health: &'h Health,
    /// What the API serves now (the store, intake and chain, the taps): a reload that builds
    /// an `api_store` or `api` component anew hands the new one up, and keeps the rest.
    api: ApiHandles,
}

impl Running<'_> {
    fn spawn(
        &mut self,
        component: &str,
        kind: ComponentKind,
        label: String,
        run: ComponentFuture,
    ) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let (done_tx, done) = watch::channel(false);
        let handle = tokio::spawn(async move {
            let _finishing = Finishing(done_tx);
            run.await
        });
        self.handles.insert(
            id,
            Task {
                component: component.to_owned(),
                kind,
                label,
                abort: handle.abort_handle(),
                done: Done(done),
            },
        );
        self.tasks.push(Box::pin(async move { (id, handle.await) }));
        id
    }

    fn done_of(&self, id: u64) -> Option<Done> {
        self.handles.get(&id).map(|t| t.done.clone())
    }

    fn spawn_sink(
        &mut self,
        sink: Box<dyn Sink>,
        input: SinkInput,
        metrics: Arc<ComponentMetrics>,
    ) -> (u64, Lender) {
        let (lender, loan) = loan();
        let name = metrics.name.clone();
        let cx = SinkContext { metrics };
        let run: ComponentFuture = Box::pin(async move {
            let input = match input {
                SinkInput::Ready(input) => input,
                SinkInput::After(done, input) => {
                    done.wait().await;
                    input
                }
                SinkInput::HandedBack(predecessor) => {
                    predecessor.returned().await.ok_or_else(|| {
                        ComponentError::runtime("the sink it replaces did not hand its buffer back")
                    })?
                }
            };
            sink.run(input.on_loan(loan), cx).await
        });
        (
            self.spawn(&name, ComponentKind::Sink, name.clone(), run),
            lender,
        )
    }

    fn spawn_transform(&mut self, built: BuiltTransform, wiring: &mut Wiring) {
        let name = built.metrics.name.clone();
        let metrics = Arc::clone(&built.metrics);
        let cx = TransformContext {
            out: built.outputs,
            metrics: built.metrics,
        };
        let main = self.spawn(
            &name,
            ComponentKind::Transform,
            name.clone(),
            built.transform.run(built.input, cx),
        );
        self.live.insert(
            name.clone(),
            Live {
                kind: ComponentKind::Transform,
                metrics,
                input: wiring.inputs.get(&name).map(BufferSender::downgrade),
                outputs: wiring.outputs.remove(&name).unwrap_or_default(),
                stop: None,
                lender: None,
                main,
                buffer_task: None,
            },
        );
    }

    fn spawn_source(
        &mut self,
        built: BuiltSource,
        after: Option<(Done, Rebuild)>,
        wiring: &mut Wiring,
    ) {
        let name = built.metrics.name.clone();
        let metrics = Arc::clone(&built.metrics);
        let (trigger, signal) = ShutdownSignal::new();
        let cx = SourceContext {
            out: built.outputs,
            shutdown: signal,
            metrics: built.metrics,
        };
        let source = built.source;
        let run: ComponentFuture = Box::pin(async move {
            let source = match after {
                Some((predecessor, rebuild)) => {
                    drop(source);
                    predecessor.wait().await;
                    rebuild()?
                }
                None => source,
            };
            source.run(cx).await
        });
        let main = self.spawn(&name, ComponentKind::Source, name.clone(), run);
        self.live.insert(
            name.clone(),
            Live {
                kind: ComponentKind::Source,
                metrics,
                input: None,
                outputs: wiring.outputs.remove(&name).unwrap_or_default(),
                stop: Some(trigger),
                lender: None,
                main,
                buffer_task: None,
            },
        );
    }

    /// Spawns the fresh sinks of `parts` (with their disk buffers), each after the
    /// predecessor a reload replaces (`predecessors`, by name) has finished.
    fn spawn_sinks(
        &mut self,
        sinks: Vec<BuiltSink>,
        buffers: Vec<(String, ComponentFuture)>,
        predecessors: &HashMap<String, Done>,
        wiring: &Wiring,
    ) {
        let mut buffer_tasks: HashMap<String, u64> = HashMap::new();
        for (sink, run) in buffers {
            let id = self.spawn(&sink, ComponentKind::Sink, format!("{sink}.buffer"), run);
            buffer_tasks.insert(sink, id);
        }
        for built in sinks {
            let name = built.metrics.name.clone();
            let metrics = Arc::clone(&built.metrics);
            let input = match predecessors.get(&name) {
                Some(done) => SinkInput::After(done.clone(), built.input),
                None => SinkInput::Ready(built.input),
            };
            let (main, lender) = self.spawn_sink(built.sink, input, built.metrics);
            self.live.insert(
                name.clone(),
                Live {
                    kind: ComponentKind::Sink,
                    metrics,
                    input: wiring.inputs.get(&name).map(BufferSender::downgrade),
                    outputs: Vec::new(),
                    stop: None,
                    lender: Some(lender),
                    main,
                    buffer_task: buffer_tasks.remove(&name),
                },
            );
        }
    }

    /// Starts a built topology: sinks first, then transforms, then sources, so nothing is sent
    /// into a void; a reload's new components after what they replace.
    fn start(&mut self, parts: Topology, successors: Option<&Successors<'_>>) {
        let Topology {
            sources,
            transforms,
            sinks,
            buffers,
            mut wiring,
            ..
        } = parts;
        let none = HashMap::new();
        let predecessors = successors.map_or(&none, |s| &s.predecessors);
        self.spawn_sinks(sinks, buffers, predecessors, &wiring);
        for built in transforms {
            self.spawn_transform(built, &mut wiring);
        }
        for built in sources {
            let after = successors.and_then(|s| s.rebuild(&built.metrics.name));
            self.spawn_source(built, after, &mut wiring);
        }
    }

    /// Every live component's counters, in the config's order.
    fn metrics(&self) -> Vec<Arc<ComponentMetrics>> {
        let Some(config) = &self.config else {
            return Vec::new();
        };
        let names = config
            .sources
            .iter()
            .map(|c| &c.name)
            .chain(config.transforms.iter().map(|c| &c.name))
            .chain(config.sinks.iter().map(|c| &c.name));
        names
            .filter_map(|name| {
                let live = self.live.get(name).map(|l| &l.metrics);
                live.or_else(|| self.finished.get(name)).map(Arc::clone)
            })
            .collect()
    }

    /// Marks `id` as stopped by a reload: it must finish by `deadline`.
    fn retire(&mut self, id: u64, deadline: Instant) {
        if self.handles.contains_key(&id) {
            self.retiring.insert(id, deadline);
        }
    }

    /// Stops a component a reload removes or replaces: a source by its signal, the others by
    /// the end of their input (its producers no longer feed it). Its tasks must finish within
    /// the grace period.
    fn retire_component(&mut self, old: Live, deadline: Instant) {
        if let Some(stop) = &old.stop {
            stop.trigger();
        }
        self.retire(old.main, deadline);
        if let Some(id) = old.buffer_task {
            self.retire(id, deadline);
        }
    }

    /// Back to `running` once nothing a reload stopped is still running.
    fn settle(&self) {
        if self.retiring.is_empty() && self.health.get() == HealthState::Reloading {
            self.health.set(HealthState::Running);
            tracing::info!("reload complete: every stopped component has finished");
        }
    }

    /// Cuts what a reload stopped and did not finish within the grace period.
    fn cut_overdue(&mut self) {
        let now = Instant::now();
        let overdue: Vec<u64> = self
            .retiring
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            self.retiring.remove(&id);
            if let Some(task) = self.handles.get(&id) {
                task.abort.abort();
                tracing::error!(
                    "{}s.{} was stopped by a reload and did not finish within the grace period; cut",
                    task.kind.as_str(),
                    task.label
                );
            }
        }
        self.settle();
    }

    /// Asks every source to stop and health to say `draining`, once.
    fn begin_drain(&mut self, deadline: &mut Option<Instant>) {
        if deadline.is_none() {
            for live in self.live.values() {
                if let Some(stop) = &live.stop {
                    stop.trigger();
                }
            }
            self.health.set(HealthState::Draining);
            *deadline = Some(Instant::now() + self.grace);
        }
    }

    /// Books a finished task; its failure, if it was a live component's (a component a reload
    /// stopped that fails is logged, not a reason to stop the pipeline).
    fn finished(
        &mut self,
        id: u64,
        result: Result<Result<(), ComponentError>, JoinError>,
    ) -> Option<ComponentFailure> {
        let task = self.handles.remove(&id)?;
        let retired = self.retiring.remove(&id).is_some();
        let mut ended = None;
        if self.live.get(&task.component).is_some_and(|l| l.main == id) {
            // Its fanouts and buffer handle go with it, so what it fed can end too.
            ended = self.live.remove(&task.component);
        }
        let problem = match result {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(ComponentFailure::new(task.kind, &task.label, error)),
            Err(join) if join.is_panic() => Some(ComponentFailure::new(
                task.kind,
                &task.label,
                ComponentError::runtime(format!("panicked: {}", panic_message(join))),
            )),
            Err(_) => None,
        };
        if retired {
            if let Some(problem) = &problem {
                tracing::error!("{problem} (while stopping after a reload)");
            }
            self.settle();
            return None;
        }
        if problem.is_none() {
            tracing::debug!(component = %task.label, "finished");
            if let Some(ended) = ended {
                self.finished.insert(task.component, ended.metrics);
            }
        }
        problem
    }

    /// Applies `new`; the summary of what changed, or why nothing did.
    async fn reload(&mut self, new: Config) -> Result<Reloaded, Vec<ComponentFailure>> {
        let Some(current) = &self.config else {
            return Err(vec![ComponentFailure {
                component: "reload".to_owned(),
                error: ComponentError::config("this pipeline was not built from a config"),
            }]);
        };
        let diff = Diff::between(current, &new, |name| {
            self.live.contains_key(name) || self.finished.contains_key(name)
        })?;
        let mut reuse = Reuse {
            taps: self.api.taps.clone(),
            ..Reuse::default()
        };
        let mut problems = Vec::new();
        for (name, kind, change) in &diff.changes {
            let Some(live) = self.live.get(name).filter(|l| l.kind == *kind) else {
                // Finished on its own: left finished when unchanged, started anew if changed.
                if *change == Change::Keep {
                    reuse.kept.insert(name.clone(), None);
                }
                continue;
            };
            let sender = live.input.as_ref().map(WeakBufferSender::upgrade);
            if sender.as_ref().is_some_and(Option::is_none) {
                problems.push(ComponentFailure::new(*kind, name, ComponentError::unavailable(
                    "its inputs have ended and it is finishing; reload again once it has finished",
                )));
                continue;
            }
            let sender = sender.flatten();
            match change {
                Change::Keep => {
                    reuse.kept.insert(name.clone(), sender);
                }
                Change::Rebuild => {
                    reuse
                        .rebuilt
                        .insert(name.clone(), sender.expect("sinks have a buffer"));
                    reuse
                        .metrics
                        .insert(name.clone(), Arc::clone(&live.metrics));
                }
                Change::Replace => {
                    reuse
                        .metrics
                        .insert(name.clone(), Arc::clone(&live.metrics));
                }
                Change::Add | Change::Remove => {}
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut parts = build_parts(&new, &reuse)?;
        let unhealthy = healthchecks(
            parts
                .sinks
                .iter()
                .map(|s| (&*s.sink, &s.metrics))
                .chain(parts.rebuilt.iter().map(|(s, m)| (&**s, m))),
        )
        .await;
        if !unhealthy.is_empty() {
            return Err(unhealthy);
        }

        // Everything new is built and healthy: from here on nothing can fail.
        self.health.set(HealthState::Reloading);
        // A kept `api_store` or `api` component keeps serving through its old handle.
        let kept = |name: &String| reuse.kept.contains_key(name);
        let api = ApiHandles {
            store: (parts.api.store.clone())
                .or_else(|| self.api.store.clone().filter(|(name, _)| kept(name))),
            ingest: (parts.api.ingest.clone())
                .or_else(|| self.api.ingest.clone().filter(|(name, _)| kept(name))),
            ..parts.api.clone()
        };
        let deadline = Instant::now() + new.shutdown_grace_period;
        for (name, kind, change) in &diff.changes {
            if *change == Change::Remove
                && self.live.get(name).is_some_and(|l| l.kind == *kind)
                && let Some(old) = self.live.remove(name)
            {
                self.retire_component(old, deadline);
            }
        }
        let mut predecessors = HashMap::new();
        for (name, _, change) in &diff.changes {
            if *change == Change::Replace
                && let Some(old) = self.live.remove(name)
            {
                if let Some(done) = self.done_of(old.main) {
                    predecessors.insert(name.clone(), done);
                }
                self.retire_component(old, deadline);
            }
        }
        for (sink, metrics) in std::mem::take(&mut parts.rebuilt) {
            let name = metrics.name.clone();
            let Some(mut old) = self.live.remove(&name) else {
                continue;
            };
            let lender = old
                .lender
                .take()
                .expect("a running sink is lent its buffer");
            lender.recall();
            self.retire(old.main, deadline);
            let (main, lender) =
                self.spawn_sink(sink, SinkInput::HandedBack(lender), Arc::clone(&metrics));
            self.live.insert(
                name,
                Live {
                    lender: Some(lender),
                    main,
                    metrics,
                    ..old
                },
            );
        }
        let mut senders: HashMap<String, BufferSender> = parts.wiring.inputs.clone();
        senders.extend(
            reuse
                .kept
                .iter()
                .filter_map(|(name, sender)| Some((name.clone(), sender.clone()?)))
                .chain(reuse.rebuilt.iter().map(|(n, s)| (n.clone(), s.clone()))),
        );
        let successors = Successors {
            predecessors,
            config: &new,
        };
        self.start(parts, Some(&successors));
        for (name, live) in &self.live {
            if live.kind == ComponentKind::Sink || !reuse.kept.contains_key(name) {
                continue;
            }
            rewire(&new.graph, name, &live.outputs, &senders);
        }
        self.finished
            .retain(|name, _| reuse.kept.contains_key(name) && !self.live.contains_key(name));
        self.grace = new.shutdown_grace_period;
        self.config = Some(new);
        self.api = api.clone();
        Ok(Reloaded {
            summary: diff.summary(),
            api,
        })
    }
}

/// Points a kept producer's outputs at the consumers `graph` gives them.
fn rewire(
    graph: &Graph,
    name: &str,
    outputs: &[(Option<String>, Fanout)],
    senders: &HashMap<String, BufferSender>,
) {
    let Some(index) = graph.index_of(name) else {
        return;
    };
    for (output, fanout) in outputs {
        let wanted: Vec<&str> = graph
            .consumers(index, output.as_deref())
            .map(|to| graph.nodes[to].name.as_str())
            .collect();
        for key in fanout.keys() {
            if !wanted.contains(&key.as_str()) {
                fanout.disconnect(&key);
            }
        }
        for consumer in wanted {
            if let Some(sender) = senders.get(consumer) {
                fanout.connect(consumer, sender.clone());
            }
        }
    }
}

fn panic_message(join: JoinError) -> String {
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
        let topology = Topology::from_parts(
            vec![BuiltSource {
                source: Box::new(ScriptedSource { panic_after_send }),
                outputs,
                metrics: source_metrics,
            }],
            vec![BuiltSink {
                sink: Box::new(CountingSink { stuck, healthy }),
                input: rx,
                metrics: Arc::clone(&sink_metrics),
            }],
            Duration::from_millis(300),
        );
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
    fn the_api_store_and_intake_are_handed_up() {
        let one =
            "[sources.in]\ntype = \"api\"\n\n[sinks.a]\ntype = \"api_store\"\ninputs = [\"in\"]\n";
        let handles = build(one).expect("builds").api_handles();
        assert_eq!(handles.store.map(|(name, _)| name).as_deref(), Some("a"));
        assert_eq!(handles.ingest.map(|(name, _)| name).as_deref(), Some("in"));
    }
}
