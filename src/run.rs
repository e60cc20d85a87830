//! The three commands. Exit codes follow sysexits: 0 success (including a graceful stop),
//! 78 invalid config, 69 a component could not start, 70 a component failed at run time,
//! 75 the drain did not finish within the grace period.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tapio_event::ErrorKind;
use tapio_sources::ebpf::Preflight;
use tapio_topology::{
    ComponentFailure, ComponentList, Config, Health, Loaded, Outcome, Severity, Topology,
};

use crate::cli::{
    BufferCheckArgs, ConfigArgs, DeadLetterCommand, GraphArgs, GraphFormat, RunArgs, TestArgs,
};

/// Success, a graceful stop included.
pub(crate) const EXIT_OK: i32 = 0;
/// A command named something that is not there (a sink, an address).
pub(crate) const EXIT_USAGE: i32 = 64;
/// `tapio test`: a test failed (the config itself was valid); `tapio buffer check`: a buffer
/// is not readable.
const EXIT_TESTS_FAILED: i32 = 1;
/// Something failed inside Tapio itself.
pub(crate) const EXIT_SOFTWARE: i32 = 70;
pub(crate) const EXIT_UNAVAILABLE: i32 = 69;
pub(crate) const EXIT_TEMPFAIL: i32 = 75;
const EXIT_CONFIG: i32 = 78;

/// The node-agent pipeline `tapio run` uses when no config is given and eBPF can load.
const DEFAULT_CONFIG: &str = include_str!("../config/examples/default.toml");
/// The built-in pipeline where eBPF cannot load: the same intelligence over the `demo` source.
const DEFAULT_DEMO_CONFIG: &str = include_str!("../config/examples/default-demo.toml");
const SYSTEM_CONFIG: &str = "/etc/tapio/tapio.toml";

/// Which pipeline runs and why, decided before anything is logged: the first line `tapio run`
/// logs names the pipeline and the reason (the quick start promises it), so nothing found or
/// done while choosing may be logged before it.
pub(crate) enum PipelineChoice {
    /// A config file, and what named it (`--config`, `$TAPIO_CONFIG`, the system default).
    File {
        path: PathBuf,
        named_by: &'static str,
    },
    /// The built-in node-agent pipeline: over the ebpf source when the probe passed, else over
    /// the demo source.
    BuiltIn(Preflight),
}

impl PipelineChoice {
    /// `--config`, then `$TAPIO_CONFIG` (`env_config`), then `system_config` when it exists,
    /// then the built-in pipeline (probing eBPF only then).
    fn choose(args: &ConfigArgs, env_config: Option<OsString>, system_config: &Path) -> Self {
        if let Some(path) = &args.config {
            return PipelineChoice::File {
                path: path.clone(),
                named_by: "given with --config",
            };
        }
        if let Some(path) = env_config.filter(|p| !p.is_empty()) {
            return PipelineChoice::File {
                path: path.into(),
                named_by: "named by $TAPIO_CONFIG (no --config given)",
            };
        }
        if system_config.exists() {
            return PipelineChoice::File {
                path: system_config.into(),
                named_by: "the system default (no --config or $TAPIO_CONFIG given)",
            };
        }
        PipelineChoice::BuiltIn(tapio_sources::ebpf::probe())
    }

    /// The line that says which pipeline runs and why.
    fn announcement(&self) -> String {
        match self {
            PipelineChoice::File { path, named_by } => {
                format!("running the pipeline in {}, {named_by}", path.display())
            }
            PipelineChoice::BuiltIn(Preflight { verdict: Ok(()), .. }) => {
                "no config given; using the built-in node-agent pipeline (config/examples/default.toml) with the ebpf source: this node can load eBPF programs".into()
            }
            PipelineChoice::BuiltIn(Preflight {
                verdict: Err(why), ..
            }) => format!(
                "no config given; using the built-in node-agent pipeline with the demo source (config/examples/default-demo.toml), because the ebpf source cannot load here: {why}"
            ),
        }
    }

    /// What choosing changed on the node (the probe may mount tracefs), to log after the
    /// announcement.
    fn side_effect(&self) -> Option<String> {
        match self {
            PipelineChoice::File { .. } => None,
            PipelineChoice::BuiltIn(preflight) => preflight.side_effect(),
        }
    }

    /// The lines `tapio run` logs about its choice, in order: the announcement first.
    fn log_lines(&self) -> Vec<String> {
        std::iter::once(self.announcement())
            .chain(self.side_effect())
            .collect()
    }

    /// The config file, when the pipeline comes from one (what `--watch-config` watches).
    pub(crate) fn file(&self) -> Option<&Path> {
        match self {
            PipelineChoice::File { path, .. } => Some(path),
            PipelineChoice::BuiltIn(_) => None,
        }
    }

    /// Reads the chosen config (a file, or the built-in text matching the probe's verdict).
    pub(crate) fn load(&self) -> Loaded {
        match self {
            PipelineChoice::File { path, .. } => tapio_topology::load_file(path),
            PipelineChoice::BuiltIn(preflight) => {
                let (name, text) = match preflight.verdict {
                    Ok(()) => ("<built-in default.toml>", DEFAULT_CONFIG),
                    Err(_) => ("<built-in default-demo.toml>", DEFAULT_DEMO_CONFIG),
                };
                tapio_topology::load_str(name, text, |name| std::env::var(name).ok())
            }
        }
    }
}

/// Chooses the config and loads and validates it, printing every diagnostic; the choice (for
/// reloads), and the config unless it has errors. With `announce` (`tapio run`) the first log
/// line says which pipeline runs and why; without it only what choosing changed on the node is
/// logged.
fn choose_and_load(args: &ConfigArgs, announce: bool) -> (PipelineChoice, Option<Config>) {
    let choice = PipelineChoice::choose(
        args,
        std::env::var_os("TAPIO_CONFIG"),
        Path::new(SYSTEM_CONFIG),
    );
    let lines = if announce {
        choice.log_lines()
    } else {
        choice.side_effect().into_iter().collect()
    };
    for line in lines {
        tracing::info!("{line}");
    }
    let loaded = choice.load();
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
    (choice, loaded.config)
}

/// Loads and validates the config, printing every diagnostic; `None` if it has errors.
fn load(args: &ConfigArgs, announce: bool) -> Option<Config> {
    choose_and_load(args, announce).1
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

/// `tapio test`: every config's `[[tests]]`, with a line per test and the failures in full.
pub fn test(args: &TestArgs) -> i32 {
    let mut configs = Vec::new();
    for path in &args.configs {
        match load(
            &ConfigArgs {
                config: Some(path.clone()),
            },
            false,
        ) {
            Some(config) => configs.push(config),
            None => return EXIT_CONFIG,
        }
    }
    let (mut passed, mut failed) = (0, 0);
    let ran = block_on(async {
        for config in &configs {
            if config.tests.is_empty() {
                println!("{}: no [[tests]]", config.file);
                continue;
            }
            println!("running {} tests from {}", config.tests.len(), config.file);
            for result in tapio_topology::unit_tests::run_tests(config).await {
                if result.failures.is_empty() {
                    passed += 1;
                    println!("test {} ... ok", result.name);
                } else {
                    failed += 1;
                    println!("test {} ... FAILED", result.name);
                    for failure in &result.failures {
                        println!("  {failure}");
                    }
                }
            }
        }
    });
    if let Err(code) = ran {
        return code;
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        EXIT_OK
    } else {
        EXIT_TESTS_FAILED
    }
}

/// `tapio dead-letter list` and `tapio dead-letter replay <sink>`.
pub fn dead_letter(command: &DeadLetterCommand) -> i32 {
    use tapio_topology::dead_letters::{self, ReplayError};
    let config_args = match command {
        DeadLetterCommand::List(args) => args,
        DeadLetterCommand::Replay(args) => &args.config,
    };
    let Some(config) = load(config_args, false) else {
        return EXIT_CONFIG;
    };
    match command {
        DeadLetterCommand::List(_) => match dead_letters::list(&config) {
            Ok(files) if files.is_empty() => {
                println!("no dead letters under {}", config.data_dir.display());
                EXIT_OK
            }
            Ok(files) => {
                println!("{:<24} {:>10} {:>12}  file", "sink", "events", "bytes");
                for file in files {
                    let stale = if file.configured {
                        ""
                    } else {
                        " (no such sink in the config)"
                    };
                    println!(
                        "{:<24} {:>10} {:>12}  {}{stale}",
                        file.sink,
                        file.events,
                        file.bytes,
                        file.path.display()
                    );
                }
                EXIT_OK
            }
            Err(error) => {
                eprintln!(
                    "cannot read the dead letters under {}: {error}",
                    config.data_dir.display()
                );
                EXIT_UNAVAILABLE
            }
        },
        DeadLetterCommand::Replay(args) => {
            let replayed = match block_on(dead_letters::replay(&config, &args.sink, stop_signal()))
            {
                Ok(replayed) => replayed,
                Err(code) => return code,
            };
            match replayed {
                Ok(report) => {
                    println!(
                        "sinks.{}: replayed {} events, {} rejected again and {} unreadable lines kept in {}",
                        args.sink,
                        report.replayed,
                        report.rejected_again,
                        report.unreadable,
                        report.path.display()
                    );
                    EXIT_OK
                }
                Err(error) => {
                    eprintln!("sinks.{}: {error}", args.sink);
                    match error {
                        ReplayError::UnknownSink { .. } => EXIT_USAGE,
                        ReplayError::Io(..) => EXIT_UNAVAILABLE,
                        ReplayError::Sink(failures) => exit_code(&failures),
                        ReplayError::Unfinished(_) => EXIT_TEMPFAIL,
                    }
                }
            }
        }
    }
}

/// `tapio buffer check <data_dir>`: one line per sink's disk buffer, then its damage.
pub fn buffer_check(args: &BufferCheckArgs) -> i32 {
    let reports = match tapio_topology::disk_buffer::segment::check(&args.data_dir) {
        Ok(reports) => reports,
        Err(error) => {
            eprintln!(
                "cannot read the disk buffers under {}: {error}",
                args.data_dir.display()
            );
            return EXIT_UNAVAILABLE;
        }
    };
    if reports.is_empty() {
        println!("no disk buffers under {}", args.data_dir.display());
        return EXIT_OK;
    }
    println!(
        "{:<24} {:>9} {:>12} {:>14} {:>12}  state",
        "sink", "segments", "events", "bytes", "quarantined"
    );
    let mut unreadable = 0;
    for report in &reports {
        let state = if report.unreadable.is_empty() {
            "readable"
        } else {
            "UNREADABLE"
        };
        println!(
            "{:<24} {:>9} {:>12} {:>14} {:>12}  {state}",
            report.sink, report.segments, report.events, report.bytes, report.quarantined_bytes
        );
        for damage in &report.unreadable {
            println!("  {damage}");
        }
        unreadable += report.unreadable.len();
    }
    if unreadable == 0 {
        EXIT_OK
    } else {
        EXIT_TESTS_FAILED
    }
}

/// `tapio run`.
pub fn run(args: &RunArgs) -> i32 {
    let (choice, Some(config)) = choose_and_load(&args.config, true) else {
        return EXIT_CONFIG;
    };
    block_on(run_pipeline(config, choice, args)).unwrap_or_else(|code| code)
}

/// Runs `work` to completion on a multi-threaded runtime; `Err` is the exit code when no
/// runtime can be started.
fn block_on<T>(work: impl Future<Output = T>) -> Result<T, i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            tracing::error!(%error, "cannot start the async runtime");
            EXIT_UNAVAILABLE
        })?;
    let result = runtime.block_on(work);
    // A write blocked on a stuck destination (a full pipe) holds a blocking thread forever;
    // the work has already drained or timed out, so do not wait for it.
    runtime.shutdown_background();
    Ok(result)
}

async fn run_pipeline(config: Config, choice: PipelineChoice, args: &RunArgs) -> i32 {
    // Listening before anything starts: SIGHUP's default action would end the process.
    let triggers = match crate::reload::Triggers::listen(&choice, args.watch_config) {
        Ok(triggers) => triggers,
        Err(error) => {
            tracing::error!("cannot listen for reload requests: {error}");
            return EXIT_UNAVAILABLE;
        }
    };
    let topology = match Topology::build(&config) {
        Ok(topology) => topology,
        Err(problems) => {
            for problem in &problems {
                tracing::error!("{problem}");
            }
            return exit_code(&problems);
        }
    };
    let (tokens, tls) = match crate::reload::api_settings(config.api.as_ref()) {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!("api: {error}");
            return EXIT_CONFIG;
        }
    };
    let state = tapio_api::ApiState {
        health: Arc::new(Health::default()),
        metrics: Arc::new(ComponentList::new(topology.metrics())),
        handles: tapio_api::Reloadable::new(topology.api_handles()),
        tokens: tapio_api::Reloadable::new(tokens),
        tls: tapio_api::Reloadable::new(tls),
    };
    let api = match &config.api {
        Some(api) => match crate::reload::ApiServer::start(api.address, &state).await {
            Ok(server) => Some(server),
            Err(error) => {
                tracing::error!(address = %api.address, %error, "cannot bind the API address");
                return EXIT_UNAVAILABLE;
            }
        },
        None => None,
    };
    let (requests, reloads) = tokio::sync::mpsc::unbounded_channel();
    let reloader = tokio::spawn(crate::reload::serve(
        triggers,
        choice,
        api,
        state.clone(),
        requests,
    ));
    let outcome = topology
        .run_reloading(stop_signal(), reloads, &state.health, &state.metrics)
        .await;
    reloader.abort();
    if args.summary {
        let snapshots: Vec<_> = state.metrics.get().iter().map(|m| m.snapshot()).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn announced(choice: &PipelineChoice) -> Vec<String> {
        let lines = choice.log_lines();
        assert!(lines[0].contains("pipeline"), "{lines:?}");
        lines
    }

    #[test]
    fn a_config_file_is_announced_with_what_named_it() {
        let given = PathBuf::from("given.toml");
        let from_env = OsString::from("env.toml");
        let system = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let flag = ConfigArgs {
            config: Some(given.clone()),
        };
        let none = ConfigArgs { config: None };
        for (args, env, expected) in [
            (
                &flag,
                Some(from_env.clone()),
                "given.toml, given with --config",
            ),
            (&none, Some(from_env), "env.toml, named by $TAPIO_CONFIG"),
            (
                &none,
                Some(OsString::new()),
                "Cargo.toml, the system default",
            ),
            (&none, None, "Cargo.toml, the system default"),
        ] {
            let lines = announced(&PipelineChoice::choose(args, env, &system));
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(
                lines[0].starts_with("running the pipeline in "),
                "{lines:?}"
            );
            assert!(lines[0].contains(expected), "{lines:?}");
        }
    }

    #[test]
    fn the_built_in_pipeline_says_which_source_and_why_before_what_the_probe_changed() {
        let mounted = PipelineChoice::BuiltIn(Preflight {
            verdict: Ok(()),
            mounted_tracefs: Some("/sys/kernel/tracing"),
        });
        let lines = announced(&mounted);
        assert!(lines[0].contains("with the ebpf source"), "{lines:?}");
        assert!(
            lines[1].contains("mounted tracefs at /sys/kernel/tracing"),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 2);

        let refused = PipelineChoice::BuiltIn(Preflight {
            verdict: Err("the kernel has no tracepoint sched/sched_process_exec".into()),
            mounted_tracefs: Some("/sys/kernel/tracing"),
        });
        let lines = announced(&refused);
        assert!(
            lines[0].contains("with the demo source")
                && lines[0].contains("cannot load here: the kernel has no tracepoint"),
            "{lines:?}"
        );
        assert!(lines[1].contains("mounted tracefs"), "{lines:?}");

        let untouched = PipelineChoice::BuiltIn(Preflight {
            verdict: Err("needs root".into()),
            mounted_tracefs: None,
        });
        assert_eq!(announced(&untouched).len(), 1);
    }
}
