//! Command-line surface (clap) and logging set-up.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Tapio: an observability pipeline. One tapio.toml declares sources, transforms and sinks.
#[derive(Debug, Parser)]
#[command(name = "tapio", version, about, propagate_version = true)]
pub struct Cli {
    /// Log line format on standard error. The level comes from TAPIO_LOG (e.g. `debug`,
    /// `info,tapio_sources=debug`; default `info`).
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a pipeline until its sources finish or SIGINT/SIGTERM, then drain and exit.
    Run(RunArgs),
    /// Check a config and print every problem at once (exit 78 if any is an error).
    Validate(ConfigArgs),
    /// Print the pipeline's DAG as Graphviz DOT or Mermaid.
    Graph(GraphArgs),
    /// Run the unit tests (`[[tests]]`) of config files on their transforms alone; exit 1 if
    /// any fails.
    Test(TestArgs),
    /// Count or send again the events sinks rejected for good
    /// (`<data_dir>/dead_letter/<sink>.ndjson`).
    #[command(subcommand)]
    DeadLetter(DeadLetterCommand),
    /// Inspect the sinks' disk buffers (`<data_dir>/buffers/<sink>/`) offline.
    #[command(subcommand)]
    Buffer(BufferCommand),
    /// Print the live events crossing components of a running Tapio (through its API), e.g.
    /// `tapio tap 'enrich*' --limit 20 --format text`. Costs the pipeline nothing while
    /// nobody taps; a tap that reads too slowly is dropped (exit 75), never slowing it.
    Tap(TapArgs),
    /// Watch a running Tapio live in the terminal: each component's events/s in and out,
    /// errors, discards and buffer fill, read from its API (`/v1/components`) every interval.
    Top(TopArgs),
}

/// Where a running Tapio's API is.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The running Tapio's `[api] address` (`host:port` or `http://host:port`).
    #[arg(long, env = "TAPIO_API_ADDRESS", default_value = "127.0.0.1:8686")]
    pub address: String,
    /// Bearer token, when `[api] auth` requires one.
    #[arg(long, env = "TAPIO_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// With an `https://` address: PEM CA certificates to trust instead of the web's roots.
    #[arg(long, env = "TAPIO_API_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// With an `https://` address: PEM client certificate, for an API whose `[api] tls` has a
    /// `ca_file` (mutual TLS); needs `--key-file`.
    #[arg(long, env = "TAPIO_API_CRT_FILE", requires = "key_file")]
    pub crt_file: Option<PathBuf>,
    /// PEM private key of `--crt-file`.
    #[arg(long, env = "TAPIO_API_KEY_FILE", requires = "crt_file")]
    pub key_file: Option<PathBuf>,
}

impl ApiArgs {
    /// The client these options describe.
    pub fn client(&self) -> Result<tapio_api::client::ApiClient, tapio_api::client::ClientError> {
        let client = tapio_api::client::ApiClient::new(&self.address, self.token.clone())?;
        if self.ca_file.is_none() && self.crt_file.is_none() {
            return Ok(client);
        }
        client.with_tls(&tapio_sinks::tls::TlsConfig {
            ca_file: self.ca_file.clone(),
            crt_file: self.crt_file.clone(),
            key_file: self.key_file.clone(),
        })
    }
}

#[derive(Debug, Args)]
pub struct TapArgs {
    /// Component name or glob (`*`, `?`, `[a-z]`), e.g. `enrich`, `kafka_*`, `*`.
    pub component: String,
    /// Tap what the components send (the default).
    #[arg(long, conflicts_with = "inputs_of")]
    pub outputs_of: bool,
    /// Tap what the components receive, from everything upstream of them.
    #[arg(long)]
    pub inputs_of: bool,
    /// Stop after this many events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// `json`: each event's wire JSON on a line (what a `stdin` source reads); `text`: the
    /// component, then the event as one readable line.
    #[arg(long, value_enum, default_value = "json")]
    pub format: TapFormat,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// How `tapio tap` prints events.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TapFormat {
    Json,
    Text,
}

/// Where `tapio top` reads from and how often.
#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// How often to read the counters and redraw (`1s`, `500ms`, ...).
    #[arg(long, default_value = "1s", value_parser = refresh_interval)]
    pub interval: Duration,
}

/// A duration as the config writes one, more than zero: a zero interval would read the API
/// in a busy loop.
fn refresh_interval(text: &str) -> Result<Duration, String> {
    let interval = tapio_event::ConfigDuration::parse(text)?.0;
    if interval.is_zero() {
        return Err("the interval must be more than zero".to_owned());
    }
    Ok(interval)
}

/// What to do with disk buffers.
#[derive(Debug, Subcommand)]
pub enum BufferCommand {
    /// Read every disk buffer under a data directory through, checking every record's
    /// checksum; print per-sink events, sizes and damage. Exit 0 when every buffer is readable
    /// (tails a start already quarantined included), 1 when something is not.
    Check(BufferCheckArgs),
}

#[derive(Debug, Args)]
pub struct BufferCheckArgs {
    /// The pipeline's `data_dir`.
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Config files whose tests to run.
    #[arg(required = true)]
    pub configs: Vec<PathBuf>,
}

/// What to do with dead letters.
#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// Count each sink's dead-letter events.
    List(ConfigArgs),
    /// Send a sink's dead-letter events through that sink again, once the cause is fixed; what
    /// it rejects again goes back to its dead-letter file.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The sink's name in the config.
    pub sink: String,
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Where the config comes from.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Config file. Default: $TAPIO_CONFIG, then /etc/tapio/tapio.toml, then the built-in
    /// node-agent pipeline.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Print a table of per-component counters on exit.
    #[arg(long)]
    pub summary: bool,
    /// Reload the config whenever its file changes, as on SIGHUP: the new file is validated
    /// first and only the components that changed are restarted.
    #[arg(long)]
    pub watch_config: bool,
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "dot")]
    pub format: GraphFormat,
}

/// What `tapio graph` prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

/// Logs to standard error, filtered by TAPIO_LOG.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let spec = std::env::var("TAPIO_LOG").unwrap_or_default();
    let filter = spec.parse::<Targets>().unwrap_or_else(|_| {
        eprintln!("TAPIO_LOG={spec:?} is not a valid filter; using `info`");
        Targets::new().with_default(LevelFilter::INFO)
    });
    let filter = if spec.is_empty() {
        Targets::new().with_default(LevelFilter::INFO)
    } else {
        filter
    };
    // kube-client logs every failed request as an error of its own; the kubernetes source
    // reports each failure once, saying what it means. TAPIO_LOG=kube_client=… brings it back.
    let filter = if spec.contains("kube_client") {
        filter
    } else {
        filter.with_target("kube_client::client::builder", LevelFilter::OFF)
    };
    let registry = tracing_subscriber::registry().with(filter);
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    match format {
        LogFormat::Text => registry.with(fmt).init(),
        LogFormat::Json => registry.with(fmt.json()).init(),
    }
}
