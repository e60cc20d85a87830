//! The `cni` source against real inotify on a temp dir (files written the way libcni and
//! host-local write them) and a real unix socket.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tapio_event::{ComponentConfig, EntityType, ErrorKind, UnifiedEvent};

use super::CniConfig;
use super::cache::{Attachment, Reservation};
use crate::util::testing::{assert_quiet, build_context, context, take};

/// A result file as libcni's `cacheAdd` writes it (pkg/libcni/api.go `cachedInfo`).
pub(super) fn cache_entry(container: &str, ip: Option<&str>) -> Vec<u8> {
    let ips = ip.map_or(
        json!([]),
        |ip| json!([{ "address": format!("{ip}/24"), "gateway": "10.1.0.1", "interface": 2 }]),
    );
    json!({
        "kind": "cniCacheV1",
        "containerId": container,
        "config": "eyJjbmlWZXJzaW9uIjoiMS4wLjAifQ==",
        "ifName": "eth0",
        "networkName": "testnet",
        "netns": format!("/var/run/netns/{container}"),
        "cniArgs": [["IgnoreUnknown", "1"], ["K8S_POD_NAMESPACE", "shop"], ["K8S_POD_NAME", "api"],
                    ["K8S_POD_UID", "u-1"], ["K8S_POD_INFRA_CONTAINER_ID", container]],
        "result": { "cniVersion": "1.0.0",
                    "interfaces": [{ "name": "cni0" }, { "name": "veth1" }, { "name": "eth0", "sandbox": "/x" }],
                    "ips": ips, "dns": {} }
    })
    .to_string()
    .into_bytes()
}

pub(super) fn config(dir: &Path) -> CniConfig {
    CniConfig {
        watch: true,
        cache_dir: dir.join("results"),
        ipam_dir: dir.join("networks"),
        emit_existing: false,
        socket_path: None,
    }
}

fn start(
    config: &CniConfig,
) -> (
    tokio::task::JoinHandle<Result<(), tapio_event::ComponentError>>,
    crate::util::testing::Taps,
) {
    let source = config.build(&build_context("cni")).expect("builds");
    let (cx, taps) = context("cni", true);
    (tokio::spawn(source.run(cx)), taps)
}

pub(super) fn op(event: &UnifiedEvent) -> (&str, Option<&str>, Option<&str>) {
    let network = event.network.as_deref().expect("network context");
    (
        network.operation.as_deref().unwrap(),
        network.container_id.as_deref(),
        network.ip_address.as_deref(),
    )
}

#[test]
fn parses_a_libcni_result() {
    let attachment = Attachment::parse(&cache_entry("abc", Some("10.1.0.7"))).unwrap();
    assert_eq!(attachment.ip.as_deref(), Some("10.1.0.7"));
    assert_eq!(attachment.netns.as_deref(), Some("/var/run/netns/abc"));
    assert_eq!(attachment.pod_uid.as_deref(), Some("u-1"));
    let event = attachment.event("ADD", &mut tapio_event::id::IdGenerator::seeded(1));
    let entity = event.entity.unwrap();
    assert_eq!((entity.kind, entity.id.as_str()), (EntityType::Pod, "u-1"));
    assert!(Attachment::parse(br#"{"kind":"other","containerId":"a","ifName":"e"}"#).is_err());
    let half = cache_entry("abc", None);
    assert!(Attachment::parse(&half[..half.len() / 2]).is_err());
}

#[test]
fn parses_host_local_reservations() {
    let r = Reservation::parse("10.1.0.7", b"abc\r\neth0").unwrap();
    assert_eq!(
        (r.container_id.as_str(), r.if_name.as_deref()),
        ("abc", Some("eth0"))
    );
    assert_eq!(
        Reservation::parse("10.1.0.8", b"abc").unwrap().if_name,
        None
    );
    assert!(Reservation::parse("last_reserved_ip.0", b"10.1.0.7").is_none());
    assert!(Reservation::parse("lock", b"").is_none());
}

#[test]
fn config_needs_something_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.watch = false;
    let error = config.build(&build_context("cni")).err().unwrap();
    assert_eq!(error.kind(), ErrorKind::Config);
    config.socket_path = Some("".into());
    assert!(
        config
            .build(&build_context("cni"))
            .err()
            .unwrap()
            .message()
            .contains("socket_path")
    );
    // Building touches nothing: validate never creates the directories.
    config.watch = true;
    config.socket_path = None;
    config.build(&build_context("cni")).unwrap();
    assert!(!dir.path().join("results").exists());
}

#[tokio::test]
async fn existing_results_are_learned_new_ones_reported_removed_ones_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    std::fs::create_dir_all(&config.cache_dir).unwrap();
    let old = config.cache_dir.join("testnet-old-eth0");
    std::fs::write(&old, cache_entry("old", Some("10.1.0.2"))).unwrap();
    let (task, mut taps) = start(&config);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_quiet(&mut taps.events).await;

    // Written in place the way libcni does (truncate, write, close), in random chunks with
    // pauses, so inotify sees the file half-written first.
    let new = config.cache_dir.join("testnet-new-eth0");
    let body = cache_entry("new", Some("10.1.0.3"));
    let mut file = std::fs::File::create(&new).unwrap();
    let cut = 1 + (std::process::id() as usize % (body.len() - 2));
    file.write_all(&body[..cut]).unwrap();
    file.flush().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    file.write_all(&body[cut..]).unwrap();
    drop(file);
    let added = take(&mut taps.events, 1).await;
    assert_eq!(op(&added[0]), ("ADD", Some("new"), Some("10.1.0.3")));
    assert_eq!(
        added[0].entity.as_ref().unwrap().node.as_deref(),
        Some("test-node")
    );

    std::fs::remove_file(&old).unwrap();
    let deleted = take(&mut taps.events, 1).await;
    assert_eq!(op(&deleted[0]), ("DEL", Some("old"), Some("10.1.0.2")));
    // Rewriting the same result is no new ADD.
    std::fs::write(&new, &body).unwrap();
    assert_quiet(&mut taps.events).await;
    assert!(
        taps.errors.try_recv().is_none(),
        "a half-written file is not broken"
    );
    taps.trigger.trigger();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn broken_results_go_to_errors_and_ipam_fills_missing_ips() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.emit_existing = true;
    std::fs::create_dir_all(config.ipam_dir.join("testnet")).unwrap();
    std::fs::create_dir_all(&config.cache_dir).unwrap();
    std::fs::write(
        config.cache_dir.join("testnet-first-eth0"),
        cache_entry("first", Some("10.1.0.9")),
    )
    .unwrap();
    let (task, mut taps) = start(&config);
    let existing = take(&mut taps.events, 1).await;
    assert_eq!(op(&existing[0]), ("ADD", Some("first"), Some("10.1.0.9")));

    std::fs::write(config.ipam_dir.join("testnet/10.1.0.44"), "noip\r\neth0").unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(
        config.cache_dir.join("testnet-noip-eth0"),
        cache_entry("noip", None),
    )
    .unwrap();
    let filled = take(&mut taps.events, 1).await;
    assert_eq!(op(&filled[0]), ("ADD", Some("noip"), Some("10.1.0.44")));

    std::fs::write(
        config.cache_dir.join("testnet-bad-eth0"),
        b"{\"kind\": \"cniCacheV1\"",
    )
    .unwrap();
    let errors = take(&mut taps.errors, 1).await;
    let details = errors[0].application.as_ref().unwrap();
    assert!(
        details["error"]
            .as_str()
            .unwrap()
            .contains("testnet-bad-eth0"),
        "{details:?}"
    );
    assert_eq!(taps.metrics.snapshot().errors.values().sum::<u64>(), 1);
    assert_quiet(&mut taps.events).await;
    taps.trigger.trigger();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn plugin_events_arrive_over_a_private_socket() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.watch = false;
    let socket = dir.path().join("run/cni.sock");
    config.socket_path = Some(socket.clone());
    // A stale socket of a previous run is replaced.
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let (task, mut taps) = start(&config);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let event = json!({ "type": "network", "source": "x", "entity": { "type": "pod", "id": "u-2" },
                        "network": { "operation": "CHECK", "error": "10.1.0.5 is not on eth0" } });
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let lines = format!(
        "{event}\nnot json\n{}\n",
        json!({ "type": "process", "source": "cni" })
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, lines.as_bytes())
        .await
        .unwrap();
    drop(stream);
    let got = take(&mut taps.events, 1).await;
    assert_eq!(got[0].source, "cni");
    assert_eq!(
        got[0].network.as_ref().unwrap().error.as_deref(),
        Some("10.1.0.5 is not on eth0")
    );
    assert_eq!(
        got[0].entity.as_ref().unwrap().node.as_deref(),
        Some("test-node")
    );
    assert_eq!(take(&mut taps.errors, 2).await.len(), 2);
    taps.trigger.trigger();
    task.await.unwrap().unwrap();
    assert!(!socket.exists(), "the socket is removed at stop");
}
