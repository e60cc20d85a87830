//! Unit tests inside the config, as Vector has them: `[[tests]]` tables insert events at a
//! transform and state what must come out where, and `tapio test` runs them on the config's own
//! transforms (no source or sink starts, nothing touches the network or the disk). Each test
//! gets freshly built transforms, so state never leaks from one to the next.
//!
//! ```toml
//! [[tests]]
//! name = "critical incidents are routed"
//! [[tests.inputs]]
//! insert_at = "impact"
//! value = '{"type":"correlation","source":"correlate","correlation":{"pattern":"oom-kill-cascade"}}'
//! [[tests.outputs]]
//! extract_from = "route.critical"
//! conditions = [{ field = "impact.severity", equals = "critical" }]
//! count = 1
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tapio_event::buffer::{BufferReceiver, BufferSender, WhenFull, buffer};
use tapio_event::codec::Decoder;
use tapio_event::{
    BuildContext, ComponentKind, ComponentMetrics, EventBatch, Fanout, Outputs, Timestamp,
    TransformContext, UnifiedEvent,
};
use tapio_transforms::Condition;

use crate::config::Config;

/// One `[[tests]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitTest {
    /// How the result line names the test.
    pub name: String,
    /// Events to insert, in order.
    #[serde(default)]
    pub inputs: Vec<TestInput>,
    /// What must come out, and where.
    #[serde(default)]
    pub outputs: Vec<TestOutput>,
    /// Transform outputs (`name` or `name.output`) that must send nothing.
    #[serde(default)]
    pub no_outputs_from: Vec<String>,
}

/// One `[[tests.inputs]]` table: an event and the transform it goes into.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "TestInputOptions")]
pub struct TestInput {
    /// The transform whose input receives the event.
    pub insert_at: String,
    /// The event, checked as the `stdin` source checks a line (an `id` and `timestamp` are
    /// filled in when missing).
    pub event: UnifiedEvent,
}

/// A `[[tests.inputs]]` table as written: the event as JSON text or an inline table
/// (`value`), or as dotted field paths (`log_fields = { type = "process", "process.comm" =
/// "nginx" }`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestInputOptions {
    insert_at: String,
    #[serde(default)]
    value: Option<serde_json::Value>,
    #[serde(default)]
    log_fields: Option<BTreeMap<String, serde_json::Value>>,
}

impl TryFrom<TestInputOptions> for TestInput {
    type Error = String;

    fn try_from(options: TestInputOptions) -> Result<Self, String> {
        let json = match (options.value, options.log_fields) {
            (Some(serde_json::Value::String(text)), None) => text,
            (Some(table), None) => table.to_string(),
            (None, Some(fields)) => nested(fields)?.to_string(),
            _ => return Err("give the event as exactly one of `value` or `log_fields`".into()),
        };
        let event = Decoder::default()
            .decode_json(json.as_bytes(), Timestamp::now())
            .map_err(|error| format!("the event is not a UnifiedEvent: {error}"))?;
        Ok(TestInput {
            insert_at: options.insert_at,
            event,
        })
    }
}

/// The JSON object that dotted `fields` (`"process.comm" = "nginx"`) stand for.
fn nested(fields: BTreeMap<String, serde_json::Value>) -> Result<serde_json::Value, String> {
    let mut root = serde_json::Map::new();
    for (path, value) in fields {
        let mut parts: Vec<&str> = path.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        let mut table = &mut root;
        for part in parts {
            let entry = table
                .entry(part)
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            table = entry
                .as_object_mut()
                .ok_or_else(|| format!("log_fields: `{part}` is both a value and a table"))?;
        }
        table.insert(last.to_owned(), value);
    }
    Ok(serde_json::Value::Object(root))
}

/// One `[[tests.outputs]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestOutput {
    /// The transform output to read (`name` for the default one, `name.output` for a named
    /// one such as `route.critical` or `enrich.errors`).
    pub extract_from: String,
    /// Every event that comes out must satisfy all of them (the same forms as `filter`'s
    /// `condition`: a field test, or a Rhai expression over `event`).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// How many events must come out; unset: at least one.
    #[serde(default)]
    pub count: Option<usize>,
}

/// The outcome of one test: passed when `failures` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    pub name: String,
    /// Each a readable paragraph: what was expected, and the events seen.
    pub failures: Vec<String>,
}

/// How long one test may run: transforms end when their input does, so only a bug hangs.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Room in every buffer of a test run: the whole input fits, so inserting never waits for a
/// transform that is itself waiting for a collector.
const TEST_BUFFER_EVENTS: usize = 1 << 20;

/// Runs every `[[tests]]` of `config`, in order.
pub async fn run_tests(config: &Config) -> Vec<TestResult> {
    let mut results = Vec::new();
    for test in &config.tests {
        let failures = match tokio::time::timeout(TEST_TIMEOUT, run_test(config, test)).await {
            Ok(failures) => failures,
            Err(_) => vec![format!("did not finish within {TEST_TIMEOUT:?}")],
        };
        results.push(TestResult {
            name: test.name.clone(),
            failures,
        });
    }
    results
}

/// A transform output, as `extract_from` names it.
type OutputKey = (String, Option<String>);

/// Runs one test on freshly built transforms; returns its failures.
async fn run_test(config: &Config, test: &UnitTest) -> Vec<String> {
    let names: Vec<&str> = config.transforms.iter().map(|t| t.name.as_str()).collect();
    let mut failures = unknown_names(config, test, &names);
    if !failures.is_empty() {
        return failures;
    }
    let graph = &config.graph;
    let mut senders: HashMap<&str, BufferSender> = HashMap::new();
    let mut receivers = Vec::new();
    for component in &config.transforms {
        let metrics = Arc::new(ComponentMetrics::new(
            &component.name,
            component.config.type_name(),
            ComponentKind::Transform,
        ));
        let (tx, rx) = buffer(TEST_BUFFER_EVENTS, WhenFull::Block, Arc::clone(&metrics));
        senders.insert(&component.name, tx);
        receivers.push((rx, metrics));
    }
    let mut collectors: Vec<(OutputKey, tokio::task::JoinHandle<Vec<UnifiedEvent>>)> = Vec::new();
    let mut tasks = Vec::new();
    for (component, (input, metrics)) in config.transforms.iter().zip(receivers) {
        let index = graph
            .index_of(&component.name)
            .expect("every transform is a graph node");
        let mut fanout = |output: Option<&str>| {
            let mut consumers: Vec<BufferSender> = graph
                .consumers(index, output)
                .filter_map(|to| senders.get(graph.nodes[to].name.as_str()).cloned())
                .collect();
            let (tap, collected) = collector();
            consumers.push(tap);
            let key = (component.name.clone(), output.map(str::to_owned));
            collectors.push((key, collected));
            Fanout::new(consumers)
        };
        let default = fanout(None);
        let named = graph.nodes[index]
            .named_outputs
            .iter()
            .map(|output| (output.clone(), fanout(Some(output))))
            .collect();
        let context = BuildContext {
            name: component.name.clone(),
            data_dir: std::env::temp_dir(),
            node_name: config.node_name.clone(),
        };
        match component.config.build(&context) {
            Ok(transform) => {
                let cx = TransformContext {
                    out: Outputs::new(default, named, Arc::clone(&metrics)),
                    metrics,
                };
                tasks.push(tokio::spawn(transform.run(input, cx)));
            }
            Err(error) => failures.push(format!("transforms.{}: {error}", component.name)),
        }
    }
    if !failures.is_empty() {
        return failures;
    }
    for input in &test.inputs {
        let batch = EventBatch::new(vec![input.event.clone()]);
        if senders[input.insert_at.as_str()].send(batch).await.is_err() {
            failures.push(format!("{} stopped reading its input", input.insert_at));
        }
    }
    drop(senders);
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failures.push(format!("a transform failed: {error}")),
            Err(join) => failures.push(format!("a transform panicked: {join}")),
        }
    }
    let mut seen: HashMap<OutputKey, Vec<UnifiedEvent>> = HashMap::new();
    for (key, collected) in collectors {
        seen.insert(key, collected.await.unwrap_or_default());
    }
    for (index, output) in test.outputs.iter().enumerate() {
        let events = seen
            .get(&output_key(&output.extract_from))
            .map_or(&[][..], Vec::as_slice);
        failures.extend(check_output(index, output, events));
    }
    for name in &test.no_outputs_from {
        let events = seen.get(&output_key(name)).map_or(&[][..], Vec::as_slice);
        if !events.is_empty() {
            failures.push(format!(
                "no_outputs_from {name:?}: {} events came out:\n{}",
                events.len(),
                listing(events)
            ));
        }
    }
    failures
}

/// `insert_at`, `extract_from` and `no_outputs_from` names the config does not have.
fn unknown_names(config: &Config, test: &UnitTest, transforms: &[&str]) -> Vec<String> {
    let known = || transforms.join(", ");
    let mut failures = Vec::new();
    for input in &test.inputs {
        if !transforms.contains(&input.insert_at.as_str()) {
            failures.push(format!(
                "insert_at {:?} is not a transform of this config (transforms: {})",
                input.insert_at,
                known()
            ));
        }
    }
    let outputs = test
        .outputs
        .iter()
        .map(|o| ("extract_from", &o.extract_from))
        .chain(test.no_outputs_from.iter().map(|n| ("no_outputs_from", n)));
    for (option, name) in outputs {
        let (component, output) = output_key(name);
        let node = config
            .graph
            .index_of(&component)
            .map(|index| &config.graph.nodes[index])
            .filter(|node| transforms.contains(&node.name.as_str()));
        match (node, output) {
            (None, _) => failures.push(format!(
                "{option} {name:?}: {component:?} is not a transform of this config (transforms: {})",
                known()
            )),
            (Some(node), Some(output)) if !node.named_outputs.contains(&output) => {
                failures.push(format!(
                    "{option} {name:?}: {component:?} has no output {output:?} (its named outputs: {})",
                    node.named_outputs.join(", ")
                ));
            }
            _ => {}
        }
    }
    failures
}

/// `name` or `name.output` as a key of the collected outputs.
fn output_key(name: &str) -> OutputKey {
    match name.split_once('.') {
        Some((component, output)) => (component.to_owned(), Some(output.to_owned())),
        None => (name.to_owned(), None),
    }
}

/// What is wrong with `events` as `outputs[index]` expects them.
fn check_output(index: usize, output: &TestOutput, events: &[UnifiedEvent]) -> Vec<String> {
    let at = format!("outputs[{index}] (extract_from {:?})", output.extract_from);
    let mut failures = Vec::new();
    match output.count {
        Some(count) if count != events.len() => failures.push(format!(
            "{at}: expected {count} events, {} came out:\n{}",
            events.len(),
            listing(events)
        )),
        None if events.is_empty() => failures.push(format!("{at}: no event came out")),
        _ => {}
    }
    for (number, event) in events.iter().enumerate() {
        let failed: Vec<String> = output
            .conditions
            .iter()
            .enumerate()
            .filter_map(|(i, condition)| match condition.test(&mut event.clone()) {
                Ok(true) => None,
                Ok(false) => Some(format!("conditions[{i}]")),
                Err(error) => Some(format!("conditions[{i}] ({error})")),
            })
            .collect();
        if !failed.is_empty() {
            failures.push(format!(
                "{at}: event {} of {} does not satisfy {}:\n{}",
                number + 1,
                events.len(),
                failed.join(", "),
                listing(std::slice::from_ref(event))
            ));
        }
    }
    failures
}

/// The events, one JSON line each, indented under the failure.
fn listing(events: &[UnifiedEvent]) -> String {
    events
        .iter()
        .map(|event| {
            let mut line = Vec::new();
            tapio_event::codec::encode_json(event, &mut line);
            format!("    {}", String::from_utf8_lossy(&line))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A buffer that keeps what it receives, and the task collecting it until its senders are gone.
pub(crate) fn collector() -> (BufferSender, tokio::task::JoinHandle<Vec<UnifiedEvent>>) {
    let metrics = Arc::new(ComponentMetrics::new("test", "test", ComponentKind::Sink));
    let (tx, mut rx): (BufferSender, BufferReceiver) =
        buffer(TEST_BUFFER_EVENTS, WhenFull::Block, metrics);
    let task = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(batch) = rx.recv().await {
            events.extend(batch.events().iter().cloned());
        }
        events
    });
    (tx, task)
}
