//! core/v1 Events: each new Event, and each repeat of one (its `count` grows, as the kubelet's
//! `BackOff` does), becomes an event about the Event's involved object, with its reason,
//! message, count and type. A pod, node or Deployment the stores know gives the entity; with
//! `node_name_filter` only Events about this node's pods and the node itself are kept.

use k8s_openapi::api::core::v1::Event as CoreEvent;
use kube::ResourceExt;
use tapio_event::{Entity, EntityType, KubernetesContext};

use super::nodes::node_entity;
use super::pods::{boxed, pod_entity};
use super::store::{Facts, Store};
use super::watch::{Cluster, Emitter, Kind};
use super::workloads::workload_entity;

/// The facts kept of an Event.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct EventFacts {
    uid: Box<str>,
    resource_version: Box<str>,
    /// How many times it happened (`count`, or the series' count).
    count: i32,
    kind: Option<Box<str>>,
    name: Option<Box<str>>,
    namespace: Option<Box<str>>,
    object_uid: Option<Box<str>>,
    reason: Option<Box<str>>,
    message: Option<Box<str>>,
    /// `Normal` or `Warning`.
    event_type: Option<Box<str>>,
}

impl Facts for EventFacts {
    fn uid(&self) -> &str {
        &self.uid
    }
    fn resource_version(&self) -> &str {
        &self.resource_version
    }
}

/// The `Kind` of core/v1 Events.
pub(super) struct Events;

impl Kind for Events {
    type Object = CoreEvent;
    type Facts = EventFacts;
    const PLURAL: &'static str = "events";

    fn facts(event: &CoreEvent) -> EventFacts {
        let object = &event.involved_object;
        EventFacts {
            uid: event.uid().unwrap_or_default().into(),
            resource_version: event.resource_version().unwrap_or_default().into(),
            count: event
                .series
                .as_ref()
                .and_then(|s| s.count)
                .or(event.count)
                .unwrap_or(1),
            kind: boxed(object.kind.as_deref()),
            name: boxed(object.name.as_deref()),
            namespace: boxed(object.namespace.as_deref()),
            object_uid: boxed(object.uid.as_deref()),
            reason: boxed(event.reason.as_deref()),
            message: boxed(event.message.as_deref()),
            event_type: boxed(event.type_.as_deref()),
        }
    }

    fn store(cluster: &mut Cluster) -> &mut Store<EventFacts> {
        &mut cluster.events
    }

    fn store_ref(cluster: &Cluster) -> &Store<EventFacts> {
        &cluster.events
    }

    fn changed(cluster: &Cluster, old: Option<&EventFacts>, new: &EventFacts, out: &mut Emitter) {
        let repeated = old.is_none_or(|old| new.count > old.count || new.message != old.message);
        if !repeated {
            return;
        }
        let key = match (&new.namespace, &new.name) {
            (Some(ns), Some(name)) => format!("{ns}/{name}"),
            (None, Some(name)) => name.to_string(),
            _ => String::new(),
        };
        let kind = new.kind.as_deref().unwrap_or("");
        let pod = (kind == "Pod").then(|| cluster.pods.get(&key)).flatten();
        if let Some(node) = &cluster.node_filter {
            let ours = pod.is_some() || (kind == "Node" && new.name.as_deref() == Some(node));
            if !ours {
                return;
            }
        }
        let mut entity = match kind {
            "Pod" => Some(match pod {
                Some(pod) => pod_entity(cluster, pod),
                None => Box::new(Entity {
                    name: new.name.as_deref().map(str::to_owned),
                    namespace: new.namespace.as_deref().map(str::to_owned),
                    ..Entity::new(
                        EntityType::Pod,
                        new.object_uid.as_deref().unwrap_or(key.as_str()),
                    )
                }),
            }),
            "Node" => new.name.as_deref().map(node_entity),
            _ => workload_entity(cluster, kind, &key),
        };
        if let Some(entity) = entity.as_deref_mut() {
            entity
                .attributes
                .insert("count".into(), new.count.to_string());
            if let Some(event_type) = &new.event_type {
                entity
                    .attributes
                    .insert("event_type".into(), event_type.to_string());
            }
        }
        let mut event = out.event();
        event.entity = entity;
        event.kubernetes = Some(Box::new(KubernetesContext {
            kind: new.kind.as_deref().map(str::to_owned),
            name: new.name.as_deref().map(str::to_owned),
            namespace: new.namespace.as_deref().map(str::to_owned),
            uid: new.object_uid.as_deref().map(str::to_owned),
            reason: new.reason.as_deref().map(str::to_owned),
            message: new.message.as_deref().map(str::to_owned),
            node: match kind {
                "Node" => new.name.as_deref().map(str::to_owned),
                _ => pod.and_then(|p| p.node.as_deref()).map(str::to_owned),
            },
            pod_ip: pod.and_then(|p| p.ip.as_deref()).map(str::to_owned),
            ..KubernetesContext::default()
        }));
        out.push(event);
    }

    /// Events expire (after an hour, by default): their deletion tells nothing.
    fn deleted(_: &Cluster, _: &EventFacts, _: &mut Emitter) {}
}
