//! The entity cache: every relation it learns, and its bound.

use super::*;

#[test]
fn uid_and_name_resolve_each_other() {
    let mut e = enricher("");
    let key = "shop/api-7d9";
    let early = one(&mut e, cni(&API, "ADD"));
    assert_eq!(
        entity(&early).1,
        key,
        "no uid known yet: namespace/name stays"
    );
    one(
        &mut e,
        k8s_reason(&API, "Scheduled", "Successfully assigned"),
    );
    let late = one(&mut e, cni(&API, "CHECK"));
    assert_eq!(
        entity(&late).1,
        API.uid,
        "the CNI id is rewritten to the uid"
    );
    // A bare pod entity is completed from the cache.
    let bare = one(
        &mut e,
        json!({ "type": "application", "source": "file", "entity": { "type": "pod", "id": API.uid } }),
    );
    assert_eq!(
        entity(&bare),
        (EntityType::Pod, API.uid, Some(API.name), Some(API.node))
    );
    assert_eq!(
        bare.entity.as_ref().unwrap().namespace.as_deref(),
        Some("shop")
    );
}

#[test]
fn pods_known_by_name_first_merge_with_their_uid() {
    let mut e = enricher("");
    one(&mut e, scope(&API, "start", "active"));
    one(&mut e, cni(&API, "ADD"));
    one(&mut e, k8s_pod(&API, "added", ""));
    // The sandbox (learned under the name) and the container (under the uid) are one pod now.
    let check = one(
        &mut e,
        json!({ "type": "network", "source": "cni", "network": { "operation": "CHECK",
            "container_id": API.sandbox } }),
    );
    assert_eq!(
        entity(&check),
        (EntityType::Pod, API.uid, Some(API.name), Some(API.node))
    );
    let started = one(&mut e, exec(&API));
    assert_eq!(entity(&started).2, Some(API.name));
}

#[test]
fn pod_ips_resolve_until_cni_del_or_deletion() {
    let mut e = enricher("");
    let to_api = || tcp("connect", WEB.ip, API.ip, "worker-2");
    assert_eq!(entity(&one(&mut e, to_api())).0, EntityType::Host);
    one(&mut e, k8s_pod(&API, "added", ""));
    let resolved = one(&mut e, to_api());
    assert_eq!(
        entity(&resolved),
        (EntityType::Pod, API.uid, Some(API.name), Some(API.node))
    );
    // Observed on another node than the pod's: that node is kept as an attribute.
    let attributes = &resolved.entity.as_ref().unwrap().attributes;
    assert_eq!(attributes.get("node").map(String::as_str), Some("worker-2"));
    one(&mut e, cni(&API, "DEL"));
    assert_eq!(
        entity(&one(&mut e, to_api())),
        (EntityType::Host, "worker-2", None, Some("worker-2"))
    );
    one(&mut e, cni(&API, "ADD"));
    assert_eq!(entity(&one(&mut e, to_api())).1, API.uid);
    one(&mut e, k8s_pod(&API, "deleted", ""));
    assert_eq!(entity(&one(&mut e, to_api())).0, EntityType::Host);
}

#[test]
fn sandbox_ids_resolve_to_their_pod() {
    let mut e = enricher("");
    one(&mut e, cni(&API, "ADD"));
    let del = one(
        &mut e,
        json!({ "type": "network", "source": "cni", "entity": host("worker-1"),
            "network": { "operation": "DEL", "container_id": API.sandbox } }),
    );
    assert_eq!(
        entity(&del),
        (
            EntityType::Pod,
            "shop/api-7d9",
            Some(API.name),
            Some("worker-1")
        )
    );
    assert_eq!(
        narrative(&del),
        "Network detached from shop/api-7d9 on worker-1"
    );
}

#[test]
fn scope_units_and_slices_resolve_containers() {
    let mut e = enricher("");
    let started = one(&mut e, scope(&API, "start", "active"));
    assert_eq!(
        entity(&started),
        (EntityType::Pod, API.uid, None, Some("worker-1")),
        "the slice names the pod's uid even before anything else is known"
    );
    assert_eq!(narrative(&started), "Container started on worker-1");
    one(&mut e, k8s_reason(&API, "Pulled", "already present"));
    let exec = one(&mut e, exec(&API));
    assert_eq!(
        entity(&exec),
        (EntityType::Pod, API.uid, Some(API.name), Some("worker-1"))
    );
    assert_eq!(
        narrative(&exec),
        "api (pid 77) started in shop/api-7d9 on worker-1"
    );
    for (prefix, id) in [("docker-", "d0c4e7"), ("crio-", "c410")] {
        let mut unit = scope(&WEB, "stop", "inactive");
        unit["systemd"]["unit"] = json!(format!("{prefix}{id}.scope"));
        assert_eq!(entity(&one(&mut e, unit)).1, WEB.uid);
        let mut exec = process(
            "worker-2",
            "exit",
            json!({ "container_id": id, "exit_code": 0 }),
        );
        exec["process"]["comm"] = json!("nginx");
        assert_eq!(entity(&one(&mut e, exec)).1, WEB.uid, "{prefix}");
    }
}

/// The real `systemd` source sends the pod it read from the slice as the entity (not the host,
/// as the simulated one does): the pod's node is learned from it all the same.
#[test]
fn a_scope_event_about_the_pod_teaches_its_node() {
    let mut e = enricher("");
    let mut started = scope(&API, "start", "active");
    started["entity"] = json!({ "type": "pod", "id": API.uid, "node": API.node });
    started["systemd"]["container_id"] = json!(API.container);
    one(&mut e, started);
    let mut exec = exec(&API);
    exec.as_object_mut().unwrap().remove("entity");
    assert_eq!(
        entity(&one(&mut e, exec)),
        (EntityType::Pod, API.uid, None, Some(API.node)),
        "the container's pod, on the node the scope event named"
    );
}

#[test]
fn kubernetes_container_ids_resolve_with_or_without_scheme() {
    let mut e = enricher("");
    one(
        &mut e,
        k8s_pod(&API, "added", &format!("containerd://{}", API.container)),
    );
    assert_eq!(entity(&one(&mut e, exec(&API))).1, API.uid);
    one(&mut e, k8s_pod(&WEB, "added", WEB.container));
    assert_eq!(entity(&one(&mut e, exec(&WEB))).1, WEB.uid);
}

#[test]
fn cgroups_resolve_through_their_container() {
    let mut e = enricher("");
    // cgroup → container is learned before anything knows the container's pod.
    one(&mut e, exec(&API));
    one(&mut e, scope(&API, "start", "active"));
    let oom = one(
        &mut e,
        process(
            "worker-1",
            "oom_kill",
            json!({ "pid": 77, "comm": "api", "cgroup_id": API.cgroup }),
        ),
    );
    assert_eq!(entity(&oom).1, API.uid);
    assert_eq!(intent(&oom), "oom-kill");
}

#[test]
fn socket_events_resolve_by_destination_then_source_never_owner() {
    let mut e = enricher("");
    one(&mut e, k8s_pod(&API, "added", ""));
    one(&mut e, k8s_pod(&WEB, "added", WEB.container));
    let both = one(&mut e, tcp("retransmit", WEB.ip, API.ip, "worker-2"));
    assert_eq!(entity(&both).1, API.uid, "the destination decides");
    let outbound = one(&mut e, tcp("connect", API.ip, "93.184.216.34", "worker-1"));
    assert_eq!(entity(&outbound).1, API.uid, "else the source");
    let external = one(
        &mut e,
        tcp("timeout", "192.0.2.1", "198.51.100.2", "worker-2"),
    );
    assert_eq!(
        entity(&external).0,
        EntityType::Host,
        "the owner's container (WEB) does not decide"
    );
    assert_eq!(
        narrative(&both),
        "TCP retransmission on the connection from 10.244.2.7:41000 to 10.244.1.15:8080, pod shop/api-7d9 on worker-1"
    );
}

#[test]
fn node_units_and_node_objects_get_the_node() {
    let mut e = enricher("");
    let unit = |unit: &str, state: &str| {
        json!({ "type": "systemd", "source": "systemd", "entity": host("worker-3"),
            "systemd": { "unit": unit, "active_state": state, "result": "exit-code" } })
    };
    let failed = one(&mut e, unit("containerd.service", "failed"));
    assert_eq!(
        entity(&failed),
        (EntityType::Node, "worker-3", None, Some("worker-3"))
    );
    assert_eq!(
        narrative(&failed),
        "containerd.service failed on node worker-3 (exit-code)"
    );
    assert_eq!(intent(&failed), "node-service-failure");
    let other = one(&mut e, unit("sshd.service", "failed"));
    assert_eq!(entity(&other).0, EntityType::Host, "not a node unit");
    let not_ready = one(
        &mut e,
        json!({ "type": "kubernetes", "source": "kubernetes",
            "kubernetes": { "kind": "Node", "name": "worker-3", "reason": "NodeNotReady" } }),
    );
    assert_eq!(
        entity(&not_ready),
        (EntityType::Node, "worker-3", None, Some("worker-3"))
    );
    assert_eq!(narrative(&not_ready), "Node worker-3 is NotReady");
    let mut custom = enricher("node_units = [\"k3s.service\"]");
    let k3s = one(&mut custom, unit("k3s.service", "failed"));
    assert_eq!(entity(&k3s).0, EntityType::Node);
    let containerd = one(&mut custom, unit("containerd.service", "failed"));
    assert_eq!(entity(&containerd).0, EntityType::Host);
}

#[test]
fn the_cache_is_bounded_and_evicts_the_least_recently_used() {
    let mut e = enricher("max_entities = 12");
    let pods: Vec<Value> = (0..20)
        .map(|i| {
            let mut pod = k8s_pod(&API, "added", "");
            pod["kubernetes"]["uid"] = json!(format!("uid-{i}"));
            pod["kubernetes"]["name"] = json!(format!("api-{i}"));
            pod["kubernetes"]["pod_ip"] = json!(format!("10.0.0.{i}"));
            pod["entity"]["id"] = json!(format!("uid-{i}"));
            pod
        })
        .collect();
    // Each pod has three keys: uid, name, IP. Pod 0 stays in use, the others come and go.
    for pod in &pods {
        enrich(
            &mut e,
            vec![
                event(pod.clone()),
                event(tcp("close", "10.9.9.9", "10.0.0.0", "worker-1")),
            ],
        );
    }
    assert!(e.resolver.cache().len() <= 12);
    assert_eq!(e.evictions(), 20 * 3 - 12);
    assert_eq!(
        entity(&one(&mut e, tcp("close", "1.1.1.1", "10.0.0.0", "w"))).1,
        "uid-0"
    );
    assert_eq!(
        entity(&one(&mut e, tcp("close", "1.1.1.1", "10.0.0.19", "w"))).1,
        "uid-19"
    );
    assert_eq!(
        entity(&one(&mut e, tcp("close", "1.1.1.1", "10.0.0.5", "w"))).0,
        EntityType::Host
    );
}

/// The shape the `kubernetes` source gives a pod update (see
/// lib/tapio-sources/src/kubernetes/pods.rs): the owner workload and every container id in the
/// entity's attributes, `kubernetes.container_id` naming one container only.
fn source_pod_update(pod: &Pod, sidecar: &str) -> Value {
    let mut update = k8s_pod(pod, "modified", &format!("containerd://{}", pod.container));
    update["entity"]["attributes"] = json!({
        "workload_kind": "Deployment", "workload": "api",
        "container_ids": format!("{},{sidecar}", pod.container),
    });
    update
}

#[test]
fn a_kubernetes_pod_update_resolves_the_kernel_events_of_each_of_its_containers() {
    let mut e = enricher("");
    let sidecar = "5eed5eed";
    let unknown = process(
        API.node,
        "exec",
        json!({ "pid": 90, "comm": "envoy", "container_id": sidecar }),
    );
    assert_eq!(entity(&one(&mut e, unknown.clone())).0, EntityType::Host);
    one(&mut e, source_pod_update(&API, sidecar));
    for id in [API.container, sidecar] {
        let exec = one(
            &mut e,
            process(
                API.node,
                "exec",
                json!({ "pid": 91, "comm": "app", "container_id": id }),
            ),
        );
        let resolved = exec.entity.as_deref().unwrap();
        assert_eq!(
            (
                resolved.kind,
                resolved.name.as_deref(),
                resolved.namespace.as_deref()
            ),
            (EntityType::Pod, Some(API.name), Some(API.namespace)),
            "container {id}"
        );
        assert_eq!(resolved.id, API.uid);
        assert_eq!(
            resolved.attributes.get("workload").map(String::as_str),
            Some("api"),
            "the owner workload comes along"
        );
        assert_eq!(
            resolved.attributes.get("workload_kind").map(String::as_str),
            Some("Deployment")
        );
    }
}
