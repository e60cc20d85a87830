//! A private OTLP collector for one test: rotel 0.0.1a15 (an OpenTelemetry collector in Rust,
//! from PyPI, installed into `<repo>/.tools/rotel` by `scripts/test.sh`) on free loopback
//! ports with the blackhole exporter and its debug log of logs and traces, read back and
//! parsed here; killed on drop. `tests/otlp/receive.py` is a second, independent receiver
//! (grpcio and opentelemetry-proto), and `tests/otlp/send.py` an independent sender (the
//! OpenTelemetry Python SDK).
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{eventually, free_port, signal};

/// A running collector.
pub struct Rotel {
    child: Option<Child>,
    dir: PathBuf,
    runs: usize,
    pub grpc_port: u16,
    pub http_port: u16,
}

/// One log record or span as the collector printed it: its resource attributes, its own
/// fields (`SeverityNumber`, `Trace ID`, `Name`, …) and attributes, values as printed
/// (`Str(api-7d9)`, `Int(443)`).
#[derive(Debug, Clone, Default)]
pub struct Item {
    pub resource: BTreeMap<String, String>,
    pub fields: BTreeMap<String, String>,
    pub attributes: BTreeMap<String, String>,
}

impl Item {
    /// A field, which must be there.
    pub fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("no field {name} in {self:?}"))
    }

    /// An attribute's printed value, which must be there.
    pub fn attribute(&self, name: &str) -> &str {
        self.attributes
            .get(name)
            .unwrap_or_else(|| panic!("no attribute {name} in {self:?}"))
    }
}

/// What the collector printed: log records and spans, in order.
#[derive(Debug, Default)]
pub struct Printed {
    pub logs: Vec<Item>,
    pub spans: Vec<Item>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The collector binary the rotel wheel ships.
fn binary() -> PathBuf {
    repo().join(".tools/rotel/rotel/rotel-agent")
}

/// Says why the test cannot run: fails in CI (`CI=true`), skips elsewhere.
pub fn unavailable(message: &str) {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("skipping: {message}");
}

/// Whether the Python side of the tests is installed (else says so).
pub fn python_ready() -> bool {
    let imports = "import grpc, opentelemetry.proto, opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc";
    let ok = Command::new("python3")
        .args(["-c", imports])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !ok {
        unavailable(
            "the Python packages grpcio, opentelemetry-proto, opentelemetry-sdk and opentelemetry-exporter-otlp-proto-grpc are missing: run scripts/test.sh, which installs them",
        );
    }
    ok
}

impl Rotel {
    /// Starts a collector, or returns `None` (after saying why) when rotel is not installed
    /// outside CI; in CI a missing collector fails the test.
    pub fn start() -> Option<Rotel> {
        if !binary().exists() {
            unavailable(&format!(
                "{} is missing: run scripts/test.sh, which installs it (pip install --pre --target .tools/rotel rotel==0.0.1a15)",
                binary().display()
            ));
            return None;
        }
        let dir = tempfile::tempdir().unwrap().keep();
        let mut rotel = Rotel {
            child: None,
            dir,
            runs: 0,
            grpc_port: free_port(),
            http_port: free_port(),
        };
        rotel.restart();
        Some(rotel)
    }

    /// `--otlp-grpc-endpoint` for the sink's `endpoint`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// `--otlp-http-endpoint` for the sink's `endpoint`.
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn output_path(&self, run: usize) -> PathBuf {
        self.dir.join(format!("rotel-{run}.out"))
    }

    /// Starts the collector (again) on the same ports, printing into a new output file.
    pub fn restart(&mut self) {
        self.runs += 1;
        let out = std::fs::File::create(self.output_path(self.runs)).unwrap();
        let child = Command::new(binary())
            .arg("start")
            .args([
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{}", self.grpc_port),
            ])
            .args([
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{}", self.http_port),
            ])
            .args(["--exporter", "blackhole"])
            .args(["--debug-log", "logs", "--debug-log", "traces"])
            .args(["--debug-log-verbosity", "detailed"])
            .arg("--pid-file")
            .arg(self.dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(self.dir.join("rotel.log"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        self.child = Some(child);
        for port in [self.grpc_port, self.http_port] {
            eventually(Duration::from_secs(15), || {
                std::net::TcpStream::connect(("127.0.0.1", port)).ok()
            })
            .unwrap_or_else(|| {
                panic!(
                    "rotel did not listen on port {port}; see {}",
                    self.dir.display()
                )
            });
        }
    }

    /// Stops the collector as an operator would (SIGTERM: it flushes what it accepted and
    /// exits), killing it if it has not exited within 10 s; what it printed stays readable.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGTERM);
            let exited = eventually(Duration::from_secs(10), || child.try_wait().ok().flatten());
            if exited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Everything every run of the collector printed so far, parsed.
    pub fn printed(&self) -> Printed {
        let mut printed = Printed::default();
        for run in 1..=self.runs {
            let text = std::fs::read_to_string(self.output_path(run)).unwrap_or_default();
            parse(&strip_ansi(&text), &mut printed);
        }
        printed
    }

    /// Waits until the collector printed at least `logs` log records and `spans` spans.
    pub fn wait_for(&self, logs: usize, spans: usize) -> Printed {
        eventually(Duration::from_secs(30), || {
            let printed = self.printed();
            (printed.logs.len() >= logs && printed.spans.len() >= spans).then_some(printed)
        })
        .unwrap_or_else(|| {
            let printed = self.printed();
            panic!(
                "rotel printed {} log records and {} spans, expected {logs} and {spans}; see {}",
                printed.logs.len(),
                printed.spans.len(),
                self.dir.display()
            )
        })
    }

    /// The test's directory, for messages.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The text without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads rotel's detailed debug log: `ResourceLog #n` / `ResourceSpans #n` start a resource
/// whose `-> key: value` lines follow `Resource attributes:`; `LogRecord #n` / `Span #n`
/// start an item whose `Name: value` lines are its fields and `-> key: value` lines its
/// attributes (until `Events:`, whose lines belong to span events and are skipped).
fn parse(text: &str, printed: &mut Printed) {
    enum Section {
        Resource,
        Item,
        Events,
        Other,
    }
    let mut resource = BTreeMap::new();
    let mut section = Section::Other;
    let mut current: Option<(bool, Item)> = None;
    let finish = |current: &mut Option<(bool, Item)>, printed: &mut Printed| {
        if let Some((is_span, item)) = current.take() {
            if is_span {
                printed.spans.push(item);
            } else {
                printed.logs.push(item);
            }
        }
    };
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("ResourceLog #") || trimmed.starts_with("ResourceSpans #") {
            finish(&mut current, printed);
            resource = BTreeMap::new();
            section = Section::Other;
        } else if trimmed == "Resource attributes:" {
            section = Section::Resource;
        } else if trimmed.starts_with("ScopeLogs #") || trimmed.starts_with("ScopeSpans #") {
            finish(&mut current, printed);
            section = Section::Other;
        } else if trimmed.starts_with("LogRecord #") || trimmed.starts_with("Span #") {
            finish(&mut current, printed);
            let item = Item {
                resource: resource.clone(),
                ..Item::default()
            };
            current = Some((trimmed.starts_with("Span #"), item));
            section = Section::Item;
        } else if trimmed == "Events:" || trimmed == "Links:" {
            section = Section::Events;
        } else if let Some(attribute) = trimmed.strip_prefix("-> ") {
            let Some((key, value)) = attribute.split_once(": ") else {
                continue;
            };
            match (&section, current.as_mut()) {
                (Section::Resource, _) => {
                    resource.insert(key.to_owned(), value.to_owned());
                }
                (Section::Item, Some((_, item))) => {
                    item.attributes.insert(key.to_owned(), value.to_owned());
                }
                _ => {}
            }
        } else if let (Section::Item, Some((_, item))) = (&section, current.as_mut())
            && let Some((name, value)) = trimmed.split_once(':')
        {
            item.fields
                .insert(name.trim().to_owned(), value.trim().to_owned());
        }
    }
    finish(&mut current, printed);
}
