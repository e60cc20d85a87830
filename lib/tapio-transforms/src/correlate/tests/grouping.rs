//! Grouping rules and bounded state: entity keys and aliases, nodes and hosts, merges, the
//! group duration limit, late events, eviction, expiry over a long run, and capped lists.

use tapio_event::AckToken;

use super::*;

#[test]
fn nodes_link_only_node_events_and_hosts_link_nothing() {
    let mut script = Script::default();
    script
        .unit(0, "worker-1", "containerd.service", None, "failed")
        .kube(100, &API, "BackOff")
        .host(200, "worker-1", "exec")
        .host(300, "worker-1", "exec")
        .node_event(400, "worker-1", "NodeNotReady");
    let (out, _) = run(&CorrelateConfig::default(), script.events.clone());
    assert_eq!(id_of(&out, "evt_0001"), id_of(&out, "evt_0005"));
    assert_ne!(id_of(&out, "evt_0001"), id_of(&out, "evt_0002"));
    assert_ne!(id_of(&out, "evt_0003"), id_of(&out, "evt_0004"));
    assert_eq!(
        id_of(&out, "evt_0003"),
        "cor_0003",
        "a lone event's group is named after it"
    );
    assert_eq!(summaries(&out).len(), 1);
}

#[test]
fn name_and_uid_keys_join_and_merges_keep_the_older_id() {
    let mut script = Script::default();
    script.cni(0, &API, "ADD", None);
    script.kube(100, &API, "Scheduled");
    // An event that knows only the uid opens its own group…
    let mut uid_only = API.entity();
    uid_only.name = None;
    uid_only.namespace = None;
    script.push(200, EventType::Kubernetes, "kubernetes", uid_only.clone());
    let (out, _) = run(&CorrelateConfig::default(), script.events.clone());
    assert_eq!(
        id_of(&out, "evt_0001"),
        id_of(&out, "evt_0002"),
        "name and uid keys join"
    );
    assert_eq!(id_of(&out, "evt_0003"), "cor_0001");

    let mut script = Script::default();
    script.cni(0, &API, "ADD", None);
    script.push(100, EventType::Kubernetes, "kubernetes", uid_only.clone());
    // …until an event that knows both reaches the two groups and merges them.
    script.kube(200, &API, "Scheduled");
    script.push(300, EventType::Kubernetes, "kubernetes", uid_only);
    let (out, _) = run(&CorrelateConfig::default(), script.events.clone());
    assert_eq!(id_of(&out, "evt_0001"), "cor_0001");
    assert_eq!(
        id_of(&out, "evt_0002"),
        "cor_0002",
        "emitted events keep their id"
    );
    assert_eq!(id_of(&out, "evt_0003"), "cor_0001", "the older id survives");
    assert_eq!(id_of(&out, "evt_0004"), "cor_0001");
}

#[test]
fn a_group_closes_after_max_group_duration() {
    let mut script = Script::default();
    for second in (0..900).step_by(10) {
        script.socket(second * 1000, &API, "connect");
    }
    let (out, stats) = run(&CorrelateConfig::default(), script.events.clone());
    let ids: std::collections::BTreeSet<&str> = out.iter().map(correlation_id).collect();
    assert_eq!(ids.len(), 2, "10 minutes per group");
    assert_eq!(id_of(&out, "evt_0060"), "cor_0001");
    assert_eq!(id_of(&out, "evt_0062"), "cor_0062");
    assert!(stats.open_groups <= 2);
}

#[test]
fn late_events_are_processed_at_once_and_counted() {
    let mut script = Script::default();
    script
        .socket(10_000, &API, "connect")
        .socket(20_000, &API, "connect")
        .socket(12_000, &API, "connect")
        .socket(8_000, &API, "connect");
    let mut correlator = correlator(&CorrelateConfig::default());
    let mut out = Output::default();
    correlator.push_batch(EventBatch::new(script.events.clone()), &mut out);
    let order: Vec<&str> = out.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        order,
        ["evt_0001", "evt_0003", "evt_0004"],
        "in time order until the late one"
    );
    assert_eq!(correlator.stats().late_events, 1);
    assert_eq!(correlator.stats().held_events, 1);
    correlator.flush(&mut out);
    assert_eq!(out.events.len(), 4);
    assert!(out.events.iter().all(|e| correlation_id(e) == "cor_0001"));
}

#[test]
fn state_is_bounded_by_max_groups_evicting_the_least_recently_active() {
    let config = CorrelateConfig {
        max_groups: 2,
        ..CorrelateConfig::default()
    };
    let mut script = Script::default();
    script
        .kube(0, &API, "Pulled")
        .kube(1000, &CART, "Pulled")
        .kube(2000, &API, "Pulled")
        .kube(
            3000,
            &Pod {
                uid: "uid-db",
                namespace: "shop",
                name: "db-0",
                node: "worker-3",
            },
            "Pulled",
        )
        .kube(4000, &API, "Pulled")
        .kube(5000, &CART, "Pulled");
    let (out, stats) = run(&config, script.events.clone());
    assert_eq!(stats.evicted_groups, 2);
    assert_eq!(stats.open_groups, 2);
    assert_eq!(
        id_of(&out, "evt_0005"),
        "cor_0001",
        "the recently active pod kept its group"
    );
    assert_eq!(
        id_of(&out, "evt_0006"),
        "cor_0006",
        "the least recently active one was evicted"
    );
}

/// A pod whose events keep naming new containers: the group stops collecting keys at the
/// bound, keeps its entity's own, and an event reachable only through a refused key opens a
/// group of its own.
#[test]
fn a_group_links_by_at_most_max_group_keys() {
    let config = CorrelateConfig {
        max_group_keys: 4,
        ..CorrelateConfig::default()
    };
    let mut script = Script::default();
    for i in 0..10 {
        script.kube(i * 100, &API, "Started");
        let kubernetes = script
            .events
            .last_mut()
            .unwrap()
            .kubernetes
            .as_mut()
            .unwrap();
        kubernetes.container_id = Some(format!("containerd://c{i}"));
    }
    let mut lone = CART.entity();
    lone.kind = EntityType::Host;
    let by_container = |script: &mut Script, ms: i64, container: &str| {
        let event = script.push(ms, EventType::Process, "ebpf", lone.clone());
        event.process = Some(Box::new(ProcessContext {
            container_id: Some(container.into()),
            ..ProcessContext::default()
        }));
    };
    by_container(&mut script, 2000, "c1");
    by_container(&mut script, 2100, "c9");
    let (out, stats) = run(&config, script.events.clone());
    assert_eq!(
        stats.refused_keys, 8,
        "uid, name, c0, c1 kept; c2..c9 refused"
    );
    assert!(
        out.iter().take(10).all(|e| correlation_id(e) == "cor_0001"),
        "the pod's own events still join by its uid"
    );
    assert_eq!(id_of(&out, "evt_0011"), "cor_0001", "c1 was kept");
    assert_eq!(id_of(&out, "evt_0012"), "cor_0012", "c9 was refused");
}

/// A replay whose clock stands still: every event has the same timestamp, so the watermark
/// never releases anything and only the bound keeps the buffer from growing with the input.
#[test]
fn the_reorder_buffer_is_bounded_when_event_time_stands_still() {
    let config = CorrelateConfig {
        max_buffered_events: 100,
        ..CorrelateConfig::default()
    };
    let mut correlator = correlator(&config);
    let mut script = Script::default();
    for _ in 0..10_000 {
        script.socket(0, &API, "connect");
    }
    let mut emitted = Vec::new();
    let mut settled_batches = 0;
    for chunk in script.events.chunks(1000) {
        let (token, _receiver) = AckToken::new();
        let mut out = Output::default();
        correlator.push_batch(EventBatch::with_ack(chunk.to_vec(), token), &mut out);
        emitted.extend(out.events.into_iter().map(|e| e.id));
        settled_batches += out.acks.len();
        assert!(
            correlator.stats().held_events <= 100,
            "{:?}",
            correlator.stats()
        );
    }
    assert_eq!(correlator.stats().released_early, 9_900);
    let mut out = Output::default();
    correlator.flush(&mut out);
    emitted.extend(out.events.into_iter().map(|e| e.id));
    settled_batches += out.acks.len();
    let input: Vec<&str> = script.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(emitted, input, "every event once, in arrival order");
    assert_eq!(correlator.stats().late_events, 0);
    assert_eq!(
        settled_batches, 10,
        "every batch's acknowledgement released once"
    );
}

#[test]
fn memory_stays_flat_over_a_long_run() {
    let mut correlator = correlator(&CorrelateConfig::default());
    let mut script = Script::default();
    let names: Vec<String> = (0..50_000).map(|i| format!("pod-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let pod = Pod {
            uid: name,
            namespace: "load",
            name,
            node: "worker-1",
        };
        script.socket(i as i64 * 100, &pod, "connect");
    }
    let mut emitted = 0;
    for chunk in script.events.chunks(1000) {
        let mut out = Output::default();
        correlator.push_batch(EventBatch::new(chunk.to_vec()), &mut out);
        emitted += out.events.len();
        let stats = correlator.stats();
        assert!(stats.open_groups <= 660, "{stats:?}");
        assert!(stats.held_events <= 51, "{stats:?}");
    }
    let mut out = Output::default();
    correlator.flush(&mut out);
    assert_eq!(emitted + out.events.len(), 50_000);
    assert_eq!(correlator.stats().evicted_groups, 0);
}

#[test]
fn related_events_are_capped_with_the_evidence_first() {
    let config = CorrelateConfig {
        max_related_events: 3,
        ..CorrelateConfig::default()
    };
    let mut script = Script::default();
    for ms in 0..5 {
        script.socket(ms, &API, "connect");
    }
    oom_kill(&mut script, &API, 100);
    let (out, _) = run(&config, script.events.clone());
    let summary = summaries(&out)[0].correlation.as_deref().unwrap();
    assert_eq!(summary.related_events, ["evt_0006", "evt_0007", "evt_0008"]);
    assert_eq!(summary.related_events_omitted, Some(5));
}
