//! `rhai`: runs a user's Rhai script on every event, so events can be shaped, redacted, dropped,
//! routed and multiplied from `tapio.toml` without recompiling. The script (inline `source` or
//! a `file` next to the config) is compiled once, when the config is read: a syntax error or an
//! unknown variable is a config error with the script's line and column, mapped onto the
//! config file's line for an inline script. It runs once per event with the event in the
//! variable `event` (see [`event`] for its shape) and the functions of [`functions`].
//!
//! The engine is sandboxed: Rhai's core packages (strings, maths, arrays, maps, time) plus
//! those functions; no modules, no `eval`, and `print`/`debug` go to the log. Each run is
//! bounded (`max_operations`, call and expression depth, string, array and map sizes). A script
//! that throws or hits a bound fails that event only: it goes to `<name>.errors` as the script
//! left it, with `application.error` saying what failed and where, and is counted
//! (`tapio_component_errors_total{kind="script"}`); the pipeline goes on.
//!
//! A script without `state` has nothing to carry from one event to the next, so batches run
//! in parallel (`concurrency`), sharing the compiled script, and leave in the order they came.
//! A script that uses `state` (see [`state`]) runs one event at a time, in order.

pub(crate) mod event;
pub(crate) mod functions;
pub(crate) mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rhai::{AST, Dynamic, Engine, EvalAltResult, ParseErrorType, Scope};
use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::id::IdGenerator;
use tapio_event::{
    BufferReceiver, BuildContext, ComponentConfig, ComponentError, ComponentFuture, ERRORS_OUTPUT,
    EventBatch, Secret, Transform, TransformContext, UnifiedEvent, error_in_option_text,
};

use crate::util::split::{Destination, attach_error, send_parts};
use event::ScriptEvent;
use functions::{Dropped, RunFunctions};
use state::State;

/// Why an event is missing downstream of a `rhai` transform whose script called `drop()`.
const DROPPED_BY_SCRIPT: &str = "dropped_by_script";
/// The error kind a failing script is counted under.
const SCRIPT_ERROR: &str = "script";
/// Most outputs `route()` can address: one bit each of a `u64`.
const MAX_OUTPUTS: usize = 64;
/// The variable holding a stateful script's state.
const STATE_VARIABLE: &str = "state";

/// Options of the `rhai` transform, as written.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RhaiOptions {
    /// The script, run once per event with the event in `event`, e.g.
    /// `source = '''if event.process.comm == "kworker" { drop() }'''`. Give this or `file`.
    #[serde(default)]
    source: Option<ScriptSource>,
    /// A file holding the script, relative to the config file's directory, e.g.
    /// `file = "scripts/shape.rhai"`; read once, when the config is. Give this or `source`.
    #[serde(default)]
    file: Option<ScriptFile>,
    /// Named outputs the script sends events to with `route("name")`, read as
    /// `<transform>.<name>`. A routed event leaves only on the outputs it was routed to;
    /// the others go on the default output.
    #[serde(default)]
    outputs: Vec<String>,
    /// Keys for `hmac_sha256(name, text)`, by name, e.g. `keys = { pii = "${PII_KEY}" }`, so
    /// a script can pseudonymise a field without the key appearing in it.
    #[serde(default)]
    keys: BTreeMap<String, Secret>,
    /// Most keys the `state` map of a script that uses it may hold; storing one more fails
    /// that event.
    #[serde(default = "default_max_state_entries")]
    max_state_entries: usize,
    /// Batches a script without `state` runs at once, on that many threads; the default is
    /// the number of CPU cores. A script with `state` always runs one event at a time.
    #[serde(default)]
    concurrency: Option<usize>,
    /// Rhai operations one run may take before the event fails (a runaway loop).
    #[serde(default = "default_max_operations")]
    max_operations: u64,
    /// Deepest nesting of function calls one run may reach.
    #[serde(default = "default_max_call_depth")]
    max_call_depth: usize,
    /// Deepest nesting of expressions the script may have.
    #[serde(default = "default_max_expr_depth")]
    max_expr_depth: usize,
    /// Longest string, in bytes, a run may build.
    #[serde(default = "default_max_size")]
    max_string_size: usize,
    /// Most items an array a run builds may hold, and most events one run may `emit()`.
    #[serde(default = "default_max_size")]
    max_array_size: usize,
    /// Most entries a map a run builds may hold.
    #[serde(default = "default_max_size")]
    max_map_size: usize,
}

/// A script's text, checked where it is written so that an error points at the option that
/// holds it; the engine with its bounds and functions compiles it again when the options are
/// complete.
struct CheckedScript {
    text: String,
    /// Whether the script reads or writes `state`.
    uses_state: bool,
}

/// Checks `text` for syntax and for variables it never declares (`evnt.process`), which would
/// otherwise fail every event at run time; tells whether it uses `state`.
fn check_script(text: &str) -> Result<CheckedScript, rhai::ParseError> {
    let mut syntax = Engine::new_raw();
    syntax.disable_symbol("eval").set_strict_variables(true);
    let mut scope = Scope::new();
    scope.push("event", ());
    let uses_state = match syntax.compile_with_scope(&scope, text) {
        Ok(_) => false,
        Err(error) if matches!(error.err_type(), ParseErrorType::VariableUndefined(name) if name == STATE_VARIABLE) =>
        {
            scope.push(STATE_VARIABLE, ());
            syntax.compile_with_scope(&scope, text)?;
            true
        }
        Err(error) => return Err(error),
    };
    Ok(CheckedScript {
        text: text.to_owned(),
        uses_state,
    })
}

/// An inline script: its errors are positioned so the loader can name the config file's line.
#[derive(JsonSchema)]
#[schemars(with = "String")]
struct ScriptSource(CheckedScript);

/// Written back as its text, for the generated reference (which shows an absent default).
impl serde::Serialize for ScriptSource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.text)
    }
}

impl<'de> Deserialize<'de> for ScriptSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        check_script(&text)
            .map(ScriptSource)
            .map_err(|error| serde::de::Error::custom(inline_error(&error)))
    }
}

/// A script in its own file, read when the config is; errors name the file, line and column.
#[derive(JsonSchema)]
#[schemars(with = "String")]
struct ScriptFile {
    written: PathBuf,
    script: CheckedScript,
}

/// Written back as the path the config gave, for the generated reference.
impl serde::Serialize for ScriptFile {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.written.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ScriptFile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let written = PathBuf::from(String::deserialize(deserializer)?);
        let path = tapio_event::config_dir::resolve(&written);
        let text = std::fs::read_to_string(&path).map_err(|error| {
            serde::de::Error::custom(format!("cannot read {}: {error}", path.display()))
        })?;
        let script = check_script(&text).map_err(|error| {
            serde::de::Error::custom(format!("{}:{}", path.display(), compile_error(&error)))
        })?;
        Ok(ScriptFile { written, script })
    }
}

/// A compile error of a script written inside the config (a `source`, a condition), in the
/// form the loader maps onto the config file's line.
pub(crate) fn inline_error(error: &rhai::ParseError) -> String {
    let position = error.position();
    error_in_option_text(
        position.line().unwrap_or(0),
        position.position().unwrap_or(0),
        &error.err_type().to_string(),
    )
}

/// A compile error as `line:column: message`, for errors that name the script's file.
pub(crate) fn compile_error(error: &rhai::ParseError) -> String {
    let position = error.position();
    format!(
        "{}:{}: {}",
        position.line().unwrap_or(0),
        position.position().unwrap_or(0),
        error.err_type()
    )
}

fn default_max_state_entries() -> usize {
    10_000
}

fn default_max_operations() -> u64 {
    100_000
}

fn default_max_call_depth() -> usize {
    32
}

fn default_max_expr_depth() -> usize {
    64
}

fn default_max_size() -> usize {
    65_536
}

/// Options of the `rhai` transform, checked: the script is known to compile.
#[derive(Clone, Deserialize)]
#[serde(try_from = "RhaiOptions")]
pub struct RhaiConfig {
    script: Arc<str>,
    uses_state: bool,
    outputs: Vec<String>,
    keys: BTreeMap<String, Secret>,
    limits: Arc<Limits>,
    max_state_entries: usize,
    concurrency: usize,
}

impl std::fmt::Debug for RhaiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RhaiConfig")
            .field("outputs", &self.outputs)
            .field("uses_state", &self.uses_state)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl JsonSchema for RhaiConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RhaiConfig".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        RhaiOptions::json_schema(generator)
    }
}

/// A compiled script and the engine that runs it.
struct Script {
    engine: Engine,
    ast: AST,
    outputs: Vec<String>,
}

impl TryFrom<RhaiOptions> for RhaiConfig {
    type Error = String;

    fn try_from(options: RhaiOptions) -> Result<Self, String> {
        let checked = match (options.source, options.file) {
            (Some(ScriptSource(script)), None) | (None, Some(ScriptFile { script, .. })) => script,
            (Some(_), Some(_)) => {
                return Err("give the script as `source` or `file`, not both".into());
            }
            (None, None) => {
                return Err(
                    "missing the script: give `source = \'\'\'…\'\'\'` or `file = \"script.rhai\"`"
                        .into(),
                );
            }
        };
        if options.outputs.len() > MAX_OUTPUTS {
            return Err(format!(
                "outputs: {} outputs; at most {MAX_OUTPUTS} are allowed",
                options.outputs.len()
            ));
        }
        for (index, name) in options.outputs.iter().enumerate() {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid || name == ERRORS_OUTPUT {
                return Err(format!(
                    "outputs: \"{name}\" is not an output name (letters, digits, '_' and '-'; \"errors\" is taken)"
                ));
            }
            if options.outputs[..index].contains(name) {
                return Err(format!("outputs: \"{name}\" is listed twice"));
            }
        }
        if options.concurrency == Some(0) {
            return Err("concurrency: must be at least 1".into());
        }
        let concurrency = options.concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        Ok(RhaiConfig {
            script: checked.text.into(),
            uses_state: checked.uses_state,
            outputs: options.outputs,
            keys: options.keys,
            limits: Arc::new(Limits {
                max_operations: options.max_operations,
                max_call_depth: options.max_call_depth,
                max_expr_depth: options.max_expr_depth,
                max_string_size: options.max_string_size,
                max_array_size: options.max_array_size,
                max_map_size: options.max_map_size,
            }),
            max_state_entries: options.max_state_entries,
            concurrency,
        })
    }
}

impl RhaiConfig {
    /// The script compiled in its engine: the sandbox, the run functions for transform
    /// `name` and the state type.
    fn compile(&self, name: &str) -> Result<Script, String> {
        let mut engine = bounded_engine(&self.limits);
        functions::register_run(
            &mut engine,
            RunFunctions {
                outputs: self.outputs.clone(),
                keys: self.keys.clone(),
                max_emitted: self.limits.max_array_size,
                name: name.to_owned(),
            },
        );
        state::register(&mut engine);
        let ast = engine
            .compile(&*self.script)
            .map_err(|error| format!("source: {}", compile_error(&error)))?;
        Ok(Script {
            engine,
            ast,
            outputs: self.outputs.clone(),
        })
    }
}

/// How far one run may go before it fails.
pub(crate) struct Limits {
    pub(crate) max_operations: u64,
    pub(crate) max_call_depth: usize,
    pub(crate) max_expr_depth: usize,
    pub(crate) max_string_size: usize,
    pub(crate) max_array_size: usize,
    pub(crate) max_map_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: default_max_operations(),
            max_call_depth: default_max_call_depth(),
            max_expr_depth: default_max_expr_depth(),
            max_string_size: default_max_size(),
            max_array_size: default_max_size(),
            max_map_size: default_max_size(),
        }
    }
}

/// The sandbox every script and script condition runs in: Rhai's core packages, the event
/// type and the pure functions, no `eval`, `print`/`debug` to the log, and `limits` on every
/// run.
pub(crate) fn bounded_engine(limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    engine
        .disable_symbol("eval")
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_depth)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .on_print(|text| tracing::info!(target: "tapio::rhai", "{text}"))
        .on_debug(|text, _, position| tracing::debug!(target: "tapio::rhai", %position, "{text}"));
    event::register(&mut engine);
    functions::register_pure(&mut engine);
    engine
}

/// Runs `evaluate` with `event` as the variable `event` of `scope` (and `state`, when given,
/// as `state`), and gives both back as the script left them, or says the script replaced one
/// with something else. `scope` is left empty, so one scope can serve many runs without
/// allocating each time.
pub(crate) fn with_event_in_scope<R>(
    scope: &mut Scope<'_>,
    event: &mut UnifiedEvent,
    mut state: Option<&mut State>,
    evaluate: impl FnOnce(&mut Scope<'_>) -> Result<R, String>,
) -> Result<R, String> {
    let placeholder =
        UnifiedEvent::new(tapio_event::EventType::Application, "", Default::default());
    scope.push("event", ScriptEvent(std::mem::replace(event, placeholder)));
    if let Some(state) = state.as_deref_mut() {
        scope.push(STATE_VARIABLE, std::mem::replace(state, State::new(0)));
    }
    let result = evaluate(scope);
    let mut replaced = None;
    if let Some(state) = state {
        match scope.remove::<State>(STATE_VARIABLE) {
            Some(back) => *state = back,
            None => replaced = Some("its state to `state`"),
        }
    }
    match scope.remove::<ScriptEvent>("event") {
        Some(ScriptEvent(back)) => *event = back,
        None => replaced = Some("an event to `event`"),
    }
    scope.clear();
    match replaced {
        Some(what) => Err(format!("the script assigned something other than {what}")),
        None => result,
    }
}

/// How one run ended.
enum Outcome {
    /// The event goes on: on the default output when `routed` is 0, else on those outputs.
    Kept { routed: u64 },
    /// The script called `drop()`.
    Dropped,
    /// The script failed; the message says where.
    Failed(String),
}

impl Script {
    /// Runs the script on `event`, leaving the event as the script left it and adding the
    /// events it emitted to `emitted`.
    fn run(
        &self,
        scope: &mut Scope<'_>,
        event: &mut UnifiedEvent,
        state: Option<&mut State>,
        emitted: &mut Vec<UnifiedEvent>,
    ) -> Outcome {
        let result = with_event_in_scope(scope, event, state, |scope| {
            match self.engine.run_ast_with_scope(scope, &self.ast) {
                Ok(()) => Ok(false),
                Err(error) if is_drop(&error) => Ok(true),
                Err(error) => Err(describe(&error)),
            }
        });
        let effects = functions::take_effects();
        let dropped = match result {
            Ok(dropped) => dropped,
            Err(message) => return Outcome::Failed(message),
        };
        let first_emitted = emitted.len();
        for (index, map) in effects.emitted.iter().enumerate() {
            match emitted_event(map, event, index) {
                Ok(new) => emitted.push(new),
                Err(message) => {
                    emitted.truncate(first_emitted);
                    return Outcome::Failed(message);
                }
            }
        }
        if dropped {
            Outcome::Dropped
        } else {
            Outcome::Kept {
                routed: effects.routed,
            }
        }
    }
}

/// The event a script emitted as `map`: a `UnifiedEvent` in its JSON shape, where `id`,
/// `timestamp` and `source` default to a new id derived from the triggering event's and to
/// that event's time and source, and `type` to `application`.
fn emitted_event(
    map: &Dynamic,
    trigger: &UnifiedEvent,
    index: usize,
) -> Result<UnifiedEvent, String> {
    let mut json = match event::to_json(map) {
        Ok(serde_json::Value::Object(fields)) => fields,
        Ok(_) => return Err("emit: give a map".into()),
        Err(error) => return Err(format!("emit: {error}")),
    };
    if !json.contains_key("id") {
        let index = index.to_le_bytes();
        let parts: [&[u8]; 3] = [trigger.id.as_bytes(), b"emit", &index];
        json.insert(
            "id".into(),
            IdGenerator::derived_id(&parts, trigger.timestamp).into(),
        );
    }
    if !json.contains_key("timestamp") {
        json.insert("timestamp".into(), trigger.timestamp.to_string().into());
    }
    if !json.contains_key("source") {
        json.insert("source".into(), trigger.source.clone().into());
    }
    json.entry("type").or_insert_with(|| "application".into());
    serde_json::from_value(serde_json::Value::Object(json))
        .map_err(|error| format!("emit: {error}"))
}

fn is_drop(error: &EvalAltResult) -> bool {
    match error {
        EvalAltResult::ErrorRuntime(value, _) => value.is::<Dropped>(),
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => is_drop(inner),
        _ => false,
    }
}

/// The failure with the script position it happened at.
pub(crate) fn describe(error: &EvalAltResult) -> String {
    let position = error.position();
    let message = error.to_string();
    // Rhai's own text ends with the position; give it once, in the script's words.
    let message = message
        .rsplit_once(" (line ")
        .map_or(message.as_str(), |(text, _)| text);
    match (position.line(), position.position()) {
        (Some(line), Some(column)) => format!("script line {line}, column {column}: {message}"),
        _ => message.to_owned(),
    }
}

impl ComponentConfig for RhaiConfig {
    type Component = dyn Transform;

    fn named_outputs(&self) -> Vec<String> {
        self.outputs.clone()
    }

    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Transform>, ComponentError> {
        let script = self.compile(&cx.name).map_err(ComponentError::config)?;
        Ok(Box::new(Rhai {
            script: Arc::new(script),
            name: cx.name.as_str().into(),
            state: self.uses_state.then(|| State::new(self.max_state_entries)),
            concurrency: self.concurrency,
        }))
    }
}

struct Rhai {
    script: Arc<Script>,
    name: Arc<str>,
    /// The state of a script that uses one; such a script runs in order.
    state: Option<State>,
    concurrency: usize,
}

/// The events of one batch sorted by where they go: the default output first, then each
/// declared output, then `errors`.
struct Parts {
    by_output: Vec<Vec<UnifiedEvent>>,
    dropped: usize,
}

impl Script {
    /// Runs the script on every event of a batch. Emitted events follow the event that
    /// emitted them on the default output, also when that event was dropped or routed.
    fn run_batch(
        &self,
        events: Vec<UnifiedEvent>,
        mut state: Option<&mut State>,
        name: &str,
    ) -> Parts {
        let mut by_output: Vec<Vec<UnifiedEvent>> = vec![Vec::new(); self.outputs.len() + 2];
        let errors = by_output.len() - 1;
        let mut dropped = 0;
        let mut emitted = Vec::new();
        let mut scope = Scope::new();
        for mut event in events {
            match self.run(&mut scope, &mut event, state.as_deref_mut(), &mut emitted) {
                Outcome::Kept { routed: 0 } => by_output[0].push(event),
                Outcome::Kept { routed } => {
                    let mut remaining = routed;
                    while remaining != 0 {
                        let index = remaining.trailing_zeros() as usize;
                        remaining &= remaining - 1;
                        if remaining == 0 {
                            by_output[index + 1].push(event);
                            break;
                        }
                        by_output[index + 1].push(event.clone());
                    }
                }
                Outcome::Dropped => dropped += 1,
                Outcome::Failed(message) => {
                    attach_error(&mut event, name, message);
                    by_output[errors].push(event);
                }
            }
            by_output[0].append(&mut emitted);
        }
        Parts { by_output, dropped }
    }

    /// Counts what a batch's run dropped and failed, and sends its parts on.
    async fn deliver(&self, batch: EventBatch, parts: Parts, cx: &mut TransformContext) {
        let Parts { by_output, dropped } = parts;
        if dropped > 0 {
            cx.metrics.add_dropped(DROPPED_BY_SCRIPT, dropped);
        }
        let failed = by_output.last().map_or(0, Vec::len);
        if failed > 0 {
            cx.metrics.add_errors(SCRIPT_ERROR, failed);
        }
        let mut destinations = Vec::with_capacity(by_output.len());
        destinations.push(Destination::Default);
        destinations.extend(self.outputs.iter().map(|o| Destination::Named(o)));
        destinations.push(Destination::Named(ERRORS_OUTPUT));
        send_parts(batch, destinations.into_iter().zip(by_output), cx).await;
    }
}

impl Transform for Rhai {
    fn run(
        self: Box<Self>,
        mut input: BufferReceiver,
        mut cx: TransformContext,
    ) -> ComponentFuture {
        Box::pin(async move {
            let Rhai {
                script,
                name,
                mut state,
                concurrency,
            } = *self;
            if state.is_some() || concurrency == 1 {
                while let Some(mut batch) = input.recv().await {
                    let parts = script.run_batch(batch.take_events(), state.as_mut(), &name);
                    script.deliver(batch, parts, &mut cx).await;
                }
                return Ok(());
            }
            // Batches run on the blocking pool, up to `concurrency` at once, and leave in
            // the order they came.
            let mut runs = FuturesOrdered::new();
            let mut input_open = true;
            loop {
                tokio::select! {
                    biased;
                    Some((batch, parts)) = runs.next(), if !runs.is_empty() => {
                        let parts: Result<Parts, tokio::task::JoinError> = parts;
                        let parts = parts.map_err(|error| {
                            ComponentError::runtime(format!("a script run failed: {error}"))
                        })?;
                        script.deliver(batch, parts, &mut cx).await;
                    }
                    batch = input.recv(), if input_open && runs.len() < concurrency => {
                        let Some(mut batch) = batch else {
                            input_open = false;
                            continue;
                        };
                        let events = batch.take_events();
                        let (worker, name) = (Arc::clone(&script), Arc::clone(&name));
                        let run = tokio::task::spawn_blocking(move || {
                            worker.run_batch(events, None, &name)
                        });
                        runs.push_back(async move { (batch, run.await) });
                    }
                    else => break,
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
