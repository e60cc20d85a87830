//! Entity resolution: what each event teaches the [`EntityCache`], and the entity it gets from
//! it. Node-local collectors that cannot name an event's subject send it with a `host` entity
//! (its node); that counts as unresolved and is replaced by the pod once the cache knows it,
//! keeping the node. The facts learned, by event:
//!
//! - Kubernetes `Pod` objects and events: uid ⇄ `namespace/name`, node, `pod_ip`,
//!   `container_id` and every id in the entity's `container_ids` attribute (the kubernetes
//!   source lists all of a pod's containers there; `containerd://`, `docker://`, `cri-o://` or
//!   bare), and the owner workload (`workload_kind`/`workload` attributes), which events
//!   resolved to the pod then carry; a deleted pod's addresses are forgotten.
//! - CNI: the pod (`namespace/name`, or uid) with its address and sandbox container id; `DEL`
//!   forgets the addresses.
//! - systemd container scopes (`cri-containerd-<id>.scope`, `docker-<id>.scope`,
//!   `crio-<id>.scope` in `kubepods[-<qos>]-pod<uid with _>.slice`, or the `container_id` the
//!   source read from the name): container id → pod uid, on the entity's node.
//! - Processes: cgroup id → container id when both are given; container id → pod when the
//!   collector resolved the pod itself.
//!
//! A socket event's entity is the pod whose IP is its `dst_ip`, else its `src_ip`: the socket's
//! owner in its `process` context does not decide it.

use tapio_event::{
    Entity, EntityType, EventType, KubeAction, KubernetesContext, NetworkContext, ProcessContext,
    SystemdContext, UnifiedEvent,
};

use super::entity_cache::{EntityCache, KeyKind, Pod, PodRef};

/// Prefixes of systemd scope units that hold an app container, followed by its id.
const SCOPE_PREFIXES: [&str; 3] = ["cri-containerd-", "docker-", "crio-"];
/// The entity attribute in which the kubernetes source lists every container id of a pod,
/// comma-separated.
const CONTAINER_IDS: &str = "container_ids";
/// The entity attributes naming a pod's owner workload.
const WORKLOAD_KIND: &str = "workload_kind";
const WORKLOAD: &str = "workload";

/// Schemes the kubelet puts before container ids.
const RUNTIME_SCHEMES: [&str; 3] = ["containerd://", "docker://", "cri-o://"];

/// The cache and what is needed to read events into it.
#[derive(Debug)]
pub(super) struct Resolver {
    cache: EntityCache,
    /// systemd units whose events are about the node itself.
    node_units: Vec<String>,
    /// Reused for pod uids decoded from slice names and for `namespace/name` keys.
    uid: String,
    name_key: String,
}

/// What an event says about a pod's identity.
#[derive(Debug, Clone, Copy, Default)]
struct PodFacts<'a> {
    uid: Option<&'a str>,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
    node: Option<&'a str>,
}

impl Resolver {
    /// A resolver with an empty cache of at most `max_entities` keys.
    pub(super) fn new(max_entities: usize, node_units: Vec<String>) -> Self {
        Resolver {
            cache: EntityCache::new(max_entities),
            node_units,
            uid: String::new(),
            name_key: String::new(),
        }
    }

    /// The cache, for its counters.
    pub(super) fn cache(&self) -> &EntityCache {
        &self.cache
    }

    /// Learns from `event`, then fills its entity if it lacks a resolved one; returns how many
    /// cache keys were evicted to stay within the bound.
    pub(super) fn resolve(&mut self, event: &mut UnifiedEvent) -> usize {
        let subject = self.learn(event);
        match event.entity.as_deref().map(|e| e.kind) {
            None | Some(EntityType::Host) => self.resolve_unknown(event, subject),
            Some(EntityType::Pod) => self.complete_pod(event, subject),
            Some(_) => {}
        }
        self.cache.trim()
    }

    /// Reads what `event` says about pods into the cache; returns the pod it is about, if any.
    fn learn(&mut self, event: &UnifiedEvent) -> Option<PodRef> {
        if let Some(k) = event.kubernetes.as_deref()
            && k.kind.as_deref() == Some("Pod")
        {
            return self.learn_pod_object(event, k);
        }
        if event.source == "cni"
            && let Some(network) = event.network.as_deref()
        {
            return self.learn_cni(event, network);
        }
        if let Some(systemd) = event.systemd.as_deref() {
            return self.learn_unit(event, systemd);
        }
        if event.kind != EventType::Network
            && let Some(process) = event.process.as_deref()
        {
            return self.learn_process(event, process);
        }
        event
            .entity
            .as_deref()
            .and_then(pod_facts)
            .and_then(|facts| self.learn_pod(facts))
    }

    /// A Kubernetes pod update or Event: identity, address and container; a deleted pod's
    /// addresses are forgotten.
    fn learn_pod_object(&mut self, event: &UnifiedEvent, k: &KubernetesContext) -> Option<PodRef> {
        let facts = PodFacts {
            uid: k.uid.as_deref(),
            namespace: k.namespace.as_deref(),
            name: k.name.as_deref(),
            node: k.node.as_deref().or_else(|| entity_node(event)),
        };
        let pod = self.learn_pod(facts)?;
        if k.action == Some(KubeAction::Deleted) {
            self.cache.unlink_all(pod, KeyKind::Ip);
        } else {
            if let Some(ip) = &k.pod_ip {
                self.cache.link(KeyKind::Ip, ip, pod);
            }
            if let Some(id) = &k.container_id {
                self.cache.link(KeyKind::Container, strip_scheme(id), pod);
            }
            let attributes = event.entity.as_deref().map(|e| &e.attributes);
            if let Some(ids) = attributes.and_then(|a| a.get(CONTAINER_IDS)) {
                for id in ids.split(',').filter(|id| !id.is_empty()) {
                    self.cache.link(KeyKind::Container, strip_scheme(id), pod);
                }
            }
            if let Some(attributes) = attributes
                && let (Some(kind), Some(name)) =
                    (attributes.get(WORKLOAD_KIND), attributes.get(WORKLOAD))
            {
                self.cache.pod_mut(pod).workload =
                    Some((kind.as_str().into(), name.as_str().into()));
            }
        }
        Some(pod)
    }

    /// A CNI call: the pod (by its entity, else its sandbox) with its address and sandbox;
    /// `DEL` forgets the addresses.
    fn learn_cni(&mut self, event: &UnifiedEvent, network: &NetworkContext) -> Option<PodRef> {
        let sandbox = network.container_id.as_deref();
        let pod = match event.entity.as_deref().and_then(pod_facts) {
            Some(facts) => self.learn_pod(facts),
            None => sandbox.and_then(|id| self.cache.find(KeyKind::Container, id)),
        }?;
        match network.operation.as_deref() {
            Some("ADD" | "CHECK") if network.error.is_none() => {
                if let Some(ip) = &network.ip_address {
                    self.cache.link(KeyKind::Ip, ip, pod);
                }
                if let Some(id) = sandbox {
                    self.cache.link(KeyKind::Container, id, pod);
                }
            }
            Some("DEL") => {
                if let Some(ip) = &network.ip_address {
                    self.cache.unlink(KeyKind::Ip, ip, pod);
                }
                self.cache.unlink_all(pod, KeyKind::Ip);
            }
            _ => {}
        }
        Some(pod)
    }

    /// A systemd unit: a kubepods slice names the pod (on the node the event comes from), a
    /// container scope (or the `container_id` the source read from it) its container. The
    /// simulated collector sends the host as entity, the real `systemd` source the pod it read
    /// from the slice: either one's node is where the pod runs.
    fn learn_unit(&mut self, event: &UnifiedEvent, systemd: &SystemdContext) -> Option<PodRef> {
        let unit = systemd.unit.as_deref().unwrap_or("");
        let container = systemd
            .container_id
            .as_deref()
            .or_else(|| scope_container(unit));
        let mut uid = std::mem::take(&mut self.uid);
        let pod = if [systemd.slice.as_deref(), Some(unit)]
            .into_iter()
            .flatten()
            .any(|slice| pod_uid_of_slice(slice, &mut uid))
        {
            let node = event
                .entity
                .as_deref()
                .filter(|e| {
                    matches!(
                        e.kind,
                        EntityType::Host | EntityType::Node | EntityType::Pod
                    )
                })
                .and_then(|e| e.node.as_deref());
            self.learn_pod(PodFacts {
                uid: Some(&uid),
                node,
                ..PodFacts::default()
            })
        } else {
            container.and_then(|id| self.cache.find(KeyKind::Container, id))
        };
        self.uid = uid;
        if let (Some(pod), Some(id)) = (pod, container) {
            self.cache.link(KeyKind::Container, id, pod);
        }
        pod
    }

    /// A process: its cgroup belongs to its container; the container belongs to the pod the
    /// collector resolved, else the pod is the container's (or the cgroup's container's).
    fn learn_process(&mut self, event: &UnifiedEvent, process: &ProcessContext) -> Option<PodRef> {
        let container = process.container_id.as_deref();
        if let (Some(cgroup), Some(id)) = (process.cgroup_id, container) {
            self.cache.link_cgroup(cgroup, id);
        }
        if let Some(facts) = event.entity.as_deref().and_then(pod_facts) {
            let pod = self.learn_pod(facts)?;
            if let Some(id) = container {
                self.cache.link(KeyKind::Container, id, pod);
            }
            return Some(pod);
        }
        container
            .and_then(|id| self.cache.find(KeyKind::Container, id))
            .or_else(|| process.cgroup_id.and_then(|c| self.cache.find_by_cgroup(c)))
    }

    /// The pod these facts describe, created or updated in the cache. A uid and a
    /// `namespace/name` seen together are linked (merging what was known under each); a name
    /// seen with a new uid moves to the new pod (a replacement with the same name).
    fn learn_pod(&mut self, facts: PodFacts<'_>) -> Option<PodRef> {
        let name_known = match (facts.namespace, facts.name) {
            (Some(namespace), Some(name)) => {
                self.name_key.clear();
                self.name_key.push_str(namespace);
                self.name_key.push('/');
                self.name_key.push_str(name);
                true
            }
            _ => false,
        };
        let by_uid = facts.uid.and_then(|uid| self.cache.find(KeyKind::Uid, uid));
        let by_name = if name_known {
            self.cache.find(KeyKind::Name, &self.name_key)
        } else {
            None
        };
        let pod = match (by_uid, by_name) {
            (Some(pod), Some(named)) if pod != named => {
                if self.cache.pod(named).uid.is_none() {
                    self.cache.merge(pod, named);
                } else {
                    self.cache.link(KeyKind::Name, &self.name_key, pod);
                }
                pod
            }
            (Some(pod), _) => {
                if name_known && by_name.is_none() {
                    self.cache.link(KeyKind::Name, &self.name_key, pod);
                }
                pod
            }
            (None, Some(named)) => match facts.uid {
                Some(uid)
                    if self
                        .cache
                        .pod(named)
                        .uid
                        .as_deref()
                        .is_some_and(|known| known != uid) =>
                {
                    let pod = self.cache.new_pod();
                    self.cache.link(KeyKind::Uid, uid, pod);
                    self.cache.link(KeyKind::Name, &self.name_key, pod);
                    pod
                }
                Some(uid) => {
                    self.cache.link(KeyKind::Uid, uid, named);
                    named
                }
                None => named,
            },
            (None, None) => {
                if facts.uid.is_none() && !name_known {
                    return None;
                }
                let pod = self.cache.new_pod();
                if let Some(uid) = facts.uid {
                    self.cache.link(KeyKind::Uid, uid, pod);
                }
                if name_known {
                    self.cache.link(KeyKind::Name, &self.name_key, pod);
                }
                pod
            }
        };
        let record = self.cache.pod_mut(pod);
        for (known, learned) in [
            (&mut record.uid, facts.uid),
            (&mut record.namespace, facts.namespace),
            (&mut record.name, facts.name),
            (&mut record.node, facts.node),
        ] {
            if known.is_none() {
                *known = learned.map(Box::from);
            }
        }
        Some(pod)
    }

    /// An event without a resolved entity: a socket event gets its peer pod; another event the
    /// pod it is about; an event about a node, the node.
    fn resolve_unknown(&mut self, event: &mut UnifiedEvent, subject: Option<PodRef>) {
        let pod = if event.kind == EventType::Network && event.source != "cni" {
            self.peer_pod(event)
        } else {
            subject
        };
        if let Some(pod) = pod {
            self.set_pod(event, pod);
        } else if let Some(node) = self.node_subject(event) {
            let entity = event
                .entity
                .get_or_insert_with(|| Box::new(Entity::new(EntityType::Node, "")));
            entity.kind = EntityType::Node;
            entity.id.clear();
            entity.id.push_str(&node);
            entity.node = Some(node);
        }
    }

    /// The pod at the socket's destination address, else at its source address.
    fn peer_pod(&mut self, event: &UnifiedEvent) -> Option<PodRef> {
        let network = event.network.as_deref()?;
        [&network.dst_ip, &network.src_ip]
            .into_iter()
            .flatten()
            .find_map(|ip| self.cache.find(KeyKind::Ip, ip))
    }

    /// The node an unresolved event is about: a node unit's, or a Kubernetes `Node`'s.
    fn node_subject(&self, event: &UnifiedEvent) -> Option<String> {
        if let Some(unit) = event.systemd.as_deref().and_then(|s| s.unit.as_deref())
            && self.node_units.iter().any(|u| u == unit)
        {
            return entity_node(event).map(str::to_owned);
        }
        event
            .kubernetes
            .as_deref()
            .filter(|k| k.kind.as_deref() == Some("Node"))
            .and_then(|k| k.name.clone())
    }

    /// Makes `event`'s entity the pod (keeping a host entity's node and attributes). Does
    /// nothing if the cache no longer knows how to name the pod.
    fn set_pod(&mut self, event: &mut UnifiedEvent, pod: PodRef) {
        let pod = self.cache.pod(pod);
        if pod.uid.is_none() && (pod.namespace.is_none() || pod.name.is_none()) {
            return;
        }
        let entity = event
            .entity
            .get_or_insert_with(|| Box::new(Entity::new(EntityType::Pod, "")));
        write_pod_id(&mut entity.id, pod);
        let observed_on = match entity.kind {
            EntityType::Host => entity.node.take(),
            _ => None,
        };
        entity.kind = EntityType::Pod;
        entity.name = pod.name.as_deref().map(str::to_owned);
        entity.namespace = pod.namespace.as_deref().map(str::to_owned);
        add_workload(&mut entity.attributes, pod);
        entity.node = match (&pod.node, observed_on) {
            (Some(node), Some(observed)) if **node != *observed => {
                // Seen from another node (a socket's peer): keep where it was observed.
                entity.attributes.insert("node".to_owned(), observed);
                Some(node.to_string())
            }
            (Some(node), None) => Some(node.to_string()),
            (_, observed) => observed,
        };
    }

    /// A pod entity the collector made: its id becomes the uid once known, and what it lacks
    /// (name, namespace, node) is filled from the cache.
    fn complete_pod(&mut self, event: &mut UnifiedEvent, subject: Option<PodRef>) {
        let Some(entity) = event.entity.as_deref_mut() else {
            return;
        };
        let Some(pod) = subject.or_else(|| {
            let kind = if entity.id.contains('/') {
                KeyKind::Name
            } else {
                KeyKind::Uid
            };
            self.cache.find(kind, &entity.id)
        }) else {
            return;
        };
        let pod = self.cache.pod(pod);
        if let Some(uid) = &pod.uid
            && *entity.id != **uid
        {
            entity.id.clear();
            entity.id.push_str(uid);
        }
        for (field, known) in [
            (&mut entity.name, &pod.name),
            (&mut entity.namespace, &pod.namespace),
            (&mut entity.node, &pod.node),
        ] {
            if field.is_none() {
                *field = known.as_deref().map(str::to_owned);
            }
        }
        add_workload(&mut entity.attributes, pod);
    }
}

/// Names the pod's owner workload in `attributes`, unless they already name one.
fn add_workload(attributes: &mut tapio_event::StringMap, pod: &Pod) {
    if let Some((kind, name)) = &pod.workload
        && !attributes.contains_key(WORKLOAD)
    {
        attributes.insert(WORKLOAD_KIND.to_owned(), kind.to_string());
        attributes.insert(WORKLOAD.to_owned(), name.to_string());
    }
}

/// A pod's entity id into `id`: its uid, else `namespace/name` (the caller checked that one of
/// them is known).
fn write_pod_id(id: &mut String, pod: &Pod) {
    id.clear();
    match (&pod.uid, &pod.namespace, &pod.name) {
        (Some(uid), _, _) => id.push_str(uid),
        (None, Some(namespace), Some(name)) => {
            id.push_str(namespace);
            id.push('/');
            id.push_str(name);
        }
        _ => {}
    }
}

/// The node an event's entity names (a host's or node's id, or any entity's `node`).
fn entity_node(event: &UnifiedEvent) -> Option<&str> {
    let entity = event.entity.as_deref()?;
    entity.node.as_deref().or(match entity.kind {
        EntityType::Host | EntityType::Node => Some(entity.id.as_str()),
        _ => None,
    })
}

/// What a pod entity says about the pod: its id is the uid, unless it is `namespace/name`.
fn pod_facts(entity: &Entity) -> Option<PodFacts<'_>> {
    if entity.kind != EntityType::Pod {
        return None;
    }
    let (uid, from_id) = match entity.id.split_once('/') {
        Some((namespace, name)) => (None, Some((namespace, name))),
        None => (Some(entity.id.as_str()).filter(|id| !id.is_empty()), None),
    };
    Some(PodFacts {
        uid,
        namespace: entity.namespace.as_deref().or(from_id.map(|(ns, _)| ns)),
        name: entity.name.as_deref().or(from_id.map(|(_, name)| name)),
        node: entity.node.as_deref(),
    })
}

/// The container id of a scope unit such as `cri-containerd-<id>.scope`.
fn scope_container(unit: &str) -> Option<&str> {
    let stem = unit.strip_suffix(".scope")?;
    let id = SCOPE_PREFIXES
        .iter()
        .find_map(|prefix| stem.strip_prefix(prefix))?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Writes into `uid` the pod uid of a `kubepods[-<qos>]-pod<uid with _>.slice` name (or a
/// cgroup path ending with one); false when `slice` is not one.
fn pod_uid_of_slice(slice: &str, uid: &mut String) -> bool {
    let name = slice.rsplit('/').next().unwrap_or(slice);
    let Some(stem) = name.strip_suffix(".slice") else {
        return false;
    };
    let Some((parent, escaped)) = stem.rsplit_once("-pod") else {
        return false;
    };
    if !(parent == "kubepods" || parent.starts_with("kubepods-")) || escaped.is_empty() {
        return false;
    }
    uid.clear();
    uid.extend(escaped.chars().map(|c| if c == '_' { '-' } else { c }));
    true
}

/// A container id without the runtime's `scheme://` prefix.
fn strip_scheme(id: &str) -> &str {
    RUNTIME_SCHEMES
        .iter()
        .find_map(|scheme| id.strip_prefix(scheme))
        .unwrap_or(id)
}
