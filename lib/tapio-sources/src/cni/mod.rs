//! The `cni` source: what the container runtime's CNI plugins did to a pod's network, learned two
//! ways. Watch mode ([`watch`]) follows libcni's result cache and host-local's IPAM directory
//! with inotify: a new result is an `ADD`, a removed one a `DEL`. Plugin mode ([`socket`])
//! listens on a unix socket for the events of the chained `tapio-cni` plugin, which also sees
//! `CHECK` and the chain's failures. Both can run at once.

mod cache;
mod socket;
#[cfg(test)]
mod tests;
mod watch;

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::codec::Decoder;
use tapio_event::{
    BuildContext, ComponentConfig, ComponentError, ComponentFuture, ERRORS_OUTPUT, Entity,
    EntityType, EventBatch, Source, SourceContext, Timestamp, UnifiedEvent,
};
use tokio::sync::mpsc;

/// Most events sent in one batch; a burst of pod starts fills batches, a lone one goes at once.
const MAX_BATCH: usize = 512;

/// Reports CNI `ADD`/`DEL` (and, through the `tapio-cni` plugin, `CHECK` and plugin errors) as
/// `network` events about the pod, with its interface, IP, netns and sandbox container id.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CniConfig {
    /// Watch libcni's result cache (`cache_dir`) and host-local's IPAM directory (`ipam_dir`)
    /// with inotify. Needs nothing installed in the CNI chain, but sees only what libcni caches:
    /// successful `ADD`s and their `DEL`.
    #[serde(default = "default_watch")]
    pub watch: bool,
    /// The directory holding libcni's result files
    /// (`<network>-<containerId>-<ifName>`, JSON of kind `cniCacheV1`).
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// host-local's IPAM directory (`<network>/<ip>` files naming the container): fills the IP
    /// of a result that carries none.
    #[serde(default = "default_ipam_dir")]
    pub ipam_dir: PathBuf,
    /// Emit an `ADD` for every result already cached when the source starts. Off, they are
    /// only learned, so a restart of the agent does not replay every pod's network setup, and
    /// their `DEL` is still reported.
    #[serde(default)]
    pub emit_existing: bool,
    /// Listen here (a unix socket created with mode 0600) for the events of the chained
    /// `tapio-cni` plugin; the plugin's netconf names the same path in its `socket_path`.
    /// Unset, the source does not listen.
    #[serde(default)]
    pub socket_path: Option<PathBuf>,
}

fn default_watch() -> bool {
    true
}

fn default_cache_dir() -> PathBuf {
    PathBuf::from("/var/lib/cni/results")
}

fn default_ipam_dir() -> PathBuf {
    PathBuf::from("/var/lib/cni/networks")
}

impl ComponentConfig for CniConfig {
    type Component = dyn Source;
    const NAMED_OUTPUTS: &'static [&'static str] = &[ERRORS_OUTPUT];

    /// Checks the options only: directories are watched and the socket bound when the source
    /// runs, so `tapio validate` touches neither.
    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>, ComponentError> {
        if !self.watch && self.socket_path.is_none() {
            return Err(ComponentError::config(
                "`watch` is false and no `socket_path` is set: the source would learn nothing",
            ));
        }
        for (option, path) in [
            ("cache_dir", Some(&self.cache_dir)),
            ("ipam_dir", Some(&self.ipam_dir)),
            ("socket_path", self.socket_path.as_ref()),
        ] {
            if path.is_some_and(|path| path.as_os_str().is_empty()) {
                return Err(ComponentError::config(format!(
                    "`{option}` is empty: give a path"
                )));
            }
        }
        Ok(Box::new(CniSource {
            config: self.clone(),
            node: cx.node_name.clone(),
        }))
    }
}

/// What the watcher or the socket found: an event, or input that is not one.
enum Found {
    Event(UnifiedEvent),
    Broken {
        input: Vec<u8>,
        origin: String,
        error: String,
    },
}

struct CniSource {
    config: CniConfig,
    node: String,
}

impl Source for CniSource {
    fn run(self: Box<Self>, cx: SourceContext) -> ComponentFuture {
        Box::pin(self.collect(cx))
    }
}

impl CniSource {
    async fn collect(self, cx: SourceContext) -> Result<(), ComponentError> {
        let SourceContext {
            mut out,
            mut shutdown,
            metrics,
        } = cx;
        let (tx, mut rx) = mpsc::channel(4 * MAX_BATCH);
        let watching = match self.config.watch {
            true => Some(watch::Watching::start(&self.config, tx.clone())?),
            false => None,
        };
        let listening = match &self.config.socket_path {
            Some(path) => Some(socket::Listening::start(path, tx.clone())?),
            None => None,
        };
        drop(tx);
        let mut decoder = Decoder::default();
        let mut found = Vec::with_capacity(MAX_BATCH);
        loop {
            tokio::select! {
                biased;
                () = shutdown.triggered() => break,
                n = rx.recv_many(&mut found, MAX_BATCH) => {
                    if n == 0 {
                        break;
                    }
                    let mut events = Vec::with_capacity(n);
                    let mut errors = Vec::new();
                    for item in found.drain(..) {
                        match item {
                            Found::Event(mut event) => {
                                self.on_node(&mut event);
                                events.push(event);
                            }
                            Found::Broken { input, origin, error } => {
                                tracing::warn!(%origin, %error, "cni: input is not a CNI result or event");
                                let read_at = Timestamp::now();
                                errors.push(decoder.error_event(&input, "cni", &error, read_at));
                            }
                        }
                    }
                    if !errors.is_empty() {
                        metrics.add_errors("decode", errors.len());
                        out.send_to(ERRORS_OUTPUT, EventBatch::new(errors)).await;
                    }
                    if !events.is_empty() && out.send(EventBatch::new(events)).await.is_err() {
                        break;
                    }
                }
            }
        }
        drop(watching);
        drop(listening);
        Ok(())
    }

    /// Every node-local event names its node; one about no known pod is about the host.
    fn on_node(&self, event: &mut UnifiedEvent) {
        match event.entity.as_deref_mut() {
            Some(entity) => entity.node = Some(self.node.clone()),
            None => {
                event.entity = Some(Box::new(Entity {
                    node: Some(self.node.clone()),
                    ..Entity::new(EntityType::Host, self.node.clone())
                }));
            }
        }
    }
}
