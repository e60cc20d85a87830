//! A private ClickHouse server for one test: Debian's `clickhouse-server` started as a plain
//! process (no systemd) from a copy of `/etc/clickhouse-server/config.xml` whose data and log
//! paths point into a temporary directory and which listens on free loopback ports only.
//! Killed and removed on drop. Queries go over plain HTTP/1.0 on a std `TcpStream`.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{eventually, free_port, http_get};

/// Where Debian and the upstream packages put the server.
const BINARIES: &[&str] = &[
    "/usr/sbin/clickhouse-server",
    "/usr/bin/clickhouse-server",
    "/usr/bin/clickhouse",
];
const SYSTEM_CONFIG: &str = "/etc/clickhouse-server";

/// A running test server.
pub struct ClickHouse {
    dir: tempfile::TempDir,
    binary: PathBuf,
    child: Option<Child>,
    /// Its HTTP port on 127.0.0.1.
    pub http_port: u16,
}

impl ClickHouse {
    /// Starts a server, or returns `None` (after saying why) when ClickHouse is not installed
    /// outside CI; in CI (`CI=true`) a missing server fails the test.
    pub fn start() -> Option<ClickHouse> {
        let binary = BINARIES.iter().map(PathBuf::from).find(|p| p.exists());
        let Some(binary) = binary.filter(|_| Path::new(SYSTEM_CONFIG).join("config.xml").exists())
        else {
            let message = "clickhouse-server is not installed: run `apt-get install -y clickhouse-server clickhouse-client` (scripts/test.sh does)";
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
            eprintln!("skipping: {message}");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        write_config(dir.path(), http_port, free_port());
        let mut server = ClickHouse {
            dir,
            binary,
            child: None,
            http_port,
        };
        server.resume();
        Some(server)
    }

    /// Kills the server at once (SIGKILL), as a crash or a lost node would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data and ports, and waits until it answers.
    pub fn resume(&mut self) {
        let config = self.dir.path().join("config.xml");
        let child = Command::new(&self.binary)
            .arg(format!("--config-file={}", config.display()))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.http_port;
        eventually(Duration::from_secs(15), || {
            http_get(port, "/ping").filter(|(status, body)| *status == 200 && body == "Ok.\n")
        })
        .unwrap_or_else(|| {
            panic!(
                "clickhouse-server did not answer /ping on port {port}; see {}/log",
                self.dir.path().display()
            )
        });
    }

    /// Runs `sql` and returns the answer's body; panics on an error answer.
    pub fn query(&self, sql: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.http_port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "POST / HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{sql}",
            sql.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{sql}: {response}"
        );
        body.to_owned()
    }

    /// The single number `sql` answers.
    pub fn count(&self, sql: &str) -> u64 {
        self.query(sql).trim().parse().unwrap()
    }

    /// The rows `sql` answers, which must end in `FORMAT JSONEachRow`.
    pub fn rows(&self, sql: &str) -> Vec<serde_json::Value> {
        crate::common::parse_ndjson(&self.query(sql))
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies the packaged config into `dir`, pointing every path there and listening on
/// 127.0.0.1 at `http_port` and `tcp_port` only (no interserver, MySQL or TLS ports).
fn write_config(dir: &Path, http_port: u16, tcp_port: u16) {
    let system = Path::new(SYSTEM_CONFIG);
    std::fs::copy(system.join("users.xml"), dir.join("users.xml")).unwrap();
    let original = std::fs::read_to_string(system.join("config.xml")).unwrap();
    let data = format!("{}/data/", dir.display());
    let log = format!("{}/log/", dir.display());
    let dropped = [
        "<listen_host>",
        "<interserver_http_port>",
        "<mysql_port>",
        "<postgresql_port>",
        "<https_port>",
        "<tcp_port_secure>",
    ];
    let mut config = String::new();
    for line in original.lines() {
        let trimmed = line.trim_start();
        if dropped.iter().any(|tag| trimmed.starts_with(tag)) {
            continue;
        }
        if trimmed.starts_with("<http_port>") {
            config.push_str(&format!(
                "<http_port>{http_port}</http_port>\n<listen_host>127.0.0.1</listen_host>\n"
            ));
        } else if trimmed.starts_with("<tcp_port>") {
            config.push_str(&format!("<tcp_port>{tcp_port}</tcp_port>\n"));
        } else {
            config.push_str(
                &line
                    .replace("/var/lib/clickhouse/", &data)
                    .replace("/var/log/clickhouse-server/", &log),
            );
            config.push('\n');
        }
    }
    std::fs::write(dir.join("config.xml"), config).unwrap();
}
