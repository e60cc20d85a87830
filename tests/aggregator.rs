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

use std::path::PathBuf;
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

    /// An aggregator: `kafka` (group `aggregators`) → `clickhouse` table `events`, with its API
    /// on a free port so that the test can watch its counters.
    fn aggregator(&self, name: &str, sink_extra: &str) -> Aggregator {
        let data_dir = self.dir.path().join(name);
        std::fs::create_dir_all(&data_dir).unwrap();
        let api = free_port();
        let config = write_config(
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
        );
        Aggregator {
            config,
            log: self.dir.path().join(format!("{name}.log")),
            api,
        }
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

/// A running `tapio`, SIGKILLed when dropped unless it was stopped: a failing test leaves no
/// process behind, and dropping it is how the tests simulate a crash.
struct Running(Option<Child>);

impl Running {
    fn into_child(mut self) -> Child {
        self.0.take().expect("a running process")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One aggregator's config, log and API port.
struct Aggregator {
    config: PathBuf,
    log: PathBuf,
    api: u16,
}

impl Aggregator {
    /// `tapio run` on the config, its log (re)written to `log` and watched while it runs.
    fn spawn(&self) -> Running {
        let child = tapio()
            .args(["run", "--summary", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&self.log).unwrap())
            .spawn()
            .unwrap();
        Running(Some(child))
    }

    /// Stops it with SIGTERM and returns its log, failing unless it exited 0.
    fn stop(&self, running: Running) -> String {
        let child = running.into_child();
        signal(child.id(), libc::SIGTERM);
        let output = wait_with_timeout(child, Duration::from_secs(60));
        let text = std::fs::read_to_string(&self.log).unwrap();
        assert_eq!(output.status.code(), Some(0), "{text}");
        text
    }

    /// How many messages the running aggregator's `kafka` source has read.
    fn read(&self) -> u64 {
        http_get(self.api, "/metrics")
            .and_then(|(_, body)| metric(&body, "tapio_component_received_events_total", "kafka"))
            .expect("the aggregator's API did not answer")
    }

    /// How many times partitions were assigned to it, from its log.
    fn assignments(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches("partitions assigned")
            .count()
    }
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
    let one = setup.aggregator("one", "batch = { max_events = 2000, timeout = \"200ms\" }");
    let tapio = one.spawn();
    setup.wait_for_all(first, Duration::from_secs(60));
    let text = one.stop(tapio);
    assert_eq!(setup.rows(), first, "a clean run writes each event once");
    let source = summary_row(text.as_bytes(), "kafka");
    assert_eq!((source.events_in, source.errors), (first, 0));

    // A restart resumes after the committed offsets: only the new events are read.
    let second = 60_000;
    setup.broker.produce(TOPIC, second, first);
    let total = first + second;
    let tapio = one.spawn();
    let rows_at_kill = eventually(Duration::from_secs(60), || {
        let rows = setup.rows();
        (rows >= first + 10_000).then_some(rows)
    })
    .expect("the restarted aggregator wrote nothing");
    drop(tapio); // SIGKILL
    assert!(
        rows_at_kill < total,
        "the aggregator finished before it was killed; the test proves nothing"
    );
    // tansu 0.6.0 gives a member that joins while a killed one is still in the group an empty
    // assignment, and never rebalances again (Kafka would once the session times out); so the
    // restart waits until the killed member's session has expired.
    std::thread::sleep(Duration::from_secs(8));

    let tapio = one.spawn();
    setup.wait_for_all(total, Duration::from_secs(120));
    let text = one.stop(tapio);
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
    let outage = setup.aggregator(
        "outage",
        "request_timeout = \"2s\"\nbatch = { max_events = 1000, timeout = \"100ms\" }\nbuffer = { max_events = 5000 }",
    );
    let tapio = outage.spawn();
    eventually(Duration::from_secs(30), || (setup.rows() > 0).then_some(()))
        .expect("no row arrived before the outage");
    setup.clickhouse.kill();
    let stalled_at = eventually(Duration::from_secs(15), || {
        let before = outage.read();
        std::thread::sleep(Duration::from_millis(500));
        (outage.read() == before).then_some(before)
    })
    .expect("the kafka source kept reading during the outage");
    assert!(
        stalled_at < total,
        "the source read everything before the outage; the test proves nothing"
    );
    // Past 2 s the source pauses its partitions (and keeps polling): still nothing read.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        outage.read(),
        stalled_at,
        "the source read on while the sink was stuck"
    );
    setup.clickhouse.resume();
    setup.wait_for_all(total, Duration::from_secs(120));
    let text = outage.stop(tapio);
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
    let sink = "batch = { max_events = 1000, timeout = \"100ms\" }";
    let (a, b) = (setup.aggregator("a", sink), setup.aggregator("b", sink));
    let running_a = a.spawn();
    eventually(Duration::from_secs(30), || {
        (a.assignments() >= 1).then_some(())
    })
    .expect("aggregator a joined no group");
    let running_b = b.spawn();
    // b joining makes the group rebalance: a is assigned again, b for the first time.
    eventually(Duration::from_secs(60), || {
        (a.assignments() >= 2 && b.assignments() >= 1).then_some(())
    })
    .expect("the group did not rebalance onto both aggregators");

    let first = 20_000;
    setup.broker.produce(TOPIC, first, 0);
    setup.wait_for_all(first, Duration::from_secs(60));
    let (read_a, read_b) = (a.read(), b.read());
    assert_eq!(read_a + read_b, first);
    assert!(
        read_a > 0 && read_b > 0,
        "one aggregator read everything (a {read_a}, b {read_b}): the partitions were not split"
    );

    let text_a = a.stop(running_a);
    assert_eq!(summary_row(text_a.as_bytes(), "kafka").events_in, read_a);
    let second = 20_000;
    setup.broker.produce(TOPIC, second, first);
    let total = first + second;
    setup.wait_for_all(total, Duration::from_secs(60));
    assert_eq!(
        b.read() - read_b,
        second,
        "b did not take over all of a's partitions"
    );
    b.stop(running_b);
    setup.assert_no_gaps(total);
    assert_eq!(setup.rows(), total, "a graceful hand-over repeats nothing");
}
