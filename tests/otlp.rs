//! The `otlp` sink and source against real OTLP peers: rotel (a real collector, started per
//! test, whose debug log of what it received is read back field by field), an independent
//! Python receiver (grpcio + opentelemetry-proto) that decodes exactly what Tapio sent, and the
//! OpenTelemetry Python SDK as an independent sender. The collector stopped mid-stream loses
//! nothing once it is back; a 400 sends the batch to the dead-letter file.

#[path = "otlp/collector.rs"]
mod collector;
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use collector::{Item, Rotel, python_ready};
use common::*;

const POD_UID: &str = "6f1c2d3e-0000-4000-8000-00000000abcd";
const TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";
const SPAN_ID: &str = "eee19b7ec3c1b174";
/// The events' times, as RFC 3339 and as the nanoseconds OTLP carries.
const T1: (&str, u64) = ("2026-11-27T16:21:11.000000100Z", 1_795_796_471_000_000_100);
const T2: (&str, u64) = ("2026-11-27T16:21:13.000000200Z", 1_795_796_473_000_000_200);

/// An incident as the intelligence transforms leave it: two events of pod `api-7d9` that a
/// correlation group claimed (an exec with trace context and narrative, an exit 137), an
/// unrelated TCP retransmit of another pod with `impact.severity = error`, and the group's
/// `crash-loop` summary naming the two.
fn incident() -> String {
    let pod = format!(
        r#""entity":{{"type":"pod","id":"{POD_UID}","name":"api-7d9","namespace":"shop","node":"worker-1"}}"#
    );
    let process = |operation: &str, extra: &str| {
        format!(
            r#""process":{{"operation":"{operation}","pid":42,"comm":"api","container_id":"c0ffee"{extra}}}"#
        )
    };
    [
        format!(
            r#"{{"id":"evt_1","timestamp":"{}","type":"process","source":"ebpf",{pod},{},"trace_context":{{"trace_id":"{TRACE_ID}","span_id":"{SPAN_ID}"}},"semantic":{{"narrative":"api started in pod shop/api-7d9"}},"correlation":{{"correlation_id":"cor_1"}}}}"#,
            T1.0,
            process("exec", "")
        ),
        format!(
            r#"{{"id":"evt_2","timestamp":"{}","type":"process","source":"ebpf",{pod},{},"correlation":{{"correlation_id":"cor_1"}}}}"#,
            T2.0,
            process("exit", r#","exit_code":137"#)
        ),
        format!(
            r#"{{"id":"evt_3","timestamp":"{}","type":"network","source":"ebpf","entity":{{"type":"pod","id":"shop/web-1","name":"web-1","namespace":"shop"}},"network":{{"operation":"retransmit","protocol":"tcp","dst_ip":"10.0.0.9","dst_port":443}},"impact":{{"severity":"error"}}}}"#,
            T2.0
        ),
        format!(
            r#"{{"id":"sum_1","timestamp":"{}","type":"correlation","source":"correlate",{pod},"semantic":{{"narrative":"api-7d9 is crash-looping"}},"correlation":{{"correlation_id":"cor_1","pattern":"crash-loop","related_events":["evt_1","evt_2"],"root_cause":"application-crash","recommended_action":"read the container's last logs","confidence":0.8}},"impact":{{"severity":"critical","business_impact":0.6}}}}"#,
            T2.0
        ),
    ]
    .join("\n")
        + "\n"
}

/// The incident's trace id: FNV-1a (128-bit) of its correlation id, recomputed here from the
/// algorithm's published constants rather than taken from the sink.
fn incident_trace_id(correlation_id: &str) -> String {
    let hash = correlation_id
        .bytes()
        .fold(0x6c62272e07bb014262b821756295c58d_u128, |hash, byte| {
            (hash ^ u128::from(byte)).wrapping_mul(0x0000000001000000000000000000013B)
        });
    format!("{hash:032x}")
}

/// `[sinks.<name>]`, an otlp sink reading `in`.
fn otlp_sink(name: &str, options: &str) -> String {
    format!("[sinks.{name}]\ntype = \"otlp\"\ninputs = [\"in\"]\n{options}\n")
}

fn stdin_config(dir: &Path, sinks: &str) -> PathBuf {
    write_config(
        dir,
        "tapio.toml",
        &format!(
            "data_dir = \"{}\"\n\n[sources.in]\ntype = \"stdin\"\n\n{sinks}",
            dir.display()
        ),
    )
}

/// The item whose `tapio.id` attribute is `id`.
fn by_id<'a>(items: &'a [Item], id: &str) -> &'a Item {
    let wanted = format!("Str({id})");
    items
        .iter()
        .find(|item| item.attributes.get("tapio.id") == Some(&wanted))
        .unwrap_or_else(|| panic!("nothing with tapio.id {id} in {items:#?}"))
}

fn of_service(items: &[Item], service: &str) -> Vec<Item> {
    let wanted = format!("Str({service})");
    items
        .iter()
        .filter(|item| item.resource.get("service.name") == Some(&wanted))
        .cloned()
        .collect()
}

/// What rotel printed of one sink's export of [`incident`], checked field by field.
fn assert_incident_in_rotel(logs: &[Item], spans: &[Item]) {
    assert_eq!(logs.len(), 4, "{logs:#?}");
    let exec = by_id(logs, "evt_1");
    for (key, value) in [
        ("k8s.pod.name", "Str(api-7d9)".to_owned()),
        ("k8s.pod.uid", format!("Str({POD_UID})")),
        ("k8s.namespace.name", "Str(shop)".into()),
        ("k8s.node.name", "Str(worker-1)".into()),
        ("container.id", "Str(c0ffee)".into()),
        ("process.pid", "Int(42)".into()),
        ("process.executable.name", "Str(api)".into()),
    ] {
        assert_eq!(exec.resource.get(key), Some(&value), "{key} in {exec:#?}");
    }
    assert_eq!(exec.field("Timestamp"), T1.1.to_string());
    assert_ne!(exec.field("ObservedTimestamp"), "0");
    assert_eq!(exec.field("SeverityNumber"), "SEVERITY_NUMBER_INFO(9)");
    assert_eq!(exec.field("SeverityText"), "info");
    assert_eq!(exec.field("Body"), "Str(api started in pod shop/api-7d9)");
    assert_eq!(exec.field("Trace ID"), TRACE_ID);
    assert_eq!(exec.field("Span ID"), SPAN_ID);
    assert_eq!(exec.attribute("tapio.process.operation"), "Str(exec)");
    assert_eq!(
        exec.attribute("tapio.correlation.correlation_id"),
        "Str(cor_1)"
    );
    let exit = by_id(logs, "evt_2");
    assert_eq!(exit.field("SeverityNumber"), "SEVERITY_NUMBER_WARN(13)");
    assert_eq!(exit.attribute("tapio.process.exit_code"), "Int(137)");
    assert!(
        exit.field("Body").starts_with(r#"Str({"id":"evt_2""#),
        "{exit:#?}"
    );
    let tcp = by_id(logs, "evt_3");
    assert_eq!(tcp.field("SeverityNumber"), "SEVERITY_NUMBER_ERROR(17)");
    assert_eq!(tcp.attribute("tapio.network.dst_port"), "Int(443)");
    assert_eq!(tcp.resource.get("k8s.pod.name").unwrap(), "Str(web-1)");
    assert!(
        !tcp.resource.contains_key("k8s.pod.uid"),
        "shop/web-1 is no uid"
    );
    let summary_log = by_id(logs, "sum_1");
    assert_eq!(
        summary_log.field("SeverityNumber"),
        "SEVERITY_NUMBER_FATAL(21)"
    );

    assert_eq!(spans.len(), 3, "{spans:#?}");
    let trace_id = incident_trace_id("cor_1");
    let root = spans
        .iter()
        .find(|span| span.field("Parent ID").is_empty())
        .expect("a root span");
    assert_eq!(root.field("Name"), "crash-loop");
    assert_eq!(root.field("Trace ID"), trace_id);
    assert_eq!(root.field("Start time"), T1.1.to_string());
    assert_eq!(root.field("End time"), T2.1.to_string());
    assert_eq!(root.field("Status code"), "STATUS_CODE_ERROR");
    assert_eq!(root.field("Status message"), "application-crash");
    assert_eq!(
        root.attribute("tapio.correlation.root_cause"),
        "Str(application-crash)"
    );
    assert_eq!(
        root.attribute("tapio.correlation.recommended_action"),
        "Str(read the container's last logs)"
    );
    assert_eq!(
        root.attribute("tapio.correlation.confidence"),
        "Double(0.8)"
    );
    assert_eq!(
        root.attribute("tapio.impact.business_impact"),
        "Double(0.6)"
    );
    assert_eq!(root.resource.get("k8s.pod.name").unwrap(), "Str(api-7d9)");
    let children: BTreeSet<(&str, &str)> = spans
        .iter()
        .filter(|span| !span.field("Parent ID").is_empty())
        .map(|span| {
            assert_eq!(span.field("Trace ID"), trace_id);
            assert_eq!(span.field("Parent ID"), root.field("ID"));
            (span.field("Name"), span.field("Start time"))
        })
        .collect();
    let (t1, t2) = (T1.1.to_string(), T2.1.to_string());
    assert_eq!(
        children,
        BTreeSet::from([("process exec", t1.as_str()), ("process exit", t2.as_str())])
    );
}

/// Both transports into one collector, gzip over gRPC and none over HTTP: every record, its
/// resource, severity and trace ids, and the incident's span with its children, as printed.
#[test]
fn logs_and_incident_traces_reach_a_real_collector_over_grpc_and_http() {
    let Some(rotel) = Rotel::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sinks = otlp_sink(
        "grpc",
        &format!(
            "endpoint = \"{}\"\nservice_name = \"tapio-grpc\"",
            rotel.grpc_endpoint()
        ),
    ) + &otlp_sink(
        "http",
        &format!(
            "endpoint = \"{}\"\nprotocol = \"http/protobuf\"\ncompression = \"none\"\nservice_name = \"tapio-http\"",
            rotel.http_endpoint()
        ),
    );
    let output = run_with_stdin(&stdin_config(dir.path(), &sinks), incident().as_bytes());
    assert_success(&output);
    let printed = rotel.wait_for(8, 6);
    for service in ["tapio-grpc", "tapio-http"] {
        assert_incident_in_rotel(
            &of_service(&printed.logs, service),
            &of_service(&printed.spans, service),
        );
    }
    for sink in ["grpc", "http"] {
        let counts = summary_row(&output.stderr, sink);
        assert_eq!(
            (counts.events_in, counts.events_out, counts.errors),
            (4, 4, 0)
        );
    }
}

/// The independent Python receiver, started on a free port; killed on drop.
struct Receiver {
    child: Child,
    pub port: u16,
    pub out: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, protocol: &str, extra: &[&str]) -> Receiver {
        let port = free_port();
        let out = dir.join(format!("received-{port}.ndjson"));
        let mut child = Command::new("python3")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/otlp/receive.py"))
            .args([protocol, &port.to_string()])
            .arg(&out)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready.trim(), "ready", "receive.py did not start");
        Receiver { child, port, out }
    }

    /// Every request received, in order: (signal, request as JSON).
    fn requests(&self) -> Vec<(String, serde_json::Value)> {
        parse_ndjson(&std::fs::read_to_string(&self.out).unwrap_or_default())
            .into_iter()
            .map(|line| {
                (
                    line["signal"].as_str().unwrap().to_owned(),
                    line["request"].clone(),
                )
            })
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn attributes(list: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|kv| (kv["key"].as_str().unwrap().to_owned(), kv["value"].clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Exactly what went over the wire, decoded by grpcio and opentelemetry-proto: one request per
/// signal; the pod's two events under one `ResourceLogs` whose attributes are, in order, the
/// semantic-convention keys; the records' fields as protobuf has them; the incident's spans.
#[test]
fn an_independent_receiver_decodes_exactly_what_was_sent() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "grpc", &[]);
    let sinks = otlp_sink(
        "otel",
        &format!(
            "endpoint = \"http://127.0.0.1:{}\"\nheaders = {{ \"x-api-key\" = \"k\" }}",
            receiver.port
        ),
    );
    let output = run_with_stdin(&stdin_config(dir.path(), &sinks), incident().as_bytes());
    assert_success(&output);
    let requests: Vec<_> = receiver
        .requests()
        .into_iter()
        .filter(|(_, request)| request.as_object().is_some_and(|r| !r.is_empty()))
        .collect();
    let signals: Vec<&str> = requests.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        signals,
        ["logs", "traces"],
        "the healthcheck's empty export aside"
    );
    let resource_logs = requests[0].1["resource_logs"].as_array().unwrap();
    assert_eq!(
        resource_logs.len(),
        3,
        "api-7d9, web-1 and the summary's pod"
    );
    let api = &resource_logs[0];
    let text = |value: &str| serde_json::json!({ "string_value": value });
    assert_eq!(
        attributes(&api["resource"]["attributes"]),
        vec![
            ("service.name".to_owned(), text("tapio")),
            ("k8s.pod.name".into(), text("api-7d9")),
            ("k8s.pod.uid".into(), text(POD_UID)),
            ("k8s.namespace.name".into(), text("shop")),
            ("k8s.node.name".into(), text("worker-1")),
            ("container.id".into(), text("c0ffee")),
            (
                "process.pid".into(),
                serde_json::json!({ "int_value": "42" })
            ),
            ("process.executable.name".into(), text("api")),
        ]
    );
    let scope = &api["scope_logs"][0];
    assert_eq!(scope["scope"]["name"], "tapio");
    let records = scope["log_records"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    let exec = &records[0];
    assert_eq!(exec["time_unix_nano"], T1.1.to_string());
    assert_eq!(exec["severity_number"], "SEVERITY_NUMBER_INFO");
    assert_eq!(exec["severity_text"], "info");
    assert_eq!(exec["body"], text("api started in pod shop/api-7d9"));
    assert_eq!(exec["trace_id"], TRACE_ID);
    assert_eq!(exec["span_id"], SPAN_ID);
    let exec_attributes = attributes(&exec["attributes"]);
    assert!(exec_attributes.contains(&("tapio.id".into(), text("evt_1"))));
    assert!(exec_attributes.contains(&("tapio.entity.type".into(), text("pod"))));
    assert_eq!(records[1]["severity_number"], "SEVERITY_NUMBER_WARN");
    assert!(
        records[1].get("trace_id").is_none(),
        "no trace context, no id"
    );

    let resource_spans = requests[1].1["resource_spans"].as_array().unwrap();
    assert_eq!(resource_spans.len(), 1);
    let spans = resource_spans[0]["scope_spans"][0]["spans"]
        .as_array()
        .unwrap();
    assert_eq!(spans.len(), 3);
    assert_eq!(spans[0]["name"], "crash-loop");
    assert_eq!(spans[0]["trace_id"], incident_trace_id("cor_1"));
    assert_eq!(spans[0]["kind"], "SPAN_KIND_INTERNAL");
    assert_eq!(spans[0]["status"]["code"], "STATUS_CODE_ERROR");
    for child in &spans[1..] {
        assert_eq!(child["parent_span_id"], spans[0]["span_id"]);
        assert_eq!(child["trace_id"], spans[0]["trace_id"]);
    }
}

/// A receiver that answers every export with a partial success: the rejected count is counted
/// as errors, and the batch is still acknowledged (tapio ends normally, nothing dead-lettered).
#[test]
fn a_partial_success_is_counted_and_acknowledged() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "http", &["--partial", "1"]);
    let sinks = otlp_sink(
        "otel",
        &format!(
            "endpoint = \"http://127.0.0.1:{}\"\nprotocol = \"http/protobuf\"\nhealthcheck = false",
            receiver.port
        ),
    );
    let output = run_with_stdin(&stdin_config(dir.path(), &sinks), incident().as_bytes());
    assert_success(&output);
    let counts = summary_row(&output.stderr, "otel");
    // One rejected log record and one rejected span, as the receiver said.
    assert_eq!((counts.events_out, counts.errors), (4, 2));
    assert_eq!(receiver.requests().len(), 2);
    assert!(!dir.path().join("dead_letter/otel.ndjson").exists());
}

/// A receiver that answers 400: the request is rejected for good and every event of it lands
/// in the dead-letter file with the receiver's reason; tapio still ends normally.
#[test]
fn a_400_sends_the_batch_to_the_dead_letter_file() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(dir.path(), "http", &["--status", "400"]);
    let sinks = otlp_sink(
        "otel",
        &format!(
            "endpoint = \"http://127.0.0.1:{}\"\nprotocol = \"http/protobuf\"\nhealthcheck = false",
            receiver.port
        ),
    );
    let output = run_with_stdin(&stdin_config(dir.path(), &sinks), incident().as_bytes());
    assert_success(&output);
    let dead =
        parse_ndjson(&std::fs::read_to_string(dir.path().join("dead_letter/otel.ndjson")).unwrap());
    let ids: Vec<&str> = dead
        .iter()
        .map(|line| line["event"]["id"].as_str().unwrap())
        .collect();
    // The four log records, then the summary again for its refused trace.
    assert_eq!(ids, ["evt_1", "evt_2", "evt_3", "sum_1", "sum_1"]);
    for line in &dead {
        let reason = line["reason"].as_str().unwrap();
        assert!(
            reason.contains("400") && reason.contains("test receiver refuses"),
            "{reason}"
        );
    }
    assert_eq!(summary_row(&output.stderr, "otel").errors, 5);
}

/// The collector is killed while demo events stream through the sink and started again two
/// seconds later on the same ports: every event still arrives (batches are held and retried,
/// not acknowledged), and the failed attempts are counted as errors.
#[test]
fn nothing_is_lost_while_the_collector_is_down() {
    let Some(mut rotel) = Rotel::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sent.ndjson");
    let config = write_config(
        dir.path(),
        "tapio.toml",
        &format!(
            "data_dir = \"{}\"\n[sources.demo]\ntype = \"demo\"\ncount = 3000\nrate = 600\nseed = 3\n\n{}\n[sinks.otel]\ntype = \"otlp\"\ninputs = [\"demo\"]\nendpoint = \"{}\"\nbatch = {{ max_events = 100, timeout = \"100ms\" }}\ntraces = false\n",
            dir.path().display(),
            copy_sink("demo", &copy),
            rotel.grpc_endpoint()
        ),
    );
    let tapio = spawn_run(&config);
    std::thread::sleep(Duration::from_millis(1500));
    rotel.stop();
    std::thread::sleep(Duration::from_secs(2));
    rotel.restart();
    let output = wait_with_timeout(tapio, Duration::from_secs(60));
    assert_success(&output);
    let sent: BTreeSet<String> = parse_ndjson(&std::fs::read_to_string(&copy).unwrap())
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent.len(), 3000);
    let printed = rotel.wait_for(3000, 0);
    let received: BTreeSet<String> = printed
        .logs
        .iter()
        .map(|item| {
            let id = item.attribute("tapio.id");
            id.trim_start_matches("Str(")
                .trim_end_matches(')')
                .to_owned()
        })
        .collect();
    let missing: Vec<&String> = sent.difference(&received).collect();
    assert!(
        missing.is_empty(),
        "{} events never arrived: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let counts = summary_row(&output.stderr, "otel");
    assert_eq!(counts.events_out, 3000);
    assert!(
        counts.errors > 0,
        "the failed attempts are counted: {counts:?}"
    );
}

/// Applications' own telemetry from the OpenTelemetry Python SDK, over gRPC with a bearer
/// token: the error log and the failing span (with its exception) arrive as `application`
/// events about the pod the resource names, with the span's trace context; the span that went
/// well does not.
#[test]
fn the_otlp_source_turns_sdk_logs_and_failed_spans_into_events() {
    if !python_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.ndjson");
    let port = free_port();
    let config = write_config(
        dir.path(),
        "tapio.toml",
        &source_to_file(
            &format!(
                "type = \"otlp\"\ngrpc_address = \"127.0.0.1:{port}\"\nauth = {{ token = \"s3cret\" }}"
            ),
            &out,
        ),
    );
    let tapio = spawn_run(&config);
    eventually(Duration::from_secs(15), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .expect("the otlp source listens");
    let sender = |token: &str| {
        Command::new("python3")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/otlp/send.py"))
            .arg(format!("127.0.0.1:{port}"))
            .arg(token)
            .output()
            .unwrap()
    };
    let refused = sender("wrong");
    assert!(refused.status.success());
    let sent = sender("s3cret");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let ids: serde_json::Value = serde_json::from_slice(&sent.stdout).unwrap();
    eventually(Duration::from_secs(15), || {
        let events = parse_ndjson(&std::fs::read_to_string(&out).unwrap_or_default());
        (events.len() >= 2).then_some(())
    })
    .expect("two events");
    signal(tapio.id(), libc::SIGTERM);
    let output = wait_with_timeout(tapio, Duration::from_secs(30));
    assert_success(&output);
    let events = parse_ndjson(&std::fs::read_to_string(&out).unwrap());
    assert_eq!(
        events.len(),
        2,
        "the wrong token and the good span made no events: {events:#?}"
    );
    for event in &events {
        assert_eq!(event["type"], "application");
        assert_eq!(event["source"], "otlp");
        assert_eq!(
            event["entity"],
            serde_json::json!({
                "type": "pod",
                "id": "0b7c6f0e-1111-4222-8333-444455556666",
                "name": "checkout-5f7d",
                "namespace": "shop",
                "node": "worker-2",
                "attributes": { "service.name": "checkout" }
            })
        );
        assert_eq!(event["trace_context"]["trace_id"], ids["trace_id"]);
        assert_eq!(event["trace_context"]["span_id"], ids["span_id"]);
    }
    let log = events
        .iter()
        .find(|e| e["application"].get("body").is_some())
        .unwrap();
    assert_eq!(
        log["application"]["body"],
        "payment failed: connection reset by peer"
    );
    assert_eq!(log["application"]["severity_text"], "ERROR");
    assert_eq!(log["application"]["severity_number"], 17);
    assert_eq!(log["application"]["attributes"]["order.id"], "o-17");
    let span = events
        .iter()
        .find(|e| e["application"].get("span_name").is_some())
        .unwrap();
    assert_eq!(span["application"]["span_name"], "charge");
    assert_eq!(
        span["application"]["status_message"],
        "payment backend unreachable"
    );
    assert_eq!(
        span["application"]["exception"]["type"],
        "ConnectionResetError"
    );
    assert_eq!(
        span["application"]["exception"]["message"],
        "connection reset by peer"
    );
    assert!(
        summary_row(&output.stderr, "in").events_out == 2,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// OTLP/HTTP end to end through Tapio's own receiver: the otlp sink (gzip) into the otlp
/// source of the same process, whose events are the sink's log records read back, entity and
/// trace context included (the source's HTTP side; the SDK test above covers gRPC).
#[test]
fn the_otlp_source_reads_otlp_http_with_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("events.ndjson");
    let port = free_port();
    let config = write_config(
        dir.path(),
        "tapio.toml",
        &format!(
            "data_dir = \"{dir}\"\n[sources.in]\ntype = \"stdin\"\n\n[sinks.send]\ntype = \"otlp\"\ninputs = [\"in\"]\nprotocol = \"http/protobuf\"\nendpoint = \"http://127.0.0.1:{port}\"\nhealthcheck = false\ntraces = false\n\n[sources.receive]\ntype = \"otlp\"\nhttp_address = \"127.0.0.1:{port}\"\n\n[sinks.out]\ntype = \"file\"\ninputs = [\"receive\"]\npath = \"{out}\"\n",
            dir = dir.path().display(),
            out = out.display()
        ),
    );
    let mut tapio = common::tapio()
        .args(["run", "--summary", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut tapio.stdin.take().unwrap(), incident().as_bytes()).unwrap();
    let events = eventually(Duration::from_secs(20), || {
        let events = parse_ndjson(&std::fs::read_to_string(&out).unwrap_or_default());
        (events.len() >= 4).then_some(events)
    })
    .expect("the four records came back");
    signal(tapio.id(), libc::SIGTERM);
    assert_success(&wait_with_timeout(tapio, Duration::from_secs(30)));
    let exec = events
        .iter()
        .find(|e| e["application"]["body"] == "api started in pod shop/api-7d9")
        .unwrap();
    assert_eq!(exec["timestamp"], T1.0);
    assert_eq!(exec["entity"]["id"], POD_UID);
    assert_eq!(exec["entity"]["name"], "api-7d9");
    assert_eq!(exec["trace_context"]["trace_id"], TRACE_ID);
    assert_eq!(exec["application"]["severity_number"], 9);
    assert_eq!(exec["application"]["attributes"]["tapio.id"], "evt_1");
    assert_eq!(exec["application"]["resource"]["process.pid"], 42);
}

/// TLS both ways, over both transports: the otlp sink to `https://` endpoints trusting a
/// private CA (`tls.ca_file`), into the otlp source's gRPC and HTTP receivers serving a
/// certificate that CA signed (`tls.crt_file`, `tls.key_file`); every record arrives once per
/// transport. A sink trusting only the built-in roots is refused by the healthcheck (exit 69).
#[test]
fn the_sink_and_the_source_speak_tls_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let Certificates { ca, crt, key, .. } = certificates(dir.path());
    let out = dir.path().join("events.ndjson");
    let (grpc, http) = (free_port(), free_port());
    let sink = |name: &str, protocol: &str, port: u16| {
        format!(
            "[sinks.{name}]\ntype = \"otlp\"\ninputs = [\"in\"]\nprotocol = \"{protocol}\"\nendpoint = \"https://127.0.0.1:{port}\"\ntls = {{ ca_file = \"{}\" }}\nhealthcheck = false\ntraces = false\nservice_name = \"{name}\"\n\n",
            ca.display()
        )
    };
    let config = write_config(
        dir.path(),
        "tapio.toml",
        &format!(
            "data_dir = \"{dir}\"\n[sources.in]\ntype = \"stdin\"\n\n{}{}[sources.receive]\ntype = \"otlp\"\ngrpc_address = \"127.0.0.1:{grpc}\"\nhttp_address = \"127.0.0.1:{http}\"\ntls = {{ crt_file = \"{crt}\", key_file = \"{key}\" }}\n\n[sinks.out]\ntype = \"file\"\ninputs = [\"receive\"]\npath = \"{out}\"\n",
            sink("over_grpc", "grpc", grpc),
            sink("over_http", "http/protobuf", http),
            dir = dir.path().display(),
            crt = crt.display(),
            key = key.display(),
            out = out.display()
        ),
    );
    let mut tapio = common::tapio()
        .args(["run", "--summary", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut tapio.stdin.take().unwrap(), incident().as_bytes()).unwrap();
    let events = eventually(Duration::from_secs(30), || {
        let events = parse_ndjson(&std::fs::read_to_string(&out).unwrap_or_default());
        (events.len() >= 8).then_some(events)
    })
    .expect("every record over both transports");
    // Without the private CA the receiver's certificate is not trusted.
    let untrusting = write_config(
        dir.path(),
        "untrusting.toml",
        &format!(
            "[sources.in]\ntype = \"stdin\"\n\n[sinks.otel]\ntype = \"otlp\"\ninputs = [\"in\"]\nendpoint = \"https://127.0.0.1:{grpc}\"\n"
        ),
    );
    let refused = run_with_stdin(&untrusting, b"");
    signal(tapio.id(), libc::SIGTERM);
    assert_success(&wait_with_timeout(tapio, Duration::from_secs(30)));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("otlp healthcheck"), "{stderr}");
    for service in ["over_grpc", "over_http"] {
        let ids: BTreeSet<&str> = events
            .iter()
            .filter(|e| e["application"]["resource"]["service.name"] == service)
            .map(|e| e["application"]["attributes"]["tapio.id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            BTreeSet::from(["evt_1", "evt_2", "evt_3", "sum_1"]),
            "{service}"
        );
    }
}
