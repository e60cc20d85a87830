//! Reloading a running pipeline's config on `SIGHUP`, or when the file changes with
//! `tapio run --watch-config`. The file is validated first: a file with errors changes nothing
//! (every error is logged as `file:line: key: message`) and the pipeline goes on. A valid one
//! goes to the topology, which restarts only what changed; the `[api]` server is moved only when
//! its address changed (the new address is bound before anything changes, so a taken port
//! refuses the reload instead of leaving the pipeline without its API).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tapio_event::Tokens;
use tapio_topology::{Config, ReloadRequest, Severity};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

use crate::run::PipelineChoice;

/// How long the config file must stay quiet after a change before it is read: an editor's
/// save is several events (truncate, write, rename), and a half-written file must not be
/// reloaded (it would be refused, then reloaded again a moment later).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// What asks for a reload: `SIGHUP`, and with `--watch-config` the config file's directory.
pub struct Triggers {
    hangup: Signal,
    /// Debounced changes of the config file; `None` without `--watch-config`.
    changes: Option<mpsc::UnboundedReceiver<()>>,
    /// Kept alive for as long as changes are watched.
    _watcher: Option<RecommendedWatcher>,
}

impl Triggers {
    /// Starts listening; must run before the pipeline starts, since `SIGHUP` otherwise ends
    /// the process.
    pub fn listen(choice: &PipelineChoice, watch: bool) -> std::io::Result<Triggers> {
        let hangup = signal(SignalKind::hangup())?;
        let (changes, watcher) = match (watch, choice.file()) {
            (false, _) => (None, None),
            (true, None) => {
                tracing::warn!(
                    "--watch-config: the built-in pipeline runs, there is no config file to watch"
                );
                (None, None)
            }
            (true, Some(path)) => {
                let (watcher, changes) = watch_file(path).map_err(std::io::Error::other)?;
                tracing::info!(file = %path.display(), "watching the config file for changes");
                (Some(changes), Some(watcher))
            }
        };
        Ok(Triggers {
            hangup,
            changes,
            _watcher: watcher,
        })
    }

    /// Forgets the file changes already waiting: the reload about to happen reads the file
    /// as it is now, which covers them. (Signals that arrive together are one already.)
    fn fold_pending(&mut self) {
        if let Some(changes) = &mut self.changes {
            while changes.try_recv().is_ok() {}
        }
    }

    /// Why the next reload happens; `None` once nothing can ask any more.
    async fn next(&mut self) -> Option<&'static str> {
        let Triggers {
            hangup, changes, ..
        } = self;
        let change = async {
            match changes {
                Some(changes) => changes.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            hangup = hangup.recv() => hangup.map(|()| "SIGHUP received"),
            change = change => change.map(|()| "the config file changed"),
        }
    }
}

/// Watches the directory of `path` and sends one message per burst of changes that leaves
/// the file's content different, once the burst has been quiet for [`DEBOUNCE`]. The directory,
/// not the file: editors replace a file by renaming a new one over it, and a Kubernetes
/// ConfigMap volume swaps a `..data` symlink the file points through (hence the `..` names).
/// Comparing the content skips a save that changed nothing and writes of other files there.
fn watch_file(path: &Path) -> notify::Result<(RecommendedWatcher, mpsc::UnboundedReceiver<()>)> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(ToOwned::to_owned);
    let (raw_tx, mut raw) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let touches = event.paths.iter().any(|p| {
            let file = p.file_name();
            file == name.as_deref() || file.is_some_and(|f| f.as_encoded_bytes().starts_with(b".."))
        });
        if touches && (event.kind.is_create() || event.kind.is_modify() || event.kind.is_remove()) {
            let _ = raw_tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let path = path.to_path_buf();
    let mut last = std::fs::read(&path).ok();
    tokio::spawn(async move {
        while raw.recv().await.is_some() {
            loop {
                match tokio::time::timeout(DEBOUNCE, raw.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_quiet) => break,
                }
            }
            let now = std::fs::read(&path).ok();
            if now == last {
                continue;
            }
            last = now;
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok((watcher, rx))
}

/// The running `[api]` server and the address it is bound to.
pub struct ApiServer {
    address: SocketAddr,
    task: AbortHandle,
}

impl ApiServer {
    /// Binds `address` and serves `state` there.
    pub async fn start(
        address: SocketAddr,
        state: &tapio_api::ApiState,
    ) -> std::io::Result<ApiServer> {
        let api = tapio_api::Api::bind(address).await?;
        tracing::info!(%address, "serving the API (REST, gRPC, /health, /metrics)");
        let task = tokio::spawn(api.serve(state.clone())).abort_handle();
        Ok(ApiServer { address, task })
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reloads the config each time `triggers` asks, until the pipeline stops taking requests.
/// Requests that arrive while one is applied are folded into the next.
pub async fn serve(
    mut triggers: Triggers,
    choice: PipelineChoice,
    mut api: Option<ApiServer>,
    state: tapio_api::ApiState,
    topology: mpsc::UnboundedSender<ReloadRequest>,
) {
    while let Some(reason) = triggers.next().await {
        triggers.fold_pending();
        tracing::info!("{reason}; reloading the config");
        let Some(config) = validated(&choice) else {
            state.health.count_reload(false);
            continue;
        };
        // Read again on every reload, so rotated tokens and certificate files apply too.
        let (tokens, tls) = match api_settings(config.api.as_ref()) {
            Ok(settings) => settings,
            Err(error) => {
                tracing::error!("reload refused: api: {error}; the running pipeline is unchanged");
                state.health.count_reload(false);
                continue;
            }
        };
        let wanted = config.api.as_ref().map(|a| a.address);
        let moved = wanted != api.as_ref().map(|a| a.address);
        let new_api = match wanted.filter(|_| moved) {
            Some(address) => match ApiServer::start(address, &state).await {
                Ok(server) => Some(server),
                Err(error) => {
                    tracing::error!(%address, %error, "reload refused: cannot bind the new [api] address; the running pipeline is unchanged");
                    state.health.count_reload(false);
                    continue;
                }
            },
            None => None,
        };
        let (reply, answer) = oneshot::channel();
        if topology.send(ReloadRequest { config, reply }).is_err() {
            return;
        }
        // The topology logs and counts its own outcome.
        let applied = match answer.await {
            Ok(Ok(reloaded)) => {
                state.handles.set(reloaded.api);
                state.tokens.set(tokens);
                state.tls.set(tls);
                true
            }
            _ => false,
        };
        if applied && moved {
            if let Some(old) = &api {
                tracing::info!(address = %old.address, "the API moved; closing the old address");
            }
            api = new_api;
        }
    }
}

/// The `[api]` settings a reload replaces while the API serves: the tokens of `auth` (read
/// from their file) and the acceptor of `tls` (from its files); none without `[api]`.
pub fn api_settings(
    api: Option<&tapio_topology::config::ApiConfig>,
) -> Result<(Tokens, Option<TlsAcceptor>), String> {
    let tokens = match api.and_then(|api| api.auth.as_ref()) {
        Some(auth) => auth.load().map_err(|e| e.to_string())?,
        None => Tokens::default(),
    };
    let tls = api
        .and_then(|api| api.tls.as_ref())
        .map(tapio_api::tls_acceptor)
        .transpose()?;
    Ok((tokens, tls))
}

/// The chosen config read again and validated, every diagnostic logged; `None` if it has
/// errors.
fn validated(choice: &PipelineChoice) -> Option<Config> {
    let loaded = choice.load();
    for diagnostic in &loaded.diagnostics {
        match diagnostic.severity {
            Severity::Error => tracing::error!("{diagnostic}"),
            Severity::Warning => tracing::warn!("{diagnostic}"),
        }
    }
    if loaded.config.is_none() {
        let errors = loaded
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        tracing::error!(
            "reload refused: {errors} error(s) in the config; the running pipeline is unchanged"
        );
    }
    loaded.config
}
