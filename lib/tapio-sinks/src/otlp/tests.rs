use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use tapio_event::{
    AckToken, BatchStatus, BuildContext, ComponentConfig, CorrelationContext, Entity, EntityType,
    EventType, ImpactContext, NetworkContext, ProcessContext, SemanticContext, Severity, Timestamp,
    TraceContext, UnifiedEvent,
};

use super::encode::{self, RelatedEvents};
use super::{OtlpSinkConfig, Pending};

fn at(second: u32) -> Timestamp {
    Timestamp::from_civil(2026, 11, 27, 16, 21, second, 500).unwrap()
}

fn pod_event(id: &str, second: u32) -> UnifiedEvent {
    let mut event = UnifiedEvent::new(EventType::Process, "ebpf", at(second));
    event.id = id.into();
    let mut entity = Entity::new(EntityType::Pod, "6f1c2d3e-0000-4000-8000-00000000abcd");
    entity.name = Some("api-7d9".into());
    entity.namespace = Some("shop".into());
    entity.node = Some("worker-1".into());
    event.entity = Some(Box::new(entity));
    event.process = Some(Box::new(ProcessContext {
        operation: Some("exec".into()),
        pid: Some(42),
        comm: Some("api".into()),
        container_id: Some("c0ffee".into()),
        ..Default::default()
    }));
    event
}

fn text(value: &Option<AnyValue>) -> &str {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(text)) => text,
        other => panic!("not a string: {other:?}"),
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> &'a Option<AnyValue> {
    &attributes
        .iter()
        .find(|kv| kv.key == key)
        .unwrap_or_else(|| panic!("no attribute {key} in {attributes:?}"))
        .value
}

fn config(extra: &str) -> OtlpSinkConfig {
    toml::from_str(extra).unwrap()
}

#[test]
fn severity_comes_from_impact_or_from_a_failure() {
    let mut event = pod_event("evt_1", 1);
    assert_eq!(encode::severity_of(&event), Severity::Info);
    event.process.as_mut().unwrap().operation = Some("exit".into());
    event.process.as_mut().unwrap().exit_code = Some(137);
    assert_eq!(encode::severity_of(&event), Severity::Warning);
    event.impact = Some(Box::new(ImpactContext {
        severity: Some(Severity::Critical),
        ..Default::default()
    }));
    assert_eq!(encode::severity_of(&event), Severity::Critical);
    let numbers: Vec<i32> = [
        Severity::Debug,
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ]
    .into_iter()
    .map(encode::severity_number)
    .collect();
    assert_eq!(numbers, [5, 9, 13, 17, 21]);
    let mut tcp = UnifiedEvent::new(EventType::Network, "ebpf", at(1));
    tcp.network = Some(Box::new(NetworkContext {
        operation: Some("retransmit".into()),
        ..Default::default()
    }));
    assert_eq!(encode::severity_of(&tcp), Severity::Warning);
}

#[test]
fn a_log_record_carries_times_body_attributes_and_trace_ids() {
    let mut event = pod_event("evt_1", 1);
    event.semantic = Some(Box::new(SemanticContext {
        narrative: Some("api started".into()),
        tags: vec!["a".into(), "b".into()],
        ..Default::default()
    }));
    event.network = Some(Box::new(NetworkContext {
        dst_port: Some(443),
        ..Default::default()
    }));
    event.trace_context = Some(Box::new(TraceContext {
        trace_id: "5b8efff798038103d269b633813fc60c".into(),
        span_id: "eee19b7ec3c1b174".into(),
        parent_span_id: None,
    }));
    let record = encode::log_record(&event, 99);
    assert_eq!(record.time_unix_nano, at(1).as_nanos() as u64);
    assert_eq!(record.observed_time_unix_nano, 99);
    assert_eq!(
        (record.severity_number, record.severity_text.as_str()),
        (9, "info")
    );
    assert_eq!(text(&record.body), "api started");
    assert_eq!(hex(&record.trace_id), "5b8efff798038103d269b633813fc60c");
    assert_eq!(hex(&record.span_id), "eee19b7ec3c1b174");
    let attributes = &record.attributes;
    assert_eq!(
        attribute(attributes, "tapio.network.dst_port"),
        &Some(AnyValue {
            value: Some(Value::IntValue(443))
        })
    );
    assert_eq!(text(attribute(attributes, "tapio.id")), "evt_1");
    assert_eq!(text(attribute(attributes, "tapio.entity.name")), "api-7d9");
    assert!(matches!(
        attribute(attributes, "tapio.semantic.tags").as_ref().unwrap().value,
        Some(Value::ArrayValue(ref array)) if array.values.len() == 2
    ));
    for absent in [
        "tapio.timestamp",
        "tapio.semantic.narrative",
        "tapio.trace_context.trace_id",
    ] {
        assert!(!attributes.iter().any(|kv| kv.key == absent), "{absent}");
    }
    // Without a narrative the body is the event's JSON.
    let plain = encode::log_record(&pod_event("evt_2", 1), 0);
    let body: UnifiedEvent = serde_json::from_str(text(&plain.body)).unwrap();
    assert_eq!(body, pod_event("evt_2", 1));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn events_of_one_resource_share_one_resource_logs() {
    let mut pending = Pending::new(&config(""));
    let mut other = pod_event("evt_3", 2);
    other.entity.as_mut().unwrap().name = Some("web-1".into());
    let batch = Arc::new(vec![pod_event("evt_1", 1), other, pod_event("evt_2", 3)]);
    assert!(pending.add(&batch, Vec::new()).is_empty());
    let request = pending.take();
    assert_eq!(request.records, 3);
    let groups = &request.logs.resource_logs;
    assert_eq!(groups.len(), 2);
    let resource = &groups[0].resource.as_ref().unwrap().attributes;
    let keys: Vec<&str> = resource.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "service.name",
            "k8s.pod.name",
            "k8s.pod.uid",
            "k8s.namespace.name",
            "k8s.node.name",
            "container.id",
            "process.pid",
            "process.executable.name"
        ]
    );
    assert_eq!(text(attribute(resource, "service.name")), "tapio");
    assert_eq!(text(attribute(resource, "k8s.pod.name")), "api-7d9");
    assert_eq!(text(attribute(resource, "container.id")), "c0ffee");
    let records = &groups[0].scope_logs[0].log_records;
    assert_eq!(records.len(), 2);
    assert_eq!(groups[1].scope_logs[0].log_records.len(), 1);
}

#[test]
fn a_batch_split_over_requests_is_acknowledged_by_the_last_of_them() {
    let mut pending = Pending::new(&config("batch = { max_events = 2 }"));
    let (token, mut receiver) = AckToken::new();
    let batch = Arc::new((0..5).map(|i| pod_event(&format!("evt_{i}"), 1)).collect());
    let full = pending.add(&batch, vec![token]);
    assert_eq!(full.len(), 2);
    assert_eq!(full.iter().map(|r| r.records).sum::<usize>(), 4);
    for ack in full.into_iter().flat_map(|request| request.acks) {
        ack.ack(BatchStatus::Delivered);
    }
    assert_eq!(receiver.try_status(), None, "one event is still pending");
    let last = pending.take();
    assert_eq!(last.events[0].1, 4..5);
    for ack in last.acks {
        ack.ack(BatchStatus::Delivered);
    }
    assert_eq!(receiver.try_status(), Some(BatchStatus::Delivered));
}

fn summary(correlation_id: &str, related: &[&str], severity: Severity) -> UnifiedEvent {
    let mut event = pod_event("sum_1", 9);
    event.kind = EventType::Correlation;
    event.source = "correlate".into();
    event.process = None;
    event.correlation = Some(Box::new(CorrelationContext {
        correlation_id: Some(correlation_id.into()),
        pattern: Some("oom-kill-cascade".into()),
        related_events: related.iter().map(|id| id.to_string()).collect(),
        root_cause: Some("memory-limit-exceeded".into()),
        recommended_action: Some("raise the memory limit".into()),
        confidence: Some(0.9),
        ..Default::default()
    }));
    event.impact = Some(Box::new(ImpactContext {
        severity: Some(severity),
        business_impact: Some(0.7),
        ..Default::default()
    }));
    event
}

#[test]
fn a_summary_is_a_trace_with_a_child_per_related_event() {
    let mut related = RelatedEvents::new(10);
    for (id, second) in [("evt_1", 3), ("evt_2", 5)] {
        let mut event = pod_event(id, second);
        event.correlation = Some(Box::new(CorrelationContext {
            correlation_id: Some("cor_1".into()),
            ..Default::default()
        }));
        related.remember(&event);
    }
    let spans = encode::incident_spans(
        &summary(
            "cor_1",
            &["evt_1", "evt_2", "evt_unseen"],
            Severity::Critical,
        ),
        &related,
    );
    assert_eq!(spans.len(), 3);
    let root = &spans[0];
    assert_eq!(root.name, "oom-kill-cascade");
    assert_eq!(root.trace_id, encode::incident_trace_id("cor_1"));
    assert_eq!(root.trace_id.len(), 16);
    assert_eq!(
        (root.start_time_unix_nano, root.end_time_unix_nano),
        (at(3).as_nanos() as u64, at(5).as_nanos() as u64)
    );
    let status = root.status.as_ref().unwrap();
    assert_eq!(status.code, StatusCode::Error as i32);
    assert_eq!(status.message, "memory-limit-exceeded");
    assert_eq!(
        text(attribute(
            &root.attributes,
            "tapio.correlation.recommended_action"
        )),
        "raise the memory limit"
    );
    for child in &spans[1..] {
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.parent_span_id, root.span_id);
        assert_eq!(child.name, "process exec");
    }
    assert_ne!(spans[1].span_id, spans[2].span_id);
    // The same summary sent again is the same trace and root span; a warning is no error.
    let again = encode::incident_spans(&summary("cor_1", &[], Severity::Warning), &related);
    assert_eq!(
        (&again[0].trace_id, &again[0].span_id),
        (&root.trace_id, &root.span_id)
    );
    assert_eq!(
        again[0].status.as_ref().unwrap().code,
        StatusCode::Unset as i32
    );
    assert_ne!(encode::incident_trace_id("cor_2"), root.trace_id);
}

#[test]
fn options_are_checked_when_built() {
    let cx = BuildContext {
        name: "otel".into(),
        data_dir: std::env::temp_dir(),
        node_name: "n".into(),
    };
    let error = |text: &str| match config(text).build(&cx) {
        Err(e) => e.message().to_owned(),
        Ok(_) => panic!("{text} was accepted"),
    };
    assert!(error("endpoint = \"ftp://x\"").contains("http:// or https://"));
    assert!(error("endpoint = \"http://127.0.0.1:4317/v1\"").contains("without a path"));
    assert!(error("endpoint = \"http://u:p@127.0.0.1:4317\"").contains("credentials"));
    assert!(error("tls = { ca_file = \"/nonexistent.pem\" }").contains("not https://"));
    assert!(
        error("endpoint = \"https://h:1\"\ntls = { ca_file = \"/nonexistent.pem\" }")
            .contains("tls.ca_file")
    );
    assert!(error("concurrency = 0").contains("at least 1"));
    assert!(error("headers = { \"bad name\" = \"x\" }").contains("headers"));
    let http =
        config("protocol = \"http/protobuf\"\nendpoint = \"https://otlp.example.com/otlp/\"");
    assert_eq!(http.endpoint().unwrap(), "https://otlp.example.com/otlp");
    assert!(http.build(&cx).is_ok());
    assert!(config("").build(&cx).is_ok());
}
