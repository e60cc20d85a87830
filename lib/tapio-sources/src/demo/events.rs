//! The shapes of the events each simulated collector makes: which entity it knows and which
//! context it fills. Kubernetes and CNI know the pod; eBPF and systemd only know the host.

use tapio_event::id::IdGenerator;
use tapio_event::{
    Entity, EntityType, EventType, KubeAction, KubernetesContext, NetworkContext, ProcessContext,
    SystemdContext, Timestamp, UnifiedEvent,
};

use super::cluster::{Node, Pod};

/// The simulated clock and the id generator: every event gets a fresh id stamped "now".
pub(super) struct Stamp {
    ids: IdGenerator,
    pub(super) now: Timestamp,
}

impl Stamp {
    pub(super) fn new(seed: u64, start: Timestamp) -> Self {
        Stamp {
            ids: IdGenerator::seeded(seed),
            now: start,
        }
    }

    /// A new event of `kind`, as the collector `source` would make it now.
    pub(super) fn event(&mut self, kind: EventType, source: &'static str) -> UnifiedEvent {
        let mut event = UnifiedEvent::new(kind, source, self.now);
        event.id = self.ids.next_id(self.now);
        event
    }
}

/// What a Kubernetes collector knows: the pod by uid, with its name, namespace and node.
fn pod_entity(pod: &Pod) -> Box<Entity> {
    pod_known_as(pod, pod.uid.clone())
}

/// What the CNI plugin knows: the pod by `namespace/name` from its CNI args, no uid.
fn cni_entity(pod: &Pod) -> Box<Entity> {
    pod_known_as(pod, pod.key.clone())
}

fn pod_known_as(pod: &Pod, id: String) -> Box<Entity> {
    Box::new(Entity {
        name: Some(pod.name.clone()),
        namespace: Some(pod.namespace.clone()),
        node: Some(pod.node_name.clone()),
        ..Entity::new(EntityType::Pod, id)
    })
}

/// What node-local kernel and systemd collectors know: only the host they run on.
pub(super) fn host_entity(node: &str) -> Box<Entity> {
    node_local(EntityType::Host, node)
}

/// Events about the node itself: node-level units and the Kubernetes `Node` object.
pub(super) fn node_entity(node: &str) -> Box<Entity> {
    node_local(EntityType::Node, node)
}

fn node_local(kind: EntityType, node: &str) -> Box<Entity> {
    Box::new(Entity {
        node: Some(node.to_owned()),
        ..Entity::new(kind, node)
    })
}

/// The Kubernetes context every event about `pod` starts from: which object it is, and where.
fn pod_object(pod: &Pod) -> KubernetesContext {
    KubernetesContext {
        kind: Some("Pod".to_owned()),
        name: Some(pod.name.clone()),
        namespace: Some(pod.namespace.clone()),
        uid: Some(pod.uid.clone()),
        node: Some(pod.node_name.clone()),
        ..KubernetesContext::default()
    }
}

/// A pod watch update in phase `phase`; a Pending pod has no address or container yet.
pub(super) fn pod_update(
    stamp: &mut Stamp,
    pod: &Pod,
    action: KubeAction,
    phase: &str,
) -> UnifiedEvent {
    let started = phase != "Pending";
    let mut event = stamp.event(EventType::Kubernetes, "kubernetes");
    event.entity = Some(pod_entity(pod));
    event.kubernetes = Some(Box::new(KubernetesContext {
        action: Some(action),
        phase: Some(phase.to_owned()),
        pod_ip: started.then(|| pod.ip.clone()),
        container_id: started.then(|| pod.container.id.clone()),
        labels: pod.labels.clone(),
        ..pod_object(pod)
    }));
    event
}

/// A core/v1 Event whose involved object is `pod`.
pub(super) fn pod_event(
    stamp: &mut Stamp,
    pod: &Pod,
    reason: &str,
    message: String,
) -> UnifiedEvent {
    let mut event = stamp.event(EventType::Kubernetes, "kubernetes");
    event.entity = Some(pod_entity(pod));
    event.kubernetes = Some(Box::new(KubernetesContext {
        reason: Some(reason.to_owned()),
        message: Some(message),
        ..pod_object(pod)
    }));
    event
}

/// A Kubernetes event about the `Node` object: the watch's `added` when `reason` is `None`,
/// otherwise a core/v1 Event (whose involved-object uid is the node name, as the node
/// controller writes it).
pub(super) fn node_object(stamp: &mut Stamp, node: &Node, reason: Option<&str>) -> UnifiedEvent {
    let mut event = stamp.event(EventType::Kubernetes, "kubernetes");
    event.entity = Some(node_entity(&node.name));
    let object = KubernetesContext {
        kind: Some("Node".to_owned()),
        name: Some(node.name.clone()),
        ..KubernetesContext::default()
    };
    event.kubernetes = Some(Box::new(match reason {
        None => KubernetesContext {
            uid: Some(node.uid.clone()),
            action: Some(KubeAction::Added),
            labels: node.labels.clone(),
            ..object
        },
        Some(reason) => KubernetesContext {
            uid: Some(node.name.clone()),
            reason: Some(reason.to_owned()),
            message: Some(format!("Node {} status is now: {reason}", node.name)),
            ..object
        },
    }));
    event
}

/// A CNI call for the pod's sandbox: `ADD`, `DEL` or `CHECK`, with the plugin's error if any.
pub(super) fn cni(
    stamp: &mut Stamp,
    pod: &Pod,
    operation: &str,
    error: Option<&str>,
) -> UnifiedEvent {
    let mut event = stamp.event(EventType::Network, "cni");
    event.entity = Some(cni_entity(pod));
    event.network = Some(Box::new(NetworkContext {
        operation: Some(operation.to_owned()),
        interface_name: Some("eth0".to_owned()),
        // DEL is called with the sandbox and netns only; the plugin reports no address.
        ip_address: (operation != "DEL").then(|| pod.ip.clone()),
        netns: Some(pod.netns.clone()),
        container_id: Some(pod.sandbox_id.clone()),
        error: error.map(str::to_owned),
        ..NetworkContext::default()
    }));
    event
}

/// A systemd unit state change, seen on `entity`.
pub(super) fn unit_change(
    stamp: &mut Stamp,
    entity: Box<Entity>,
    systemd: SystemdContext,
) -> UnifiedEvent {
    let mut event = stamp.event(EventType::Systemd, "systemd");
    event.entity = Some(entity);
    event.systemd = Some(Box::new(systemd));
    event
}

/// A unit in `active_state`/`sub_state`; callers add the job, result and pid they know.
pub(super) fn unit_state(active_state: &str, sub_state: &str) -> SystemdContext {
    SystemdContext {
        active_state: Some(active_state.to_owned()),
        sub_state: Some(sub_state.to_owned()),
        ..SystemdContext::default()
    }
}

/// A change of the scope of the pod's current container, as the node's systemd collector sees
/// it: unit and slice name the container and the pod, the entity is only the host.
pub(super) fn scope_change(stamp: &mut Stamp, pod: &Pod, change: SystemdContext) -> UnifiedEvent {
    let systemd = SystemdContext {
        unit: Some(pod.container.scope.clone()),
        slice: Some(pod.slice.clone()),
        ..change
    };
    unit_change(stamp, host_entity(&pod.node_name), systemd)
}

/// The pod's main process, as the eBPF `exec`/`exit`/`oom_kill` programs see it.
pub(super) fn main_process(pod: &Pod, operation: &str) -> ProcessContext {
    in_container(
        pod,
        operation,
        pod.container.main_pid,
        pod.shim_pid,
        (pod.app.comm, pod.app.filename),
    )
}

/// A process of the pod's current container. Only `exec` reports where the process comes from
/// (executable, parent, user); later events just name it.
pub(super) fn in_container(
    pod: &Pod,
    operation: &str,
    pid: u32,
    ppid: u32,
    (comm, filename): (&str, &str),
) -> ProcessContext {
    let exec = operation == "exec";
    ProcessContext {
        operation: Some(operation.to_owned()),
        pid: Some(pid),
        ppid: exec.then_some(ppid),
        comm: Some(comm.to_owned()),
        filename: exec.then(|| filename.to_owned()),
        uid: exec.then_some(pod.app.uid),
        cgroup_id: Some(pod.container.cgroup_id),
        container_id: Some(pod.container.id.clone()),
        ..ProcessContext::default()
    }
}

/// A process event from the eBPF collector on the node of `pod`.
pub(super) fn process_event(stamp: &mut Stamp, pod: &Pod, process: ProcessContext) -> UnifiedEvent {
    let mut event = stamp.event(EventType::Process, "ebpf");
    event.entity = Some(host_entity(&pod.node_name));
    event.process = Some(Box::new(process));
    event
}

/// The socket owner on a network event: the main process of `pod`.
pub(super) fn socket_owner(pod: &Pod) -> Box<ProcessContext> {
    Box::new(ProcessContext {
        pid: Some(pod.container.main_pid),
        comm: Some(pod.app.comm.to_owned()),
        ..ProcessContext::default()
    })
}

/// A TCP socket event between `client` and `server`, seen on the node of `owner`.
pub(super) fn tcp(
    stamp: &mut Stamp,
    client: &Pod,
    server: &Pod,
    src_port: u16,
    operation: &str,
    owner: &Pod,
) -> UnifiedEvent {
    let mut event = stamp.event(EventType::Network, "ebpf");
    event.entity = Some(host_entity(&owner.node_name));
    event.network = Some(Box::new(NetworkContext {
        operation: Some(operation.to_owned()),
        protocol: Some("tcp".to_owned()),
        src_ip: Some(client.ip.clone()),
        src_port: Some(src_port),
        dst_ip: Some(server.ip.clone()),
        dst_port: Some(server.app.port),
        ..NetworkContext::default()
    }));
    event.process = Some(socket_owner(owner));
    event
}
