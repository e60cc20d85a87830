//! Pods: what is kept of each, and which of its changes are events. A pod update is an event
//! only when its phase, conditions, address, node, containers or restarts changed; each
//! container transition worth a reason (a termination with `OOMKilled`/`Error`/`Completed` and
//! its exit code, read from `state.terminated` or, for a restarted container, from
//! `lastState.terminated`; a waiting state such as `CrashLoopBackOff` or `ImagePullBackOff`) is
//! an event of its own, naming its container.

use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, Pod};
use kube::ResourceExt;
use tapio_event::{Entity, EntityType, KubeAction, KubernetesContext, StringMap, UnifiedEvent};

use super::store::{Facts, Store};
use super::watch::{Cluster, Emitter, Kind};

/// Runtime schemes the kubelet writes before container ids; events carry the bare id, as the
/// kernel's cgroups name it.
const RUNTIME_SCHEMES: [&str; 3] = ["containerd://", "docker://", "cri-o://"];

/// Waiting reasons of a container that is simply starting: not worth an event.
const STARTING: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// The facts kept of a pod.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PodFacts {
    uid: Box<str>,
    resource_version: Box<str>,
    pub(super) namespace: Box<str>,
    pub(super) name: Box<str>,
    pub(super) node: Option<Box<str>>,
    pub(super) ip: Option<Box<str>>,
    phase: Option<Box<str>>,
    /// Condition types whose status is `True`, in the order the kubelet lists them.
    true_conditions: Vec<Box<str>>,
    containers: Vec<Container>,
    labels: StringMap,
    /// The controller in `ownerReferences` (kind, name).
    owner: Option<(Box<str>, Box<str>)>,
}

/// The facts kept of one container status (init, app or ephemeral).
#[derive(Debug, Clone, PartialEq)]
struct Container {
    name: Box<str>,
    id: Option<Box<str>>,
    state: State,
    restarts: i32,
    last_terminated: Option<Terminated>,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting {
        reason: Option<Box<str>>,
        message: Option<Box<str>>,
    },
    Running,
    Terminated(Terminated),
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
struct Terminated {
    reason: Option<Box<str>>,
    exit_code: i32,
    message: Option<Box<str>>,
    container_id: Option<Box<str>>,
}

impl Facts for PodFacts {
    fn uid(&self) -> &str {
        &self.uid
    }
    fn resource_version(&self) -> &str {
        &self.resource_version
    }
}

/// The `Kind` of pods.
pub(super) struct Pods;

impl Kind for Pods {
    type Object = Pod;
    type Facts = PodFacts;
    const PLURAL: &'static str = "pods";

    fn facts(pod: &Pod) -> PodFacts {
        let status = pod.status.as_ref();
        let statuses = status.into_iter().flat_map(|s| {
            [
                &s.init_container_statuses,
                &s.container_statuses,
                &s.ephemeral_container_statuses,
            ]
            .into_iter()
            .flatten()
            .flatten()
        });
        PodFacts {
            uid: pod.uid().unwrap_or_default().into(),
            resource_version: pod.resource_version().unwrap_or_default().into(),
            namespace: pod.namespace().unwrap_or_default().into(),
            name: pod.name_any().into(),
            node: boxed(pod.spec.as_ref().and_then(|s| s.node_name.as_deref())),
            ip: boxed(status.and_then(|s| s.pod_ip.as_deref())),
            phase: boxed(status.and_then(|s| s.phase.as_deref())),
            true_conditions: status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.status == "True")
                .map(|c| c.type_.as_str().into())
                .collect(),
            containers: statuses.map(container).collect(),
            labels: pod.labels().clone(),
            owner: pod
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .map(|o| (o.kind.as_str().into(), o.name.as_str().into())),
        }
    }

    fn store(cluster: &mut Cluster) -> &mut Store<PodFacts> {
        &mut cluster.pods
    }

    fn store_ref(cluster: &Cluster) -> &Store<PodFacts> {
        &cluster.pods
    }

    fn changed(cluster: &Cluster, old: Option<&PodFacts>, new: &PodFacts, out: &mut Emitter) {
        let action = if old.is_some() {
            KubeAction::Modified
        } else {
            KubeAction::Added
        };
        let transitions = transitions(old, new);
        if transitions.is_empty() {
            if old.is_none_or(|old| matters(old, new)) {
                let event = out.event();
                out.push(pod_event(cluster, new, action, None, event));
            }
            return;
        }
        for transition in &transitions {
            let event = out.event();
            out.push(pod_event(cluster, new, action, Some(transition), event));
        }
    }

    fn deleted(cluster: &Cluster, gone: &PodFacts, out: &mut Emitter) {
        let event = out.event();
        out.push(pod_event(cluster, gone, KubeAction::Deleted, None, event));
    }
}

/// A text worth keeping: absent and empty are the same to the API.
pub(super) fn boxed(text: Option<&str>) -> Option<Box<str>> {
    text.filter(|t| !t.is_empty()).map(Box::from)
}

/// A container id without the runtime's `scheme://`.
fn bare_id(id: &str) -> &str {
    RUNTIME_SCHEMES
        .iter()
        .find_map(|scheme| id.strip_prefix(scheme))
        .unwrap_or(id)
}

fn container(status: &ContainerStatus) -> Container {
    Container {
        name: status.name.as_str().into(),
        id: boxed(status.container_id.as_deref().map(bare_id)),
        state: state(status.state.as_ref()),
        restarts: status.restart_count,
        last_terminated: status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .map(terminated),
    }
}

fn terminated(t: &ContainerStateTerminated) -> Terminated {
    Terminated {
        reason: boxed(t.reason.as_deref()),
        exit_code: t.exit_code,
        message: boxed(t.message.as_deref()),
        container_id: boxed(t.container_id.as_deref().map(bare_id)),
    }
}

fn state(state: Option<&ContainerState>) -> State {
    let Some(state) = state else {
        return State::Unknown;
    };
    if let Some(t) = &state.terminated {
        State::Terminated(terminated(t))
    } else if let Some(w) = &state.waiting {
        State::Waiting {
            reason: boxed(w.reason.as_deref()),
            message: boxed(w.message.as_deref()),
        }
    } else if state.running.is_some() {
        State::Running
    } else {
        State::Unknown
    }
}

/// A container change that carries a reason.
#[derive(Debug)]
struct Transition<'a> {
    container: &'a Container,
    reason: &'a str,
    message: Option<&'a str>,
    /// Set for terminations.
    exit_code: Option<i32>,
    /// The container the transition is about: a termination's, else the current one.
    container_id: Option<&'a str>,
}

impl Terminated {
    /// The kubelet's reason, or what it would say when it gives none.
    fn reason(&self) -> &str {
        match (&self.reason, self.exit_code) {
            (Some(reason), _) => reason,
            (None, 0) => "Completed",
            (None, _) => "Error",
        }
    }

    fn transition<'a>(&'a self, container: &'a Container) -> Transition<'a> {
        Transition {
            container,
            reason: self.reason(),
            message: self.message.as_deref(),
            exit_code: Some(self.exit_code),
            container_id: self.container_id.as_deref().or(container.id.as_deref()),
        }
    }

    /// Whether `other` reports the same termination (the same container, or without ids the
    /// same reason and code).
    fn same_as(&self, other: &Terminated) -> bool {
        match (&self.container_id, &other.container_id) {
            (Some(a), Some(b)) => a == b,
            _ => self.reason == other.reason && self.exit_code == other.exit_code,
        }
    }
}

/// The container transitions from `old` to `new` that carry a reason, in container order: a
/// restart's termination (from `lastState`, unless `state.terminated` already reported it),
/// then the current state's termination or problem.
fn transitions<'a>(old: Option<&'a PodFacts>, new: &'a PodFacts) -> Vec<Transition<'a>> {
    let mut found = Vec::new();
    for container in &new.containers {
        let before = old.and_then(|old| old.containers.iter().find(|c| c.name == container.name));
        let restarts_before = before.map_or(0, |c| c.restarts);
        if let Some(last) = &container.last_terminated
            && container.restarts > restarts_before
        {
            let reported = before.is_some_and(|c| {
                matches!(&c.state, State::Terminated(t) if t.same_as(last))
                    || c.last_terminated.as_ref().is_some_and(|t| t.same_as(last))
            });
            if !reported {
                found.push(last.transition(container));
            }
        }
        if before.is_some_and(|c| same_state(&c.state, &container.state)) {
            continue;
        }
        match &container.state {
            State::Terminated(t) => found.push(t.transition(container)),
            State::Waiting {
                reason: Some(reason),
                message,
            } if !STARTING.contains(&&**reason) => found.push(Transition {
                container,
                reason,
                message: message.as_deref(),
                exit_code: None,
                container_id: container.id.as_deref(),
            }),
            _ => {}
        }
    }
    found
}

/// Whether two states are the same for a user: the same kind with the same reason (a back-off
/// whose message now says 40 s instead of 20 s has not changed).
fn same_state(a: &State, b: &State) -> bool {
    match (a, b) {
        (State::Waiting { reason: x, .. }, State::Waiting { reason: y, .. }) => x == y,
        (State::Terminated(x), State::Terminated(y)) => x.same_as(y),
        (x, y) => std::mem::discriminant(x) == std::mem::discriminant(y),
    }
}

/// Whether a change without a container reason is worth an event: phase, conditions, address,
/// node, a container's id or state, or restarts.
fn matters(old: &PodFacts, new: &PodFacts) -> bool {
    old.phase != new.phase
        || old.true_conditions != new.true_conditions
        || old.ip != new.ip
        || old.node != new.node
        || old.containers.len() != new.containers.len()
        || old.containers.iter().zip(&new.containers).any(|(a, b)| {
            a.id != b.id || a.restarts != b.restarts || !same_state(&a.state, &b.state)
        })
}

/// The workload that owns a pod: a ReplicaSet's Deployment (from the ReplicaSet store, else
/// the name the `pod-template-hash` label implies), or the controller itself.
pub(super) fn workload<'a>(cluster: &'a Cluster, pod: &'a PodFacts) -> Option<(&'a str, &'a str)> {
    let (kind, name) = pod.owner.as_ref()?;
    if &**kind == "ReplicaSet" {
        let key = format!("{}/{name}", pod.namespace);
        if let Some(deployment) = cluster.replicasets.get(&key).and_then(|rs| rs.deployment()) {
            return Some(("Deployment", deployment));
        }
        if let Some(deployment) = pod
            .labels
            .get("pod-template-hash")
            .and_then(|hash| name.strip_suffix(hash.as_str()))
            .and_then(|stem| stem.strip_suffix('-'))
        {
            return Some(("Deployment", deployment));
        }
    }
    Some((&**kind, &**name))
}

/// The entity of a pod: its uid with name, namespace, node and owner workload.
pub(super) fn pod_entity(cluster: &Cluster, pod: &PodFacts) -> Box<Entity> {
    let mut entity = Entity::new(EntityType::Pod, &*pod.uid);
    entity.name = Some(pod.name.to_string());
    entity.namespace = Some(pod.namespace.to_string());
    entity.node = pod.node.as_deref().map(str::to_owned);
    if let Some((kind, name)) = workload(cluster, pod) {
        entity
            .attributes
            .insert("workload_kind".into(), kind.to_owned());
        entity.attributes.insert("workload".into(), name.to_owned());
    }
    Box::new(entity)
}

/// The ids of every container of the pod, comma-separated, so enrichment links them all.
fn container_ids(pod: &PodFacts) -> String {
    let ids: Vec<&str> = pod
        .containers
        .iter()
        .filter_map(|c| c.id.as_deref())
        .collect();
    ids.join(",")
}

fn pod_event(
    cluster: &Cluster,
    pod: &PodFacts,
    action: KubeAction,
    transition: Option<&Transition<'_>>,
    mut event: UnifiedEvent,
) -> UnifiedEvent {
    let mut entity = pod_entity(cluster, pod);
    let ids = container_ids(pod);
    if !ids.is_empty() {
        entity.attributes.insert("container_ids".into(), ids);
    }
    let container_id = match transition {
        Some(t) => t.container_id,
        None => pod.containers.iter().find_map(|c| c.id.as_deref()),
    };
    if let Some(t) = transition {
        entity
            .attributes
            .insert("container".into(), t.container.name.to_string());
        entity
            .attributes
            .insert("restarts".into(), t.container.restarts.to_string());
        if let Some(code) = t.exit_code {
            entity
                .attributes
                .insert("exit_code".into(), code.to_string());
        }
    }
    event.entity = Some(entity);
    event.kubernetes = Some(Box::new(KubernetesContext {
        kind: Some("Pod".into()),
        name: Some(pod.name.to_string()),
        namespace: Some(pod.namespace.to_string()),
        uid: Some(pod.uid.to_string()),
        action: Some(action),
        reason: transition.map(|t| t.reason.to_owned()),
        message: transition.and_then(|t| t.message).map(str::to_owned),
        pod_ip: pod.ip.as_deref().map(str::to_owned),
        node: pod.node.as_deref().map(str::to_owned),
        phase: pod.phase.as_deref().map(str::to_owned),
        container_id: container_id.map(str::to_owned),
        labels: pod.labels.clone(),
    }));
    event
}
