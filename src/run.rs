//! The three commands. Exit codes follow sysexits: 0 success (including a graceful stop),
//! 78 invalid config, 69 a component could not start, 70 a component failed at run time,
//! 75 the drain did not finish within the grace period.

use std::path::PathBuf;
use std::sync::Arc;

use tapio_event::ErrorKind;
use tapio_topology::{ComponentFailure, Config, Health, Loaded, Outcome, Severity, Topology};

use crate::cli::{ConfigArgs, GraphArgs, GraphFormat, RunArgs};

const EXIT_OK: i32 = 0;
const EXIT_SOFTWARE: i32 = 70;
const EXIT_UNAVAILABLE: i32 = 69;
const EXIT_TEMPFAIL: i32 = 75;
const EXIT_CONFIG: i32 = 78;

/// The node-agent pipeline `tapio run` uses when no config is given and eBPF can load.
const DEFAULT_CONFIG: &str = include_str!("../config/examples/default.toml");
/// The built-in pipeline where eBPF cannot load: the same intelligence over the `demo` source.
const DEFAULT_DEMO_CONFIG: &str = include_str!("../config/examples/default-demo.toml");
const SYSTEM_CONFIG: &str = "/etc/tapio/tapio.toml";

/// Where the config came from, as the first log line says.
enum ConfigSource {
    File(PathBuf, &'static str),
    BuiltIn,
}

fn config_source(args: &ConfigArgs) -> ConfigSource {
    if let Some(path) = &args.config {
        return ConfigSource::File(path.clone(), "--config");
    }
    if let Some(path) = std::env::var_os("TAPIO_CONFIG").filter(|p| !p.is_empty()) {
        return ConfigSource::File(path.into(), "$TAPIO_CONFIG");
    }
    if std::path::Path::new(SYSTEM_CONFIG).exists() {
        return ConfigSource::File(SYSTEM_CONFIG.into(), "the system default");
    }
    ConfigSource::BuiltIn
}

/// Loads and validates the config, printing every diagnostic; `None` if it has errors.
fn load(args: &ConfigArgs, announce: bool) -> Option<Config> {
    let loaded: Loaded = match config_source(args) {
        ConfigSource::File(path, why) => {
            if announce {
                tracing::info!(config = %path.display(), "using config from {why}");
            }
            tapio_topology::load_file(&path)
        }
        ConfigSource::BuiltIn => {
            let (name, text) = match tapio_sources::ebpf::probe() {
                Ok(()) => {
                    if announce {
                        tracing::info!(
                            "no config given; using the built-in node-agent pipeline (config/examples/default.toml) with the ebpf source: this node can load eBPF programs"
                        );
                    }
                    ("<built-in default.toml>", DEFAULT_CONFIG)
                }
                Err(why) => {
                    if announce {
                        tracing::info!(
                            "no config given; using the built-in node-agent pipeline with the demo source (config/examples/default-demo.toml), because the ebpf source cannot load here: {why}"
                        );
                    }
                    ("<built-in default-demo.toml>", DEFAULT_DEMO_CONFIG)
                }
            };
            tapio_topology::load_str(name, text, |name| std::env::var(name).ok())
        }
    };
    for diagnostic in &loaded.diagnostics {
        eprintln!("{diagnostic}");
    }
    let errors = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if errors > 0 {
        eprintln!("{errors} error(s) in the config");
    }
    loaded.config
}

/// `tapio validate`.
pub fn validate(args: &ConfigArgs) -> i32 {
    match load(args, false) {
        Some(config) => {
            println!(
                "{}: valid ({} sources, {} transforms, {} sinks)",
                config.file,
                config.sources.len(),
                config.transforms.len(),
                config.sinks.len()
            );
            EXIT_OK
        }
        None => EXIT_CONFIG,
    }
}

/// `tapio graph`.
pub fn graph(args: &GraphArgs) -> i32 {
    match load(&args.config, false) {
        Some(config) => {
            let text = match args.format {
                GraphFormat::Dot => config.graph.to_dot(),
                GraphFormat::Mermaid => config.graph.to_mermaid(),
            };
            print!("{text}");
            EXIT_OK
        }
        None => EXIT_CONFIG,
    }
}

/// `tapio run`.
pub fn run(args: &RunArgs) -> i32 {
    let Some(config) = load(&args.config, true) else {
        return EXIT_CONFIG;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return EXIT_UNAVAILABLE;
        }
    };
    let code = runtime.block_on(run_pipeline(&config, args.summary));
    // A write blocked on a stuck destination (a full pipe) holds a blocking thread forever;
    // the pipeline has already drained or timed out, so do not wait for it.
    runtime.shutdown_background();
    code
}

async fn run_pipeline(config: &Config, summary: bool) -> i32 {
    let topology = match Topology::build(config) {
        Ok(topology) => topology,
        Err(problems) => {
            for problem in &problems {
                tracing::error!("{problem}");
            }
            return exit_code(&problems);
        }
    };
    let health = Arc::new(Health::default());
    let metrics = Arc::new(topology.metrics());
    if let Some(api) = &config.api {
        match tapio_api::Api::bind(api.address).await {
            Ok(server) => {
                tracing::info!(address = %api.address, "serving /health and /metrics");
                tokio::spawn(server.serve(tapio_api::ApiState {
                    health: Arc::clone(&health),
                    metrics: Arc::clone(&metrics),
                }));
            }
            Err(error) => {
                tracing::error!(address = %api.address, %error, "cannot bind the API address");
                return EXIT_UNAVAILABLE;
            }
        }
    }
    let outcome = topology.run(stop_signal(), &health).await;
    if summary {
        let snapshots: Vec<_> = metrics.iter().map(|m| m.snapshot()).collect();
        eprint!("{}", crate::summary::table(&snapshots));
    }
    match outcome {
        Outcome::Completed => {
            tracing::info!("pipeline finished; every buffer drained");
            EXIT_OK
        }
        Outcome::Failed(failures) => exit_code(&failures),
        Outcome::DrainTimedOut(_) => EXIT_TEMPFAIL,
    }
}

/// The exit code for components that failed: a config mistake first (the user must fix the
/// file before anything else matters), then a failure while running, then an environment that
/// is not ready.
fn exit_code(failures: &[ComponentFailure]) -> i32 {
    let has = |kind| failures.iter().any(|f| f.error.kind() == kind);
    if has(ErrorKind::Config) {
        EXIT_CONFIG
    } else if has(ErrorKind::Runtime) {
        EXIT_SOFTWARE
    } else {
        EXIT_UNAVAILABLE
    }
}

/// Resolves on the first SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot listen for SIGINT/SIGTERM; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
}
