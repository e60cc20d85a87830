//! Unit tests of `correlate`: the five built-in patterns from shuffled steps, the negative
//! cases of issue 3, grouping rules (aliases, nodes, hosts, merges, windows), bounded state,
//! deterministic replay, acknowledgements and config errors. Events are built here as
//! `semantic_enrich` leaves them (entities resolved), since sources are a layer below.

mod aliases;
mod config;
mod grouping;
mod recurrence;
mod runtime;

use tapio_event::{
    Entity, EntityType, EventBatch, EventType, KubernetesContext, NetworkContext, ProcessContext,
    SystemdContext, Timestamp, UnifiedEvent,
};

use super::CorrelateConfig;
use super::engine::{Correlator, Output, Stats};

/// 2026-11-27T00:00:00Z.
const START: i64 = 1_795_737_600_000_000_000;
const MS: i64 = 1_000_000;

/// A pod as the enricher knows it.
struct Pod<'a> {
    uid: &'a str,
    namespace: &'a str,
    name: &'a str,
    node: &'a str,
}

const API: Pod<'static> = Pod {
    uid: "uid-api",
    namespace: "shop",
    name: "api-7d9",
    node: "worker-1",
};
const CART: Pod<'static> = Pod {
    uid: "uid-cart",
    namespace: "shop",
    name: "cart-5c4",
    node: "worker-2",
};

impl Pod<'_> {
    /// The pod known by uid (Kubernetes, and node-local events once resolved).
    fn entity(&self) -> Box<Entity> {
        Box::new(Entity {
            name: Some(self.name.into()),
            namespace: Some(self.namespace.into()),
            node: Some(self.node.into()),
            ..Entity::new(EntityType::Pod, self.uid)
        })
    }

    /// The pod known only by `namespace/name` (CNI).
    fn by_name(&self) -> Box<Entity> {
        let mut entity = self.entity();
        entity.id = format!("{}/{}", self.namespace, self.name);
        entity
    }
}

/// Builds a stream of events with ids `evt_0001`, `evt_0002`, … in creation order.
#[derive(Default)]
struct Script {
    events: Vec<UnifiedEvent>,
}

impl Script {
    fn push(
        &mut self,
        ms: i64,
        kind: EventType,
        source: &str,
        entity: Box<Entity>,
    ) -> &mut UnifiedEvent {
        let mut event = UnifiedEvent::new(kind, source, Timestamp(START + ms * MS));
        event.id = format!("evt_{:04}", self.events.len() + 1);
        event.entity = Some(entity);
        self.events.push(event);
        self.events.last_mut().unwrap()
    }

    fn kube(&mut self, ms: i64, pod: &Pod, reason: &str) -> &mut Self {
        let event = self.push(ms, EventType::Kubernetes, "kubernetes", pod.entity());
        event.kubernetes = Some(Box::new(KubernetesContext {
            kind: Some("Pod".into()),
            name: Some(pod.name.into()),
            namespace: Some(pod.namespace.into()),
            uid: Some(pod.uid.into()),
            reason: Some(reason.into()),
            ..KubernetesContext::default()
        }));
        self
    }

    /// A container termination as the `kubernetes` source reports it: a pod update with the
    /// kubelet's reason and the exit code in the entity's attributes.
    fn terminated(&mut self, ms: i64, pod: &Pod, reason: &str, code: i32) -> &mut Self {
        self.kube(ms, pod, reason);
        let event = self.events.last_mut().unwrap();
        let entity = event.entity.as_deref_mut().unwrap();
        entity
            .attributes
            .insert("exit_code".into(), code.to_string());
        self
    }

    fn cni(&mut self, ms: i64, pod: &Pod, operation: &str, error: Option<&str>) -> &mut Self {
        let event = self.push(ms, EventType::Network, "cni", pod.by_name());
        event.network = Some(Box::new(NetworkContext {
            operation: Some(operation.into()),
            interface_name: Some("eth0".into()),
            error: error.map(Into::into),
            ..NetworkContext::default()
        }));
        self
    }

    fn scope(&mut self, ms: i64, pod: &Pod, job: Option<&str>, state: &str) -> &mut Self {
        let event = self.push(ms, EventType::Systemd, "systemd", pod.entity());
        event.systemd = Some(Box::new(SystemdContext {
            unit: Some("cri-containerd-0123abcd.scope".into()),
            active_state: Some(state.into()),
            job_type: job.map(Into::into),
            ..SystemdContext::default()
        }));
        self
    }

    fn process(
        &mut self,
        ms: i64,
        pod: &Pod,
        operation: &str,
        exit_code: Option<i32>,
    ) -> &mut Self {
        let event = self.push(ms, EventType::Process, "ebpf", pod.entity());
        event.process = Some(Box::new(ProcessContext {
            operation: Some(operation.into()),
            pid: Some(4242),
            exit_code,
            ..ProcessContext::default()
        }));
        self
    }

    /// A socket event whose peer (the entity) is `pod`; the owner process does not link.
    fn socket(&mut self, ms: i64, pod: &Pod, operation: &str) -> &mut Self {
        let event = self.push(ms, EventType::Network, "ebpf", pod.entity());
        event.network = Some(Box::new(NetworkContext {
            operation: Some(operation.into()),
            protocol: Some("tcp".into()),
            dst_ip: Some("10.244.1.15".into()),
            ..NetworkContext::default()
        }));
        event.process = Some(Box::new(ProcessContext {
            pid: Some(7),
            comm: Some("client".into()),
            ..ProcessContext::default()
        }));
        self
    }

    fn unit(
        &mut self,
        ms: i64,
        node: &str,
        unit: &str,
        job: Option<&str>,
        state: &str,
    ) -> &mut Self {
        let entity = Box::new(Entity {
            node: Some(node.into()),
            ..Entity::new(EntityType::Node, node)
        });
        let event = self.push(ms, EventType::Systemd, "systemd", entity);
        event.systemd = Some(Box::new(SystemdContext {
            unit: Some(unit.into()),
            active_state: Some(state.into()),
            job_type: job.map(Into::into),
            ..SystemdContext::default()
        }));
        self
    }

    fn node_event(&mut self, ms: i64, node: &str, reason: &str) -> &mut Self {
        let entity = Box::new(Entity {
            node: Some(node.into()),
            ..Entity::new(EntityType::Node, node)
        });
        let event = self.push(ms, EventType::Kubernetes, "kubernetes", entity);
        event.kubernetes = Some(Box::new(KubernetesContext {
            kind: Some("Node".into()),
            name: Some(node.into()),
            reason: Some(reason.into()),
            ..KubernetesContext::default()
        }));
        self
    }

    /// An eBPF event whose subject `semantic_enrich` could not resolve.
    fn host(&mut self, ms: i64, node: &str, operation: &str) -> &mut Self {
        let entity = Box::new(Entity {
            node: Some(node.into()),
            ..Entity::new(EntityType::Host, node)
        });
        let event = self.push(ms, EventType::Process, "ebpf", entity);
        event.process = Some(Box::new(ProcessContext {
            operation: Some(operation.into()),
            ..ProcessContext::default()
        }));
        self
    }

    /// The events in a fixed pseudo-random arrival order.
    fn shuffled(&self, seed: u64) -> Vec<UnifiedEvent> {
        let mut events = self.events.clone();
        let mut state = seed;
        for i in (1..events.len()).rev() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            events.swap(i, (state >> 33) as usize % (i + 1));
        }
        events
    }
}

fn correlator(config: &CorrelateConfig) -> Correlator {
    config.correlator().unwrap()
}

/// Feeds `events` as one batch, then ends the input.
fn run(config: &CorrelateConfig, events: Vec<UnifiedEvent>) -> (Vec<UnifiedEvent>, Stats) {
    let mut correlator = correlator(config);
    let mut out = Output::default();
    correlator.push_batch(EventBatch::new(events), &mut out);
    correlator.flush(&mut out);
    (out.events, correlator.stats())
}

fn summaries(events: &[UnifiedEvent]) -> Vec<&UnifiedEvent> {
    events
        .iter()
        .filter(|e| e.kind == EventType::Correlation)
        .collect()
}

fn correlation_id(event: &UnifiedEvent) -> &str {
    event
        .correlation
        .as_ref()
        .and_then(|c| c.correlation_id.as_deref())
        .unwrap_or_else(|| panic!("{} left without correlation_id", event.id))
}

fn id_of<'a>(events: &'a [UnifiedEvent], id: &str) -> &'a str {
    correlation_id(events.iter().find(|e| e.id == id).unwrap())
}

/// Runs the shuffled script with the defaults and checks that exactly one summary of `pattern`
/// comes out, with the catalog's fields, about `entity_id`, covering every input event.
fn assert_one_summary(
    script: &Script,
    pattern: &str,
    root_cause: &str,
    action: &str,
    entity_id: &str,
) -> String {
    let mut narrative = String::new();
    for seed in 1..=5 {
        let (out, _) = run(&CorrelateConfig::default(), script.shuffled(seed));
        assert_eq!(
            out.len(),
            script.events.len() + 1,
            "every event and one summary leave"
        );
        let found = summaries(&out);
        assert_eq!(found.len(), 1, "{pattern}: {found:#?}");
        let summary = found[0];
        let correlation = summary.correlation.as_deref().unwrap();
        assert_eq!(summary.source, "correlate");
        assert_eq!(correlation.pattern.as_deref(), Some(pattern));
        assert_eq!(correlation.root_cause.as_deref(), Some(root_cause));
        assert_eq!(correlation.recommended_action.as_deref(), Some(action));
        assert!(correlation.confidence.is_some_and(|c| c > 0.5 && c <= 1.0));
        assert_eq!(summary.entity.as_ref().unwrap().id, entity_id);
        let latest = script.events.iter().map(|e| e.timestamp).max().unwrap();
        assert_eq!(
            summary.timestamp, latest,
            "stamped with the completing event"
        );
        assert!(summary.id.starts_with("evt_") && summary.id.len() == 30);
        let group = correlation.correlation_id.as_deref().unwrap();
        for event in &out {
            assert_eq!(correlation_id(event), group, "one group");
        }
        let mut related = correlation.related_events.clone();
        related.sort();
        let mut all: Vec<String> = script.events.iter().map(|e| e.id.clone()).collect();
        all.sort();
        assert_eq!(related, all);
        assert_eq!(correlation.related_events_omitted, None);
        narrative = summary
            .semantic
            .as_ref()
            .unwrap()
            .narrative
            .clone()
            .unwrap();
    }
    narrative
}

fn deployment(script: &mut Script, pod: &Pod, from: i64) {
    script
        .kube(from, pod, "Scheduled")
        .cni(from + 400, pod, "ADD", None)
        .scope(from + 800, pod, Some("start"), "active")
        .process(from + 820, pod, "exec", None);
}

fn network_failure(script: &mut Script, pod: &Pod, from: i64) {
    script
        .socket(from, pod, "retransmit")
        .socket(from + 200, pod, "retransmit")
        .socket(from + 1000, pod, "timeout")
        .cni(
            from + 1300,
            pod,
            "CHECK",
            Some("failed to set up interface eth0: link not found"),
        )
        .kube(from + 2000, pod, "Unhealthy")
        .kube(from + 3500, pod, "Killing");
}

fn oom_kill(script: &mut Script, pod: &Pod, from: i64) {
    script
        .process(from, pod, "oom_kill", None)
        .kube(from + 400, pod, "OOMKilled")
        .kube(from + 1400, pod, "BackOff");
}

fn crash_loop(script: &mut Script, pod: &Pod, from: i64) {
    script
        .process(from, pod, "exit", Some(1))
        .process(from + 1000, pod, "exit", Some(1))
        .process(from + 2000, pod, "exit", Some(1))
        .kube(from + 2300, pod, "BackOff");
}

#[test]
fn the_builtin_catalog_is_valid_and_ordered() {
    let catalog = super::catalog::Catalog::new(true, &[]).unwrap();
    let names: Vec<&str> = catalog.patterns().iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "oom-kill-cascade",
            // oom-kill-cascade-cluster, its variant, reports as the original.
            "oom-kill-cascade",
            "network-failure-cascade",
            "node-runtime-failure",
            "crash-loop",
            // crash-loop-cluster.
            "crash-loop",
            "pod-deployment-sequence"
        ]
    );
}

#[test]
fn pod_deployment_sequence() {
    let mut script = Script::default();
    deployment(&mut script, &API, 0);
    let narrative = assert_one_summary(
        &script,
        "pod-deployment-sequence",
        "scheduler-decision",
        "none",
        "uid-api",
    );
    assert_eq!(
        narrative,
        "shop/api-7d9 on worker-1 was deployed: scheduled, pod network added, container scope started, main process started."
    );
}

#[test]
fn network_failure_cascade() {
    let mut script = Script::default();
    network_failure(&mut script, &API, 0);
    let narrative = assert_one_summary(
        &script,
        "network-failure-cascade",
        "network-connectivity-loss",
        "investigate-network-infrastructure",
        "uid-api",
    );
    assert!(narrative.starts_with("shop/api-7d9 on worker-1 lost network connectivity: TCP retransmits/timeouts/errors (3)"), "{narrative}");
}

#[test]
fn a_scope_restart_is_a_restart_too() {
    let mut script = Script::default();
    script
        .socket(0, &API, "error")
        .cni(100, &API, "CHECK", Some("link not found"))
        .kube(200, &API, "Unhealthy")
        .scope(300, &API, Some("restart"), "active");
    assert_one_summary(
        &script,
        "network-failure-cascade",
        "network-connectivity-loss",
        "investigate-network-infrastructure",
        "uid-api",
    );
}

#[test]
fn oom_kill_cascade() {
    let mut script = Script::default();
    oom_kill(&mut script, &API, 0);
    assert_one_summary(
        &script,
        "oom-kill-cascade",
        "memory-limit-exceeded",
        "raise-memory-limit-or-fix-leak",
        "uid-api",
    );
}

#[test]
fn crash_loop_needs_three_failed_exits() {
    let mut script = Script::default();
    crash_loop(&mut script, &API, 0);
    let narrative = assert_one_summary(
        &script,
        "crash-loop",
        "application-crash",
        "inspect-application-logs",
        "uid-api",
    );
    assert!(narrative.contains("3 non-zero exits"), "{narrative}");

    let mut clean = Script::default();
    clean
        .process(0, &API, "exit", Some(1))
        .process(1000, &API, "exit", Some(0))
        .process(2000, &API, "exit", Some(1))
        .kube(2300, &API, "BackOff");
    assert!(summaries(&run(&CorrelateConfig::default(), clean.events).0).is_empty());
}

#[test]
fn node_runtime_failure() {
    let mut script = Script::default();
    script
        .unit(0, "worker-3", "containerd.service", None, "failed")
        .node_event(2500, "worker-3", "NodeNotReady");
    let narrative = assert_one_summary(
        &script,
        "node-runtime-failure",
        "container-runtime-failure",
        "restart-container-runtime",
        "worker-3",
    );
    assert_eq!(
        narrative,
        "Node worker-3 lost its container runtime: runtime unit failed, node NotReady."
    );
}

#[test]
fn steps_split_across_two_pods_make_no_story() {
    let mut script = Script::default();
    script
        .socket(0, &API, "retransmit")
        .cni(300, &API, "CHECK", Some("link not found"))
        .kube(700, &CART, "Unhealthy")
        .kube(1200, &CART, "Killing")
        .process(1500, &API, "exit", Some(1))
        .process(1600, &API, "exit", Some(1))
        .process(1700, &CART, "exit", Some(1))
        .kube(2000, &CART, "BackOff")
        .process(2100, &API, "oom_kill", None)
        // On CART with its BackOff, this would be the cluster-side OOM story.
        .kube(2200, &API, "OOMKilled");
    let (out, _) = run(&CorrelateConfig::default(), script.shuffled(3));
    assert!(summaries(&out).is_empty(), "{:#?}", summaries(&out));
    assert_ne!(id_of(&out, "evt_0001"), id_of(&out, "evt_0003"));
}

#[test]
fn steps_spread_beyond_the_window_make_no_story() {
    let mut script = Script::default();
    for (i, step) in [(0, "exit"), (1, "exit"), (2, "exit")] {
        script.process(i * 70_000, &API, step, Some(2));
    }
    script.kube(3 * 70_000, &API, "BackOff");
    let (out, stats) = run(&CorrelateConfig::default(), script.events.clone());
    assert!(summaries(&out).is_empty());
    assert_eq!(out.len(), 4);
    assert_ne!(id_of(&out, "evt_0001"), id_of(&out, "evt_0002"));
    assert_eq!(stats.open_groups, 1, "earlier groups expired");
}

#[test]
fn incomplete_sequences_make_no_story() {
    let mut script = Script::default();
    script
        .process(0, &API, "oom_kill", None)
        .kube(400, &API, "OOMKilled");
    script
        .kube(0, &CART, "Scheduled")
        .cni(200, &CART, "ADD", None)
        .process(500, &CART, "exec", None);
    let (out, _) = run(&CorrelateConfig::default(), script.shuffled(9));
    assert!(summaries(&out).is_empty());
    assert_eq!(out.len(), 5);
}

#[test]
fn a_planned_restart_of_containerd_is_no_failure() {
    let mut script = Script::default();
    script
        .unit(
            0,
            "worker-2",
            "containerd.service",
            Some("stop"),
            "inactive",
        )
        .node_event(400, "worker-2", "NodeNotReady")
        .unit(
            800,
            "worker-2",
            "containerd.service",
            Some("start"),
            "active",
        )
        .unit(
            900,
            "worker-2",
            "containerd.service",
            Some("restart"),
            "active",
        );
    let (out, _) = run(&CorrelateConfig::default(), script.shuffled(2));
    assert!(summaries(&out).is_empty());
}

#[test]
fn an_oom_kill_makes_exits_an_oom_story_not_a_crash_loop() {
    let mut script = Script::default();
    crash_loop(&mut script, &API, 0);
    script.process(2100, &API, "oom_kill", None);
    let (out, _) = run(&CorrelateConfig::default(), script.events.clone());
    assert!(
        summaries(&out).is_empty(),
        "no crash-loop with an oom_kill in the group"
    );

    script.kube(2200, &API, "OOMKilled");
    let (out, _) = run(&CorrelateConfig::default(), script.shuffled(4));
    let patterns: Vec<_> = summaries(&out)
        .iter()
        .map(|s| s.correlation.as_ref().unwrap().pattern.clone().unwrap())
        .collect();
    assert_eq!(patterns, ["oom-kill-cascade"]);
}

#[test]
fn a_specific_story_suppresses_the_deployment_sequence() {
    let mut script = Script::default();
    script
        .kube(0, &API, "Scheduled")
        .cni(300, &API, "ADD", None)
        .scope(600, &API, Some("start"), "active");
    crash_loop(&mut script, &API, 1000);
    script.process(4000, &API, "exec", None);
    let (out, _) = run(&CorrelateConfig::default(), script.events.clone());
    let patterns: Vec<_> = summaries(&out)
        .iter()
        .map(|s| s.correlation.as_ref().unwrap().pattern.clone().unwrap())
        .collect();
    assert_eq!(patterns, ["crash-loop"]);
}

#[test]
fn the_cluster_alone_tells_an_oom_kill_and_a_crash_loop() {
    let mut oom = Script::default();
    oom.terminated(0, &API, "OOMKilled", 137)
        .kube(1000, &API, "CrashLoopBackOff")
        .kube(1400, &API, "BackOff");
    let narrative = assert_one_summary(
        &oom,
        "oom-kill-cascade",
        "memory-limit-exceeded",
        "raise-memory-limit-or-fix-leak",
        "uid-api",
    );
    assert!(
        narrative.contains("container terminated OOMKilled"),
        "{narrative}"
    );

    let mut crashes = Script::default();
    crashes
        .terminated(0, &API, "Error", 1)
        .terminated(1000, &API, "Error", 1)
        .terminated(2000, &API, "Error", 2)
        .kube(2300, &API, "BackOff");
    let narrative = assert_one_summary(
        &crashes,
        "crash-loop",
        "application-crash",
        "inspect-application-logs",
        "uid-api",
    );
    assert!(
        narrative.contains("3 container terminations with a non-zero exit"),
        "{narrative}"
    );

    let mut clean = Script::default();
    clean
        .terminated(0, &API, "Error", 1)
        .terminated(1000, &API, "Completed", 0)
        .terminated(2000, &API, "Error", 1)
        .kube(2300, &API, "BackOff");
    assert!(summaries(&run(&CorrelateConfig::default(), clean.events).0).is_empty());
}

#[test]
fn with_the_kernels_evidence_too_each_story_is_told_once_by_the_original() {
    let mut script = Script::default();
    crash_loop(&mut script, &API, 0);
    for (i, ms) in [100, 1100, 2100].into_iter().enumerate() {
        script.terminated(ms, &API, "Error", 1 + i as i32);
    }
    let narrative = assert_one_summary(
        &script,
        "crash-loop",
        "application-crash",
        "inspect-application-logs",
        "uid-api",
    );
    assert!(
        narrative.contains("3 non-zero exits"),
        "the kernel's story: {narrative}"
    );

    let mut oom = Script::default();
    oom_kill(&mut oom, &API, 0);
    oom.terminated(300, &API, "OOMKilled", 137);
    let narrative = assert_one_summary(
        &oom,
        "oom-kill-cascade",
        "memory-limit-exceeded",
        "raise-memory-limit-or-fix-leak",
        "uid-api",
    );
    assert!(narrative.contains("kernel OOM kill"), "{narrative}");
}
