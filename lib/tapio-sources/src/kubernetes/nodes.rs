//! Nodes: their five conditions, and an event for each transition, with the reason the kubelet
//! and node controller give the same transition in their own Events (`NodeNotReady`,
//! `NodeHasDiskPressure`, …), so both say the same thing to the catalog.

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use tapio_event::{Entity, EntityType, KubeAction, KubernetesContext, StringMap};

use super::store::{Facts, Store};
use super::watch::{Cluster, Emitter, Kind};

/// The conditions followed, with the reasons for becoming true and becoming false.
const CONDITIONS: [(&str, &str, &str); 5] = [
    ("Ready", "NodeReady", "NodeNotReady"),
    (
        "MemoryPressure",
        "NodeHasInsufficientMemory",
        "NodeHasSufficientMemory",
    ),
    (
        "DiskPressure",
        "NodeHasDiskPressure",
        "NodeHasNoDiskPressure",
    ),
    (
        "PIDPressure",
        "NodeHasInsufficientPID",
        "NodeHasSufficientPID",
    ),
    (
        "NetworkUnavailable",
        "NodeNetworkUnavailable",
        "NodeNetworkAvailable",
    ),
];

/// The facts kept of a node.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct NodeFacts {
    uid: Box<str>,
    resource_version: Box<str>,
    name: Box<str>,
    /// Per entry of [`CONDITIONS`]: `Some(true)` for `True`, `Some(false)` for `False`, `None`
    /// when absent or `Unknown`; and the condition's message.
    conditions: [(Option<bool>, Option<Box<str>>); 5],
    labels: StringMap,
}

impl Facts for NodeFacts {
    fn uid(&self) -> &str {
        &self.uid
    }
    fn resource_version(&self) -> &str {
        &self.resource_version
    }
}

/// The `Kind` of nodes.
pub(super) struct Nodes;

impl Kind for Nodes {
    type Object = Node;
    type Facts = NodeFacts;
    const PLURAL: &'static str = "nodes";

    fn facts(node: &Node) -> NodeFacts {
        let listed = node.status.as_ref().and_then(|s| s.conditions.as_ref());
        let conditions = CONDITIONS.map(|(kind, _, _)| {
            listed
                .into_iter()
                .flatten()
                .find(|c| c.type_ == kind)
                .map_or((None, None), |c| {
                    let status = match c.status.as_str() {
                        "True" => Some(true),
                        "False" => Some(false),
                        _ => None,
                    };
                    (status, c.message.as_deref().map(Box::from))
                })
        });
        NodeFacts {
            uid: node.uid().unwrap_or_default().into(),
            resource_version: node.resource_version().unwrap_or_default().into(),
            name: node.name_any().into(),
            conditions,
            labels: node.labels().clone(),
        }
    }

    fn store(cluster: &mut Cluster) -> &mut Store<NodeFacts> {
        &mut cluster.nodes
    }

    fn store_ref(cluster: &Cluster) -> &Store<NodeFacts> {
        &cluster.nodes
    }

    fn changed(_: &Cluster, old: Option<&NodeFacts>, new: &NodeFacts, out: &mut Emitter) {
        let Some(old) = old else {
            out_node(out, new, KubeAction::Added, None);
            return;
        };
        for (index, (_, when_true, when_false)) in CONDITIONS.iter().enumerate() {
            let (status, message) = &new.conditions[index];
            if old.conditions[index].0 == *status {
                continue;
            }
            let reason = match status {
                Some(true) => *when_true,
                Some(false) => *when_false,
                // Ready going Unknown is the node controller's NotReady: the kubelet is gone.
                None if index == 0 => *when_false,
                None => continue,
            };
            out_node(
                out,
                new,
                KubeAction::Modified,
                Some((reason, message.as_deref())),
            );
        }
    }

    fn deleted(_: &Cluster, gone: &NodeFacts, out: &mut Emitter) {
        out_node(out, gone, KubeAction::Deleted, None);
    }
}

/// The entity of a node: its name, which is also its node.
pub(super) fn node_entity(name: &str) -> Box<Entity> {
    Box::new(Entity {
        name: Some(name.to_owned()),
        node: Some(name.to_owned()),
        ..Entity::new(EntityType::Node, name)
    })
}

fn out_node(
    out: &mut Emitter,
    node: &NodeFacts,
    action: KubeAction,
    change: Option<(&str, Option<&str>)>,
) {
    let mut event = out.event();
    event.entity = Some(node_entity(&node.name));
    event.kubernetes = Some(Box::new(KubernetesContext {
        kind: Some("Node".into()),
        name: Some(node.name.to_string()),
        uid: Some(node.uid.to_string()),
        action: Some(action),
        reason: change.map(|(reason, _)| reason.to_owned()),
        message: change.and_then(|(_, message)| message).map(str::to_owned),
        node: Some(node.name.to_string()),
        labels: node.labels.clone(),
        ..KubernetesContext::default()
    }));
    out.push(event);
}
