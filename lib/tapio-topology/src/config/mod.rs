//! `tapio.toml` → a validated [`Config`]. Everything is checked in one pass and every problem is
//! reported at once with its file, line and key: TOML syntax, `${VAR}` interpolation, unknown
//! types and options, duplicate names, and (through [`crate::graph`]) inputs, cycles and
//! unreachable components.

pub mod interpolate;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tapio_event::metrics::ComponentKind;
use tapio_event::{ByteSize, ConfigDuration, ERRORS_OUTPUT, WhenFull};
use tapio_sinks::SinkConfig;
use tapio_sources::SourceConfig;
use tapio_transforms::TransformConfig;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diagnostic::{Diagnostic, Diagnostics, Severity, did_you_mean};
use crate::disk_buffer::{DiskOptions, SyncPolicy};

use crate::graph::{Graph, GraphNode, InputRef};
use crate::unit_tests::UnitTest;

const TOP_LEVEL_KEYS: &[&str] = &[
    "data_dir",
    "node_name",
    "shutdown_grace_period",
    "api",
    "sources",
    "transforms",
    "sinks",
    "tests",
];

/// The `[api]` section: where health, metrics and the gRPC/REST API are served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `host:port` to listen on, e.g. `"127.0.0.1:8686"` (required).
    pub address: SocketAddr,
    /// Bearer tokens every call but `/health` (and gRPC health) must present, as the `grpc`
    /// source takes them.
    #[serde(default)]
    pub auth: Option<tapio_sources::grpc::AuthConfig>,
    /// TLS on the address, for gRPC and HTTP alike (`crt_file`, `key_file`); with `ca_file`,
    /// only clients presenting a certificate that CA signed are served (mutual TLS).
    #[serde(default)]
    pub tls: Option<tapio_sources::tls::TlsConfig>,
}

/// Where a buffer keeps its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BufferType {
    /// In memory, bounded by `max_events`.
    #[default]
    Memory,
    /// On disk under `<data_dir>/buffers/<sink>/`, bounded by `max_size`; survives a crash.
    Disk,
}

fn default_max_events() -> usize {
    10_000
}

fn default_max_size() -> ByteSize {
    ByteSize(256 << 20)
}

fn default_sync_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(500))
}

/// The smallest `max_size` a disk buffer takes: one segment.
const MIN_DISK_SIZE: u64 = 64 << 10;

/// The disk buffer a memory buffer spills to with `when_full = "overflow"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OverflowOptions {
    /// Bytes the overflow's segments may take under `<data_dir>/buffers/<sink>/`.
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
    /// What a full overflow does: `"block"` stalls the upstream, `"drop_newest"` drops the
    /// batch that does not fit (counted as `buffer_full` drops).
    #[serde(default)]
    pub when_full: WhenFull,
    /// When spilled events are made durable: `"always"`, `"batch"` or `"interval"` (see the
    /// disk buffer's `sync`).
    #[serde(default)]
    pub sync: SyncPolicy,
    /// How often the `"interval"` policy syncs.
    #[serde(default = "default_sync_interval")]
    pub sync_interval: ConfigDuration,
}

impl Default for OverflowOptions {
    fn default() -> Self {
        OverflowOptions {
            max_size: default_max_size(),
            when_full: WhenFull::Block,
            sync: SyncPolicy::Interval,
            sync_interval: default_sync_interval(),
        }
    }
}

/// A sink's `buffer = { ... }` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BufferOptions {
    /// Where the buffer keeps its events: `"memory"`, or `"disk"` (an append-only log of
    /// checksummed segments under `<data_dir>/buffers/<sink>/` that survives a crash).
    #[serde(default, rename = "type")]
    pub kind: BufferType,
    /// Events a memory buffer holds before `when_full` applies; all the sink's inputs share
    /// it. At least 1.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// `"block"` stalls the upstream (backpressure); `"drop_newest"` drops the batch that does
    /// not fit, counted as `buffer_full` drops; `"overflow"` (memory buffers only) spills it to
    /// the sink's own disk buffer (`overflow`), so a slow or failed sink never stalls the
    /// sinks it shares a source with.
    #[serde(default)]
    pub when_full: WhenFull,
    /// Bytes a disk buffer's segments may take. At least 64KiB.
    #[serde(default = "default_max_size")]
    pub max_size: ByteSize,
    /// When a disk buffer makes what it wrote durable, and so acknowledges it upstream:
    /// `"always"` (`fdatasync` per batch), `"batch"` (per group of batches written together)
    /// or `"interval"` (every `sync_interval`).
    #[serde(default)]
    pub sync: SyncPolicy,
    /// How often a disk buffer with `sync = "interval"` syncs.
    #[serde(default = "default_sync_interval")]
    pub sync_interval: ConfigDuration,
    /// The disk buffer a memory buffer with `when_full = "overflow"` spills to.
    #[serde(default)]
    pub overflow: OverflowOptions,
}

impl Default for BufferOptions {
    fn default() -> Self {
        BufferOptions {
            kind: BufferType::Memory,
            max_events: default_max_events(),
            when_full: WhenFull::Block,
            max_size: default_max_size(),
            sync: SyncPolicy::Interval,
            sync_interval: default_sync_interval(),
            overflow: OverflowOptions::default(),
        }
    }
}

impl BufferOptions {
    /// The disk buffer this sink uses, if any: its own (`type = "disk"`) or its overflow.
    pub fn disk(&self) -> Option<DiskOptions> {
        match (self.kind, self.when_full) {
            (BufferType::Disk, when_full) => Some(DiskOptions {
                max_size: self.max_size,
                when_full,
                sync: self.sync,
                sync_interval: self.sync_interval.0,
            }),
            (BufferType::Memory, WhenFull::Overflow) => Some(DiskOptions {
                max_size: self.overflow.max_size,
                when_full: self.overflow.when_full,
                sync: self.overflow.sync,
                sync_interval: self.overflow.sync_interval.0,
            }),
            (BufferType::Memory, _) => None,
        }
    }
}

/// A named source.
#[derive(Debug, Clone)]
pub struct SourceComponent {
    pub name: String,
    pub config: SourceConfig,
    /// Its options as parsed (see [`Options`]).
    pub options: Options,
}

/// A named transform.
#[derive(Debug, Clone)]
pub struct TransformComponent {
    pub name: String,
    pub config: TransformConfig,
    /// Its options as parsed (see [`Options`]).
    pub options: Options,
}

/// A named sink with its buffer.
#[derive(Debug, Clone)]
pub struct SinkComponent {
    pub name: String,
    pub buffer: BufferOptions,
    pub config: SinkConfig,
    /// Its options as parsed (see [`Options`]); `buffer` is compared on its own.
    pub options: Options,
}

/// A component's `type` and options as parsed, after `${VAR}` interpolation and without
/// `inputs` and `buffer`: what a reload compares to tell a changed component from an unchanged
/// one. Comments, layout and key order do not count; a value written out that equals its
/// default does (the component is restarted, which is safe). Files an option names (a
/// script's `file`) are not read here, so a changed script file needs a changed option.
#[derive(Debug, Clone)]
pub struct Options(Option<toml::Value>);

/// Options that could not be read back (never expected) differ from everything, so such a
/// component is restarted rather than wrongly kept.
impl PartialEq for Options {
    fn eq(&self, other: &Self) -> bool {
        matches!((&self.0, &other.0), (Some(a), Some(b)) if a == b)
    }
}

/// A validated pipeline, ready to build.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub file: String,
    /// Where components keep state (checkpoints); default `/var/lib/tapio`.
    pub data_dir: PathBuf,
    /// This node's name (default: the host name), for events with no entity.
    pub node_name: String,
    /// How long a stop may take to drain every buffer before giving up (default 60 s).
    pub shutdown_grace_period: Duration,
    pub api: Option<ApiConfig>,
    pub sources: Vec<SourceComponent>,
    pub transforms: Vec<TransformComponent>,
    pub sinks: Vec<SinkComponent>,
    /// The DAG with every input resolved.
    pub graph: Graph,
    /// The config's own unit tests (`[[tests]]`), run by `tapio test`.
    pub tests: Vec<UnitTest>,
}

/// The outcome of loading: the config when it has no errors, and every diagnostic either way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Option<Config>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads and validates the config at `path`, interpolating from the process environment;
/// files its options name (a script's `file`) are found relative to `path`'s directory.
pub fn load_file(path: &Path) -> Loaded {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let dir = path.parent().unwrap_or(Path::new(""));
            tapio_event::config_dir::with_config_dir(dir, || {
                load_str(&file, &text, |name| std::env::var(name).ok())
            })
        }
        Err(error) => Loaded {
            config: None,
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                file,
                line: None,
                key: String::new(),
                message: format!("cannot read config: {error}"),
            }],
        },
    }
}

/// Validates config `text` (named `file` in messages), looking variables up with `env`.
pub fn load_str(file: &str, text: &str, env: impl Fn(&str) -> Option<String>) -> Loaded {
    let (text, missing) = interpolate::interpolate(text, env);
    let mut diags = Diagnostics::new(file, &text);
    for variable in missing {
        diags.push(
            Severity::Error,
            Some(variable.line),
            "",
            format!(
                "environment variable ${{{}}} is not set (give a default with ${{{}:-value}})",
                variable.name, variable.name
            ),
        );
    }
    let (root, syntax_errors) = DeTable::parse_recoverable(&text);
    for error in &syntax_errors {
        diags.error(
            error.span(),
            "",
            format!("TOML syntax: {}", error.message().trim()),
        );
    }
    let config = if syntax_errors.is_empty() {
        Parser { diags: &mut diags }.parse(file, root.into_inner())
    } else {
        None
    };
    let config = config.filter(|_| !diags.has_errors());
    let mut diagnostics = diags.items;
    diagnostics.sort_by_key(|d| (d.line.unwrap_or(0), d.severity));
    Loaded {
        config,
        diagnostics,
    }
}

/// What the component sections declared: every node for the graph, and the typed configs of
/// those whose options are valid.
#[derive(Default)]
struct Components {
    nodes: Vec<GraphNode>,
    sources: Vec<SourceComponent>,
    transforms: Vec<TransformComponent>,
    sinks: Vec<SinkComponent>,
}

/// One pass over the parsed document, recording problems as it goes.
struct Parser<'d, 'a> {
    diags: &'d mut Diagnostics<'a>,
}

/// A config table entry with its spans, detached from the document.
type TableEntry<'i> = (Spanned<std::borrow::Cow<'i, str>>, Spanned<DeValue<'i>>);

/// The entries of `table` in the order they appear in the file.
fn in_file_order(table: DeTable<'_>) -> Vec<TableEntry<'_>> {
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

impl Parser<'_, '_> {
    fn parse(&mut self, file: &str, root: DeTable<'_>) -> Option<Config> {
        let mut data_dir = PathBuf::from("/var/lib/tapio");
        let mut node_name = None;
        let mut grace = Duration::from_secs(60);
        let mut api = None;
        let mut tests = Vec::new();
        let mut found = Components::default();
        for (key, value) in in_file_order(root) {
            let span = key.span();
            match key.get_ref().as_ref() {
                "data_dir" => data_dir = self.typed(value, "data_dir").unwrap_or(data_dir),
                "node_name" => node_name = self.typed(value, "node_name"),
                "shutdown_grace_period" => {
                    grace = self
                        .typed::<ConfigDuration>(value, "shutdown_grace_period")
                        .map_or(grace, |d| d.0)
                }
                "api" => api = self.typed(value, "api"),
                "tests" => tests = self.typed(value, "tests").unwrap_or_default(),
                section @ ("sources" | "transforms" | "sinks") => {
                    let kind = match section {
                        "sources" => ComponentKind::Source,
                        "transforms" => ComponentKind::Transform,
                        _ => ComponentKind::Sink,
                    };
                    let Some(table) = self.table(value, section) else {
                        continue;
                    };
                    for (name, body) in in_file_order(table) {
                        self.component(kind, name, body, &mut found);
                    }
                }
                other => {
                    let hint = did_you_mean(other, TOP_LEVEL_KEYS.iter().copied())
                        .map(|k| format!("; did you mean \"{k}\"?"))
                        .unwrap_or_default();
                    self.diags
                        .error(Some(span), other, format!("unknown top-level option{hint}"));
                }
            }
        }
        self.check_duplicates(&found.nodes);
        self.check_api_components(&found.nodes, api.is_some());
        let graph = Graph::resolve(found.nodes, self.diags);
        Some(Config {
            file: file.to_owned(),
            data_dir,
            node_name: node_name.unwrap_or_else(host_name),
            shutdown_grace_period: grace,
            api,
            sources: found.sources,
            transforms: found.transforms,
            sinks: found.sinks,
            graph,
            tests,
        })
    }

    /// Checks one `[sources.x]`, `[transforms.x]` or `[sinks.x]` table and records its node.
    fn component(
        &mut self,
        kind: ComponentKind,
        name: Spanned<std::borrow::Cow<'_, str>>,
        body: Spanned<DeValue<'_>>,
        found: &mut Components,
    ) {
        let section = format!("{}s", kind.as_str());
        let key = format!("{section}.{}", name.get_ref());
        let line = self.diags.line_of(name.span().start);
        let name_text = name.get_ref().to_string();
        if name_text.is_empty()
            || !name_text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            self.diags.error(
                Some(name.span()),
                key.clone(),
                "component names may use only letters, digits, '_' and '-' ('.' separates a named output)",
            );
        }
        let body_span = body.span();
        let Some(mut table) = self.table(body, &key) else {
            return;
        };
        let type_name = match table.get("type").map(|v| (v.span(), v.get_ref().as_str())) {
            Some((_, Some(type_name))) => type_name.to_owned(),
            Some((span, None)) => {
                self.diags
                    .error(Some(span), format!("{key}.type"), "must be a string");
                return;
            }
            None => {
                let known = known_types(kind).join(", ");
                self.diags.error(
                    Some(body_span),
                    key,
                    format!("missing `type` (one of: {known})"),
                );
                return;
            }
        };
        let type_known = known_types(kind).contains(&type_name.as_str());
        if !type_known {
            self.unknown_type(kind, &key, &type_name, table.get("type").map(Spanned::span));
        }
        let inputs = match table.remove("inputs") {
            Some(inputs) if kind == ComponentKind::Source => {
                self.diags.error(
                    Some(inputs.span()),
                    format!("{key}.inputs"),
                    "sources read from the outside world and take no inputs",
                );
                Vec::new()
            }
            Some(inputs) => self.inputs(inputs, &key),
            None => Vec::new(),
        };
        let buffer_value = if kind == ComponentKind::Sink {
            table.remove("buffer")
        } else {
            None
        };
        // The options are read as `{ <type> = { ...options } }`, serde's external tagging: unlike
        // an internally tagged enum it does not buffer the table, so errors keep their spans.
        let type_entry = table.remove_entry("type").map(|(key, _)| key);
        let mut tagged = DeTable::new();
        if let Some(type_key) = type_entry {
            let tag = Spanned::new(type_key.span(), std::borrow::Cow::Owned(type_name.clone()));
            tagged.insert(tag, Spanned::new(body_span.clone(), DeValue::Table(table)));
        }
        let spanned = Spanned::new(body_span, DeValue::Table(tagged));
        let options =
            Options(toml::Value::deserialize(ValueDeserializer::from(spanned.clone())).ok());
        // Options that do not parse still leave the type's own outputs readable.
        let mut declared = declared_outputs(kind, &type_name);
        match kind {
            ComponentKind::Source if type_known => {
                if let Some(config) =
                    self.typed_under::<SourceConfig>(spanned, &key, Some(&type_name))
                {
                    declared = config.named_outputs();
                    found.sources.push(SourceComponent {
                        name: name_text.clone(),
                        config,
                        options,
                    });
                }
            }
            ComponentKind::Transform if type_known => {
                if let Some(config) =
                    self.typed_under::<TransformConfig>(spanned, &key, Some(&type_name))
                {
                    declared = config.named_outputs();
                    found.transforms.push(TransformComponent {
                        name: name_text.clone(),
                        config,
                        options,
                    });
                }
            }
            ComponentKind::Sink if type_known => {
                let buffer = buffer_value
                    .and_then(|value| self.buffer(value, &key))
                    .unwrap_or_default();
                if let Some(config) =
                    self.typed_under::<SinkConfig>(spanned, &key, Some(&type_name))
                {
                    found.sinks.push(SinkComponent {
                        name: name_text.clone(),
                        buffer,
                        config,
                        options,
                    });
                }
            }
            _ => {}
        }
        found.nodes.push(GraphNode {
            name: name_text,
            kind,
            type_name,
            named_outputs: with_errors_output(kind, declared),
            inputs,
            line,
        });
    }

    fn unknown_type(
        &mut self,
        kind: ComponentKind,
        key: &str,
        type_name: &str,
        span: Option<Range<usize>>,
    ) {
        let known = known_types(kind);
        let hint = did_you_mean(type_name, known.iter().copied())
            .map(|t| format!("did you mean \"{t}\"? "))
            .unwrap_or_default();
        let list = known.join(", ");
        self.diags.error(
            span,
            format!("{key}.type"),
            format!(
                "unknown {} type \"{type_name}\"; {hint}known types: {list}",
                kind.as_str()
            ),
        );
    }

    fn inputs(&mut self, value: Spanned<DeValue<'_>>, key: &str) -> Vec<InputRef> {
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            self.diags.error(
                Some(span),
                format!("{key}.inputs"),
                "must be a list of component names, e.g. [\"node\", \"cluster*\"]",
            );
            return Vec::new();
        };
        let mut inputs = Vec::new();
        for item in items.iter() {
            match item.get_ref().as_str() {
                Some(text) => inputs.push(InputRef {
                    text: text.to_owned(),
                    line: self.diags.line_of(item.span().start),
                }),
                None => self.diags.error(
                    Some(item.span()),
                    format!("{key}.inputs"),
                    "each input must be a string",
                ),
            }
        }
        inputs
    }

    fn buffer(&mut self, value: Spanned<DeValue<'_>>, key: &str) -> Option<BufferOptions> {
        let span = value.span();
        let buffer: BufferOptions = self.typed(value, &format!("{key}.buffer"))?;
        let mut problem = |option: &str, message: &str| {
            self.diags.error(
                Some(span.clone()),
                format!("{key}.buffer.{option}"),
                message,
            );
        };
        let mut valid = true;
        if buffer.max_events == 0 {
            problem("max_events", "must be at least 1");
            valid = false;
        }
        if buffer.kind == BufferType::Disk && buffer.when_full == WhenFull::Overflow {
            problem(
                "when_full",
                "\"overflow\" spills a memory buffer to disk; a disk buffer takes \"block\" or \"drop_newest\"",
            );
            valid = false;
        }
        if buffer.overflow.when_full == WhenFull::Overflow {
            problem(
                "overflow.when_full",
                "the overflow is the last buffer; use \"block\" or \"drop_newest\"",
            );
            valid = false;
        }
        if let Some(disk) = buffer.disk() {
            let option = if buffer.kind == BufferType::Disk {
                "max_size"
            } else {
                "overflow.max_size"
            };
            if disk.max_size.0 < MIN_DISK_SIZE {
                problem(option, "must be at least 64KiB");
                valid = false;
            }
            if disk.sync_interval.is_zero() {
                problem("sync_interval", "must be longer than 0s");
                valid = false;
            }
        }
        valid.then_some(buffer)
    }

    /// Deserializes `value` as `T`, recording serde's error at the key it is about.
    fn typed<T: DeserializeOwned>(&mut self, value: Spanned<DeValue<'_>>, key: &str) -> Option<T> {
        self.typed_under(value, key, None)
    }

    /// [`Self::typed`] for a value wrapped as `{ <tag> = value }` (a component's options under
    /// its type): error keys leave the tag out.
    fn typed_under<T: DeserializeOwned>(
        &mut self,
        value: Spanned<DeValue<'_>>,
        key: &str,
        tag: Option<&str>,
    ) -> Option<T> {
        let table = value.get_ref().as_table().cloned();
        match T::deserialize(ValueDeserializer::from(value)) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                let span = error.span();
                let field = match (&table, &span) {
                    (Some(table), Some(span)) => key_at(table, span.start),
                    _ => None,
                };
                let field = match (field, tag) {
                    (Some(field), Some(tag)) => field
                        .strip_prefix(tag)
                        .and_then(|f| f.strip_prefix('.'))
                        .map(str::to_owned),
                    (field, _) => field,
                };
                let full_key = match field {
                    Some(field) => format!("{key}.{field}"),
                    None => key.to_owned(),
                };
                let message = error.message().trim().replace("variant", "value");
                match (tapio_event::position_in_option_text(&message), &span) {
                    (Some((line, column, text)), Some(span)) => {
                        let file_line = self.diags.line_inside(span, line);
                        let message = format!("{line}:{column}: {text}");
                        self.diags
                            .push(Severity::Error, Some(file_line), full_key, message);
                    }
                    _ => self.diags.error(span, full_key, message),
                }
                None
            }
        }
    }

    fn table<'i>(&mut self, value: Spanned<DeValue<'i>>, key: &str) -> Option<DeTable<'i>> {
        let span = value.span();
        match value.into_inner() {
            DeValue::Table(table) => Some(table),
            other => {
                self.diags.error(
                    Some(span),
                    key,
                    format!("must be a table, not a {}", other.type_str()),
                );
                None
            }
        }
    }

    fn check_duplicates(&mut self, nodes: &[GraphNode]) {
        let mut seen: HashMap<&str, &GraphNode> = HashMap::new();
        for node in nodes {
            if let Some(first) = seen.get(node.name.as_str()) {
                self.diags.push(
                    Severity::Error,
                    Some(node.line),
                    format!("{}s.{}", node.kind.as_str(), node.name),
                    format!(
                        "the name \"{}\" is already used by {}s.{} on line {}; names are unique across sources, transforms and sinks",
                        node.name,
                        first.kind.as_str(),
                        first.name,
                        first.line
                    ),
                );
            } else {
                seen.insert(&node.name, node);
            }
        }
    }

    /// The API serves one store and one intake: a second `api_store` sink or `api` source is
    /// an error, and either without an `[api] address` is read by nobody (a warning).
    fn check_api_components(&mut self, nodes: &[GraphNode], has_api: bool) {
        for (kind, type_name) in [
            (ComponentKind::Sink, "api_store"),
            (ComponentKind::Source, "api"),
        ] {
            let mut of_type = nodes
                .iter()
                .filter(|n| n.kind == kind && n.type_name == type_name);
            let Some(first) = of_type.next() else {
                continue;
            };
            let key = |node: &GraphNode| format!("{}s.{}", node.kind.as_str(), node.name);
            for other in of_type {
                self.diags.push(
                    Severity::Error,
                    Some(other.line),
                    key(other),
                    format!(
                        "only one `{type_name}` {} is allowed (the API serves one), and {} on line {} is one already",
                        kind.as_str(),
                        key(first),
                        first.line
                    ),
                );
            }
            if !has_api {
                self.diags.push(
                    Severity::Warning,
                    Some(first.line),
                    key(first),
                    "the config has no `[api] address`, so no API call reaches this component"
                        .to_owned(),
                );
            }
        }
    }
}

/// The dotted key (relative to `table`) whose key or value covers byte offset `at`. Nested
/// tables are searched whatever their own span says: a `[section]` table's span is its header.
fn key_at(table: &DeTable<'_>, at: usize) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        if let Some(inner) = value
            .get_ref()
            .as_table()
            .and_then(|inner| key_at(inner, at))
        {
            return Some(format!("{}.{inner}", key.get_ref()));
        }
        (key.span().contains(&at) || value.span().contains(&at)).then(|| key.get_ref().to_string())
    })
}

fn known_types(kind: ComponentKind) -> &'static [&'static str] {
    match kind {
        ComponentKind::Source => SourceConfig::TYPES,
        ComponentKind::Transform => TransformConfig::TYPES,
        ComponentKind::Sink => SinkConfig::TYPES,
    }
}

/// The named outputs every component of `type_name` has, whatever its options.
fn declared_outputs(kind: ComponentKind, type_name: &str) -> Vec<String> {
    let declared = match kind {
        ComponentKind::Source => SourceConfig::named_outputs_of(type_name),
        ComponentKind::Transform => TransformConfig::named_outputs_of(type_name),
        ComponentKind::Sink => &[],
    };
    declared.iter().map(|&output| output.to_owned()).collect()
}

/// A component's outputs besides the default one: what it declares, and for every transform
/// an `errors` output for the events it could not process.
fn with_errors_output(kind: ComponentKind, declared: Vec<String>) -> Vec<String> {
    let errors = (kind == ComponentKind::Transform).then(|| ERRORS_OUTPUT.to_owned());
    errors.into_iter().chain(declared).collect()
}

/// The kernel's host name, the default `node_name`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests;
