//! Unit tests of the `kubernetes` source's parts that need no API server: the options, the
//! selectors of the plan, the store's relist bookkeeping, and what each kind's changes mean.
//! The watches themselves are tested end to end against a fake API server in
//! `tests/kubernetes.rs`.

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};
use tapio_event::id::IdGenerator;
use tapio_event::{KubeAction, Timestamp, UnifiedEvent};

use super::store::{Facts, Listed, Store};
use super::watch::{Cluster, Emitter, Kind, Plan};
use super::*;
use crate::util::testing::build_context;

fn config(text: &str) -> KubernetesConfig {
    toml::from_str(text).expect("valid options")
}

fn build_error(text: &str) -> String {
    match config(text).build(&build_context("cluster")) {
        Ok(_) => panic!("built: {text}"),
        Err(error) => error.message().to_owned(),
    }
}

#[test]
fn options_are_checked_without_connecting() {
    assert!(config("").build(&build_context("cluster")).is_ok());
    assert!(build_error("resources = []").contains("resources"));
    assert!(build_error("label_selector = \" \"").contains("label_selector"));
    assert!(build_error("namespaces = { include = [\"Shop\"] }").contains("Shop"));
    assert!(toml::from_str::<KubernetesConfig>("resources = [\"secrets\"]").is_err());
    assert!(toml::from_str::<KubernetesConfig>("namespace = \"shop\"").is_err());
}

fn plan(text: &str) -> String {
    format!("{:?}", Plan::new(&config(text)))
}

#[test]
fn selectors_combine_namespaces_the_users_and_the_node_filter() {
    let p = plan(
        "node_name_filter = \"worker-1\"\nfield_selector = \"status.phase!=Succeeded\"\nnamespaces = { exclude = [\"kube-system\", \"tapio\"] }",
    );
    assert!(
        p.contains(
            "pod_fields: Some(\"metadata.namespace!=kube-system,metadata.namespace!=tapio,status.phase!=Succeeded,spec.nodeName=worker-1\")"
        ),
        "{p}"
    );
    assert!(
        p.contains("node_fields: Some(\"metadata.name=worker-1\")"),
        "{p}"
    );
    let included = plan("namespaces = { include = [\"shop\", \"pay\"], exclude = [\"pay\"] }");
    assert!(
        included.contains("namespaces: [Some(\"shop\")]"),
        "{included}"
    );
    assert!(included.contains("namespaced_fields: None"), "{included}");
}

/// Facts with a uid and a version, for the store's own tests.
#[derive(Debug, PartialEq)]
struct Versioned(&'static str, &'static str);

impl Facts for Versioned {
    fn uid(&self) -> &str {
        self.0
    }
    fn resource_version(&self) -> &str {
        self.1
    }
}

#[test]
fn a_relist_reports_only_changes_and_the_objects_gone_from_its_own_scope() {
    let mut store = Store::default();
    assert!(!store.begin_list(0), "the first list is no relist");
    for (key, facts) in [("a", Versioned("1", "10")), ("b", Versioned("2", "11"))] {
        assert_eq!(store.listed(0, key, &facts), Listed::Initial);
        store.insert(0, key.into(), facts);
    }
    assert!(store.finish_list(0).is_empty());
    store.begin_list(1);
    store.listed(1, "x", &Versioned("9", "12"));
    store.insert(1, "x".into(), Versioned("9", "12"));
    store.finish_list(1);

    assert!(store.begin_list(0), "a second list is a relist");
    assert_eq!(
        store.listed(0, "a", &Versioned("1", "10")),
        Listed::Unchanged
    );
    assert_eq!(store.listed(0, "c", &Versioned("3", "13")), Listed::Changed);
    assert_eq!(
        store.finish_list(0),
        [Versioned("2", "11")],
        "b is gone; x belongs to another watch"
    );
    assert_eq!(store.len(), 2);
    assert!(store.get("x").is_some());
}

fn emitter() -> Emitter {
    Emitter::new(IdGenerator::seeded(1), Timestamp::now())
}

fn pod(phase: &str, containers: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "api-7d9f8b6c5-x2k4q", "namespace": "shop", "uid": "u1",
            "resourceVersion": "5", "labels": {"pod-template-hash": "7d9f8b6c5"},
            "annotations": {"a": "b"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9f8b6c5",
                "uid": "rs", "controller": true}]},
        "spec": {"nodeName": "worker-1", "containers": [{"name": "app"}]},
        "status": {"phase": phase, "podIP": "10.0.0.1", "containerStatuses": containers}
    }))
    .unwrap()
}

fn status(id: &str, restarts: i32, state: Value, last: Value) -> Value {
    json!([{"name": "app", "containerID": format!("containerd://{id}"), "image": "i", "imageID": "i",
        "ready": false, "restartCount": restarts, "state": state, "lastState": last}])
}

/// (action, reason, exit code attribute) of the events `K` emits going from `old` to `new`.
fn changes<K: Kind>(old: Option<&K::Object>, new: &K::Object) -> Vec<(KubeAction, String, String)> {
    let cluster = Cluster::default();
    let mut out = emitter();
    let old = old.map(K::facts);
    K::changed(&cluster, old.as_ref(), &K::facts(new), &mut out);
    out.take()
        .iter()
        .map(|e: &UnifiedEvent| {
            let k = e.kubernetes.as_deref().unwrap();
            let code = e
                .entity
                .as_deref()
                .and_then(|e| e.attributes.get("exit_code").cloned())
                .unwrap_or_default();
            (
                k.action.unwrap(),
                k.reason.clone().unwrap_or_default(),
                code,
            )
        })
        .collect()
}

fn modified(reason: &str, code: &str) -> (KubeAction, String, String) {
    (KubeAction::Modified, reason.to_owned(), code.to_owned())
}

#[test]
fn pod_terminations_are_read_from_state_and_from_last_state_once_each() {
    use super::pods::Pods;
    let running = json!({"running": {}});
    let oom = json!({"terminated": {"exitCode": 137, "reason": "OOMKilled", "containerID": "containerd://c1"}});
    let back_off = json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}});
    let up = pod("Running", status("c1", 0, running.clone(), json!({})));
    let killed = pod("Running", status("c1", 0, oom.clone(), json!({})));
    let backing_off = pod("Running", status("c1", 1, back_off.clone(), oom.clone()));
    assert_eq!(
        changes::<Pods>(Some(&up), &killed),
        [modified("OOMKilled", "137")]
    );
    assert_eq!(
        changes::<Pods>(Some(&killed), &backing_off),
        [modified("CrashLoopBackOff", "")],
        "lastState repeats the termination already reported"
    );
    // A restart seen only through lastState (the termination fell between two updates).
    assert_eq!(
        changes::<Pods>(Some(&up), &backing_off),
        [
            modified("OOMKilled", "137"),
            modified("CrashLoopBackOff", "")
        ]
    );
    let longer = pod(
        "Running",
        status(
            "c1",
            1,
            json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}}),
            oom.clone(),
        ),
    );
    assert!(
        changes::<Pods>(Some(&backing_off), &longer).is_empty(),
        "only the message changed"
    );
    let exited = pod(
        "Running",
        status("c1", 0, json!({"terminated": {"exitCode": 2}}), json!({})),
    );
    assert_eq!(
        changes::<Pods>(Some(&up), &exited),
        [modified("Error", "2")]
    );
    let mut relabelled = up.clone();
    relabelled
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("x".into(), "y".into());
    assert!(
        changes::<Pods>(Some(&up), &relabelled).is_empty(),
        "labels alone do not matter"
    );
    let pending = pod("Pending", json!([]));
    assert_eq!(
        changes::<Pods>(None, &pending),
        [(KubeAction::Added, String::new(), String::new())]
    );
    assert_eq!(changes::<Pods>(Some(&pending), &up), [modified("", "")]);
}

#[test]
fn a_pod_event_names_its_deployment_and_bare_container_ids_and_keeps_no_annotations() {
    use super::pods::Pods;
    let cluster = Cluster::default();
    let mut out = emitter();
    let up = pod(
        "Running",
        status("c1", 0, json!({"running": {}}), json!({})),
    );
    Pods::changed(&cluster, None, &Pods::facts(&up), &mut out);
    let event = out.take().remove(0);
    let entity = event.entity.as_deref().unwrap();
    assert_eq!(entity.id, "u1");
    assert_eq!(entity.attributes["workload"], "api");
    assert_eq!(entity.attributes["workload_kind"], "Deployment");
    assert_eq!(entity.attributes["container_ids"], "c1");
    let k = event.kubernetes.as_deref().unwrap();
    assert_eq!(k.container_id.as_deref(), Some("c1"));
    assert_eq!(k.node.as_deref(), Some("worker-1"));
    assert!(
        !format!("{:?}", Pods::facts(&up)).contains("\"a\""),
        "annotations are not kept"
    );
}

fn node(ready: &str, disk: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "worker-1", "uid": "n1", "resourceVersion": "3"},
        "status": {"conditions": [
            {"type": "Ready", "status": ready, "message": "m"},
            {"type": "DiskPressure", "status": disk}
        ]}
    }))
    .unwrap()
}

#[test]
fn node_condition_transitions_carry_the_kubelets_reasons() {
    use super::nodes::Nodes;
    let healthy = node("True", "False");
    assert_eq!(changes::<Nodes>(Some(&healthy), &healthy), []);
    assert_eq!(
        changes::<Nodes>(Some(&healthy), &node("False", "True")),
        [
            modified("NodeNotReady", ""),
            modified("NodeHasDiskPressure", "")
        ]
    );
    assert_eq!(
        changes::<Nodes>(Some(&healthy), &node("Unknown", "False")),
        [modified("NodeNotReady", "")],
        "a node that stopped reporting is not ready"
    );
    assert_eq!(
        changes::<Nodes>(Some(&node("False", "False")), &healthy),
        [modified("NodeReady", "")]
    );
}

#[test]
fn deployment_rollouts_report_their_progress() {
    use super::workloads::Deployments;
    let deployment = |reason: &str, available: i32| {
        serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(json!({
            "metadata": {"name": "api", "namespace": "shop", "uid": "d1", "resourceVersion": "1"},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": {"availableReplicas": available, "unavailableReplicas": 3 - available,
                "updatedReplicas": 3, "conditions": [
                {"type": "Progressing", "status": "True", "reason": reason, "message": "progress"},
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}
        }))
        .unwrap()
    };
    let start = deployment("ReplicaSetUpdated", 2);
    assert_eq!(
        changes::<Deployments>(Some(&start), &deployment("ProgressDeadlineExceeded", 2)),
        [modified("ProgressDeadlineExceeded", "")]
    );
    assert_eq!(
        changes::<Deployments>(Some(&start), &deployment("ReplicaSetUpdated", 3)),
        [modified("", "")]
    );
    assert_eq!(changes::<Deployments>(Some(&start), &start), []);
}
