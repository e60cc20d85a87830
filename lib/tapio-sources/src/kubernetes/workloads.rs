//! Deployments and ReplicaSets: a rollout's progress (its `Progressing` and `Available`
//! conditions, replicas available and unavailable, `ProgressDeadlineExceeded`), each new
//! ReplicaSet of a Deployment, and which Deployment owns a ReplicaSet (what names a pod's
//! workload).

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::ResourceExt;
use tapio_event::{Entity, EntityType, KubeAction, KubernetesContext, StringMap};

use super::store::{Facts, Store};
use super::watch::{Cluster, Emitter, Kind};

/// The annotations kept: the rollout revision a ReplicaSet stands for.
const KEPT_ANNOTATIONS: [&str; 1] = ["deployment.kubernetes.io/revision"];

/// The facts kept of a Deployment.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DeploymentFacts {
    uid: Box<str>,
    resource_version: Box<str>,
    namespace: Box<str>,
    name: Box<str>,
    /// Desired, updated, available and unavailable replicas.
    replicas: [i32; 4],
    progressing: Option<Condition>,
    available: Option<Condition>,
    labels: StringMap,
}

/// What is kept of a Deployment condition.
#[derive(Debug, Clone, PartialEq)]
struct Condition {
    status: bool,
    reason: Option<Box<str>>,
    message: Option<Box<str>>,
}

impl Facts for DeploymentFacts {
    fn uid(&self) -> &str {
        &self.uid
    }
    fn resource_version(&self) -> &str {
        &self.resource_version
    }
}

/// The `Kind` of Deployments.
pub(super) struct Deployments;

impl Kind for Deployments {
    type Object = Deployment;
    type Facts = DeploymentFacts;
    const PLURAL: &'static str = "deployments";

    fn facts(deployment: &Deployment) -> DeploymentFacts {
        let status = deployment.status.as_ref();
        let condition = |kind: &str| {
            status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .find(|c| c.type_ == kind)
                .map(|c| Condition {
                    status: c.status == "True",
                    reason: c.reason.as_deref().map(Box::from),
                    message: c.message.as_deref().map(Box::from),
                })
        };
        DeploymentFacts {
            uid: deployment.uid().unwrap_or_default().into(),
            resource_version: deployment.resource_version().unwrap_or_default().into(),
            namespace: deployment.namespace().unwrap_or_default().into(),
            name: deployment.name_any().into(),
            replicas: [
                deployment
                    .spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or(1),
                status.and_then(|s| s.updated_replicas).unwrap_or(0),
                status.and_then(|s| s.available_replicas).unwrap_or(0),
                status.and_then(|s| s.unavailable_replicas).unwrap_or(0),
            ],
            progressing: condition("Progressing"),
            available: condition("Available"),
            labels: deployment.labels().clone(),
        }
    }

    fn store(cluster: &mut Cluster) -> &mut Store<DeploymentFacts> {
        &mut cluster.deployments
    }

    fn store_ref(cluster: &Cluster) -> &Store<DeploymentFacts> {
        &cluster.deployments
    }

    /// One event per change of the rollout: a new `Progressing` reason first (it names the
    /// step: `NewReplicaSetCreated`, `NewReplicaSetAvailable`, `ProgressDeadlineExceeded`),
    /// else a change of `Available`, else of the replica counts.
    fn changed(
        _: &Cluster,
        old: Option<&DeploymentFacts>,
        new: &DeploymentFacts,
        out: &mut Emitter,
    ) {
        let Some(old) = old else {
            out_deployment(out, new, KubeAction::Added, None);
            return;
        };
        // A condition's change: the Progressing reason moved on, or Available flipped.
        let progressed = new.progressing.as_ref().filter(|c| {
            c.reason.as_ref() != old.progressing.as_ref().and_then(|o| o.reason.as_ref())
        });
        let availability = new
            .available
            .as_ref()
            .filter(|c| Some(c.status) != old.available.as_ref().map(|o| o.status));
        let change = progressed
            .or(availability)
            .and_then(|c| Some((c.reason.as_deref()?, c.message.as_deref())));
        match change {
            Some(change) => out_deployment(out, new, KubeAction::Modified, Some(change)),
            None if old.replicas != new.replicas => {
                out_deployment(out, new, KubeAction::Modified, None);
            }
            None => {}
        }
    }

    fn deleted(_: &Cluster, gone: &DeploymentFacts, out: &mut Emitter) {
        out_deployment(out, gone, KubeAction::Deleted, None);
    }
}

/// A Deployment's entity: its uid, name and namespace.
fn deployment_entity(uid: &str, name: &str, namespace: &str) -> Box<Entity> {
    Box::new(Entity {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        ..Entity::new(EntityType::Deployment, uid)
    })
}

fn out_deployment(
    out: &mut Emitter,
    deployment: &DeploymentFacts,
    action: KubeAction,
    change: Option<(&str, Option<&str>)>,
) {
    let [desired, updated, available, unavailable] = deployment.replicas;
    let mut entity = deployment_entity(&deployment.uid, &deployment.name, &deployment.namespace);
    for (key, value) in [
        ("replicas", desired),
        ("updated_replicas", updated),
        ("available_replicas", available),
        ("unavailable_replicas", unavailable),
    ] {
        entity.attributes.insert(key.into(), value.to_string());
    }
    let counts = format!(
        "{available} of {desired} replicas available, {unavailable} unavailable, {updated} updated"
    );
    let mut event = out.event();
    event.entity = Some(entity);
    event.kubernetes = Some(Box::new(KubernetesContext {
        kind: Some("Deployment".into()),
        name: Some(deployment.name.to_string()),
        namespace: Some(deployment.namespace.to_string()),
        uid: Some(deployment.uid.to_string()),
        action: Some(action),
        reason: change.map(|(reason, _)| reason.to_owned()),
        message: Some(change.and_then(|(_, m)| m).map_or(counts, str::to_owned)),
        labels: deployment.labels.clone(),
        ..KubernetesContext::default()
    }));
    out.push(event);
}

/// The facts kept of a ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ReplicaSetFacts {
    uid: Box<str>,
    resource_version: Box<str>,
    namespace: Box<str>,
    name: Box<str>,
    /// The controlling Deployment (uid, name).
    owner: Option<(Box<str>, Box<str>)>,
    /// The allow-listed annotations.
    annotations: StringMap,
}

impl ReplicaSetFacts {
    /// The name of the Deployment that owns this ReplicaSet.
    pub(super) fn deployment(&self) -> Option<&str> {
        self.owner.as_ref().map(|(_, name)| &**name)
    }
}

impl Facts for ReplicaSetFacts {
    fn uid(&self) -> &str {
        &self.uid
    }
    fn resource_version(&self) -> &str {
        &self.resource_version
    }
}

/// The `Kind` of ReplicaSets.
pub(super) struct ReplicaSets;

impl Kind for ReplicaSets {
    type Object = ReplicaSet;
    type Facts = ReplicaSetFacts;
    const PLURAL: &'static str = "replicasets";

    fn facts(rs: &ReplicaSet) -> ReplicaSetFacts {
        ReplicaSetFacts {
            uid: rs.uid().unwrap_or_default().into(),
            resource_version: rs.resource_version().unwrap_or_default().into(),
            namespace: rs.namespace().unwrap_or_default().into(),
            name: rs.name_any().into(),
            owner: rs
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                .map(|o| (o.uid.as_str().into(), o.name.as_str().into())),
            annotations: rs
                .annotations()
                .iter()
                .filter(|(key, _)| KEPT_ANNOTATIONS.contains(&key.as_str()))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect(),
        }
    }

    fn store(cluster: &mut Cluster) -> &mut Store<ReplicaSetFacts> {
        &mut cluster.replicasets
    }

    fn store_ref(cluster: &Cluster) -> &Store<ReplicaSetFacts> {
        &cluster.replicasets
    }

    /// A new ReplicaSet of a Deployment is a step of its rollout; later changes of the
    /// ReplicaSet show in the Deployment's own counts.
    fn changed(
        _: &Cluster,
        old: Option<&ReplicaSetFacts>,
        new: &ReplicaSetFacts,
        out: &mut Emitter,
    ) {
        if old.is_none() {
            out_replicaset(out, new, KubeAction::Added);
        }
    }

    fn deleted(_: &Cluster, gone: &ReplicaSetFacts, out: &mut Emitter) {
        out_replicaset(out, gone, KubeAction::Deleted);
    }
}

/// A ReplicaSet event; its entity is the Deployment it belongs to (ReplicaSets have no entity
/// type of their own), and it is not emitted for ReplicaSets without one.
fn out_replicaset(out: &mut Emitter, rs: &ReplicaSetFacts, action: KubeAction) {
    let Some((uid, deployment)) = &rs.owner else {
        return;
    };
    let mut entity = deployment_entity(uid, deployment, &rs.namespace);
    entity
        .attributes
        .insert("replicaset".into(), rs.name.to_string());
    if let Some(revision) = rs.annotations.get(KEPT_ANNOTATIONS[0]) {
        entity
            .attributes
            .insert("revision".into(), revision.clone());
    }
    let mut event = out.event();
    event.entity = Some(entity);
    event.kubernetes = Some(Box::new(KubernetesContext {
        kind: Some("ReplicaSet".into()),
        name: Some(rs.name.to_string()),
        namespace: Some(rs.namespace.to_string()),
        uid: Some(rs.uid.to_string()),
        action: Some(action),
        ..KubernetesContext::default()
    }));
    out.push(event);
}

/// The entity of an Event about a Deployment or ReplicaSet, from what the stores know.
pub(super) fn workload_entity(cluster: &Cluster, kind: &str, key: &str) -> Option<Box<Entity>> {
    match kind {
        "Deployment" => cluster
            .deployments
            .get(key)
            .map(|d| deployment_entity(&d.uid, &d.name, &d.namespace)),
        "ReplicaSet" => cluster.replicasets.get(key).and_then(|rs| {
            let (uid, name) = rs.owner.as_ref()?;
            Some(deployment_entity(uid, name, &rs.namespace))
        }),
        _ => None,
    }
}
