//! Events as OTLP data: every event as a log record under the resource it is about, and every
//! correlation summary also as a trace (one span for the incident, a child per related event).
//!
//! Resource attributes follow the OpenTelemetry semantic conventions (`k8s.pod.name`,
//! `container.id`, `process.pid`, …) so that a backend files Tapio's records next to the
//! applications' own; everything else an event knows is a flat attribute named after its JSON
//! path under `tapio.` (`tapio.network.dst_port`).

use std::collections::{HashMap, VecDeque};

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tapio_event::{EntityType, EventType, Severity, Timestamp, UnifiedEvent};

/// The instrumentation scope every record and span is filed under.
const SCOPE_NAME: &str = "tapio";

/// OTLP severity numbers (`SeverityNumber`) of Tapio's severities.
pub(super) fn severity_number(severity: Severity) -> i32 {
    match severity {
        Severity::Debug => 5,
        Severity::Info => 9,
        Severity::Warning => 13,
        Severity::Error => 17,
        Severity::Critical => 21,
    }
}

/// The severity an event is logged with: its `impact.severity`, else warning for an event
/// that reports a failure (a non-zero exit, an OOM kill, a TCP error, a failed unit or a
/// failing pod), else info.
pub(super) fn severity_of(event: &UnifiedEvent) -> Severity {
    if let Some(severity) = event.impact.as_ref().and_then(|impact| impact.severity) {
        return severity;
    }
    if reports_failure(event) {
        Severity::Warning
    } else {
        Severity::Info
    }
}

/// Kubernetes reasons that say something went wrong with the object.
const FAILURE_REASONS: &[&str] = &[
    "OOMKilled",
    "BackOff",
    "CrashLoopBackOff",
    "Error",
    "Failed",
    "FailedScheduling",
    "Unhealthy",
    "NodeNotReady",
    "Evicted",
];

/// Whether the event's own facts say something failed.
fn reports_failure(event: &UnifiedEvent) -> bool {
    let process = event.process.as_deref().is_some_and(|process| {
        process.operation.as_deref() == Some("oom_kill")
            || process.exit_code.is_some_and(|code| code != 0)
            || process.signal.is_some_and(|signal| signal != 0)
    });
    let network = event.network.as_deref().is_some_and(|network| {
        network.error.is_some()
            || matches!(
                network.operation.as_deref(),
                Some("timeout" | "retransmit" | "error")
            )
    });
    let kubernetes = event.kubernetes.as_deref().is_some_and(|kubernetes| {
        kubernetes
            .reason
            .as_deref()
            .is_some_and(|reason| FAILURE_REASONS.contains(&reason))
    });
    let systemd = event
        .systemd
        .as_deref()
        .is_some_and(|systemd| systemd.active_state.as_deref() == Some("failed"));
    process || network || kubernetes || systemd
}

fn string(value: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(value.into())),
    }
}

fn key_value(key: impl Into<String>, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        ..Default::default()
    }
}

/// A resource attribute value: text or a number (`process.pid`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ResourceValue {
    Text(String),
    Int(i64),
}

/// The resource an event is about, as `(semantic-convention key, value)` pairs in a fixed
/// order: events with equal keys share one `ResourceLogs`.
type ResourceKey = Vec<(&'static str, ResourceValue)>;

/// Whether an entity id is a Kubernetes uid rather than a `namespace/name` stand-in.
fn is_uid(id: &str) -> bool {
    id.len() == 36 && id.bytes().filter(|&b| b == b'-').count() == 4
}

/// The semantic-convention resource of `event` (without `service.name`, which every resource
/// of the sink shares).
fn resource_key(event: &UnifiedEvent) -> ResourceKey {
    let mut key: ResourceKey = Vec::new();
    let mut text = |name: &'static str, value: Option<&str>| {
        if let Some(value) = value.filter(|value| !value.is_empty()) {
            key.push((name, ResourceValue::Text(value.to_owned())));
        }
    };
    let kubernetes = event.kubernetes.as_deref();
    match event.entity.as_deref() {
        Some(entity) => match entity.kind {
            EntityType::Pod => {
                text("k8s.pod.name", entity.name.as_deref());
                text(
                    "k8s.pod.uid",
                    Some(entity.id.as_str()).filter(|id| is_uid(id)),
                );
            }
            EntityType::Deployment => text("k8s.deployment.name", entity.name.as_deref()),
            EntityType::Container => text("container.id", Some(entity.id.as_str())),
            EntityType::Host => text("host.name", Some(entity.id.as_str())),
            EntityType::Node => text(
                "k8s.node.name",
                Some(entity.name.as_deref().unwrap_or(&entity.id)),
            ),
            EntityType::Service => text("k8s.service.name", entity.name.as_deref()),
            EntityType::Process => {}
        },
        None => {
            if let Some(kubernetes) = kubernetes.filter(|k| k.kind.as_deref() == Some("Pod")) {
                text("k8s.pod.name", kubernetes.name.as_deref());
                text("k8s.pod.uid", kubernetes.uid.as_deref());
            }
        }
    }
    let entity = event.entity.as_deref();
    text(
        "k8s.namespace.name",
        entity
            .and_then(|e| e.namespace.as_deref())
            .or_else(|| kubernetes.and_then(|k| k.namespace.as_deref())),
    );
    if entity.is_none_or(|e| e.kind != EntityType::Node) {
        text(
            "k8s.node.name",
            entity
                .and_then(|e| e.node.as_deref())
                .or_else(|| kubernetes.and_then(|k| k.node.as_deref())),
        );
    }
    if entity.is_none_or(|e| e.kind != EntityType::Container) {
        let process = event.process.as_deref();
        text(
            "container.id",
            process
                .and_then(|p| p.container_id.as_deref())
                .or_else(|| kubernetes.and_then(|k| k.container_id.as_deref())),
        );
    }
    if let Some(process) = event.process.as_deref() {
        if let Some(pid) = process.pid {
            key.push(("process.pid", ResourceValue::Int(i64::from(pid))));
        }
        if let Some(comm) = process.comm.as_deref().filter(|c| !c.is_empty()) {
            key.push((
                "process.executable.name",
                ResourceValue::Text(comm.to_owned()),
            ));
        }
    }
    key
}

/// The OTLP resource for `key`, with `service.name` first.
fn resource(service_name: &str, key: &ResourceKey) -> Resource {
    let mut attributes = Vec::with_capacity(key.len() + 1);
    attributes.push(key_value("service.name", string(service_name)));
    for (name, value) in key {
        let value = match value {
            ResourceValue::Text(text) => string(text.clone()),
            ResourceValue::Int(number) => AnyValue {
                value: Some(Value::IntValue(*number)),
            },
        };
        attributes.push(key_value(*name, value));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

/// A JSON value as an OTLP value: objects are flattened by the caller, so only scalars and
/// arrays arrive here (arrays of objects keep their JSON text).
fn any_value(value: &serde_json::Value) -> Option<AnyValue> {
    let value = match value {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(flag) => Value::BoolValue(*flag),
        serde_json::Value::Number(number) => match number.as_i64() {
            Some(integer) => Value::IntValue(integer),
            None => Value::DoubleValue(number.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(text) => Value::StringValue(text.clone()),
        serde_json::Value::Array(items) => Value::ArrayValue(ArrayValue {
            values: items
                .iter()
                .map(|item| match item {
                    serde_json::Value::Object(_) | serde_json::Value::Array(_) => {
                        string(item.to_string())
                    }
                    _ => any_value(item).unwrap_or_default(),
                })
                .collect(),
        }),
        serde_json::Value::Object(_) => Value::StringValue(value.to_string()),
    };
    Some(AnyValue { value: Some(value) })
}

/// Appends `value` as attributes named `prefix` (objects: `prefix.key`, recursively).
fn flatten(prefix: &mut String, value: &serde_json::Value, out: &mut Vec<KeyValue>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                let length = prefix.len();
                prefix.push('.');
                prefix.push_str(key);
                flatten(prefix, value, out);
                prefix.truncate(length);
            }
        }
        _ => {
            if let Some(value) = any_value(value) {
                out.push(key_value(prefix.clone(), value));
            }
        }
    }
}

/// Top-level event fields that are not attributes: the record's own fields carry them
/// (`timestamp`, `trace_context`), the narrative is the body, and `raw_data` (the collector's
/// input bytes) is not meant for a log backend.
const NOT_ATTRIBUTES: &[&str] = &["timestamp", "trace_context", "raw_data"];

/// The event's facts as flat `tapio.*` attributes: `tapio.id`, `tapio.type`, `tapio.source`,
/// and every context field by its JSON path (`tapio.network.dst_port`,
/// `tapio.kubernetes.labels.app`).
fn attributes(event: &UnifiedEvent) -> Vec<KeyValue> {
    let json = serde_json::to_value(event).expect("events always serialise to JSON");
    let mut out = Vec::new();
    let mut prefix = String::from("tapio");
    if let serde_json::Value::Object(mut fields) = json {
        if let Some(serde_json::Value::Object(semantic)) = fields.get_mut("semantic") {
            semantic.remove("narrative");
        }
        for (key, value) in &fields {
            if NOT_ATTRIBUTES.contains(&key.as_str()) {
                continue;
            }
            prefix.push('.');
            prefix.push_str(key);
            flatten(&mut prefix, value, &mut out);
            prefix.truncate("tapio".len());
        }
    }
    out
}

/// Hex digits as bytes, when `text` is exactly `bytes` bytes of hex and not all zero (the
/// invalid id of W3C trace context).
fn hex_id(text: &str, bytes: usize) -> Option<Vec<u8>> {
    if text.len() != bytes * 2 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let id = text
        .as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect::<Option<Vec<u8>>>()?;
    id.iter().any(|&b| b != 0).then_some(id)
}

/// Nanoseconds since the epoch as OTLP's unsigned field (0, "unknown", before 1970).
fn unix_nanos(timestamp: Timestamp) -> u64 {
    u64::try_from(timestamp.as_nanos()).unwrap_or(0)
}

/// One event as a log record; `observed` is when the sink received it.
pub(super) fn log_record(event: &UnifiedEvent, observed: u64) -> LogRecord {
    let severity = severity_of(event);
    let narrative = event
        .semantic
        .as_ref()
        .and_then(|semantic| semantic.narrative.clone());
    let body = narrative
        .unwrap_or_else(|| serde_json::to_string(event).expect("events always serialise to JSON"));
    let trace = event.trace_context.as_deref();
    LogRecord {
        time_unix_nano: unix_nanos(event.timestamp),
        observed_time_unix_nano: observed,
        severity_number: severity_number(severity),
        severity_text: severity.as_str().to_owned(),
        body: Some(string(body)),
        attributes: attributes(event),
        trace_id: trace
            .and_then(|t| hex_id(&t.trace_id, 16))
            .unwrap_or_default(),
        span_id: trace
            .and_then(|t| hex_id(&t.span_id, 8))
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// FNV-1a over `data` with 128-bit state: a stable hash (the same in every version and on
/// every machine), so ids derived from it do not change between runs.
fn fnv1a_128(data: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    data.iter().fold(OFFSET, |hash, &byte| {
        (hash ^ u128::from(byte)).wrapping_mul(PRIME)
    })
}

/// The trace id of an incident: derived from its `correlation_id` alone, so a summary sent
/// again (or a second pattern of the same group) lands in the same trace.
pub(super) fn incident_trace_id(correlation_id: &str) -> Vec<u8> {
    fnv1a_128(correlation_id.as_bytes()).to_be_bytes().to_vec()
}

/// A span id derived from `parts`, stable across runs.
fn derived_span_id(parts: &[&str]) -> Vec<u8> {
    let joined = parts.join("\u{0}");
    let hash = fnv1a_128(joined.as_bytes());
    ((hash >> 64) as u64 ^ hash as u64).to_be_bytes().to_vec()
}

/// What a summary's child span needs of a related event, remembered when the event passed.
#[derive(Debug, Clone)]
struct Related {
    time: u64,
    name: String,
    severity: Severity,
}

/// The span name of a related event: its type and what happened (`process oom_kill`,
/// `kubernetes BackOff`).
fn related_name(event: &UnifiedEvent) -> String {
    let what = event
        .process
        .as_deref()
        .and_then(|p| p.operation.as_deref())
        .or_else(|| {
            event
                .network
                .as_deref()
                .and_then(|n| n.operation.as_deref())
        })
        .or_else(|| {
            event
                .kubernetes
                .as_deref()
                .and_then(|k| k.reason.as_deref())
        })
        .or_else(|| {
            event
                .systemd
                .as_deref()
                .and_then(|s| s.active_state.as_deref())
        });
    match what {
        Some(what) => format!("{} {what}", event.kind.as_str()),
        None => event.kind.as_str().to_owned(),
    }
}

/// The events seen lately that belong to a correlation group, by id, so that a summary naming
/// them can become a trace with one child per event. Bounded: the oldest are forgotten first.
#[derive(Debug)]
pub(super) struct RelatedEvents {
    by_id: HashMap<String, Related>,
    order: VecDeque<String>,
    capacity: usize,
}

impl RelatedEvents {
    /// Remembers at most `capacity` events.
    pub fn new(capacity: usize) -> RelatedEvents {
        RelatedEvents {
            by_id: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    /// Remembers `event` if a correlation group claimed it.
    pub fn remember(&mut self, event: &UnifiedEvent) {
        let in_group = event.kind != EventType::Correlation
            && event
                .correlation
                .as_deref()
                .is_some_and(|c| c.correlation_id.is_some());
        if !in_group || event.id.is_empty() || self.by_id.contains_key(&event.id) {
            return;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.by_id.remove(&oldest);
        }
        self.order.push_back(event.id.clone());
        self.by_id.insert(
            event.id.clone(),
            Related {
                time: unix_nanos(event.timestamp),
                name: related_name(event),
                severity: severity_of(event),
            },
        );
    }
}

/// Whether `event` is a correlation summary that becomes a trace.
pub(super) fn is_summary(event: &UnifiedEvent) -> bool {
    event.kind == EventType::Correlation
        && event
            .correlation
            .as_deref()
            .is_some_and(|c| c.correlation_id.is_some())
}

fn double(value: f64) -> AnyValue {
    AnyValue {
        value: Some(Value::DoubleValue(value)),
    }
}

/// A summary as spans: the incident's root span (named after the pattern, from the first to the
/// last related event Tapio saw, status ERROR when the incident is an error or critical, with
/// root cause, recommended action, confidence and business impact) and one child span per
/// related event remembered in `related`.
pub(super) fn incident_spans(summary: &UnifiedEvent, related: &RelatedEvents) -> Vec<Span> {
    let correlation = summary.correlation.as_deref().cloned().unwrap_or_default();
    let correlation_id = correlation.correlation_id.clone().unwrap_or_default();
    let pattern = correlation
        .pattern
        .clone()
        .unwrap_or_else(|| "correlation".to_owned());
    let trace_id = incident_trace_id(&correlation_id);
    let root_id = derived_span_id(&[correlation_id.as_str(), pattern.as_str()]);
    let seen: Vec<(&String, &Related)> = correlation
        .related_events
        .iter()
        .filter_map(|id| related.by_id.get(id).map(|r| (id, r)))
        .collect();
    let own_time = unix_nanos(summary.timestamp);
    let start = seen.iter().map(|(_, r)| r.time).min().unwrap_or(own_time);
    let end = seen.iter().map(|(_, r)| r.time).max().unwrap_or(own_time);
    let severity = severity_of(summary);
    let failed = severity >= Severity::Error;
    let mut attributes = vec![
        key_value("tapio.correlation.correlation_id", string(&correlation_id)),
        key_value("tapio.correlation.pattern", string(&pattern)),
        key_value("tapio.id", string(&summary.id)),
        key_value(
            "tapio.correlation.related_events",
            AnyValue {
                value: Some(Value::IntValue(
                    correlation.related_events.len() as i64
                        + correlation.related_events_omitted.unwrap_or(0) as i64,
                )),
            },
        ),
    ];
    if let Some(root_cause) = &correlation.root_cause {
        attributes.push(key_value(
            "tapio.correlation.root_cause",
            string(root_cause),
        ));
    }
    if let Some(action) = &correlation.recommended_action {
        attributes.push(key_value(
            "tapio.correlation.recommended_action",
            string(action),
        ));
    }
    if let Some(confidence) = correlation.confidence {
        attributes.push(key_value(
            "tapio.correlation.confidence",
            double(confidence),
        ));
    }
    if let Some(impact) = summary.impact.as_deref() {
        if let Some(business) = impact.business_impact {
            attributes.push(key_value("tapio.impact.business_impact", double(business)));
        }
        attributes.push(key_value(
            "tapio.impact.severity",
            string(severity.as_str()),
        ));
    }
    let status = |failed: bool, message: &str| Status {
        code: if failed {
            StatusCode::Error as i32
        } else {
            StatusCode::Unset as i32
        },
        message: if failed {
            message.to_owned()
        } else {
            String::new()
        },
    };
    let mut spans = Vec::with_capacity(seen.len() + 1);
    spans.push(Span {
        trace_id: trace_id.clone(),
        span_id: root_id.clone(),
        name: pattern,
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        status: Some(status(
            failed,
            correlation.root_cause.as_deref().unwrap_or_default(),
        )),
        ..Default::default()
    });
    for (id, event) in seen {
        spans.push(Span {
            trace_id: trace_id.clone(),
            span_id: derived_span_id(&[correlation_id.as_str(), id.as_str()]),
            parent_span_id: root_id.clone(),
            name: event.name.clone(),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: event.time,
            end_time_unix_nano: event.time,
            attributes: vec![
                key_value("tapio.id", string(id.as_str())),
                key_value("tapio.severity", string(event.severity.as_str())),
            ],
            status: Some(status(event.severity >= Severity::Error, "")),
            ..Default::default()
        });
    }
    spans
}

/// Records grouped by resource, in the order each resource first appeared.
#[derive(Debug, Default)]
pub(super) struct Grouped<T> {
    index: HashMap<ResourceKey, usize>,
    groups: Vec<(ResourceKey, Vec<T>)>,
    items: usize,
    /// The encoded size of the items so far, for `batch.max_bytes`.
    bytes: usize,
}

impl<T: Message> Grouped<T> {
    /// Adds `item` under `event`'s resource.
    pub fn push(&mut self, event: &UnifiedEvent, item: T) {
        let key = resource_key(event);
        self.bytes += item.encoded_len();
        self.items += 1;
        let slot = match self.index.get(&key) {
            Some(&slot) => slot,
            None => {
                self.groups.push((key.clone(), Vec::new()));
                self.index.insert(key, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        self.groups[slot].1.push(item);
    }

    /// How many items are grouped.
    pub fn len(&self) -> usize {
        self.items
    }

    /// About how many bytes the items take encoded.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Each resource with its items, emptying the groups.
    fn drain(&mut self, service_name: &str) -> impl Iterator<Item = (Resource, Vec<T>)> {
        self.index.clear();
        self.items = 0;
        self.bytes = 0;
        let service_name = service_name.to_owned();
        std::mem::take(&mut self.groups)
            .into_iter()
            .map(move |(key, items)| (resource(&service_name, &key), items))
    }
}

fn scope() -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    })
}

/// The grouped log records as one `ResourceLogs` per resource.
pub(super) fn resource_logs(
    logs: &mut Grouped<LogRecord>,
    service_name: &str,
) -> Vec<ResourceLogs> {
    logs.drain(service_name)
        .map(|(resource, log_records)| ResourceLogs {
            resource: Some(resource),
            scope_logs: vec![ScopeLogs {
                scope: scope(),
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect()
}

/// The grouped spans as one `ResourceSpans` per resource.
pub(super) fn resource_spans(spans: &mut Grouped<Span>, service_name: &str) -> Vec<ResourceSpans> {
    spans
        .drain(service_name)
        .map(|(resource, spans)| ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: scope(),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect()
}
