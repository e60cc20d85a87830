//! The `cni` source end to end with Debian's real CNI plugins: a runtime's CNI calls
//! (`common/cni.rs`: `bridge` + `host-local`, `loopback`, then the chained `tapio-cni`) set up a
//! real pod network namespace, libcni's result cache is written exactly as libcni writes it,
//! and the real `tapio` binary reports both what the plugin told it over its socket and what
//! it saw in the cache, with the IP the bridge really assigned.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use serde_json::{Value, json};

use common::cni::{Netns, Pod, Runtime, unavailable};
use common::{
    eventually, parse_ndjson, signal, source_to_file, tapio, wait_with_timeout, write_config,
};

const WAIT: Duration = Duration::from_secs(20);

/// A unique id for this test's names (bridge, namespaces, subnet).
fn unique_id(salt: u32) -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (std::process::id().wrapping_mul(31) ^ nanos ^ salt) % 10_000
}

fn start_agent(dir: &Path, runtime: &Runtime, socket: &Path, out: &Path) -> Child {
    let source = format!(
        "type = \"cni\"\ncache_dir = \"{}\"\nipam_dir = \"{}\"\nsocket_path = \"{}\"",
        runtime.cache_dir.display(),
        runtime.ipam_dir.display(),
        socket.display()
    );
    let config = write_config(
        dir,
        "tapio.toml",
        &format!("node_name = \"cni-node\"\n{}", source_to_file(&source, out)),
    );
    let child = tapio()
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually(WAIT, || socket.exists().then_some(())).expect("the agent never listened");
    child
}

/// The events in `out` with `network.operation == operation` for `container`, once there are
/// `n` of them.
fn wait_for(out: &Path, operation: &str, container: &str, n: usize) -> Vec<Value> {
    eventually(WAIT, || {
        let events: Vec<Value> = parse_ndjson(&std::fs::read_to_string(out).unwrap_or_default())
            .into_iter()
            .filter(|e| {
                e["network"]["operation"] == operation && e["network"]["container_id"] == container
            })
            .collect();
        (events.len() >= n).then_some(events)
    })
    .unwrap_or_else(|| {
        panic!(
            "no {n} {operation} events for {container} in:\n{}",
            std::fs::read_to_string(out).unwrap_or_default()
        )
    })
}

#[test]
fn real_plugins_add_check_del_and_no_agent() {
    if let Some(why) = unavailable() {
        eprintln!("skipping: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = unique_id(1);
    let socket = dir.path().join("run/tapio-cni.sock");
    let out = dir.path().join("events.ndjson");
    let runtime = Runtime::new(dir.path(), id, &socket);
    let agent = start_agent(dir.path(), &runtime, &socket, &out);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let netns = Netns::new(format!("tapio-pod-{id}"));
    let container = format!("{:064x}", u128::from(id) * 0x9e37_79b9_7f4a_7c15);
    let pod = Pod {
        container_id: &container,
        netns: &netns,
        namespace: "shop",
        name: "api-1",
        uid: "0b6a2f4e-1c3d-4e5f-8a9b-0c1d2e3f4a5b",
    };
    let (result, _) = runtime.add(&pod);
    let assigned = netns.ipv4_of("eth0");
    assert_eq!(assigned.len(), 1, "bridge assigned {assigned:?}");
    let ip = &assigned[0];
    assert!(
        ip.starts_with(&runtime.subnet_prefix),
        "{ip} not in {}",
        runtime.subnet_prefix
    );
    assert_eq!(
        result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next(),
        Some(ip.as_str())
    );

    // One ADD told by the plugin, one seen in libcni's cache: both name the pod and its IP.
    let adds = wait_for(&out, "ADD", &container, 2);
    for add in &adds {
        assert_eq!(add["source"], "cni");
        assert_eq!(add["network"]["ip_address"], ip.as_str());
        assert_eq!(add["network"]["interface_name"], "eth0");
        assert_eq!(add["network"]["netns"], netns.path());
        assert_eq!(
            add["entity"],
            json!({ "type": "pod", "id": pod.uid, "name": "api-1", "namespace": "shop", "node": "cni-node" })
        );
    }

    // CHECK with the address gone: tapio-cni fails the CHECK and reports it.
    let plugins = runtime.plugins();
    let tapio_cni = plugins.last().unwrap();
    let ok = runtime.exec(tapio_cni, "CHECK", &pod, "eth0", Some(&result));
    assert!(
        ok.output.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.output.stdout)
    );
    let prefix = result["ips"][0]["address"].as_str().unwrap();
    let del = std::process::Command::new("ip")
        .args(["-n", &netns.name, "addr", "del", prefix, "dev", "eth0"])
        .status()
        .unwrap();
    assert!(del.success());
    let failed = runtime.exec(tapio_cni, "CHECK", &pod, "eth0", Some(&result));
    assert!(!failed.output.status.success());
    let error: Value = serde_json::from_slice(&failed.output.stdout).unwrap();
    assert_eq!(error["code"], 100, "{error}");
    let checks = wait_for(&out, "CHECK", &container, 2);
    assert!(checks[0]["network"].get("error").is_none(), "{}", checks[0]);
    assert!(
        checks[1]["network"]["error"]
            .as_str()
            .unwrap()
            .contains(ip.as_str()),
        "{}",
        checks[1]
    );

    runtime.del(&pod, &result);
    let dels = wait_for(&out, "DEL", &container, 2);
    assert!(
        dels.iter()
            .all(|e| e["network"]["ip_address"] == ip.as_str()),
        "{dels:?}"
    );

    // With the agent gone the chain still succeeds, fast, and passes the result through.
    signal(agent.id(), libc::SIGTERM);
    let stopped = wait_with_timeout(agent, Duration::from_secs(20));
    assert_eq!(
        stopped.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert!(!socket.exists());
    let lonely_ns = Netns::new(format!("tapio-pod2-{id}"));
    let lonely_id = format!("{:064x}", u128::from(id) + 7);
    let lonely = Pod {
        container_id: &lonely_id,
        netns: &lonely_ns,
        namespace: "shop",
        name: "api-2",
        uid: "1b6a2f4e-1c3d-4e5f-8a9b-0c1d2e3f4a5b",
    };
    let (second, tapio_run) = runtime.add(&lonely);
    assert!(
        tapio_run.took < Duration::from_secs(2),
        "tapio-cni took {:?} with no agent",
        tapio_run.took
    );
    assert_eq!(
        second["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next(),
        Some(lonely_ns.ipv4_of("eth0")[0].as_str())
    );
    runtime.del(&lonely, &second);
}
