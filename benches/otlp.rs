//! OTLP throughput on loopback, against rotel (the collector the tests use) with its blackhole
//! exporter:
//! - the `otlp` sink sending demo events (gRPC, gzip, 1000 records a request, 2 in flight),
//!   next to `opentelemetry-otlp`'s own `LogExporter` sending the same records (same bodies,
//!   severities, times and `tapio.*` attributes) the same way, in the same run;
//! - the `otlp` source receiving requests of 1000 log records from a load generator (4 gRPC
//!   senders), counted as events out of the source.
//!
//! Run: `cargo bench --bench otlp` (rotel from `scripts/test.sh`, in `.tools/rotel`).
//! Options after `--`: `--events N` (default 200000), `--runs R` (default 3, medians reported).

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLogRecord, SdkLoggerProvider};
use tapio_event::buffer::buffer;
use tapio_event::metrics::ComponentKind;
use tapio_event::{
    BuildContext, ComponentMetrics, EventBatch, Fanout, Outputs, ShutdownSignal, SinkContext,
    SourceContext, UnifiedEvent, WhenFull,
};

const BATCH: usize = 1000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// rotel with the blackhole exporter on a free gRPC port; killed on drop.
struct Rotel {
    child: Child,
    port: u16,
}

impl Rotel {
    fn start() -> Rotel {
        let binary = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/.tools/rotel/rotel/rotel-agent"
        );
        let dir = std::env::temp_dir();
        let port = free_port();
        let child = Command::new(binary)
            .arg("start")
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{port}")])
            .args([
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args(["--exporter", "blackhole"])
            .args(["--otlp-grpc-max-recv-msg-size-mib", "64"])
            .arg("--pid-file")
            .arg(dir.join(format!("rotel-bench-{port}.pid")))
            .arg("--log-file")
            .arg(dir.join(format!("rotel-bench-{port}.log")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e}; run scripts/test.sh to install rotel"));
        let rotel = Rotel { child, port };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return rotel;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("rotel did not listen on {port}");
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The otlp sink's events/s for `events`.
async fn sink_run(events: &[UnifiedEvent], port: u16) -> f64 {
    let config: tapio_sinks::SinkConfig = serde_json::from_value(serde_json::json!({ "otlp": {
        "endpoint": format!("http://127.0.0.1:{port}"),
        "batch": { "max_events": BATCH, "max_bytes": "32MiB" },
        "concurrency": 2,
        "traces": false,
    }}))
    .unwrap();
    let cx = BuildContext {
        name: "bench".into(),
        data_dir: std::env::temp_dir(),
        node_name: "bench".into(),
    };
    let sink = config.build(&cx).unwrap();
    sink.healthcheck().await.unwrap();
    let metrics = Arc::new(ComponentMetrics::new("bench", "otlp", ComponentKind::Sink));
    let (tx, rx) = buffer(16 * BATCH, WhenFull::Block, Arc::clone(&metrics));
    let batches: Vec<EventBatch> = events
        .chunks(BATCH)
        .map(|chunk| EventBatch::new(chunk.to_vec()))
        .collect();
    let start = Instant::now();
    let running = tokio::spawn(sink.run(rx, SinkContext { metrics }));
    for batch in batches {
        tx.send(batch).await.unwrap();
    }
    drop(tx);
    running.await.unwrap().unwrap();
    events.len() as f64 / start.elapsed().as_secs_f64()
}

/// The event's facts as `tapio.<path>` attributes, as the sink flattens them.
fn flat_attributes(event: &UnifiedEvent) -> Vec<(String, AnyValue)> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, AnyValue)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    walk(&format!("{prefix}.{key}"), value, out);
                }
            }
            serde_json::Value::String(text) => {
                out.push((prefix.into(), AnyValue::from(text.clone())))
            }
            serde_json::Value::Bool(flag) => out.push((prefix.into(), AnyValue::from(*flag))),
            serde_json::Value::Number(n) => out.push((
                prefix.into(),
                match n.as_i64() {
                    Some(i) => AnyValue::from(i),
                    None => AnyValue::from(n.as_f64().unwrap_or_default()),
                },
            )),
            serde_json::Value::Array(items) => out.push((
                prefix.into(),
                AnyValue::ListAny(Box::new(
                    items
                        .iter()
                        .map(|i| AnyValue::from(i.to_string()))
                        .collect(),
                )),
            )),
            serde_json::Value::Null => {}
        }
    }
    let mut json = serde_json::to_value(event).unwrap();
    let fields = json.as_object_mut().unwrap();
    for skipped in ["timestamp", "trace_context", "raw_data"] {
        fields.remove(skipped);
    }
    let mut out = Vec::new();
    walk("tapio", &json, &mut out);
    out
}

/// `opentelemetry-otlp`'s exporter's events/s for the same records, built from the events in
/// the timed part as the sink builds its own (one resource for all: the exporter's limit).
async fn exporter_run(events: &[UnifiedEvent], port: u16) -> f64 {
    let exporter = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_compression(opentelemetry_otlp::Compression::Gzip)
        .build()
        .unwrap();
    let provider = SdkLoggerProvider::builder().build();
    let logger = provider.logger("tapio");
    let scope = opentelemetry::InstrumentationScope::builder("tapio").build();
    let exporter = Arc::new(exporter);
    let start = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    for chunk in events.chunks(BATCH) {
        let observed = SystemTime::now();
        let records: Vec<SdkLogRecord> = chunk
            .iter()
            .map(|event| {
                let mut record = logger.create_log_record();
                record.set_timestamp(
                    SystemTime::UNIX_EPOCH
                        + Duration::from_nanos(event.timestamp.as_nanos() as u64),
                );
                record.set_observed_timestamp(observed);
                record.set_severity_number(Severity::Info);
                record.set_severity_text("info");
                let body = event
                    .semantic
                    .as_ref()
                    .and_then(|s| s.narrative.clone())
                    .unwrap_or_else(|| serde_json::to_string(event).unwrap());
                record.set_body(AnyValue::from(body));
                record.add_attributes(flat_attributes(event));
                record
            })
            .collect();
        if in_flight.len() >= 2 {
            in_flight.join_next().await.unwrap().unwrap();
        }
        let exporter = Arc::clone(&exporter);
        let scope = scope.clone();
        in_flight.spawn(async move {
            let pairs: Vec<(&SdkLogRecord, &opentelemetry::InstrumentationScope)> =
                records.iter().map(|r| (r, &scope)).collect();
            exporter.export(LogBatch::new(&pairs)).await.unwrap();
        });
    }
    while let Some(done) = in_flight.join_next().await {
        done.unwrap();
    }
    events.len() as f64 / start.elapsed().as_secs_f64()
}

/// The otlp source's events/s from 4 gRPC senders of `requests` requests of 1000 records.
async fn source_run(requests: usize) -> f64 {
    let port = free_port();
    let config: tapio_sources::SourceConfig = serde_json::from_value(serde_json::json!({ "otlp": {
        "grpc_address": format!("127.0.0.1:{port}"),
        "max_pending_requests": 64,
    }}))
    .unwrap();
    let cx = BuildContext {
        name: "bench".into(),
        data_dir: std::env::temp_dir(),
        node_name: "bench".into(),
    };
    let source = config.build(&cx).unwrap();
    let metrics = Arc::new(ComponentMetrics::new(
        "bench",
        "otlp",
        ComponentKind::Source,
    ));
    let sink_metrics = Arc::new(ComponentMetrics::new(
        "count",
        "blackhole",
        ComponentKind::Sink,
    ));
    let (tx, mut rx) = buffer(64 * BATCH, WhenFull::Block, sink_metrics);
    let (trigger, shutdown) = ShutdownSignal::new();
    let out = Outputs::new(Fanout::new(vec![tx]), vec![], Arc::clone(&metrics));
    let running = tokio::spawn(source.run(SourceContext {
        out,
        shutdown,
        metrics,
    }));
    let expected = requests * BATCH;
    let counter = tokio::spawn(async move {
        let mut seen = 0;
        while seen < expected {
            let Some(batch) = rx.recv().await else { break };
            seen += batch.len();
        }
        seen
    });
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: (0..BATCH)
                    .map(|i| LogRecord {
                        time_unix_nano: 1_795_000_000_000_000_000 + i as u64,
                        severity_number: 17,
                        body: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                            value: Some(
                                opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                                    format!("payment {i} failed: connection reset by peer"),
                                ),
                            ),
                        }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let client = loop {
        match LogsServiceClient::connect(endpoint.clone()).await {
            Ok(client) => break client,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let start = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..4 {
        let mut client = client.clone();
        let request = request.clone();
        senders.spawn(async move {
            for _ in (sender..requests).step_by(4) {
                loop {
                    match client.export(request.clone()).await {
                        Ok(_) => break,
                        Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err(status) => panic!("export failed: {status}"),
                    }
                }
            }
        });
    }
    while let Some(done) = senders.join_next().await {
        done.unwrap();
    }
    let seen = counter.await.unwrap();
    let rate = seen as f64 / start.elapsed().as_secs_f64();
    trigger.trigger();
    running.await.unwrap().unwrap();
    rate
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let arg = |name: &str, default: usize| {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let count = arg("--events", 200_000);
    let runs = arg("--runs", 3);
    let events = support::demo_events(count);
    let rotel = Rotel::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut sink, mut exporter, mut source) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let s = runtime.block_on(sink_run(&events, rotel.port));
        let e = runtime.block_on(exporter_run(&events, rotel.port));
        let r = runtime.block_on(source_run(count / BATCH));
        println!(
            "run {run}: otlp sink {s:.0} events/s, opentelemetry-otlp exporter {e:.0} events/s, otlp source {r:.0} events/s"
        );
        sink.push(s);
        exporter.push(e);
        source.push(r);
    }
    let (s, e) = (median(sink), median(exporter));
    println!(
        "median of {runs} runs of {count} events: otlp sink {s:.0} events/s = {:.0}% of the opentelemetry-otlp exporter's {e:.0} events/s; otlp source {:.0} events/s",
        100.0 * s / e,
        median(source)
    );
}
