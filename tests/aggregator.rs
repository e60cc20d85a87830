//! Tapio's distributed mode end to end, against a real broker (`tansu`) and a real ClickHouse,
//! both started by the tests: events written to Kafka by an independent producer
//! (`tests/kafka/produce.py`) go through `tapio` aggregators (`kafka` source → `clickhouse`
//! sink) into ClickHouse. Delivery is at least once: a graceful stop or rebalance repeats
//! nothing, a SIGKILL may repeat what was not committed yet, and nothing is ever missing.

#[path = "kafka/broker.rs"]
mod broker;
mod common;
#[path = "clickhouse/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use broker::Broker;
use common::*;
use server::ClickHouse;

const TOPIC: &str = "tapio.events";

/// Servers and a directory for one test.
struct Setup {
    broker: Broker,
    clickhouse: ClickHouse,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start(partitions: u32) -> Option<Setup> {
        let broker = Broker::start()?;
        let clickhouse = ClickHouse::start()?;
        broker.create_topic(TOPIC, partitions);
        Some(Setup {
            broker,
            clickhouse,
            dir: tempfile::tempdir().unwrap(),
        })
    }

    /// An aggregator's config: `kafka` (group `aggregators`) → `clickhouse` table `events`,
    /// with its API on `api` so that the test can watch its counters.
    fn aggregator(&self, name: &str, api: u16, sink_extra: &str) -> PathBuf {
        let data_dir = self.dir.path().join(name);
        std::fs::create_dir_all(&data_dir).unwrap();
        write_config(
            self.dir.path(),
            &format!("{name}.toml"),
            &format!(
                r#"data_dir = "{data_dir}"

[api]
address = "127.0.0.1:{api}"

[sources.kafka]
type = "kafka"
bootstrap_servers = "{bootstrap}"
topics = ["{TOPIC}"]
group_id = "aggregators"
session_timeout = "6s"
librdkafka_options = {{ "client.id" = "{name}" }}

[sinks.ch]
type = "clickhouse"
inputs = ["kafka"]
endpoint = "http://127.0.0.1:{port}"
table = "events"
create_table = true
{sink_extra}
"#,
                data_dir = data_dir.display(),
                bootstrap = self.broker.address,
                port = self.clickhouse.http_port,
            ),
        )
    }

    /// Rows in `events` (0 before the table exists).
    fn rows(&self) -> u64 {
        let exists = self.clickhouse.query("EXISTS TABLE events");
        if exists.trim() == "1" {
            self.clickhouse.count("SELECT count() FROM events")
        } else {
            0
        }
    }

    /// Distinct event ids in `events`.
    fn distinct(&self) -> u64 {
        self.clickhouse.count("SELECT uniqExact(id) FROM events")
    }

    /// Waits until every one of the `expected` events has a row.
    fn wait_for_all(&self, expected: u64, limit: Duration) {
        eventually(limit, || {
            (self.rows() >= expected && self.distinct() == expected).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "only {} distinct of {expected} events arrived ({} rows)\n{}",
                self.distinct(),
                self.rows(),
                self.logs()
            )
        });
    }

    /// The last lines of every aggregator's log, for failure messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let log = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                text.push_str(&format!("--- {}:\n{tail}\n", path.display()));
            }
        }
        text
    }

    /// Checks that the ids are exactly `evt_0 … evt_<expected-1>`: none missing, none foreign.
    fn assert_no_gaps(&self, expected: u64) {
        let range = self
            .clickhouse
            .query("SELECT min(id), max(id), uniqExact(id) FROM events FORMAT TabSeparated");
        assert_eq!(
            range.trim(),
            format!("evt_{:012}\tevt_{:012}\t{expected}", 0, expected - 1)
        );
    }
}

/// `tapio run` on `config` with its log going to `log` (watched while it runs).
fn spawn_logged(config: &Path, log: &Path) -> Child {
    tapio()
        .args(["run", "--summary", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Stops `child` with SIGTERM and returns its log, failing unless it exited 0.
fn stop(child: Child, log: &Path) -> String {
    signal(child.id(), libc::SIGTERM);
    let output = wait_with_timeout(child, Duration::from_secs(60));
    let text = std::fs::read_to_string(log).unwrap();
    assert_eq!(output.status.code(), Some(0), "{text}");
    text
}

/// A counter of `component` from the API on `port`.
fn counter(port: u16, family: &str, component: &str) -> Option<u64> {
    http_get(port, "/metrics").and_then(|(_, body)| metric(&body, family, component))
}

/// Acceptance 2: N produced → exactly N rows; a SIGKILL mid-stream and a restart leave at least N
/// rows and no gaps.
#[test]
fn every_produced_event_becomes_a_row_even_across_a_sigkill() {
    let Some(setup) = Setup::start(3) else {
        return;
    };
    let first = 20_000;
    setup.broker.produce(TOPIC, first, 0);
    let api = free_port();
    let config = setup.aggregator(
        "one",
        api,
        "batch = { max_events = 2000, timeout = \"200ms\" }",
    );
    let log = setup.dir.path().join("one.log");
    let tapio = spawn_logged(&config, &log);
    setup.wait_for_all(first, Duration::from_secs(60));
    let text = stop(tapio, &log);
    assert_eq!(setup.rows(), first, "a clean run writes each event once");
    let source = summary_row(text.as_bytes(), "kafka");
    assert_eq!((source.events_in, source.errors), (first, 0));

    // A restart resumes after the committed offsets: only the new events are read.
    let second = 60_000;
    setup.broker.produce(TOPIC, second, first);
    let total = first + second;
    let tapio = spawn_logged(&config, &log);
    let rows_at_kill = eventually(Duration::from_secs(60), || {
        let rows = setup.rows();
        (rows >= first + 10_000).then_some(rows)
    })
    .expect("the restarted aggregator wrote nothing");
    signal(tapio.id(), libc::SIGKILL);
    let _ = wait_with_timeout(tapio, Duration::from_secs(10));
    assert!(
        rows_at_kill < total,
        "the aggregator finished before it was killed; the test proves nothing"
    );
    // tansu 0.6.0 gives a member that joins while a killed one is still in the group an empty
    // assignment, and never rebalances again (Kafka would once the session times out); so the
    // restart waits until the killed member's session has expired.
    std::thread::sleep(Duration::from_secs(8));

    let tapio = spawn_logged(&config, &log);
    setup.wait_for_all(total, Duration::from_secs(120));
    let text = stop(tapio, &log);
    setup.assert_no_gaps(total);
    let rows = setup.rows();
    assert!(rows >= total);
    let source = summary_row(text.as_bytes(), "kafka");
    assert!(
        source.events_in < total,
        "the last run read everything again ({}): committed offsets were ignored",
        source.events_in
    );
    eprintln!(
        "killed at {rows_at_kill} rows; {} duplicates of {total} events after the restart (at least once)",
        rows - total
    );
}

/// Acceptance 3: ClickHouse stopped mid-stream: the sink retries, backpressure reaches the
/// `kafka` source (it stops reading), and after the server returns nothing is missing.
#[test]
fn a_clickhouse_outage_pauses_the_consumer_and_loses_nothing() {
    let Some(mut setup) = Setup::start(3) else {
        return;
    };
    let total = 50_000;
    setup.broker.produce(TOPIC, total, 0);
    let api = free_port();
    let config = setup.aggregator(
        "outage",
        api,
        "request_timeout = \"2s\"\nbatch = { max_events = 1000, timeout = \"100ms\" }\nbuffer = { max_events = 5000 }",
    );
    let log = setup.dir.path().join("outage.log");
    let tapio = spawn_logged(&config, &log);
    eventually(Duration::from_secs(30), || (setup.rows() > 0).then_some(()))
        .expect("no row arrived before the outage");
    setup.clickhouse.kill();
    let read = || counter(api, "tapio_component_received_events_total", "kafka").unwrap();
    let stalled_at = eventually(Duration::from_secs(15), || {
        let before = read();
        std::thread::sleep(Duration::from_millis(500));
        (read() == before).then_some(before)
    })
    .expect("the kafka source kept reading during the outage");
    assert!(
        stalled_at < total,
        "the source read everything before the outage; the test proves nothing"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        read(),
        stalled_at,
        "the source read on while the sink was stuck"
    );
    setup.clickhouse.resume();
    setup.wait_for_all(total, Duration::from_secs(120));
    let text = stop(tapio, &log);
    setup.assert_no_gaps(total);
    let sink = summary_row(text.as_bytes(), "ch");
    assert!(sink.errors > 0, "the outage was not noticed");
}

/// Acceptance 4: two aggregators in one consumer group split the partitions; when one stops the
/// other takes its partitions over; ClickHouse ends with exactly what was produced.
#[test]
fn two_aggregators_split_the_partitions_and_take_over_from_each_other() {
    let Some(setup) = Setup::start(4) else {
        return;
    };
    let (api_a, api_b) = (free_port(), free_port());
    let sink = "batch = { max_events = 1000, timeout = \"100ms\" }";
    let (config_a, config_b) = (
        setup.aggregator("a", api_a, sink),
        setup.aggregator("b", api_b, sink),
    );
    let (log_a, log_b) = (
        setup.dir.path().join("a.log"),
        setup.dir.path().join("b.log"),
    );
    let a = spawn_logged(&config_a, &log_a);
    let assigned = |log: &Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("partitions assigned")
            .count()
    };
    eventually(Duration::from_secs(30), || {
        (assigned(&log_a) >= 1).then_some(())
    })
    .expect("aggregator a joined no group");
    let b = spawn_logged(&config_b, &log_b);
    // b joining makes the group rebalance: a is assigned again, b for the first time.
    eventually(Duration::from_secs(60), || {
        (assigned(&log_a) >= 2 && assigned(&log_b) >= 1).then_some(())
    })
    .expect("the group did not rebalance onto both aggregators");

    let first = 20_000;
    setup.broker.produce(TOPIC, first, 0);
    setup.wait_for_all(first, Duration::from_secs(60));
    let read_a = counter(api_a, "tapio_component_received_events_total", "kafka").unwrap();
    let read_b = counter(api_b, "tapio_component_received_events_total", "kafka").unwrap();
    assert_eq!(read_a + read_b, first);
    assert!(
        read_a > 0 && read_b > 0,
        "one aggregator read everything (a {read_a}, b {read_b}): the partitions were not split"
    );

    let text_a = stop(a, &log_a);
    assert_eq!(summary_row(text_a.as_bytes(), "kafka").events_in, read_a);
    let second = 20_000;
    setup.broker.produce(TOPIC, second, first);
    let total = first + second;
    setup.wait_for_all(total, Duration::from_secs(60));
    let read_b_after = counter(api_b, "tapio_component_received_events_total", "kafka").unwrap();
    assert_eq!(
        read_b_after - read_b,
        second,
        "b did not take over all of a's partitions"
    );
    stop(b, &log_b);
    setup.assert_no_gaps(total);
    assert_eq!(setup.rows(), total, "a graceful hand-over repeats nothing");
}
