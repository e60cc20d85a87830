//! A private Kafka broker for one test: `tansu` (an Apache-Kafka-compatible broker in Rust,
//! installed into `<repo>/.tools/tansu` by `scripts/test.sh`) on a free loopback port with
//! in-memory storage, killed on drop. Topics are read back with an independent consumer,
//! `tests/kafka/consume.py` (confluent-kafka from PyPI), so the test does not trust Tapio's own
//! Kafka code to check Tapio's Kafka code; likewise `tests/kafka/produce.py` writes the input of
//! the tests that read from Kafka.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{eventually, free_port, parse_ndjson};

/// A running test broker.
pub struct Broker {
    child: Child,
    dir: tempfile::TempDir,
    /// Its `host:port`, for `bootstrap_servers`.
    pub address: String,
}

/// One message as the independent consumer saw it.
#[derive(Debug, Clone)]
pub struct Message {
    pub partition: i64,
    pub offset: i64,
    pub key: Option<String>,
    pub value: serde_json::Value,
    pub headers: serde_json::Value,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Says why the test cannot run: fails in CI (`CI=true`), skips elsewhere.
fn unavailable(message: &str) {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("skipping: {message}");
}

impl Broker {
    /// Starts a broker, or returns `None` (after saying why) when tansu or the Python consumer
    /// is not installed outside CI; in CI a missing tool fails the test.
    pub fn start() -> Option<Broker> {
        let binary = repo().join(".tools/tansu/bin/tansu");
        if !binary.exists() {
            unavailable(&format!(
                "{} is missing: run scripts/test.sh, which installs it (cargo install --locked tansu --version 0.6.0 --no-default-features --features dynostore --root .tools/tansu)",
                binary.display()
            ));
            return None;
        }
        let python = Command::new("python3")
            .args(["-c", "import confluent_kafka"])
            .stderr(Stdio::null())
            .status();
        if !python.is_ok_and(|status| status.success()) {
            unavailable(
                "the Python package confluent-kafka is missing: run `pip install confluent-kafka` (scripts/test.sh does)",
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let broker = Broker {
            child,
            dir,
            address: format!("127.0.0.1:{port}"),
        };
        eventually(Duration::from_secs(15), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .unwrap_or_else(|| panic!("tansu did not listen on port {port}; see {}", broker.log()));
        Some(broker)
    }

    fn log(&self) -> String {
        self.dir.path().join("tansu.log").display().to_string()
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let status = Command::new(repo().join(".tools/tansu/bin/tansu"))
            .args(["topic", "create", topic, "--broker"])
            .arg(format!("tcp://{}", self.address))
            .args(["--partitions", &partitions.to_string()])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "tansu topic create {topic} failed");
    }

    /// Writes `count` events (ids `evt_<first+i>`, keyed by one of 64 pods) to `topic` with the
    /// independent producer, one message per record batch (tansu skips to the next batch when
    /// a consumer fetches from inside one, see `produce.py`); returns its `{count, seconds}`.
    pub fn produce(&self, topic: &str, count: u64, first: u64) -> serde_json::Value {
        let output = Command::new("python3")
            .arg(repo().join("tests/kafka/produce.py"))
            .args([
                &self.address,
                topic,
                &count.to_string(),
                &first.to_string(),
                "1",
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "produce.py {topic}: {}\nbroker log: {}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// Every message of `topic`, read from the beginning to the end of each partition by the
    /// independent consumer, in partition order then offset order.
    pub fn consume(&self, topic: &str) -> Vec<Message> {
        let output = Command::new("python3")
            .arg(repo().join("tests/kafka/consume.py"))
            .args([&self.address, topic, "60"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "consume.py {topic}: {}\nbroker log: {}",
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        let mut messages: Vec<Message> = parse_ndjson(&String::from_utf8_lossy(&output.stdout))
            .into_iter()
            .map(|line| Message {
                partition: line["partition"].as_i64().unwrap(),
                offset: line["offset"].as_i64().unwrap(),
                key: line["key"].as_str().map(str::to_owned),
                value: serde_json::from_str(line["value"].as_str().unwrap()).unwrap(),
                headers: line["headers"].clone(),
            })
            .collect();
        messages.sort_by_key(|m| (m.partition, m.offset));
        messages
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
