//! `rhai`: runs a user's Rhai script on every event, so events can be shaped, redacted, dropped
//! and routed from `tapio.toml` without recompiling. The script is compiled once, when the
//! config is read (a syntax error is a config error with the script's line and column), and
//! run once per event with the event in the variable `event` (see [`event`] for its shape).
//!
//! The engine is sandboxed: Rhai's core packages (strings, maths, arrays, maps, time) plus
//! `drop()` and `route("name")`; no modules, no `eval`, and `print`/`debug` go to the log. Each
//! run is bounded (`max_operations`, call and expression depth, string, array and map sizes).
//! A script that throws or hits a bound fails that event only: it goes to `<name>.errors` as
//! the script left it, with `application.error` saying what failed and where, and is counted
//! (`tapio_component_errors_total{kind="script"}`); the pipeline goes on.

pub(crate) mod event;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rhai::{AST, Dynamic, Engine, EvalAltResult, ImmutableString, Position, Scope};
use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::{
    BufferReceiver, BuildContext, ComponentConfig, ComponentError, ComponentFuture, ERRORS_OUTPUT,
    Transform, TransformContext, UnifiedEvent,
};

use crate::util::split::{Destination, attach_error, send_parts};
use event::ScriptEvent;

/// Why an event is missing downstream of a `rhai` transform whose script called `drop()`.
const DROPPED_BY_SCRIPT: &str = "dropped_by_script";
/// The error kind a failing script is counted under.
const SCRIPT_ERROR: &str = "script";
/// Most outputs `route()` can address: one bit each of a `u64`.
const MAX_OUTPUTS: usize = 64;

/// Options of the `rhai` transform, as written.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RhaiOptions {
    /// The script, run once per event with the event in `event`, e.g.
    /// `source = '''if event.process.comm == "kworker" { drop() }'''`.
    source: ScriptSource,
    /// Named outputs the script sends events to with `route("name")`, read as
    /// `<transform>.<name>`. A routed event leaves only on the outputs it was routed to;
    /// the others go on the default output.
    #[serde(default)]
    outputs: Vec<String>,
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
    /// Most items an array a run builds may hold.
    #[serde(default = "default_max_size")]
    max_array_size: usize,
    /// Most entries a map a run builds may hold.
    #[serde(default = "default_max_size")]
    max_map_size: usize,
}

/// A script's text, checked for syntax where it is written so that an error points at the
/// `source` option; the engine with its bounds compiles it again when the options are complete.
#[derive(JsonSchema)]
#[schemars(with = "String")]
struct ScriptSource(String);

impl<'de> Deserialize<'de> for ScriptSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut syntax = Engine::new_raw();
        syntax.disable_symbol("eval");
        syntax
            .compile(&text)
            .map_err(|error| serde::de::Error::custom(compile_error(&error)))?;
        Ok(ScriptSource(text))
    }
}

/// A compile error with its position in the script.
pub(crate) fn compile_error(error: &rhai::ParseError) -> String {
    let position = error.position();
    format!(
        "script line {}, column {}: {}",
        position.line().unwrap_or(0),
        position.position().unwrap_or(0),
        error.err_type()
    )
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

/// Options of the `rhai` transform, with the script compiled.
#[derive(Clone, Deserialize)]
#[serde(try_from = "RhaiOptions")]
pub struct RhaiConfig {
    script: Arc<Script>,
}

impl std::fmt::Debug for RhaiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RhaiConfig")
            .field("outputs", &self.script.outputs)
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
    /// The outputs the current run routed to, one bit each. Runs of one transform happen one
    /// at a time, so one word per transform is enough.
    routed: Arc<AtomicU64>,
}

/// What `drop()` throws: it ends the run, and the runner tells it from a failure.
#[derive(Debug, Clone)]
struct Dropped;

impl TryFrom<RhaiOptions> for RhaiConfig {
    type Error = String;

    fn try_from(options: RhaiOptions) -> Result<Self, String> {
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
        let routed = Arc::new(AtomicU64::new(0));
        let engine = sandboxed_engine(&options, Arc::clone(&routed));
        let ast = engine
            .compile(&options.source.0)
            .map_err(|error| format!("source: {}", compile_error(&error)))?;
        Ok(RhaiConfig {
            script: Arc::new(Script {
                engine,
                ast,
                outputs: options.outputs,
                routed,
            }),
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

/// The sandbox every script and script condition runs in: Rhai's core packages and the event
/// type, no `eval`, `print`/`debug` to the log, and `limits` on every run.
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
    engine
}

/// Runs `evaluate` with `event` as the variable `event` of a fresh scope, and gives the event
/// back as the script left it, or says the script replaced it.
pub(crate) fn with_event_in_scope<R>(
    event: &mut UnifiedEvent,
    evaluate: impl FnOnce(&mut Scope<'_>) -> Result<R, String>,
) -> Result<R, String> {
    let mut scope = Scope::new();
    let placeholder =
        UnifiedEvent::new(tapio_event::EventType::Application, "", Default::default());
    scope.push("event", ScriptEvent(std::mem::replace(event, placeholder)));
    let result = evaluate(&mut scope);
    match scope.remove::<ScriptEvent>("event") {
        Some(ScriptEvent(back)) => *event = back,
        None => return Err("the script assigned something other than an event to `event`".into()),
    }
    result
}

/// The engine a script runs in: the sandbox plus `drop` and `route`.
fn sandboxed_engine(options: &RhaiOptions, routed: Arc<AtomicU64>) -> Engine {
    let mut engine = bounded_engine(&Limits {
        max_operations: options.max_operations,
        max_call_depth: options.max_call_depth,
        max_expr_depth: options.max_expr_depth,
        max_string_size: options.max_string_size,
        max_array_size: options.max_array_size,
        max_map_size: options.max_map_size,
    });
    engine.register_fn("drop", || -> Result<(), Box<EvalAltResult>> {
        Err(Box::new(EvalAltResult::ErrorRuntime(
            Dynamic::from(Dropped),
            Position::NONE,
        )))
    });
    let outputs = options.outputs.clone();
    engine.register_fn(
        "route",
        move |name: ImmutableString| -> Result<(), Box<EvalAltResult>> {
            match outputs.iter().position(|output| output == name.as_str()) {
                Some(index) => {
                    routed.fetch_or(1 << index, Ordering::Relaxed);
                    Ok(())
                }
                None => Err(format!(
                    "route(\"{name}\"): no such output; declare it in `outputs` (declared: {})",
                    outputs.join(", ")
                )
                .into()),
            }
        },
    );
    engine
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
    /// Runs the script on `event`, leaving the event as the script left it.
    fn run(&self, event: &mut UnifiedEvent) -> Outcome {
        self.routed.store(0, Ordering::Relaxed);
        let result = with_event_in_scope(event, |scope| {
            match self.engine.run_ast_with_scope(scope, &self.ast) {
                Ok(()) => Ok(false),
                Err(error) if is_drop(&error) => Ok(true),
                Err(error) => Err(describe(&error)),
            }
        });
        match result {
            Ok(false) => Outcome::Kept {
                routed: self.routed.load(Ordering::Relaxed),
            },
            Ok(true) => Outcome::Dropped,
            Err(message) => Outcome::Failed(message),
        }
    }
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
        self.script.outputs.clone()
    }

    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Transform>, ComponentError> {
        Ok(Box::new(Rhai {
            script: Arc::clone(&self.script),
            name: cx.name.clone(),
        }))
    }
}

struct Rhai {
    script: Arc<Script>,
    name: String,
}

impl Transform for Rhai {
    fn run(
        self: Box<Self>,
        mut input: BufferReceiver,
        mut cx: TransformContext,
    ) -> ComponentFuture {
        Box::pin(async move {
            let script = &self.script;
            while let Some(mut batch) = input.recv().await {
                // Default output first, then each declared output, then errors.
                let mut parts: Vec<Vec<UnifiedEvent>> = vec![Vec::new(); script.outputs.len() + 2];
                let errors = parts.len() - 1;
                let mut dropped = 0;
                for mut event in batch.take_events() {
                    match (script.run(&mut event), event) {
                        (Outcome::Kept { routed: 0 }, event) => parts[0].push(event),
                        (Outcome::Kept { routed }, event) => {
                            let mut remaining = routed;
                            while remaining != 0 {
                                let index = remaining.trailing_zeros() as usize;
                                remaining &= remaining - 1;
                                if remaining == 0 {
                                    parts[index + 1].push(event);
                                    break;
                                }
                                parts[index + 1].push(event.clone());
                            }
                        }
                        (Outcome::Dropped, _) => dropped += 1,
                        (Outcome::Failed(message), mut event) => {
                            attach_error(&mut event, &self.name, message);
                            parts[errors].push(event);
                        }
                    }
                }
                if dropped > 0 {
                    cx.metrics.add_dropped(DROPPED_BY_SCRIPT, dropped);
                }
                if !parts[errors].is_empty() {
                    cx.metrics.add_errors(SCRIPT_ERROR, parts[errors].len());
                }
                let mut destinations = vec![Destination::Default];
                destinations.extend(script.outputs.iter().map(|o| Destination::Named(o)));
                destinations.push(Destination::Named(ERRORS_OUTPUT));
                send_parts(batch, destinations.into_iter().zip(parts), &mut cx).await;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests;
