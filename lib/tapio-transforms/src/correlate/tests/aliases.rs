//! Linking through aliases that arrive after the events that need them but come no later in
//! event time: a container's first exec before the scope that names its pod, a process known
//! only by its cgroup before the exec that ties the cgroup to the container, a socket event
//! before the CNI `ADD` that gives its destination pod its address. Such events leave in the
//! pod's group, about the pod.

use super::*;

const CONTAINER: &str = "0123abcd";
const API_IP: &str = "10.244.1.15";

/// The script's last event, to add what the builder does not set.
fn last(script: &mut Script) -> &mut UnifiedEvent {
    script.events.last_mut().unwrap()
}

/// An eBPF process event on `node` that the enricher could not resolve, carrying
/// `container` and `cgroup` as the collector reported them.
fn unresolved_process(
    script: &mut Script,
    ms: i64,
    node: &str,
    operation: &str,
    container: Option<&str>,
    cgroup: Option<u64>,
) {
    script.host(ms, node, operation);
    let process = last(script).process.as_deref_mut().unwrap();
    process.container_id = container.map(Into::into);
    process.cgroup_id = cgroup;
}

fn entity_of<'a>(events: &'a [UnifiedEvent], id: &str) -> &'a Entity {
    let event = events.iter().find(|e| e.id == id).unwrap();
    event.entity.as_deref().unwrap()
}

#[test]
fn an_exec_at_the_scopes_instant_that_arrives_first_joins_the_pod() {
    let mut script = Script::default();
    script
        .kube(0, &API, "Scheduled")
        .cni(200, &API, "ADD", None)
        .scope(500, &API, Some("start"), "active");
    unresolved_process(&mut script, 500, API.node, "exec", Some(CONTAINER), None);
    // Arrival: the exec before the scope, both stamped with the same instant.
    let mut events = script.events.clone();
    events.swap(2, 3);
    let (out, _) = run(&CorrelateConfig::default(), events);
    assert_eq!(
        id_of(&out, "evt_0004"),
        "cor_0001",
        "the exec is in the pod's group"
    );
    let exec = entity_of(&out, "evt_0004");
    assert_eq!((exec.kind, exec.id.as_str()), (EntityType::Pod, API.uid));
    assert_eq!(exec.node.as_deref(), Some(API.node));
    assert!(exec.attributes.is_empty(), "observed on the pod's node");
    let found = summaries(&out);
    assert_eq!(found.len(), 1);
    let related = &found[0].correlation.as_deref().unwrap().related_events;
    assert!(related.iter().any(|id| id == "evt_0004"));
}

#[test]
fn a_process_known_by_its_cgroup_links_through_the_exec_on_its_node() {
    let mut script = Script::default();
    script.scope(0, &API, Some("start"), "active");
    unresolved_process(
        &mut script,
        100,
        "worker-1",
        "exec",
        Some(CONTAINER),
        Some(77),
    );
    unresolved_process(&mut script, 300, "worker-1", "exit", None, Some(77));
    // The same cgroup id on another node is another cgroup.
    unresolved_process(&mut script, 400, "worker-2", "exit", None, Some(77));
    // Arrival: the exits first.
    let mut events = script.events.clone();
    events.rotate_right(2);
    let (out, _) = run(&CorrelateConfig::default(), events);
    assert_eq!(id_of(&out, "evt_0002"), "cor_0001");
    assert_eq!(id_of(&out, "evt_0003"), "cor_0001", "linked by its cgroup");
    assert_eq!(entity_of(&out, "evt_0003").id, API.uid);
    assert_eq!(
        id_of(&out, "evt_0004"),
        "cor_0004",
        "not linked across nodes"
    );
    assert_eq!(entity_of(&out, "evt_0004").kind, EntityType::Host);
}

#[test]
fn a_socket_attributed_to_its_source_moves_to_its_destinations_group() {
    let mut script = Script::default();
    script
        .kube(0, &API, "Scheduled")
        .cni(100, &API, "ADD", None);
    last(&mut script).network.as_deref_mut().unwrap().ip_address = Some(API_IP.into());
    script.kube(150, &CART, "Started");
    // The enricher did not know API's address yet and fell back to the source pod, CART.
    script.socket(300, &CART, "retransmit");
    // An address no group knows leaves the event with its source pod.
    script.socket(400, &CART, "retransmit");
    last(&mut script).network.as_deref_mut().unwrap().dst_ip = Some("192.0.2.9".into());
    let mut events = script.events.clone();
    events.rotate_right(2);
    let (out, _) = run(&CorrelateConfig::default(), events);
    assert_eq!(id_of(&out, "evt_0002"), "cor_0001");
    assert_eq!(
        entity_of(&out, "evt_0002").id,
        API.uid,
        "the CNI call learns the uid"
    );
    assert_eq!(
        id_of(&out, "evt_0004"),
        "cor_0001",
        "the destination decides"
    );
    let socket = entity_of(&out, "evt_0004");
    assert_eq!(socket.id, API.uid);
    assert_eq!(socket.node.as_deref(), Some(API.node));
    assert_eq!(
        socket.attributes.get("node").map(String::as_str),
        Some(CART.node),
        "observed on the source's node"
    );
    assert_eq!(id_of(&out, "evt_0005"), id_of(&out, "evt_0003"));
    assert_eq!(entity_of(&out, "evt_0005").id, CART.uid);
}
