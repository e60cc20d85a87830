//! Tests of `semantic_enrich`: each relation of the entity cache and its bound
//! (`entities.rs`), the rules, built-in and the user's (`rules.rs`), and the demo's whole stream
//! from a fixture (`demo.rs`). This file holds the event builders they share.

mod demo;
mod entities;
mod rules;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use tapio_event::buffer::buffer;
use tapio_event::codec::Decoder;
use tapio_event::{
    BuildContext, ComponentKind, ComponentMetrics, EntityType, Fanout, MetricsSnapshot, Outputs,
    Timestamp, TransformContext, UnifiedEvent, WhenFull,
};

use super::{Enricher, SemanticEnrichConfig};

fn config(toml_text: &str) -> SemanticEnrichConfig {
    toml::from_str(toml_text).expect("valid options")
}

fn enricher(toml_text: &str) -> Enricher {
    Enricher::new(&config(toml_text), "enrich").expect("options build")
}

fn event(value: Value) -> UnifiedEvent {
    serde_json::from_value(value).expect("a valid event")
}

/// Runs `events` through `enricher` as one batch and returns them.
fn enrich(enricher: &mut Enricher, events: Vec<UnifiedEvent>) -> Vec<UnifiedEvent> {
    let mut events = events;
    enricher.apply(&mut events);
    events
}

fn one(enricher: &mut Enricher, value: Value) -> UnifiedEvent {
    enrich(enricher, vec![event(value)]).remove(0)
}

fn entity(event: &UnifiedEvent) -> (EntityType, &str, Option<&str>, Option<&str>) {
    let e = event.entity.as_deref().expect("an entity");
    (e.kind, &e.id, e.name.as_deref(), e.node.as_deref())
}

fn narrative(event: &UnifiedEvent) -> &str {
    event
        .semantic
        .as_ref()
        .and_then(|s| s.narrative.as_deref())
        .expect("a narrative")
}

fn intent(event: &UnifiedEvent) -> &str {
    event
        .semantic
        .as_ref()
        .and_then(|s| s.intent.as_deref())
        .expect("an intent")
}

/// A pod as the simulated collectors see it.
struct Pod {
    uid: &'static str,
    namespace: &'static str,
    name: &'static str,
    node: &'static str,
    ip: &'static str,
    sandbox: &'static str,
    container: &'static str,
    cgroup: u64,
}

const API: Pod = Pod {
    uid: "0b5c7b1e-7f0c-4c59-9d39-1a2b3c4d5e6f",
    namespace: "shop",
    name: "api-7d9",
    node: "worker-1",
    ip: "10.244.1.15",
    sandbox: "5a5a5a5a",
    container: "c0ffee01",
    cgroup: 4242,
};

const WEB: Pod = Pod {
    uid: "9f8e7d6c-5b4a-4392-8170-ffeeddccbbaa",
    namespace: "shop",
    name: "web-x2z",
    node: "worker-2",
    ip: "10.244.2.7",
    sandbox: "6b6b6b6b",
    container: "beef0002",
    cgroup: 5353,
};

fn host(node: &str) -> Value {
    json!({ "type": "host", "id": node, "node": node })
}

fn pod_entity(pod: &Pod, id: &str) -> Value {
    json!({ "type": "pod", "id": id, "name": pod.name, "namespace": pod.namespace, "node": pod.node })
}

/// A pod watch update; `container_id` is left out when empty.
fn k8s_pod(pod: &Pod, action: &str, container_id: &str) -> Value {
    let mut update = json!({
        "type": "kubernetes", "source": "kubernetes", "entity": pod_entity(pod, pod.uid),
        "kubernetes": { "kind": "Pod", "name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
            "action": action, "pod_ip": pod.ip, "node": pod.node, "phase": "Running" }
    });
    if !container_id.is_empty() {
        update["kubernetes"]["container_id"] = json!(container_id);
    }
    update
}

fn k8s_reason(pod: &Pod, reason: &str, message: &str) -> Value {
    json!({
        "type": "kubernetes", "source": "kubernetes", "entity": pod_entity(pod, pod.uid),
        "kubernetes": { "kind": "Pod", "name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
            "reason": reason, "message": message, "node": pod.node }
    })
}

fn cni(pod: &Pod, operation: &str) -> Value {
    let key = format!("{}/{}", pod.namespace, pod.name);
    let mut network = json!({ "operation": operation, "interface_name": "eth0",
        "container_id": pod.sandbox });
    if operation != "DEL" {
        network["ip_address"] = json!(pod.ip);
    }
    json!({ "type": "network", "source": "cni", "entity": pod_entity(pod, &key), "network": network })
}

fn scope(pod: &Pod, job: &str, state: &str) -> Value {
    json!({
        "type": "systemd", "source": "systemd", "entity": host(pod.node),
        "systemd": { "unit": format!("cri-containerd-{}.scope", pod.container),
            "slice": format!("kubepods-burstable-pod{}.slice", pod.uid.replace('-', "_")),
            "active_state": state, "job_type": job }
    })
}

fn process(node: &str, operation: &str, process: Value) -> Value {
    let mut process = process;
    process["operation"] = json!(operation);
    json!({ "type": "process", "source": "ebpf", "entity": host(node), "process": process })
}

fn exec(pod: &Pod) -> Value {
    process(
        pod.node,
        "exec",
        json!({ "pid": 77, "comm": "api", "cgroup_id": pod.cgroup, "container_id": pod.container }),
    )
}

fn tcp(operation: &str, src: &str, dst: &str, observed_on: &str) -> Value {
    json!({
        "type": "network", "source": "ebpf", "entity": host(observed_on),
        "network": { "operation": operation, "protocol": "tcp", "src_ip": src, "src_port": 41000,
            "dst_ip": dst, "dst_port": 8080 },
        "process": { "pid": 99, "comm": "curl", "container_id": WEB.container }
    })
}
