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

/// A component failed while running; the message is shown to the user as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentError(pub String);

impl std::fmt::Display for ComponentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
    pub async fn send(&mut self, batch: EventBatch) -> Result<(), Closed> {
        self.metrics.add_events_out(batch.len());
        self.default.send(batch).await
    }

    /// Whether anything reads the named output; lets a source skip building events nobody reads.
    pub fn has_output(&self, output: &str) -> bool {
        self.named
            .iter()
            .any(|(name, fanout)| name == output && fanout.is_connected())
    }

    /// Sends on a named output; a batch for an output nothing reads is acknowledged as dropped.
    pub async fn send_to(&mut self, output: &str, batch: EventBatch) {
        match self.named.iter_mut().find(|(name, _)| name == output) {
            Some((_, fanout)) if fanout.is_connected() => {
                self.metrics.add_events_out(batch.len());
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
    /// Runs the sink until `input` ends.
    fn run(self: Box<Self>, input: BufferReceiver, cx: SinkContext) -> ComponentFuture;
}
