//! The contracts between the runtime and its components. A config's `build` returns a boxed
//! [`Source`] or [`Sink`]; the topology then hands it a context with everything a component may
//! touch (its outputs or input, its counters, the shutdown signal, `data_dir`), so adding a
//! component never means changing the runtime.

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::batch::EventBatch;
use crate::buffer::{BufferReceiver, Closed, Fanout};
use crate::metrics::ComponentMetrics;

/// What went wrong with a component, which decides how the process exits: the user fixes a
/// `Config` error in `tapio.toml` (exit 78), an `Unavailable` one in the environment (a peer
/// that does not answer, a path that cannot be written: exit 69), and a `Runtime` one is a
/// failure while events were flowing (exit 70).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// An option is wrong in a way only building the component can tell.
    Config,
    /// Something outside Tapio that the component needs is missing or refuses.
    Unavailable,
    /// The component failed after it started.
    Runtime,
}

/// A component could not be built or stopped with a failure. The message never names the
/// component: the topology prefixes it once (`sinks.archive: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentError {
    kind: ErrorKind,
    message: String,
}

impl ComponentError {
    /// A problem with the component's options.
    pub fn config(message: impl Into<String>) -> Self {
        ComponentError {
            kind: ErrorKind::Config,
            message: message.into(),
        }
    }

    /// A problem with the environment the component needs.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ComponentError {
            kind: ErrorKind::Unavailable,
            message: message.into(),
        }
    }

    /// A failure while running.
    pub fn runtime(message: impl Into<String>) -> Self {
        ComponentError {
            kind: ErrorKind::Runtime,
            message: message.into(),
        }
    }

    /// Which kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What to tell the user.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for ComponentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ComponentError {}

/// What a running component is: a future that ends when the component is done.
pub type ComponentFuture = BoxFuture<'static, Result<(), ComponentError>>;

/// What every component's `build` gets: who it is and where it may keep state.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The component's name in the config.
    pub name: String,
    /// The global `data_dir`; a component keeps its files under `data_dir/<name>`.
    pub data_dir: PathBuf,
    /// The global `node_name`, for events that carry no entity.
    pub node_name: String,
}

impl BuildContext {
    /// The directory this component may write its state to (created by the caller).
    pub fn component_dir(&self) -> PathBuf {
        self.data_dir.join(&self.name)
    }
}

/// Fires once when the pipeline is asked to stop; sources end when it does.
#[derive(Debug, Clone)]
pub struct ShutdownSignal(watch::Receiver<bool>);

/// The runtime's side of [`ShutdownSignal`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl ShutdownSignal {
    /// A trigger and the signal it fires.
    pub fn new() -> (ShutdownTrigger, ShutdownSignal) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), ShutdownSignal(rx))
    }

    /// Whether shutdown has been asked for.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown is asked for (or the runtime is gone).
    pub async fn triggered(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

impl ShutdownTrigger {
    /// Asks every source to stop.
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// The named output where sources send what they could not decode and transforms what they
/// could not process, each event carrying its error; every transform has one.
pub const ERRORS_OUTPUT: &str = "errors";

/// How a config error inside a text option (an inline script) gives its position, so the
/// loader can turn the text's line into the config file's line: `script 3:5: message`.
/// Options that fail this way are free-form text, so this is the one shape the loader reads.
pub fn error_in_option_text(line: usize, column: usize, message: &str) -> String {
    format!("script {line}:{column}: {message}")
}

/// The `(line, column, message)` of an error made by [`error_in_option_text`].
pub fn position_in_option_text(error: &str) -> Option<(usize, usize, &str)> {
    let rest = error.strip_prefix("script ")?;
    let (line, rest) = rest.split_once(':')?;
    let (column, message) = rest.split_once(": ")?;
    Some((line.parse().ok()?, column.parse().ok()?, message))
}

/// A source's or transform's outputs: the default one and any named ones (`errors`), each
/// fanning out to the components that list it in their `inputs`.
pub struct Outputs {
    default: Fanout,
    named: Vec<(String, Fanout)>,
    metrics: Arc<ComponentMetrics>,
}

impl Outputs {
    /// Outputs wired by the topology.
    pub fn new(
        default: Fanout,
        named: Vec<(String, Fanout)>,
        metrics: Arc<ComponentMetrics>,
    ) -> Self {
        Outputs {
            default,
            named,
            metrics,
        }
    }

    /// Sends on the default output, waiting while downstream is full. `Err` means nothing reads
    /// this output any more and the source should stop.
    pub async fn send(&mut self, mut batch: EventBatch) -> Result<(), Closed> {
        self.count_out(&mut batch);
        self.default.send(batch).await
    }

    /// Counts a batch leaving the component, and its latency when it came through its input.
    fn count_out(&self, batch: &mut EventBatch) {
        self.metrics.add_events_out(batch.len());
        if let Some(entered) = batch.take_entered() {
            self.metrics.observe_latency(entered.elapsed());
        }
    }

    /// Whether anything reads the named output; lets a source skip building events nobody reads.
    pub fn has_output(&self, output: &str) -> bool {
        self.named
            .iter()
            .any(|(name, fanout)| name == output && fanout.is_connected())
    }

    /// Sends on a named output; a batch for an output nothing reads is acknowledged as dropped.
    pub async fn send_to(&mut self, output: &str, mut batch: EventBatch) {
        match self.named.iter().position(|(name, _)| name == output) {
            Some(index) if self.named[index].1.is_connected() => {
                self.count_out(&mut batch);
                let fanout = &mut self.named[index].1;
                // A consumer that went away is the consumer's failure, reported by the runtime.
                let _ = fanout.send(batch).await;
            }
            _ => batch.ack(crate::ack::BatchStatus::Dropped),
        }
    }
}

/// Everything a running source may use.
pub struct SourceContext {
    pub out: Outputs,
    pub shutdown: ShutdownSignal,
    pub metrics: Arc<ComponentMetrics>,
}

/// Everything a running transform may use. A transform ends once its input ends (after
/// flushing any state it holds), so it needs no shutdown signal: a stop reaches it as the end of
/// its input when the sources upstream have stopped.
pub struct TransformContext {
    pub out: Outputs,
    pub metrics: Arc<ComponentMetrics>,
}

/// Everything a running sink may use.
pub struct SinkContext {
    pub metrics: Arc<ComponentMetrics>,
}

/// A built source: produces batches until its input ends or shutdown fires.
pub trait Source: Send + 'static {
    /// Runs the source to completion.
    fn run(self: Box<Self>, cx: SourceContext) -> ComponentFuture;
}

/// A built transform: reads batches from its buffer and writes what it makes to its outputs.
/// Acknowledgements travel with events: a transform that changes events in place forwards the
/// same batch (tokens included); one that holds events back (a reorder buffer) holds their
/// batches' tokens until the last of those events leaves.
pub trait Transform: Send + 'static {
    /// Runs the transform until `input` ends and its state is flushed.
    fn run(self: Box<Self>, input: BufferReceiver, cx: TransformContext) -> ComponentFuture;
}

/// A built sink: consumes its buffer until every upstream has finished, acknowledging batches
/// once they are durably written.
pub trait Sink: Send + 'static {
    /// Proves the destination answers before the pipeline reports itself healthy, so a
    /// misconfigured endpoint fails at start with one clear line instead of a stalled pipeline.
    /// Sinks without a remote peer have nothing to check.
    fn healthcheck(&self) -> BoxFuture<'static, Result<(), ComponentError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Runs the sink until `input` ends.
    fn run(self: Box<Self>, input: BufferReceiver, cx: SinkContext) -> ComponentFuture;
}

/// What every component's config implements, so that a registry line is all a new component
/// adds outside its own folder: the facts the topology needs before and while building it.
pub trait ComponentConfig {
    /// What building returns: `dyn Source`, `dyn Transform` or `dyn Sink`.
    type Component: ?Sized;

    /// Named outputs besides the default one (`inputs = ["<name>.<output>"]`) that every
    /// component of the type has, known even when its options are invalid, so one bad option
    /// does not also make every `<name>.errors` input look wrong.
    const NAMED_OUTPUTS: &'static [&'static str] = &[];

    /// This component's named outputs, for types whose outputs come from their options
    /// (`route`'s routes, a script's `outputs`). Defaults to the type's.
    fn named_outputs(&self) -> Vec<String> {
        Self::NAMED_OUTPUTS
            .iter()
            .map(|&output| output.to_owned())
            .collect()
    }

    /// Whether the component keeps state under `data_dir`, which must then be writable before
    /// anything runs.
    fn uses_data_dir(&self) -> bool {
        false
    }

    /// Validates what only building can tell and returns the running piece.
    fn build(&self, cx: &BuildContext) -> Result<Box<Self::Component>, ComponentError>;
}

/// Declares a layer's registry of component configs from one list of `"type" => Variant(Config)`
/// lines: the externally tagged enum the topology deserializes, the list of `type` names that
/// errors show, and the dispatch to each config's [`ComponentConfig`]. Serde's names and the
/// listed names come from the same literal, so they cannot disagree.
#[macro_export]
macro_rules! component_registry {
    (
        $(#[$meta:meta])*
        pub enum $registry:ident: $component:ty {
            $($type_name:literal => $variant:ident($config:ty),)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize)]
        pub enum $registry {
            $(
                #[doc = concat!("`type = \"", $type_name, "\"`")]
                #[serde(rename = $type_name)]
                $variant($config),
            )+
        }

        impl $registry {
            /// Every `type` name, in registry order, for error messages and docs.
            pub const TYPES: &'static [&'static str] = &[$($type_name),+];

            /// The config `type` of this component.
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $type_name,)+
                }
            }

            /// Named outputs of a `type`, known even when its options are invalid.
            pub fn named_outputs_of(type_name: &str) -> &'static [&'static str] {
                match type_name {
                    $($type_name => <$config as $crate::ComponentConfig>::NAMED_OUTPUTS,)+
                    _ => &[],
                }
            }

            /// Named outputs of this component, which may depend on its options.
            pub fn named_outputs(&self) -> Vec<String> {
                match self {
                    $(Self::$variant(config) => $crate::ComponentConfig::named_outputs(config),)+
                }
            }

            /// Whether this component keeps state under `data_dir`.
            pub fn uses_data_dir(&self) -> bool {
                match self {
                    $(Self::$variant(config) => $crate::ComponentConfig::uses_data_dir(config),)+
                }
            }

            /// Builds the running component.
            pub fn build(
                &self,
                cx: &$crate::BuildContext,
            ) -> Result<Box<$component>, $crate::ComponentError> {
                match self {
                    $(Self::$variant(config) => $crate::ComponentConfig::build(config, cx),)+
                }
            }
        }
    };
}
