use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Event;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tapio_event::{ComponentConfig, EntityType, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_types::StatusExt;

use super::OtlpSourceConfig;
use super::decode::{Decoder, entity};
use crate::util::testing::{build_context, spawn};

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn pod_resource() -> Resource {
    Resource {
        attributes: vec![
            text("service.name", "checkout"),
            text("k8s.pod.name", "checkout-5f7d"),
            text("k8s.namespace.name", "shop"),
            text("k8s.node.name", "worker-2"),
        ],
        ..Default::default()
    }
}

fn logs_request(count: usize) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(pod_resource()),
            scope_logs: vec![ScopeLogs {
                log_records: (0..count)
                    .map(|i| LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                        severity_number: 17,
                        severity_text: "ERROR".into(),
                        body: Some(AnyValue {
                            value: Some(Value::StringValue(format!("failed {i}"))),
                        }),
                        trace_id: vec![0xab; 16],
                        span_id: vec![0xcd; 8],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[test]
fn the_resource_s_k8s_attributes_are_the_entity() {
    let pod = entity(Some(&pod_resource())).unwrap();
    assert_eq!(pod.kind, EntityType::Pod);
    assert_eq!(
        pod.id, "shop/checkout-5f7d",
        "no uid: the key the correlator also uses"
    );
    assert_eq!(pod.name.as_deref(), Some("checkout-5f7d"));
    assert_eq!(pod.node.as_deref(), Some("worker-2"));
    assert_eq!(pod.attributes["service.name"], "checkout");
    let mut with_uid = pod_resource();
    with_uid.attributes.push(text("k8s.pod.uid", "u-1"));
    assert_eq!(entity(Some(&with_uid)).unwrap().id, "u-1");
    let service = Resource {
        attributes: vec![text("service.name", "batch")],
        ..Default::default()
    };
    assert_eq!(entity(Some(&service)).unwrap().kind, EntityType::Service);
    assert!(entity(None).is_none());
}

#[test]
fn log_records_and_failed_spans_become_application_events() {
    let mut decoder = Decoder::new();
    let now = Timestamp(5);
    let events = decoder.logs(&logs_request(2), now);
    assert_eq!(events.len(), 2);
    let first = &events[0];
    assert_eq!(first.timestamp, Timestamp(1_700_000_000_000_000_000));
    assert_eq!(first.source, "otlp");
    assert!(first.id.starts_with("evt_"));
    assert_ne!(first.id, events[1].id);
    let application = first.application.as_ref().unwrap();
    assert_eq!(application["body"], "failed 0");
    assert_eq!(application["severity_number"], 17);
    assert_eq!(application["resource"]["service.name"], "checkout");
    let trace = first.trace_context.as_ref().unwrap();
    assert_eq!(trace.trace_id, "ab".repeat(16));
    assert_eq!(trace.span_id, "cd".repeat(8));

    let span = |name: &str, status: i32, events: Vec<Event>| Span {
        name: name.into(),
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        parent_span_id: vec![3; 8],
        start_time_unix_nano: 1_000_000,
        end_time_unix_nano: 3_000_000,
        status: Some(Status {
            code: status,
            message: "boom".into(),
        }),
        events,
        ..Default::default()
    };
    let exception = Event {
        name: "exception".into(),
        attributes: vec![text("exception.type", "ValueError")],
        ..Default::default()
    };
    let traces = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(pod_resource()),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    span("fine", StatusCode::Ok as i32, Vec::new()),
                    span("failed", StatusCode::Error as i32, Vec::new()),
                    span("raised", StatusCode::Unset as i32, vec![exception]),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let events = decoder.traces(&traces, now);
    let names: Vec<&str> = events
        .iter()
        .map(|e| {
            e.application.as_ref().unwrap()["span_name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names, ["failed", "raised"]);
    assert_eq!(events[0].timestamp, Timestamp(3_000_000));
    assert_eq!(events[0].application.as_ref().unwrap()["duration_ms"], 2.0);
    assert_eq!(
        events[1].application.as_ref().unwrap()["exception"]["type"],
        "ValueError"
    );
    let trace = events[0].trace_context.as_ref().unwrap();
    assert_eq!(
        trace.parent_span_id.as_deref(),
        Some("03".repeat(8).as_str())
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One OTLP/HTTP request on a fresh connection; returns the status and the answer's head.
async fn post(port: u16, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let code = answer[9..12].parse().unwrap();
    (code, answer)
}

/// Waits until something listens on `port`.
async fn listening(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("nothing listens on {port}");
}

/// With the pipeline stalled (an output nobody reads) and a queue of one request, new
/// requests are refused at once with HTTP 429 + `Retry-After` and gRPC `RESOURCE_EXHAUSTED` +
/// `RetryInfo` rather than buffered; a wrong token is refused before anything is decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_answers_429_and_resource_exhausted_with_retry_advice() {
    let (grpc, http) = (free_port(), free_port());
    let config: OtlpSourceConfig = toml::from_str(&format!(
        "grpc_address = \"127.0.0.1:{grpc}\"\nhttp_address = \"127.0.0.1:{http}\"\nmax_pending_requests = 1\nretry_after = \"2s\"\nauth = {{ token = \"t\" }}"
    ))
    .unwrap();
    let source = config.build(&build_context("otlp")).unwrap();
    let (task, taps) = spawn(source, "otlp", 1);
    listening(http).await;
    listening(grpc).await;
    let body = logs_request(3).encode_to_vec();
    assert_eq!(post(http, "/v1/logs", Some("nope"), &body).await.0, 401);
    assert_eq!(post(http, "/v1/metrics", Some("t"), &body).await.0, 404);
    assert_eq!(post(http, "/v1/logs", Some("t"), b"\xff\xff").await.0, 400);
    let mut codes = Vec::new();
    let mut refusal = String::new();
    for _ in 0..6 {
        let (code, answer) = post(http, "/v1/logs", Some("t"), &body).await;
        if code == 429 {
            refusal = answer;
        }
        codes.push(code);
    }
    assert_eq!(codes[0], 200, "{codes:?}");
    assert_eq!(*codes.last().unwrap(), 429, "{codes:?}");
    assert!(
        refusal.to_ascii_lowercase().contains("retry-after: 2\r\n"),
        "{refusal}"
    );

    let mut client = LogsServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
        .await
        .unwrap();
    let mut request = tonic::Request::new(logs_request(1));
    request
        .metadata_mut()
        .insert("authorization", "Bearer t".parse().unwrap());
    let status = client.export(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let advice = status.get_details_retry_info().unwrap().retry_delay;
    assert_eq!(advice, Some(std::time::Duration::from_secs(2)));
    let unauthenticated = client.export(logs_request(1)).await.unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);

    taps.trigger.trigger();
    drop(taps);
    task.await.unwrap().unwrap();
}

#[test]
fn options_are_checked_when_built() {
    let error = |text: &str| {
        let config: OtlpSourceConfig = toml::from_str(text).unwrap();
        match config.build(&build_context("otlp")) {
            Err(e) => e.message().to_owned(),
            Ok(_) => panic!("{text} was accepted"),
        }
    };
    assert!(error("").contains("nothing to listen on"));
    assert!(error("grpc_address = \"localhost\"").contains("IP address and port"));
    assert!(
        error("grpc_address = \"127.0.0.1:1\"\nhttp_address = \"127.0.0.1:1\"").contains("differ")
    );
    assert!(
        error("http_address = \"127.0.0.1:1\"\ntls = { crt_file = \"/nonexistent\", key_file = \"/k\" }")
            .contains("tls.crt_file")
    );
}
