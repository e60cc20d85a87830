//! The agent → aggregator path with two real `tapio` processes over loopback gRPC: an agent
//! `demo → grpc` sink, an aggregator `grpc` source → `file`. The aggregator is SIGKILLed
//! mid-stream and started again, and every event the agent sent must arrive at least once
//! (duplicates are counted and printed, not failed); with TLS and tokens on, an agent without
//! the token is refused at start and nothing it had enters the aggregator's pipeline.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::*;

/// The ids of the events in an NDJSON file; a line cut short by a kill is skipped.
fn ids(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect()
}

/// An aggregator: the `grpc` source on `port` (with `extra` options) into a file sink.
fn aggregator(dir: &Path, name: &str, port: u16, extra: &str, out: &Path) -> std::path::PathBuf {
    write_config(
        dir,
        name,
        &format!(
            "[sources.in]\ntype = \"grpc\"\naddress = \"127.0.0.1:{port}\"\n{extra}\n\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}\"\n",
            out.display()
        ),
    )
}

/// Waits until something listens on `port`.
fn wait_listening(port: u16) {
    eventually(Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .expect("the aggregator did not listen within 30 s");
}

/// A number different on every run, for random sizes: batches and the moment of a kill fall
/// differently each time.
fn run_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

#[test]
fn aggregator_killed_mid_stream_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let first_out = dir.path().join("first.ndjson");
    let second_out = dir.path().join("second.ndjson");
    let sent = dir.path().join("sent.ndjson");
    let first = aggregator(dir.path(), "agg1.toml", port, "", &first_out);
    let second = aggregator(dir.path(), "agg2.toml", port, "", &second_out);
    let nanos = run_seed();
    let count = 20_000 + nanos % 10_000;
    let batch = 50 + nanos % 200;
    let agent = write_config(
        dir.path(),
        "agent.toml",
        &format!(
            "[sources.demo]\ntype = \"demo\"\ncount = {count}\nrate = 8000\nbatch_size = {batch}\nseed = {nanos}\n\n\
             [sinks.out]\ntype = \"grpc\"\ninputs = [\"demo\"]\nendpoints = [\"http://127.0.0.1:{port}\"]\n\
             ack_timeout = \"2s\"\nmax_in_flight = 8\n\n{}",
            copy_sink("demo", &sent)
        ),
    );
    let mut aggregator = spawn_run(&first);
    wait_listening(port);
    let agent = spawn_run(&agent);
    // Kill it once part of the stream has arrived.
    eventually(Duration::from_secs(30), || {
        (ids(&first_out).len() > 2_000).then_some(())
    })
    .expect("events reach the first aggregator");
    aggregator.kill().unwrap();
    aggregator.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500 + nanos % 1000));
    let aggregator = spawn_run(&second);
    let agent = wait_with_timeout(agent, Duration::from_secs(120));
    assert_success(&agent);
    signal(aggregator.id(), libc::SIGTERM);
    let aggregator = wait_with_timeout(aggregator, Duration::from_secs(30));
    assert_success(&aggregator);

    let sent = ids(&sent);
    assert_eq!(
        sent.len() as u64,
        count,
        "the agent's own record of what it sent"
    );
    let mut received: BTreeMap<String, usize> = BTreeMap::new();
    for id in ids(&first_out).into_iter().chain(ids(&second_out)) {
        *received.entry(id).or_default() += 1;
    }
    let missing: Vec<&String> = sent
        .iter()
        .filter(|id| !received.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} events never arrived, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let sent_set: BTreeSet<&String> = sent.iter().collect();
    assert!(
        received.keys().all(|id| sent_set.contains(id)),
        "an event nobody sent arrived"
    );
    let duplicates: usize = received.values().map(|n| n - 1).sum();
    assert!(
        !ids(&second_out).is_empty(),
        "the restarted aggregator got the rest"
    );
    eprintln!(
        "sent {count} events in batches of {batch}; received {} ({} duplicates, resent after the kill)",
        received.values().sum::<usize>(),
        duplicates
    );
}

/// Two receivers: the agent's lanes share the stream between them (both get a good part of
/// it), and when one is killed mid-stream, what it left unanswered and everything after goes to
/// the other; every event arrives.
#[test]
fn two_endpoints_share_the_load_and_one_takes_over_from_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let (out_a, out_b) = (dir.path().join("a.ndjson"), dir.path().join("b.ndjson"));
    let sent = dir.path().join("sent.ndjson");
    let nanos = run_seed();
    let count = 20_000 + nanos % 10_000;
    let batch = 50 + nanos % 150;
    let agent = write_config(
        dir.path(),
        "agent.toml",
        &format!(
            "[sources.demo]\ntype = \"demo\"\ncount = {count}\nrate = 8000\nbatch_size = {batch}\nseed = {nanos}\n\n\
             [sinks.out]\ntype = \"grpc\"\ninputs = [\"demo\"]\n\
             endpoints = [\"http://127.0.0.1:{port_a}\", \"http://127.0.0.1:{port_b}\"]\n\
             ack_timeout = \"2s\"\nmax_in_flight = 4\n\n{}",
            copy_sink("demo", &sent)
        ),
    );
    let a = spawn_run(&aggregator(dir.path(), "a.toml", port_a, "", &out_a));
    let mut b = spawn_run(&aggregator(dir.path(), "b.toml", port_b, "", &out_b));
    wait_listening(port_a);
    wait_listening(port_b);
    let agent = spawn_run(&agent);
    let shares = eventually(Duration::from_secs(30), || {
        let (a, b) = (ids(&out_a).len(), ids(&out_b).len());
        (a + b > 6_000).then_some((a, b))
    })
    .expect("events reach the receivers");
    let total = (shares.0 + shares.1) as f64;
    assert!(
        shares.0 as f64 > total * 0.2 && shares.1 as f64 > total * 0.2,
        "both receivers take a share: {shares:?}"
    );
    b.kill().unwrap();
    b.wait().unwrap();
    let agent = wait_with_timeout(agent, Duration::from_secs(120));
    assert_success(&agent);
    signal(a.id(), libc::SIGTERM);
    assert_success(&wait_with_timeout(a, Duration::from_secs(30)));

    let sent = ids(&sent);
    assert_eq!(sent.len() as u64, count);
    let received: BTreeSet<String> = ids(&out_a).into_iter().chain(ids(&out_b)).collect();
    let missing = sent.iter().filter(|id| !received.contains(*id)).count();
    assert_eq!(missing, 0, "{missing} of {count} events never arrived");
    assert!(
        received.len() as u64 == count,
        "an event nobody sent arrived"
    );
}

/// A private CA and a server certificate for 127.0.0.1, as PEM files in `dir`.
fn certificates(dir: &Path) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tapio test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

#[test]
fn with_tls_and_tokens_a_client_without_the_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    std::fs::write(
        dir.path().join("tokens"),
        "# agents of the shop cluster\n\nagent-a:correct-horse\n",
    )
    .unwrap();
    let port = free_port();
    let out = dir.path().join("out.ndjson");
    let config = aggregator(
        dir.path(),
        "aggregator.toml",
        port,
        &format!(
            "tls.crt_file = \"{0}/server.crt\"\ntls.key_file = \"{0}/server.key\"\nauth.tokens_file = \"{0}/tokens\"",
            dir.path().display()
        ),
        &out,
    );
    let aggregator = spawn_run(&config);
    wait_listening(port);
    let agent = |name: &str, token: Option<&str>, seed: u64| {
        let auth = token.map_or(String::new(), |t| format!("auth.token = \"{t}\"\n"));
        write_config(
            dir.path(),
            name,
            &format!(
                "[sources.demo]\ntype = \"demo\"\ncount = 500\nseed = {seed}\n\n\
                 [sinks.out]\ntype = \"grpc\"\ninputs = [\"demo\"]\nendpoints = [\"https://127.0.0.1:{port}\"]\n\
                 tls.ca_file = \"{}/ca.crt\"\n{auth}",
                dir.path().display()
            ),
        )
    };
    for (name, token) in [("no-token.toml", None), ("wrong-token.toml", Some("guess"))] {
        let refused = run_config(&agent(name, token, 1));
        assert_eq!(
            refused.status.code(),
            Some(69),
            "{name}: {}",
            String::from_utf8_lossy(&refused.stderr)
        );
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("refuses `auth.token`") && stderr.contains("Unauthenticated"),
            "{stderr}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        ids(&out).is_empty(),
        "nothing a refused client had may enter the pipeline"
    );

    let allowed = run_config(&agent("agent.toml", Some("correct-horse"), 2));
    assert_success(&allowed);
    let arrived = eventually(Duration::from_secs(10), || {
        let ids = ids(&out);
        (ids.len() >= 500).then_some(ids)
    })
    .expect("the agent with the token gets its events through");
    assert_eq!(arrived.len(), 500);
    signal(aggregator.id(), libc::SIGTERM);
    let aggregator = wait_with_timeout(aggregator, Duration::from_secs(30));
    assert_success(&aggregator);
    let log = String::from_utf8_lossy(&aggregator.stderr);
    assert!(
        log.contains("SubmitEvents stream opened") && log.contains("agent-a"),
        "the audit line names the token: {log}"
    );
    assert!(
        !log.contains("correct-horse"),
        "the token itself is never logged"
    );
}

/// An independent implementation: Python's grpcio with stubs that grpcio-tools generates from
/// the committed `.proto` files submits events to the `grpc` source; a wrong token is refused,
/// every batch is answered in order, and the events arrive intact (contexts and
/// `application_json` decoded).
#[test]
fn a_python_grpcio_client_submits_events() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = dir.path().join("out.ndjson");
    let config = aggregator(
        dir.path(),
        "aggregator.toml",
        port,
        "auth.tokens = [\"python:py-token\"]",
        &out,
    );
    let aggregator = spawn_run(&config);
    wait_listening(port);
    let count = 1000 + free_port() as usize % 500;
    let client = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc/submit.py"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/lib/tapio-proto/proto"
        ))
        .arg(format!("127.0.0.1:{port}"))
        .args(["py-token", &count.to_string(), "64"])
        .output()
        .unwrap();
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    let sent: Vec<String> = String::from_utf8(client.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(sent.len(), count);
    signal(aggregator.id(), libc::SIGTERM);
    assert_success(&wait_with_timeout(aggregator, Duration::from_secs(30)));
    let text = std::fs::read_to_string(&out).unwrap();
    let events = parse_ndjson(&text);
    let received: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(
        received,
        sent.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let last = &events[count - 1];
    assert_eq!(last["type"], "process");
    assert_eq!(last["entity"]["namespace"], "shop");
    assert_eq!(last["process"]["exit_code"], -(count as i64 - 1));
    assert_eq!(last["application"]["attempt"], count as u64 - 1);
    assert_eq!(
        last["timestamp"],
        format!("2026-01-01T00:00:00.{:09}Z", count - 1)
    );
}
