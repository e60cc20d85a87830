//! Helpers for integration tests that run the real `tapio` binary on real configs.
#![allow(dead_code)] // each test binary uses a different subset

pub mod cni;
pub mod systemd;

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn tapio() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tapio"));
    command.env_remove("TAPIO_CONFIG").env("TAPIO_LOG", "info");
    command
}

/// Writes `text` as `name` in `dir` and returns its path.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `tapio validate --config <config>` with the test's environment.
pub fn validate(config: &Path) -> Output {
    tapio()
        .args(["validate", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

/// A config reading `source` (the TOML body of `[sources.in]`) into a file sink writing `out`.
pub fn source_to_file(source: &str, out: &Path) -> String {
    format!(
        "[sources.in]\n{source}\n\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}\"\n",
        out.display()
    )
}

/// `[sources.demo]` emitting `count` events, the same ones on every run (fixed seed and start).
pub fn reproducible_demo(count: u64) -> String {
    format!(
        "[sources.demo]\ntype = \"demo\"\ncount = {count}\nseed = 7\nstart_time = \"2026-01-01T00:00:00Z\"\n"
    )
}

/// `[sinks.copy]`, a file sink writing what `input` sends to `path`: a test's record of what
/// another sink was given.
pub fn copy_sink(input: &str, path: &Path) -> String {
    format!(
        "[sinks.copy]\ntype = \"file\"\ninputs = [\"{input}\"]\npath = \"{}\"\n",
        path.display()
    )
}

/// `[sources.in]` (whose TOML body is `source`) through `semantic_enrich → correlate →
/// impact_assess` into a file sink writing `out`.
pub fn intelligence_pipeline(source: &str, out: &Path) -> String {
    format!(
        r#"
[sources.in]
{source}

[transforms.enrich]
type = "semantic_enrich"
inputs = ["in"]

[transforms.correlate]
type = "correlate"
inputs = ["enrich"]

[transforms.impact]
type = "impact_assess"
inputs = ["correlate"]

[sinks.out]
type = "file"
inputs = ["impact"]
path = "{}"
"#,
        out.display()
    )
}

/// Runs `tapio run --config <config>` to completion, capturing what it prints.
pub fn run_config(config: &Path) -> Output {
    tapio()
        .args(["run", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

/// Runs `tapio run --summary --config <config>` to completion with `stdin` as input.
pub fn run_with_stdin(config: &Path, stdin: &[u8]) -> Output {
    let mut child = tapio()
        .args(["run", "--summary", "--config"])
        .arg(config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = wait_with_timeout(child, Duration::from_secs(120));
    writer.join().unwrap();
    output
}

/// Starts `tapio run --summary --config <config>` with standard output discarded and standard
/// error (logs and the summary table) captured.
pub fn spawn_run(config: &Path) -> Child {
    tapio()
        .args(["run", "--summary", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child`, killing it (and failing the test) after `limit`.
pub fn wait_with_timeout(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            panic!("tapio (pid {pid}) did not exit within {limit:?}");
        }
    }
}

/// Fails the test with tapio's standard error unless it exited 0.
pub fn assert_success(output: &Output) {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// A row of the `--summary` table: (events_in, events_out, dropped, errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub events_in: u64,
    pub events_out: u64,
    pub dropped: u64,
    pub errors: u64,
}

/// Finds `component`'s row in the summary table printed on standard error.
pub fn summary_row(stderr: &[u8], component: &str) -> Counts {
    let text = String::from_utf8_lossy(stderr);
    let row = text
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.len() == 8 && cells[0] == component && cells[3].parse::<u64>().is_ok())
        .unwrap_or_else(|| panic!("no summary row for {component} in:\n{text}"));
    let number = |i: usize| row[i].parse::<u64>().unwrap();
    Counts {
        events_in: number(3),
        events_out: number(4),
        dropped: number(5),
        errors: number(6),
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port; returns (status code, body), or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Polls `check` every 50 ms until it returns Some or `limit` passes.
pub fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(value) = check() {
            return Some(value);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A counter's value for `component` from Prometheus text.
pub fn metric(body: &str, family: &str, component: &str) -> Option<u64> {
    let needle = format!("{family}{{component=\"{component}\",");
    body.lines()
        .find(|line| line.starts_with(&needle))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap()
}

/// Parses NDJSON into JSON values.
pub fn parse_ndjson(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect()
}

/// Appends events `from..to` to `path`, one NDJSON line each, with ids `evt_<n>`.
pub fn append_numbered(path: &Path, from: u64, to: u64) {
    append_events(path, from, to, |_| String::new());
}

/// Appends events `from..to` to `path` like [`append_numbered`], with `extra(n)` (JSON members
/// starting with a comma, or nothing) added to each event's `application`.
pub fn append_events(path: &Path, from: u64, to: u64, extra: impl Fn(u64) -> String) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut text = String::new();
    for n in from..to {
        text.push_str(&format!(
            "{{\"id\":\"evt_{n:09}\",\"timestamp\":\"2026-01-01T00:00:00.000000000Z\",\"type\":\"application\",\"source\":\"file\",\"application\":{{\"n\":{n},\"padding\":\"{}\"{}}}}}\n",
            "x".repeat(150),
            extra(n)
        ));
    }
    file.write_all(text.as_bytes()).unwrap();
}

/// How often each id appears in the NDJSON file `path`, and lines that are not an event (a
/// write cut by the kill).
pub fn id_counts(path: &Path) -> (HashMap<String, u32>, usize) {
    let mut counts = HashMap::new();
    let mut torn = 0;
    let Ok(file) = std::fs::File::open(path) else {
        return (counts, 0);
    };
    for line in std::io::BufReader::new(file).lines() {
        let line = line.unwrap();
        match serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
        {
            Some(id) => *counts.entry(id).or_insert(0) += 1,
            None => torn += 1,
        }
    }
    (counts, torn)
}

/// Starts `tapio run` on `config` with standard error collected into the returned string.
pub fn spawn_collecting(config: &Path) -> (Child, Arc<Mutex<String>>) {
    let mut command = tapio();
    command.args(["run", "--config"]).arg(config);
    spawn_command_collecting(command)
}

/// Starts `command` (a `tapio()` with its arguments) with standard error collected into the
/// returned string.
pub fn spawn_command_collecting(mut command: Command) -> (Child, Arc<Mutex<String>>) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let collected = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut log = collected.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    (child, log)
}

/// A private CA's certificate, and a server certificate for 127.0.0.1 and a client
/// certificate (for mutual TLS) it signed, with their keys, as PEM files.
pub struct Certificates {
    pub ca: PathBuf,
    pub crt: PathBuf,
    pub key: PathBuf,
    pub client_crt: PathBuf,
    pub client_key: PathBuf,
}

/// A private CA and the certificates it signed, made with the openssl command under `dir`.
pub fn certificates(dir: &Path) -> Certificates {
    let file = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let new_key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &new_key,
            &["-subj", "/CN=tapio test CA", "-days", "1"],
        ]
        .concat()
        .into_iter()
        .chain(["-keyout", "ca.key", "-out", "ca.pem"])
        .collect::<Vec<_>>(),
    );
    // Each certificate: a key and request, then the CA's signature with its extensions.
    let issue = |name: &str, subject: &str, extensions: &str| {
        let (key, csr, ext, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
            format!("{name}.pem"),
        );
        openssl(
            &[
                &["req"][..],
                &new_key,
                &["-subj", subject, "-keyout", &key, "-out", &csr],
            ]
            .concat(),
        );
        std::fs::write(file(&ext), extensions).unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ]);
    };
    issue(
        "server",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    );
    issue(
        "client",
        "/CN=tapio test client",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
    Certificates {
        ca: file("ca.pem"),
        crt: file("server.pem"),
        key: file("server.key"),
        client_crt: file("client.pem"),
        client_key: file("client.key"),
    }
}

/// Starts `tapio run` on `config` and waits until its API on `port` says running.
pub fn start_with_api(config: &Path, port: u16) -> Child {
    let child = spawn_run(config);
    eventually(Duration::from_secs(30), || {
        http_get(port, "/health").filter(|(status, _)| *status == 200)
    })
    .expect("the API did not report running within 30 s");
    child
}

/// Stops tapio with SIGTERM; it must exit cleanly. Returns what it printed.
pub fn stop_cleanly(child: Child) -> Output {
    signal(child.id(), libc::SIGTERM);
    let output = wait_with_timeout(child, Duration::from_secs(30));
    assert_success(&output);
    output
}

/// Runs tests/api/client.py, the independent gRPC (and urllib) client of the API on `port`,
/// with `args` and the environment variables `env` ($TAPIO_API_TOKEN, $TAPIO_API_CA, …).
pub fn run_python_client_with(port: u16, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut command = Command::new("python3");
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/client.py"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/lib/tapio-proto/proto"
        ))
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .env_remove("TAPIO_API_TOKEN")
        .envs(env.iter().copied());
    command.output().unwrap()
}

/// Runs tests/api/client.py with `args` (and `token` as $TAPIO_API_TOKEN).
pub fn run_python_client(port: u16, args: &[&str], token: Option<&str>) -> Output {
    let token = token.map(|token| ("TAPIO_API_TOKEN", Path::new(token)));
    run_python_client_with(port, args, token.as_slice())
}

/// Runs tests/api/client.py with `args`, failing the test unless it succeeds; its standard
/// output.
pub fn python_client(port: u16, args: &[&str]) -> String {
    let client = run_python_client(port, args, None);
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    String::from_utf8(client.stdout).unwrap()
}
