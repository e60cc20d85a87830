//! The `anomaly` transform in the intelligence chain, through the real binary: a pod whose TCP
//! retransmits jump far above what it learned gets one `anomaly` event, which `correlate` puts
//! in the pod's group, so the network-failure cascade that follows lists it among its events.

mod common;

use common::*;

/// `stdin → semantic_enrich → anomaly → correlate → file`, with one-second intervals and a
/// short warm-up so a test can play the whole story in a minute of event time.
fn pipeline(out: &std::path::Path) -> String {
    format!(
        r#"
[sources.in]
type = "stdin"

[transforms.enrich]
type = "semantic_enrich"
inputs = ["in"]

[transforms.anomalies]
type = "anomaly"
inputs = ["enrich"]
interval = "1s"
warmup = 5
allowed_lateness = "0s"

[transforms.correlate]
type = "correlate"
inputs = ["anomalies"]

[sinks.out]
type = "file"
inputs = ["correlate"]
path = "{}"
"#,
        out.display()
    )
}

/// A retransmit from the client pod to the server pod (10.100.0.3 → 10.100.0.4), as the ebpf
/// source reports it: about the node until enrichment finds the peer pod by its IP.
fn retransmit(id: usize, millis: u64) -> String {
    serde_json::json!({
        "id": format!("evt_rtx_{id:05}"),
        "timestamp": at(millis),
        "type": "network",
        "source": "ebpf",
        "entity": { "type": "host", "id": "node-2", "node": "node-2" },
        "network": {
            "operation": "retransmit", "protocol": "tcp",
            "src_ip": "10.100.0.3", "src_port": 40000 + id, "dst_ip": "10.100.0.4", "dst_port": 8080
        },
        "process": { "comm": "client", "pid": 4191 }
    })
    .to_string()
}

fn at(millis: u64) -> String {
    format!(
        "2026-11-27T00:{:02}:{:02}.{:03}000000Z",
        millis / 60_000,
        millis / 1000 % 60,
        millis % 1000
    )
}

#[test]
fn a_retransmit_anomaly_joins_the_network_cascade_that_follows() {
    let golden = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/golden/network-failure.input.ndjson"),
    )
    .unwrap();
    let golden: Vec<&str> = golden.lines().collect();
    // The two pods first, then a quiet baseline of one retransmit a second for 12 s, a burst
    // of 30 a second for 2 s, and the rest of the cascade (CNI error, failed probe, restart)
    // 10 s later.
    let mut input: Vec<String> = golden[..2].iter().map(|l| l.to_string()).collect();
    let mut id = 0;
    for second in 1..=12 {
        id += 1;
        input.push(retransmit(id, second * 1000 + 100));
    }
    for second in 13..=14 {
        for n in 0..30 {
            id += 1;
            input.push(retransmit(id, second * 1000 + n * 30));
        }
    }
    for line in &golden[5..] {
        let mut event: serde_json::Value = serde_json::from_str(line).unwrap();
        let original = event["timestamp"].as_str().unwrap();
        let millis: u64 = original[17..19].parse::<u64>().unwrap() * 1000
            + original[20..23].parse::<u64>().unwrap();
        event["timestamp"] = at(millis + 22_000).into();
        input.push(event.to_string());
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let config = write_config(dir.path(), "anomaly.toml", &pipeline(&out));
    let output = run_with_stdin(&config, (input.join("\n") + "\n").as_bytes());
    assert_success(&output);
    let events = parse_ndjson(&std::fs::read_to_string(&out).unwrap());

    let anomalies: Vec<_> = events.iter().filter(|e| e["type"] == "anomaly").collect();
    assert_eq!(anomalies.len(), 1, "{anomalies:#?}");
    let anomaly = anomalies[0];
    assert_eq!(anomaly["anomaly"]["signal"], "tcp_retransmit");
    assert_eq!(anomaly["anomaly"]["interval"], "1s");
    assert_eq!(anomaly["anomaly"]["observed"], 30);
    assert_eq!(anomaly["entity"]["name"], "svc2-7c743c3c2-bccbe");
    assert_eq!(
        anomaly["timestamp"],
        at(15_000),
        "the end of the burst's second interval"
    );

    let summaries: Vec<_> = events
        .iter()
        .filter(|e| e["correlation"]["pattern"] == "network-failure-cascade")
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:#?}");
    let related = summaries[0]["correlation"]["related_events"]
        .as_array()
        .unwrap();
    assert!(related.contains(&anomaly["id"]), "{related:?}");
    assert_eq!(
        anomaly["correlation"]["correlation_id"],
        summaries[0]["correlation"]["correlation_id"]
    );
    assert_eq!(
        events.len(),
        input.len() + 2,
        "every input event, the anomaly and the summary"
    );
}
