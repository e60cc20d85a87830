//! `tapio tap` against a running `tapio` (both the real binary): it prints what crosses the
//! components it names, on their output or input side, stops at `--limit`, refuses names that
//! match nothing, keeps tapping a component a reload rebuilt, and a client that stops reading
//! is dropped and counted while the pipeline runs on at full speed; the same taps over gRPC
//! `StreamEvents` from the independent Python client.

mod common;

use std::io::Write as _;
use std::net::TcpStream;
use std::process::Output;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// `demo → only_net (network events only) → out (blackhole)`, with the API on `port`;
/// `condition` is the filter's.
fn pipeline(port: u16, rate: &str, condition: &str) -> String {
    format!(
        r#"
[api]
address = "127.0.0.1:{port}"

[sources.in]
type = "demo"
{rate}

[transforms.only_net]
type = "filter"
inputs = ["in"]
condition = {condition}

[sinks.out]
type = "blackhole"
inputs = ["only_net"]
"#
    )
}

const NETWORK_ONLY: &str = r#"{ field = "type", equals = "network" }"#;

/// A running [`pipeline`] keeping network events, in its own directory.
struct Started {
    config: std::path::PathBuf,
    port: u16,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

/// Writes [`pipeline`] with `rate` and the network-only filter, and starts it.
fn start_pipeline(rate: &str) -> Started {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), "tap.toml", &pipeline(port, rate, NETWORK_ONLY));
    let child = start_with_api(&config, port);
    Started {
        config,
        port,
        child,
        _dir: dir,
    }
}

/// `tapio tap <args>` against the API on `port`, given at most 30 s.
fn tap(port: u16, args: &[&str]) -> Output {
    let child = tapio()
        .arg("tap")
        .args(args)
        .args(["--address", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_timeout(child, Duration::from_secs(30))
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn outputs_and_inputs_are_tapped_up_to_the_limit() {
    let Started {
        port, child, _dir, ..
    } = start_pipeline("rate = 5000");

    // The source's output: every kind of event, as wire JSON a `stdin` source reads back.
    let source = tap(port, &["in", "--limit", "300"]);
    assert_success(&source);
    let events = parse_ndjson(&stdout(&source));
    assert_eq!(events.len(), 300, "{}", stderr(&source));
    let kinds: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(
        kinds.len() > 1,
        "the demo source sends several kinds: {kinds:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["id"].as_str().is_some_and(|id| id.starts_with("evt_")))
    );

    // The filter's output and the sink's input: network events only.
    for args in [
        &["only_*", "--outputs-of", "--limit", "40"][..],
        &["out", "--inputs-of", "--limit", "40"][..],
    ] {
        let output = tap(port, args);
        assert_success(&output);
        let events = parse_ndjson(&stdout(&output));
        assert_eq!(events.len(), 40, "{args:?}: {}", stderr(&output));
        assert!(
            events.iter().all(|e| e["type"] == "network"),
            "{args:?}: {events:?}"
        );
    }

    // Text lines name the component the event crossed.
    let text = tap(
        port,
        &["*", "--inputs-of", "--limit", "5", "--format", "text"],
    );
    assert_success(&text);
    let lines: Vec<String> = stdout(&text).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("only_net  ") || l.starts_with("out  ")),
        "{lines:?}"
    );

    // A name that matches nothing on that side is refused, listing what would match.
    let refused = tap(port, &["out", "--outputs-of"]);
    assert_eq!(refused.status.code(), Some(64), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("in, only_net"),
        "{}",
        stderr(&refused)
    );

    let metrics = http_get(port, "/metrics").unwrap().1;
    assert!(metrics.contains("tapio_tap_clients 0\n"), "{metrics}");
    stop_cleanly(child);

    // Nothing listens any more: exit 69 with the address.
    let unreachable = tap(port, &["in", "--limit", "1"]);
    assert_eq!(unreachable.status.code(), Some(69));
    assert!(stderr(&unreachable).contains(&format!("127.0.0.1:{port}")));
}

#[test]
fn a_tap_keeps_seeing_a_component_a_reload_rebuilt() {
    let Started {
        config,
        port,
        child,
        _dir,
    } = start_pipeline("rate = 2000");
    // A long tap on the filter's output, read as it goes.
    let mut tapping = tapio()
        .args(["tap", "only_net", "--address", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let reader = {
        let lines = std::sync::Arc::clone(&lines);
        let out = tapping.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                lines
                    .lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        })
    };
    let kinds_seen = |kind: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == kind)
            .count()
    };
    eventually(Duration::from_secs(20), || {
        (kinds_seen("network") > 10).then_some(())
    })
    .expect("the tap sees network events before the reload");
    assert_eq!(kinds_seen("process"), 0);

    // The filter changes, so the reload builds it anew; the tap sees the new one's output.
    std::fs::write(
        &config,
        pipeline(
            port,
            "rate = 2000",
            r#"{ field = "type", equals = "process" }"#,
        ),
    )
    .unwrap();
    signal(child.id(), libc::SIGHUP);
    eventually(Duration::from_secs(20), || {
        (kinds_seen("process") > 10).then_some(())
    })
    .expect("the tap sees the rebuilt filter's process events after the reload");

    tapping.kill().unwrap();
    tapping.wait().unwrap();
    reader.join().unwrap();
    stop_cleanly(child);
}

#[test]
fn a_tap_client_that_stops_reading_is_dropped_and_the_pipeline_runs_on() {
    // As fast as the pipeline goes: a client that reads nothing falls behind at once.
    let Started {
        port, child, _dir, ..
    } = start_pipeline("");
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stalled,
        "GET /v1/tap?component=*&direction=inputs HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .unwrap();

    let sent = || {
        let body = http_get(port, "/metrics").unwrap().1;
        metric(&body, "tapio_component_sent_events_total", "in").unwrap()
    };
    let dropped = eventually(Duration::from_secs(30), || {
        let body = http_get(port, "/metrics").unwrap().1;
        body.contains("tapio_tap_dropped_clients_total 1\n")
            .then_some(body)
    })
    .expect("the stalled tap is dropped");
    assert!(dropped.contains("tapio_tap_clients 0\n"), "{dropped}");

    // The pipeline goes on at full speed with the client still connected.
    let before = sent();
    std::thread::sleep(Duration::from_millis(500));
    let after = sent();
    assert!(
        after - before > 50_000,
        "the source sent only {} events in 0.5 s after the drop",
        after - before
    );
    drop(stalled);
    stop_cleanly(child);
}

/// `StreamEvents` with `tap`, from the independent Python client: the events crossing a
/// filter's output and a sink's input, up to the limit; a pattern that matches nothing is
/// `INVALID_ARGUMENT`.
#[test]
fn taps_over_grpc() {
    let Started {
        port, child, _dir, ..
    } = start_pipeline("rate = 5000");
    for side in ["outputs", "inputs"] {
        let pattern = if side == "outputs" { "only_net" } else { "ou*" };
        let lines = python_client(port, &["tap", pattern, side, "25"]);
        let kinds: Vec<&str> = lines
            .lines()
            .filter_map(|l| l.strip_prefix("tap "))
            .map(|l| l.split(' ').nth(1).unwrap())
            .collect();
        assert_eq!(kinds.len(), 25, "{side}: {lines}");
        assert!(kinds.iter().all(|k| *k == "network"), "{side}: {kinds:?}");
    }
    let refused = run_python_client(port, &["tap", "nothing*", "outputs", "1"], None);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("INVALID_ARGUMENT") && stderr.contains("matches no running component"),
        "{stderr}"
    );
    stop_cleanly(child);
}
