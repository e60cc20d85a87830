use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tapio_event::ComponentConfig;

use tapio_event::buffer::{WhenFull, buffer};
use tapio_event::{
    AckToken, BatchStatus, BuildContext, ComponentError, ComponentKind, ComponentMetrics, Entity,
    EntityType, EventBatch, EventType, ImpactContext, Severity, SinkContext, Timestamp,
    UnifiedEvent,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use super::batch::{Limits, NextInsert, new_spares, recycle};
use super::schema::{FIXED_COLUMNS, Layout, create_table_sql, is_identifier};
use super::{ClickhouseConfig, Format, bisect};

fn event(id: &str) -> UnifiedEvent {
    let mut event = UnifiedEvent::new(
        EventType::Kubernetes,
        "kubernetes",
        Timestamp::from_civil(2026, 11, 27, 16, 21, 11, 123_456_789).unwrap(),
    );
    event.id = id.into();
    event
}

/// The `JSONEachRow` layout without extra columns, whose rows the tests read back as JSON.
fn json_layout() -> Layout {
    Layout {
        format: Format::JsonEachRow,
        extras: Vec::new(),
    }
}

/// The row line of `event`, newline included.
fn line(event: &UnifiedEvent) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    json_layout().write_row(event, &mut Vec::new(), &mut out);
    out.to_vec()
}

/// The event's JSON form out of a row line.
fn event_of(row: &[u8]) -> String {
    json_layout().event_of(row)
}

fn row_json(line: &[u8]) -> serde_json::Value {
    assert_eq!(line.last(), Some(&b'\n'));
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    serde_json::from_slice(line).unwrap()
}

#[test]
fn rows_split_nanoseconds_and_fill_the_filter_columns() {
    let mut e = event("evt_1");
    let mut entity = Entity::new(EntityType::Pod, "uid-1");
    entity.namespace = Some("shop".into());
    entity.attributes.insert("node".into(), "worker-2".into());
    e.entity = Some(Box::new(entity));
    e.impact = Some(Box::new(ImpactContext {
        severity: Some(Severity::Critical),
        business_impact: Some(0.75),
        ..Default::default()
    }));
    let row = line(&e);
    let json = row_json(&row);
    assert_eq!(json["timestamp"], "2026-11-27 16:21:11");
    assert_eq!(json["timestamp_ns"], 123_456_789);
    assert_eq!(json["entity_id"], "uid-1");
    assert_eq!(json["entity_type"], "pod");
    assert_eq!(json["namespace"], "shop");
    assert_eq!(json["node"], "worker-2");
    assert_eq!(json["severity"], "critical");
    assert_eq!(json["business_impact"], 0.75);
    assert_eq!(json["pattern"], "");
    let stored: UnifiedEvent = serde_json::from_str(json["event"].as_str().unwrap()).unwrap();
    assert_eq!(stored, e);
    assert_eq!(event_of(&row), json["event"].as_str().unwrap());
}

#[test]
fn rows_escape_what_json_must_escape() {
    let mut e = event("evt_\"quoted\"\n\\ \u{2603}");
    e.source = "tab\there".into();
    let json = row_json(&line(&e));
    assert_eq!(json["id"], "evt_\"quoted\"\n\\ \u{2603}");
    assert_eq!(json["source"], "tab\there");
    assert_eq!(json["business_impact"], 0.0);
    let stored: UnifiedEvent = serde_json::from_str(json["event"].as_str().unwrap()).unwrap();
    assert_eq!(stored.id, e.id);
}

#[test]
fn create_table_uses_the_documented_schema() {
    let sql = create_table_sql("tapio", "events");
    assert!(sql.contains("CREATE TABLE IF NOT EXISTS `tapio`.`events`"));
    assert!(sql.contains("ORDER BY (entity_id, timestamp)"));
    assert!(is_identifier("events_2026") && is_identifier("_x"));
    assert!(!is_identifier("") && !is_identifier("1x") && !is_identifier("a`; DROP"));
}

fn limits(max_events: usize, max_bytes: usize) -> Limits {
    Limits {
        max_events,
        max_bytes,
        timeout: Duration::from_secs(1),
    }
}

#[tokio::test]
async fn a_batch_split_over_inserts_is_acknowledged_when_all_of_them_are() {
    let mut pending = NextInsert::new(limits(3, usize::MAX), json_layout(), new_spares());
    let (token, mut status) = AckToken::new();
    let events: Vec<_> = (0..7).map(|i| event(&format!("evt_{i}"))).collect();
    let chunks = pending.add(&events, vec![token]);
    assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), [3, 3]);
    assert!(pending.deadline().is_some());
    let rest = pending.take();
    assert_eq!(rest.len(), 1);
    assert_eq!(row_json(&rest.lines(0..1))["id"], "evt_6");
    assert!(pending.is_empty() && pending.deadline().is_none());
    for chunk in chunks {
        for ack in chunk.acks {
            ack.ack(BatchStatus::Delivered);
        }
    }
    assert_eq!(
        status.try_status(),
        None,
        "acknowledged before its last row"
    );
    for ack in rest.acks {
        ack.ack(BatchStatus::Delivered);
    }
    assert_eq!(status.status().await, BatchStatus::Delivered);
}

#[test]
fn written_bodies_are_reused_once_nothing_else_holds_them() {
    let spares = new_spares();
    let mut pending = NextInsert::new(limits(2, usize::MAX), json_layout(), spares.clone());
    let events: Vec<_> = (0..4).map(|i| event(&format!("evt_{i}"))).collect();
    let mut chunks = pending.add(&events, Vec::new());
    let (second, first) = (chunks.pop().unwrap(), chunks.pop().unwrap());
    let still_sending = first.lines(0..1);
    recycle(&spares, first.body);
    drop(still_sending);
    let address = second.body.as_ptr();
    recycle(&spares, second.body);
    // The body being filled now was made before the recycling; the one after it is the spare.
    assert!(pending.add(&events[..1], Vec::new()).is_empty());
    pending.take();
    assert!(pending.add(&events[..1], Vec::new()).is_empty());
    let reused = pending.take();
    assert_eq!(
        reused.body.as_ptr(),
        address,
        "the recycled body was written again"
    );
    assert_eq!(row_json(&reused.lines(0..1))["id"], "evt_0");
    assert!(pending.add(&events[..1], Vec::new()).is_empty());
    let fresh = pending.take();
    assert_ne!(
        fresh.body.as_ptr(),
        address,
        "a body still being sent was reused"
    );
}

#[tokio::test]
async fn max_bytes_cuts_inserts_that_each_carry_the_batch_token() {
    let one_row = line(&event("evt_0")).len();
    let mut pending = NextInsert::new(limits(usize::MAX, one_row * 2), json_layout(), new_spares());
    let (token, status) = AckToken::new();
    let events: Vec<_> = (0..4).map(|i| event(&format!("evt_{i}"))).collect();
    let chunks = pending.add(&events, vec![token]);
    assert_eq!(chunks.len(), 2);
    assert!(pending.is_empty());
    drop(chunks);
    assert_eq!(status.status().await, BatchStatus::Failed);
}

#[tokio::test]
async fn bisection_isolates_every_rejected_row_and_inserts_the_rest() {
    let mut pending = NextInsert::new(limits(usize::MAX, usize::MAX), json_layout(), new_spares());
    let events: Vec<_> = (0..10).map(|i| event(&format!("evt_{i}"))).collect();
    assert!(pending.add(&events, Vec::new()).is_empty());
    let chunk = pending.take();
    let ids = |rows| -> Vec<String> {
        String::from_utf8(chunk.lines(rows).to_vec())
            .unwrap()
            .lines()
            .map(|line| {
                row_json(format!("{line}\n").as_bytes())["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let mut inserted = Vec::new();
    let mut attempts = 0;
    let rejected = bisect(chunk.len(), "Too large value".to_string(), |rows| {
        attempts += 1;
        let part = ids(rows);
        let outcome = if part.iter().any(|id| id == "evt_3" || id == "evt_8") {
            Some("Too large value".to_string())
        } else {
            inserted.extend(part);
            None
        };
        async move { Ok::<_, ComponentError>(outcome) }
    })
    .await
    .unwrap();
    let rejected: Vec<String> = rejected
        .iter()
        .map(|(row, _)| ids(*row..*row + 1).remove(0))
        .collect();
    assert_eq!(rejected, ["evt_3", "evt_8"]);
    assert_eq!(inserted.len(), 8);
    assert!(!inserted.contains(&"evt_3".to_string()));
    assert!(
        attempts <= 2 * 2 * 4,
        "{attempts} inserts after the whole one"
    );
    let dead = event_of(&chunk.lines(3..4));
    let stored: UnifiedEvent = serde_json::from_str(&dead).unwrap();
    assert_eq!(stored.id, "evt_3");
}

#[test]
fn config_defaults_and_validation() {
    let config: ClickhouseConfig =
        serde_json::from_value(serde_json::json!({ "table": "events" })).unwrap();
    assert_eq!(config.endpoint, "http://127.0.0.1:8123");
    assert_eq!(config.database, "default");
    assert_eq!(config.batch.max_events, 10_000);
    assert_eq!(config.batch.max_bytes.0, 10 << 20);
    assert_eq!(config.batch.timeout.0, Duration::from_secs(1));
    assert_eq!(config.compression, super::Compression::Lz4);
    assert_eq!(config.format, Format::RowBinary);
    assert_eq!(config.request_timeout.0, Duration::from_secs(30));
    assert_eq!(config.concurrency, 1);
    assert!(config.healthcheck && !config.create_table);
    let cx = BuildContext {
        name: "ch".into(),
        data_dir: std::env::temp_dir(),
        node_name: "n".into(),
    };
    assert!(config.build(&cx).is_ok());
    for bad in [
        serde_json::json!({ "table": "events; DROP" }),
        serde_json::json!({ "table": "events", "endpoint": "https://ch:8443" }),
        serde_json::json!({ "table": "events", "concurrency": 0 }),
    ] {
        let config: ClickhouseConfig = serde_json::from_value(bad).unwrap();
        let error = config.build(&cx).err().expect("invalid config built");
        assert_eq!(error.kind(), tapio_event::ErrorKind::Config, "{error}");
    }
    assert!(
        serde_json::from_value::<ClickhouseConfig>(serde_json::json!({ "table": "t", "tabel": 1 }))
            .is_err()
    );
}

#[test]
fn debug_of_the_config_hides_the_password() {
    let config: ClickhouseConfig = serde_json::from_value(serde_json::json!({
        "table": "events",
        "auth": { "user": "writer", "password": "hunter2" },
    }))
    .unwrap();
    let printed = format!("{config:?}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("writer"), "{printed}");
    assert_eq!(config.auth.unwrap().password.expose(), "hunter2");
}

#[test]
fn an_endpoint_with_credentials_is_refused_without_repeating_them() {
    let cx = BuildContext {
        name: "ch".into(),
        data_dir: std::env::temp_dir(),
        node_name: "n".into(),
    };
    for endpoint in [
        "http://writer:hunter2@ch:8123",
        "https://writer:hunter2@ch:8443",
        "http://ch:8123/?user=writer&password=hunter2",
    ] {
        let config: ClickhouseConfig =
            serde_json::from_value(serde_json::json!({ "table": "events", "endpoint": endpoint }))
                .unwrap();
        let error = config
            .build(&cx)
            .err()
            .expect("endpoint with credentials built");
        assert!(!error.message().contains("hunter2"), "{error}");
        assert!(error.message().contains("`auth`"), "{error}");
    }
}

/// A stand-in for ClickHouse's HTTP interface: answers `SELECT 1` with 200, `DESCRIBE TABLE`
/// with the documented columns, and every insert
/// with `refusal` (a 500 and its body) until `accept` is set, then with 200. Counts inserts.
struct FakeServer {
    port: u16,
    inserts: Arc<AtomicUsize>,
    accept: Arc<AtomicBool>,
}

impl FakeServer {
    async fn start(refusal: &'static str) -> FakeServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let inserts = Arc::new(AtomicUsize::new(0));
        let accept = Arc::new(AtomicBool::new(false));
        let (counter, accepting) = (Arc::clone(&inserts), Arc::clone(&accept));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (counter, accepting) = (Arc::clone(&counter), Arc::clone(&accepting));
                tokio::spawn(answer(stream, refusal, counter, accepting));
            }
        });
        FakeServer {
            port,
            inserts,
            accept,
        }
    }
}

/// Answers the requests of one connection (kept alive, as the sink's client pools them).
async fn answer(
    stream: tokio::net::TcpStream,
    refusal: &str,
    inserts: Arc<AtomicUsize>,
    accept: Arc<AtomicBool>,
) {
    let mut stream = tokio::io::BufReader::new(stream);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        let body = if head.contains("transfer-encoding: chunked") {
            read_chunked(&mut stream).await
        } else {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |n| n.trim().parse().unwrap());
            let mut body = vec![0; length];
            stream.read_exact(&mut body).await.unwrap();
            body
        };
        let insert = head.starts_with("post /?query=insert");
        if insert {
            inserts.fetch_add(1, Ordering::SeqCst);
        }
        let describe: String = FIXED_COLUMNS
            .iter()
            .map(|(name, kind)| format!("{name}\t{kind}\t\t\n"))
            .collect();
        let (status, text) = if insert && !accept.load(Ordering::SeqCst) {
            ("500 Internal Server Error", refusal)
        } else if body.starts_with(b"DESCRIBE TABLE") {
            ("200 OK", describe.as_str())
        } else {
            ("200 OK", "1\n")
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A chunked request body (the `clickhouse` crate streams inserts so).
async fn read_chunked(stream: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        stream.read_line(&mut size).await.unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        let mut chunk = vec![0; size + 2];
        stream.read_exact(&mut chunk).await.unwrap();
        if size == 0 {
            return body;
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// A running `clickhouse` sink towards `server`, with its dead-letter directory.
struct RunningSink {
    input: tapio_event::BufferSender,
    metrics: Arc<ComponentMetrics>,
    task: tokio::task::JoinHandle<Result<(), ComponentError>>,
    data_dir: tempfile::TempDir,
}

fn run_sink(server: &FakeServer) -> RunningSink {
    let config: ClickhouseConfig = serde_json::from_value(serde_json::json!({
        "table": "events",
        "endpoint": format!("http://127.0.0.1:{}", server.port),
        "compression": "none",
        "format": "json_each_row",
        "batch": { "max_events": 100_000 },
    }))
    .unwrap();
    let data_dir = tempfile::tempdir().unwrap();
    let cx = BuildContext {
        name: "ch".into(),
        data_dir: data_dir.path().to_owned(),
        node_name: "n".into(),
    };
    let sink = config.build(&cx).unwrap();
    let metrics = Arc::new(ComponentMetrics::new(
        "ch",
        "clickhouse",
        ComponentKind::Sink,
    ));
    let (input, receiver) = buffer(100_000, WhenFull::Block, Arc::clone(&metrics));
    let task = tokio::spawn(sink.run(
        receiver,
        SinkContext {
            metrics: Arc::clone(&metrics),
        },
    ));
    RunningSink {
        input,
        metrics,
        task,
        data_dir,
    }
}

/// Sends `rows` events as one batch, lets the server refuse them until the sink has failed
/// `failures` times, then lets it accept; checks that they all arrive and none is
/// dead-lettered. Returns the inserts the server saw.
async fn refused_then_accepted(refusal: &'static str, rows: usize, failures: u64) -> usize {
    let server = FakeServer::start(refusal).await;
    let sink = run_sink(&server);
    let events: Vec<_> = (0..rows).map(|i| event(&format!("evt_{i}"))).collect();
    let (token, status) = AckToken::new();
    sink.input
        .send(EventBatch::with_ack(events, token))
        .await
        .unwrap();
    let failed = || sink.metrics.snapshot().errors.get("insert").copied();
    tokio::time::timeout(Duration::from_secs(30), async {
        while failed() < Some(failures) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the sink keeps retrying");
    server.accept.store(true, Ordering::SeqCst);
    assert_eq!(status.status().await, BatchStatus::Delivered);
    drop(sink.input);
    sink.task.await.unwrap().unwrap();
    let metrics = sink.metrics.snapshot();
    assert_eq!(metrics.events_out, rows as u64);
    assert_eq!(metrics.errors.get("rejected"), None, "{metrics:?}");
    assert!(!sink.data_dir.path().join("dead_letter/ch.ndjson").exists());
    server.inserts.load(Ordering::SeqCst)
}

/// Rows carrying a field the table lacks (a dropped column): the table is at fault, so the
/// insert is retried whole, never bisected, and nothing is dead-lettered.
#[tokio::test]
async fn a_table_missing_a_column_stalls_the_sink_without_dead_letters() {
    let inserts = refused_then_accepted(
        "Code: 117, e.displayText() = DB::Exception: Unknown field found while parsing JSONEachRow format: pod_ip: (at row 1)",
        50,
        3,
    )
    .await;
    assert!(
        (4..=5).contains(&inserts),
        "{inserts} inserts: no bisection"
    );
}

/// Every row of a large insert failing for the same reason is the table's fault too: one
/// bisection finds that out, later attempts retry the whole insert.
#[tokio::test]
async fn every_row_failing_alike_stalls_the_sink_without_dead_letters() {
    let rows = super::TABLE_FAULT_MIN_ROWS;
    let inserts = refused_then_accepted(
        "Code: 27, e.displayText() = DB::Exception: Cannot parse input: expected { (at row 1)",
        rows,
        3,
    )
    .await;
    let one_bisection = 2 * rows - 1;
    assert!(
        (one_bisection + 2..=one_bisection + 4).contains(&inserts),
        "{inserts} inserts: one bisection, then whole retries"
    );
}

/// A small insert whose rows all fail alike holds bad rows: they are dead-lettered.
#[tokio::test]
async fn a_few_rows_failing_alike_are_dead_lettered() {
    let server =
        FakeServer::start("Code: 27, e.displayText() = DB::Exception: Cannot parse input").await;
    let sink = run_sink(&server);
    let events: Vec<_> = (0..10).map(|i| event(&format!("evt_{i}"))).collect();
    sink.input.send(EventBatch::new(events)).await.unwrap();
    drop(sink.input);
    sink.task.await.unwrap().unwrap();
    assert_eq!(sink.metrics.snapshot().errors.get("rejected"), Some(&10));
    let dead = std::fs::read_to_string(sink.data_dir.path().join("dead_letter/ch.ndjson")).unwrap();
    assert_eq!(dead.lines().count(), 10);
}

/// The RowBinary layout with `comm = "process.comm"` as an extra column.
fn binary_layout() -> Layout {
    Layout {
        format: Format::RowBinary,
        extras: vec![(
            "comm".into(),
            tapio_event::field::FieldPath::parse("process.comm").unwrap(),
        )],
    }
}

#[test]
fn row_binary_rows_carry_each_column_in_order_and_the_event_comes_back_out() {
    let mut e = event("evt_1");
    e.impact = Some(Box::new(ImpactContext {
        business_impact: Some(0.5),
        ..Default::default()
    }));
    let layout = binary_layout();
    let mut out = bytes::BytesMut::new();
    layout.write_row(&e, &mut Vec::new(), &mut out);
    // 2026-11-27 16:21:11 UTC, then the nanoseconds.
    assert_eq!(&out[..4], &1_795_796_471u32.to_le_bytes());
    assert_eq!(&out[4..8], &123_456_789u32.to_le_bytes());
    assert_eq!(&out[8..14], b"\x05evt_1");
    let stored: UnifiedEvent = serde_json::from_str(&layout.event_of(&out)).unwrap();
    assert_eq!(stored, e);
    // `business_impact`, then the absent `process.comm` as "".
    let tail = &out[out.len() - 9..];
    assert_eq!(&tail[..8], &0.5f64.to_le_bytes());
    assert_eq!(tail[8], 0);
    assert_eq!(
        layout.insert_sql("`db`.`t`"),
        "INSERT INTO `db`.`t` (`timestamp`, `timestamp_ns`, `id`, `type`, `source`, `entity_type`, `entity_id`, `entity_name`, `namespace`, `node`, `severity`, `pattern`, `correlation_id`, `event`, `business_impact`, `comm`) FORMAT RowBinary"
    );
}

#[test]
fn long_strings_get_multi_byte_lengths() {
    let mut e = event(&"x".repeat(300));
    e.source = "s".into();
    let mut out = bytes::BytesMut::new();
    binary_layout().write_row(&e, &mut Vec::new(), &mut out);
    // 300 = 0b10_0101100: LEB128 0xAC 0x02.
    assert_eq!(&out[8..10], &[0xAC, 0x02]);
    let stored: UnifiedEvent = serde_json::from_str(&binary_layout().event_of(&out)).unwrap();
    assert_eq!(stored.id.as_str(), "x".repeat(300));
}

#[test]
fn describe_table_is_checked_against_the_layout() {
    let documented: String = FIXED_COLUMNS
        .iter()
        .map(|(name, kind)| {
            let kind = if *kind == "DateTime" {
                "DateTime('UTC')"
            } else {
                kind
            };
            format!("{name}\t{kind}\t\t\n")
        })
        .collect();
    let layout = binary_layout();
    let missing = layout.check(&documented).unwrap_err();
    assert!(missing.contains("no column `comm`"), "{missing}");
    assert!(
        layout
            .check(&format!("{documented}comm\tString\t\t\n"))
            .is_ok()
    );
    let materialized = layout
        .check(&format!("{documented}comm\tString\tMATERIALIZED\tx\n"))
        .unwrap_err();
    assert!(materialized.contains("MATERIALIZED"), "{materialized}");
    let fixed = documented.replace("entity_id\tString", "entity_id\tFixedString(16)");
    let narrow = layout
        .check(&format!("{fixed}comm\tString\t\t\n"))
        .unwrap_err();
    assert!(narrow.contains("json_each_row"), "{narrow}");
    assert!(json_layout().check(&fixed).is_ok());
}

#[test]
fn extra_columns_must_be_new_plain_names() {
    let cx = BuildContext {
        name: "ch".into(),
        data_dir: std::env::temp_dir(),
        node_name: "n".into(),
    };
    let build = |columns: serde_json::Value| {
        let config: ClickhouseConfig =
            serde_json::from_value(serde_json::json!({ "table": "t", "columns": columns }))
                .unwrap();
        config.build(&cx).map(drop)
    };
    assert!(build(serde_json::json!({ "comm": "process.comm" })).is_ok());
    for bad in ["id", "bad name"] {
        let error = build(serde_json::json!({ bad: "process.comm" })).unwrap_err();
        assert!(error.message().contains("`columns`"), "{error}");
    }
    let unknown: Result<ClickhouseConfig, _> = serde_json::from_value(
        serde_json::json!({ "table": "t", "columns": { "x": "nope.field" } }),
    );
    assert!(unknown.is_err());
}
