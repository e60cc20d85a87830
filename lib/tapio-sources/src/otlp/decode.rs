//! OTLP data as `application` events: every log record, and every span that failed (status
//! ERROR) or recorded an exception. The resource's `k8s.*` attributes become the entity, so an
//! application's error log lands in the same correlation group as the kernel's TCP reset on
//! the same pod; the record's or span's trace and span ids become `trace_context`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::{Map, Value as Json};
use tapio_event::id::IdGenerator;
use tapio_event::{Entity, EntityType, EventType, Timestamp, TraceContext, UnifiedEvent};

/// The `source` of every event this source makes.
const SOURCE: &str = "otlp";

/// Turns OTLP requests into events, giving each a fresh id.
pub(super) struct Decoder {
    ids: IdGenerator,
}

/// An OTLP value as JSON: bytes as base64, key-value lists as objects. A string-table index
/// (profiles' dictionary encoding, meaningless without that table) is no value.
fn json(value: &AnyValue) -> Json {
    match &value.value {
        None | Some(Value::StringValueStrindex(_)) => Json::Null,
        Some(Value::StringValue(text)) => Json::from(text.as_str()),
        Some(Value::BoolValue(flag)) => Json::from(*flag),
        Some(Value::IntValue(number)) => Json::from(*number),
        Some(Value::DoubleValue(number)) => Json::from(*number),
        Some(Value::BytesValue(bytes)) => Json::from(STANDARD.encode(bytes)),
        Some(Value::ArrayValue(array)) => Json::Array(array.values.iter().map(json).collect()),
        Some(Value::KvlistValue(list)) => Json::Object(object(&list.values)),
    }
}

/// Attributes as a JSON object; an attribute without a value is left out (the event
/// contract has no `null`s).
fn object(attributes: &[KeyValue]) -> Map<String, Json> {
    attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), json(kv.value.as_ref()?))))
        .filter(|(_, value)| !value.is_null())
        .collect()
}

fn text<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(text) if !text.is_empty() => Some(text.as_str()),
            _ => None,
        }
    })
}

/// The entity a resource describes, from its `k8s.*` attributes: the pod (by uid, else
/// `namespace/name`, the key the correlator also reaches a pod by), else the deployment, else
/// the node; without any, the service (`service.name`).
pub(super) fn entity(resource: Option<&Resource>) -> Option<Entity> {
    let attributes = resource.map_or(&[][..], |r| &r.attributes[..]);
    let get = |key| text(attributes, key);
    let namespace = get("k8s.namespace.name");
    let node = get("k8s.node.name");
    let mut entity = if let Some(pod) = get("k8s.pod.uid").or(get("k8s.pod.name")) {
        let id = match (get("k8s.pod.uid"), namespace) {
            (Some(uid), _) => uid.to_owned(),
            (None, Some(namespace)) => format!("{namespace}/{pod}"),
            (None, None) => pod.to_owned(),
        };
        let mut entity = Entity::new(EntityType::Pod, id);
        entity.name = get("k8s.pod.name").map(str::to_owned);
        entity
    } else if let Some(deployment) = get("k8s.deployment.name") {
        let id = namespace.map_or(deployment.to_owned(), |ns| format!("{ns}/{deployment}"));
        let mut entity = Entity::new(EntityType::Deployment, id);
        entity.name = Some(deployment.to_owned());
        entity
    } else if let Some(node) = node {
        let mut entity = Entity::new(EntityType::Node, node);
        entity.name = Some(node.to_owned());
        entity
    } else {
        let service = get("service.name")?;
        let mut entity = Entity::new(EntityType::Service, service);
        entity.name = Some(service.to_owned());
        entity
    };
    if entity.kind != EntityType::Node {
        entity.node = node.map(str::to_owned);
    }
    entity.namespace = namespace.map(str::to_owned);
    for key in ["k8s.container.name", "container.id", "service.name"] {
        if let Some(value) = get(key) {
            entity.attributes.insert(key.to_owned(), value.to_owned());
        }
    }
    Some(entity)
}

/// Lowercase hex of an id, `None` when absent or all zero (W3C's invalid id).
fn hex(id: &[u8]) -> Option<String> {
    if id.is_empty() || id.iter().all(|&b| b == 0) {
        return None;
    }
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// A trace context from raw ids, when the trace and span ids are both valid.
fn trace_context(trace_id: &[u8], span_id: &[u8], parent: &[u8]) -> Option<Box<TraceContext>> {
    Some(Box::new(TraceContext {
        trace_id: hex(trace_id).filter(|t| t.len() == 32)?,
        span_id: hex(span_id).filter(|s| s.len() == 16)?,
        parent_span_id: hex(parent).filter(|p| p.len() == 16),
    }))
}

/// Nanoseconds as a timestamp, `None` for OTLP's 0 ("unknown").
fn time(nanos: u64) -> Option<Timestamp> {
    (nanos != 0).then(|| Timestamp(i64::try_from(nanos).unwrap_or(i64::MAX)))
}

/// The resource's attributes besides those the entity holds, for `application.resource`.
fn resource_rest(resource: Option<&Resource>) -> Map<String, Json> {
    let attributes = resource.map_or(&[][..], |r| &r.attributes[..]);
    let mut rest = object(attributes);
    rest.retain(|key, _| !key.starts_with("k8s."));
    rest
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            ids: IdGenerator::from_entropy(),
        }
    }

    fn event(
        &mut self,
        at: Timestamp,
        entity: &Option<Entity>,
        application: Map<String, Json>,
    ) -> UnifiedEvent {
        let mut event = UnifiedEvent::new(EventType::Application, SOURCE, at);
        event.id = self.ids.next_id(at);
        event.entity = entity.clone().map(Box::new);
        event.application = Some(Box::new(application));
        event
    }

    /// Every log record as an event: `application` holds `body`, `severity_text`,
    /// `severity_number`, `attributes`, `scope` and the non-`k8s` `resource` attributes.
    pub fn logs(
        &mut self,
        request: &ExportLogsServiceRequest,
        now: Timestamp,
    ) -> Vec<UnifiedEvent> {
        let mut events = Vec::new();
        for resource_logs in &request.resource_logs {
            let resource = resource_logs.resource.as_ref();
            let entity = entity(resource);
            let rest = resource_rest(resource);
            for scope_logs in &resource_logs.scope_logs {
                let scope = scope_logs.scope.as_ref().map(|s| s.name.as_str());
                for record in &scope_logs.log_records {
                    let mut application = Map::new();
                    if let Some(body) = &record.body {
                        application.insert("body".into(), json(body));
                    }
                    if !record.severity_text.is_empty() {
                        application.insert(
                            "severity_text".into(),
                            Json::from(record.severity_text.as_str()),
                        );
                    }
                    if record.severity_number != 0 {
                        application
                            .insert("severity_number".into(), Json::from(record.severity_number));
                    }
                    if !record.event_name.is_empty() {
                        application
                            .insert("event_name".into(), Json::from(record.event_name.as_str()));
                    }
                    insert_common(&mut application, &record.attributes, scope, &rest);
                    let at = time(record.time_unix_nano)
                        .or(time(record.observed_time_unix_nano))
                        .unwrap_or(now);
                    let mut event = self.event(at, &entity, application);
                    event.trace_context = trace_context(&record.trace_id, &record.span_id, &[]);
                    events.push(event);
                }
            }
        }
        events
    }

    /// Every span that failed (status ERROR) or recorded an `exception` event, as an event at
    /// the span's end with its trace context: `application` holds `span_name`, `status_message`,
    /// the `exception` (`type`, `message`, `stacktrace`), `attributes`, `scope` and `resource`.
    /// Spans that went well are not events: traces stay the backend's business.
    pub fn traces(
        &mut self,
        request: &ExportTraceServiceRequest,
        now: Timestamp,
    ) -> Vec<UnifiedEvent> {
        let mut events = Vec::new();
        for resource_spans in &request.resource_spans {
            let resource = resource_spans.resource.as_ref();
            let entity = entity(resource);
            let rest = resource_rest(resource);
            for scope_spans in &resource_spans.scope_spans {
                let scope = scope_spans.scope.as_ref().map(|s| s.name.as_str());
                for span in &scope_spans.spans {
                    let exception = exception(span);
                    let failed = span
                        .status
                        .as_ref()
                        .is_some_and(|s| s.code == StatusCode::Error as i32);
                    if !failed && exception.is_none() {
                        continue;
                    }
                    let mut application = Map::new();
                    application.insert("span_name".into(), Json::from(span.name.as_str()));
                    if let Some(status) = span.status.as_ref().filter(|s| !s.message.is_empty()) {
                        application
                            .insert("status_message".into(), Json::from(status.message.as_str()));
                    }
                    if let Some(exception) = exception {
                        application.insert("exception".into(), Json::Object(exception));
                    }
                    if span.end_time_unix_nano > span.start_time_unix_nano {
                        let nanos = span.end_time_unix_nano - span.start_time_unix_nano;
                        application.insert("duration_ms".into(), Json::from(nanos as f64 / 1e6));
                    }
                    insert_common(&mut application, &span.attributes, scope, &rest);
                    let at = time(span.end_time_unix_nano)
                        .or(time(span.start_time_unix_nano))
                        .unwrap_or(now);
                    let mut event = self.event(at, &entity, application);
                    event.trace_context =
                        trace_context(&span.trace_id, &span.span_id, &span.parent_span_id);
                    events.push(event);
                }
            }
        }
        events
    }
}

/// The attributes of a span's first `exception` event, without their `exception.` prefix.
fn exception(span: &Span) -> Option<Map<String, Json>> {
    let event = span.events.iter().find(|e| e.name == "exception")?;
    Some(
        object(&event.attributes)
            .into_iter()
            .map(|(key, value)| {
                let key = key.strip_prefix("exception.").unwrap_or(&key).to_owned();
                (key, value)
            })
            .collect(),
    )
}

/// Adds what log records and spans share: their attributes, scope and resource.
fn insert_common(
    application: &mut Map<String, Json>,
    attributes: &[KeyValue],
    scope: Option<&str>,
    resource: &Map<String, Json>,
) {
    if !attributes.is_empty() {
        application.insert("attributes".into(), Json::Object(object(attributes)));
    }
    if let Some(scope) = scope.filter(|s| !s.is_empty()) {
        application.insert("scope".into(), Json::from(scope));
    }
    if !resource.is_empty() {
        application.insert("resource".into(), Json::Object(resource.clone()));
    }
}
