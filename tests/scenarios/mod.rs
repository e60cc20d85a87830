//! A generator of randomised, interleaved incident scenarios with ground truth, independent of
//! the `demo` source: raw events as each collector would report them (entities unresolved where
//! the collector cannot know the pod), background noise, and arrival out of event-time order
//! within the correlator's allowed lateness. Negative scenarios must produce no summary.
//! [`deployments`] generates pod starts whose first exec arrives before its scope; [`score`]
//! measures the chain's output against either generator's truths.
#![allow(dead_code)] // the accuracy tests and the golden tests use different parts

pub mod deployments;
pub mod score;

use serde_json::{Value, json};

/// The five catalog patterns, in the order the generator cycles through them.
pub const PATTERNS: [&str; 5] = [
    "pod-deployment-sequence",
    "network-failure-cascade",
    "oom-kill-cascade",
    "crash-loop",
    "node-runtime-failure",
];

/// The root cause each pattern of [`PATTERNS`] names.
pub const ROOT_CAUSES: [&str; 5] = [
    "scheduler-decision",
    "network-connectivity-loss",
    "memory-limit-exceeded",
    "application-crash",
    "container-runtime-failure",
];

/// What a scenario is expected to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Truth {
    /// One summary of `pattern` about the entity `id` (pod uid or node name), whose evidence
    /// is the events with ids `steps` (the pattern's required steps). `others` are the
    /// scenario's other events about the entity: like the steps, they must leave in the
    /// summary's group and name the entity.
    Summary {
        pattern: &'static str,
        id: String,
        steps: Vec<String>,
        others: Vec<String>,
    },
    /// No summary about these entity ids.
    Nothing { ids: Vec<String>, why: &'static str },
}

/// The generated stream and its ground truth.
pub struct Generated {
    /// NDJSON lines in arrival order.
    pub lines: Vec<String>,
    pub truths: Vec<Truth>,
}

/// splitmix64: deterministic for a seed, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn hex(&mut self, digits: usize) -> String {
        (0..digits)
            .map(|_| char::from_digit(self.below(16) as u32, 16).unwrap())
            .collect()
    }
}

/// A simulated pod with everything the collectors report about it.
struct Pod {
    uid: String,
    namespace: String,
    name: String,
    node: String,
    ip: String,
    sandbox: String,
    container: String,
    cgroup: u64,
}

const NS_PER_MS: i64 = 1_000_000;
/// How long before its scenario a running pod was listed: more than the arrival jitter, so the
/// listing arrives first, as it does for a pod that has been running.
const LISTED_BEFORE: i64 = 6_000 * NS_PER_MS;
/// 2026-11-27T00:00:00Z in nanoseconds since the epoch.
const START: i64 = 1_795_737_600_000_000_000;

/// One event in the making: event time, arrival key, JSON.
struct Pending {
    at: i64,
    arrival: i64,
    event: Value,
}

struct Builder {
    rng: Rng,
    events: Vec<Pending>,
    next_id: u64,
    pods: u64,
    /// Largest arrival delay; kept below the correlator's 5 s allowed lateness.
    max_delay_ms: i64,
}

impl Builder {
    /// A generator for `seed`, with the pod every scenario's client talks to already listed at
    /// [`START`].
    fn with_peer(seed: u64) -> (Builder, Pod) {
        let mut builder = Builder {
            rng: Rng(seed),
            events: Vec::new(),
            next_id: 0,
            pods: 0,
            max_delay_ms: 3000,
        };
        let peer = builder.pod();
        builder.listed(START, &peer);
        (builder, peer)
    }

    fn pod(&mut self) -> Pod {
        self.pods += 1;
        let n = self.pods;
        let uid = format!(
            "{}-{}-4{}-8{}-{}",
            self.rng.hex(8),
            self.rng.hex(4),
            self.rng.hex(3),
            self.rng.hex(3),
            self.rng.hex(12)
        );
        let node = format!("node-{}", n % 7 + 1);
        Pod {
            uid,
            namespace: ["shop", "payments", "search"][(n % 3) as usize].into(),
            name: format!("svc{}-{}-{}", n % 40, self.rng.hex(9), self.rng.hex(5)),
            node,
            ip: format!(
                "10.{}.{}.{}",
                100 + n / 65_000,
                (n / 250) % 250,
                n % 250 + 2
            ),
            sandbox: self.rng.hex(64),
            container: self.rng.hex(64),
            cgroup: 10_000 + n,
        }
    }

    /// Adds an event at `at` arriving up to `max_delay_ms` later.
    fn push(&mut self, at: i64, mut event: Value) {
        self.next_id += 1;
        event["id"] = json!(format!("evt_gen_{:08}", self.next_id));
        event["timestamp"] = json!(tapio_event::Timestamp(at).to_string());
        let delay = self.rng.below(self.max_delay_ms as u64) as i64 * NS_PER_MS;
        self.events.push(Pending {
            at,
            arrival: at + delay,
            event,
        });
    }

    /// The ids of the events added since there were `first` of them.
    fn ids_since(&self, first: usize) -> Vec<String> {
        self.events[first..]
            .iter()
            .map(|p| p.event["id"].as_str().unwrap().to_owned())
            .collect()
    }

    fn host(node: &str) -> Value {
        json!({"type": "host", "id": node, "node": node})
    }

    /// The Kubernetes watch's view of a running pod: what lets enrichment learn it.
    fn listed(&mut self, at: i64, pod: &Pod) {
        let event = json!({"type": "kubernetes", "source": "kubernetes",
            "entity": {"type": "pod", "id": pod.uid, "name": pod.name, "namespace": pod.namespace, "node": pod.node},
            "kubernetes": {"kind": "Pod", "name": pod.name, "namespace": pod.namespace, "uid": pod.uid, "action": "added",
                "pod_ip": pod.ip, "node": pod.node, "phase": "Running", "container_id": format!("containerd://{}", pod.container)}});
        self.push(at, event);
    }

    fn kube_event(&mut self, at: i64, pod: &Pod, reason: &str, message: &str) {
        let event = json!({"type": "kubernetes", "source": "kubernetes",
            "entity": {"type": "pod", "id": pod.uid, "name": pod.name, "namespace": pod.namespace, "node": pod.node},
            "kubernetes": {"kind": "Pod", "name": pod.name, "namespace": pod.namespace, "uid": pod.uid, "action": "added",
                "reason": reason, "message": message, "node": pod.node}});
        self.push(at, event);
    }

    fn pod_status(&mut self, at: i64, pod: &Pod, reason: &str) {
        let event = json!({"type": "kubernetes", "source": "kubernetes",
            "entity": {"type": "pod", "id": pod.uid, "name": pod.name, "namespace": pod.namespace, "node": pod.node},
            "kubernetes": {"kind": "Pod", "name": pod.name, "namespace": pod.namespace, "uid": pod.uid, "action": "modified",
                "reason": reason, "pod_ip": pod.ip, "phase": "Running", "container_id": format!("containerd://{}", pod.container)}});
        self.push(at, event);
    }

    fn cni(&mut self, at: i64, pod: &Pod, operation: &str, error: Option<&str>) {
        let mut network = json!({"operation": operation, "interface_name": "eth0", "ip_address": pod.ip,
            "netns": format!("/var/run/netns/cni-{}", &pod.sandbox[..8]), "container_id": pod.sandbox});
        if let Some(error) = error {
            network["error"] = json!(error);
        }
        let event = json!({"type": "network", "source": "cni",
            "entity": {"type": "pod", "id": format!("{}/{}", pod.namespace, pod.name), "name": pod.name, "namespace": pod.namespace, "node": pod.node},
            "network": network});
        self.push(at, event);
    }

    fn scope(&mut self, at: i64, pod: &Pod, job: &str, state: &str) {
        let slice = format!("kubepods-burstable-pod{}.slice", pod.uid.replace('-', "_"));
        let event = json!({"type": "systemd", "source": "systemd", "entity": Self::host(&pod.node),
            "systemd": {"unit": format!("cri-containerd-{}.scope", pod.container), "slice": slice,
                "active_state": state, "sub_state": if state == "active" { "running" } else { "dead" }, "job_type": job}});
        self.push(at, event);
    }

    fn process(&mut self, at: i64, pod: &Pod, operation: &str, exit_code: Option<i32>) {
        let mut process = json!({"operation": operation, "pid": 1000 + self.rng.below(30_000), "comm": "app",
            "cgroup_id": pod.cgroup, "container_id": pod.container});
        if let Some(code) = exit_code {
            process["exit_code"] = json!(code);
        }
        if operation == "oom_kill" {
            process["signal"] = json!(9);
        }
        let event = json!({"type": "process", "source": "ebpf", "entity": Self::host(&pod.node), "process": process});
        self.push(at, event);
    }

    fn socket(&mut self, at: i64, from: &Pod, to: &Pod, operation: &str) {
        let event = json!({"type": "network", "source": "ebpf", "entity": Self::host(&from.node),
            "network": {"operation": operation, "protocol": "tcp", "src_ip": from.ip, "src_port": 30_000 + self.rng.below(30_000),
                "dst_ip": to.ip, "dst_port": 8080},
            "process": {"pid": 4000 + self.rng.below(1000), "comm": "client"}});
        self.push(at, event);
    }

    fn unit(&mut self, at: i64, node: &str, unit: &str, job: Option<&str>, state: &str) {
        let mut systemd = json!({"unit": unit, "active_state": state});
        if let Some(job) = job {
            systemd["job_type"] = json!(job);
        }
        if state == "failed" {
            systemd["result"] = json!("exit-code");
        }
        let event = json!({"type": "systemd", "source": "systemd",
            "entity": {"type": "node", "id": node, "node": node}, "systemd": systemd});
        self.push(at, event);
    }

    fn node_event(&mut self, at: i64, node: &str, reason: &str) {
        let event = json!({"type": "kubernetes", "source": "kubernetes",
            "entity": {"type": "node", "id": node, "node": node},
            "kubernetes": {"kind": "Node", "name": node, "uid": node, "reason": reason, "action": "added"}});
        self.push(at, event);
    }

    /// Harmless traffic on `pod` between `from` and `until`.
    fn noise(&mut self, from: i64, until: i64, pod: &Pod, peer: &Pod) {
        let mut at = from;
        while at < until {
            match self.rng.below(3) {
                0 => self.process(at, pod, "exec", None),
                1 => self.process(at, pod, "exit", Some(0)),
                _ => self.socket(at, peer, pod, "connect"),
            }
            at += (200 + self.rng.below(1500) as i64) * NS_PER_MS;
        }
    }

    /// A step every 150–900 ms from `at`; returns the time after the last one.
    fn gap(&mut self, at: &mut i64) -> i64 {
        *at += (150 + self.rng.below(750) as i64) * NS_PER_MS;
        *at
    }

    /// The required steps of `pattern` on `pod` (or its node), spaced by `spacing` if given.
    fn steps(
        &mut self,
        pattern: &str,
        pod: &Pod,
        peer: &Pod,
        start: i64,
        leave_out: Option<usize>,
        spacing: Option<i64>,
    ) {
        let mut at = start;
        let mut step = 0usize;
        let mut next = |b: &mut Builder| -> Option<i64> {
            step += 1;
            let time = match spacing {
                Some(spacing) => start + spacing * step as i64,
                None => b.gap(&mut at),
            };
            (leave_out != Some(step)).then_some(time)
        };
        match pattern {
            "pod-deployment-sequence" => {
                if let Some(t) = next(self) {
                    self.kube_event(t, pod, "Scheduled", "Successfully assigned the pod")
                }
                if let Some(t) = next(self) {
                    self.cni(t, pod, "ADD", None)
                }
                if let Some(t) = next(self) {
                    self.scope(t, pod, "start", "active")
                }
                if let Some(t) = next(self) {
                    self.process(t, pod, "exec", None)
                }
            }
            "network-failure-cascade" => {
                if let Some(t) = next(self) {
                    self.socket(t, peer, pod, "retransmit")
                }
                if let Some(t) = next(self) {
                    self.cni(
                        t,
                        pod,
                        "CHECK",
                        Some("failed to set up interface eth0: link not found"),
                    )
                }
                if let Some(t) = next(self) {
                    self.kube_event(
                        t,
                        pod,
                        "Unhealthy",
                        "Readiness probe failed: connection refused",
                    )
                }
                if let Some(t) = next(self) {
                    self.scope(t, pod, "restart", "active")
                }
            }
            "oom-kill-cascade" => {
                if let Some(t) = next(self) {
                    self.process(t, pod, "oom_kill", None)
                }
                if let Some(t) = next(self) {
                    self.pod_status(t, pod, "OOMKilled")
                }
                if let Some(t) = next(self) {
                    self.kube_event(t, pod, "BackOff", "Back-off restarting failed container")
                }
            }
            "crash-loop" => {
                for _ in 0..3 {
                    if let Some(t) = next(self) {
                        self.process(t, pod, "exit", Some(1))
                    }
                }
                if let Some(t) = next(self) {
                    self.kube_event(t, pod, "BackOff", "Back-off restarting failed container")
                }
            }
            "node-runtime-failure" => {
                if let Some(t) = next(self) {
                    self.unit(t, &pod.node, "containerd.service", None, "failed")
                }
                if let Some(t) = next(self) {
                    self.node_event(t, &pod.node, "NodeNotReady")
                }
            }
            other => panic!("unknown pattern {other}"),
        }
    }
}

/// `positives` incident scenarios (cycling through the five patterns) and `negatives` of each
/// negative kind, interleaved, with noise, arriving up to 3 s out of order.
pub fn generate(seed: u64, positives: usize, negatives: usize) -> Generated {
    let (mut b, peer) = Builder::with_peer(seed);
    let mut truths = Vec::new();
    // Scenarios start 400 ms apart, so a dozen are in flight at any time; node incidents use
    // their own node names so two never share a node within the window.
    let mut clock = START + LISTED_BEFORE + 1_000 * NS_PER_MS;
    let mut node_incidents = 0;
    for i in 0..positives {
        let pattern = PATTERNS[i % PATTERNS.len()];
        let mut pod = b.pod();
        if pattern == "node-runtime-failure" {
            node_incidents += 1;
            pod.node = format!("edge-{node_incidents}");
        }
        let first_event = b.events.len();
        b.listed(clock - LISTED_BEFORE, &pod);
        b.noise(
            clock - 400 * NS_PER_MS,
            clock + 6_000 * NS_PER_MS,
            &pod,
            &peer,
        );
        let first_step = b.events.len();
        b.steps(pattern, &pod, &peer, clock, None, None);
        let steps = b.ids_since(first_step);
        // The pod's listing and traffic are not about its node.
        let (id, others) = if pattern == "node-runtime-failure" {
            (pod.node.clone(), Vec::new())
        } else {
            let mut others = b.ids_since(first_event);
            others.truncate(first_step - first_event);
            (pod.uid.clone(), others)
        };
        truths.push(Truth::Summary {
            pattern,
            id,
            steps,
            others,
        });
        clock += 400 * NS_PER_MS;
    }
    for i in 0..negatives {
        let pattern = PATTERNS[i % 4];
        // Steps split across two pods: the first half on one, the rest on another.
        let (a, c) = (b.pod(), b.pod());
        b.listed(clock - LISTED_BEFORE, &a);
        b.listed(clock - LISTED_BEFORE, &c);
        let mut script = Builder {
            rng: Rng(b.rng.next()),
            events: Vec::new(),
            next_id: 0,
            pods: 0,
            max_delay_ms: 1,
        };
        script.steps(pattern, &a, &peer, clock, None, None);
        // OOMKilled and BackOff together are a whole story (oom-kill-cascade's cluster-side
        // variant): the split falls between them.
        let split = match pattern {
            "oom-kill-cascade" => 2,
            _ => script.events.len() / 2,
        };
        for (k, pending) in script.events.into_iter().enumerate() {
            let owner = if k < split { &a } else { &c };
            b.push(pending.at, retarget(pending.event, &a, owner));
        }
        truths.push(Truth::Nothing {
            ids: vec![a.uid.clone(), c.uid.clone()],
            why: "steps split across two pods",
        });
        // Steps spread beyond the 60 s window, with nothing on the pod in between.
        let slow = b.pod();
        b.listed(clock - LISTED_BEFORE, &slow);
        b.steps(pattern, &slow, &peer, clock, None, Some(70_000 * NS_PER_MS));
        truths.push(Truth::Nothing {
            ids: vec![slow.uid.clone()],
            why: "steps spread beyond the window",
        });
        // An incomplete sequence: one required step missing.
        let partial = b.pod();
        b.listed(clock - LISTED_BEFORE, &partial);
        b.noise(
            clock - 400 * NS_PER_MS,
            clock + 6_000 * NS_PER_MS,
            &partial,
            &peer,
        );
        // The kernel's OOM kill is not needed: OOMKilled and BackOff alone are the story of
        // oom-kill-cascade's cluster-side variant, so the step left out is one of those two.
        let missing = match pattern {
            "oom-kill-cascade" => 2 + (b.rng.below(2) as usize),
            _ => 1 + (b.rng.below(3) as usize),
        };
        b.steps(pattern, &partial, &peer, clock, Some(missing), None);
        truths.push(Truth::Nothing {
            ids: vec![partial.uid.clone()],
            why: "incomplete sequence",
        });
        // A planned restart of containerd: stopped and started, never failed.
        let node = format!("planned-{i}");
        b.unit(clock, &node, "containerd.service", Some("stop"), "inactive");
        b.unit(
            clock + 800 * NS_PER_MS,
            &node,
            "containerd.service",
            Some("start"),
            "active",
        );
        b.node_event(clock + 400 * NS_PER_MS, &node, "NodeNotReady");
        truths.push(Truth::Nothing {
            ids: vec![node],
            why: "planned restart of containerd",
        });
        clock += 400 * NS_PER_MS;
    }
    b.events.sort_by_key(|p| (p.arrival, p.at));
    let lines = b.events.into_iter().map(|p| p.event.to_string()).collect();
    Generated { lines, truths }
}

/// Moves an event generated for `from` onto `to` (entity, names, ids and addresses).
fn retarget(event: Value, from: &Pod, to: &Pod) -> Value {
    let text = event
        .to_string()
        .replace(&from.uid, &to.uid)
        .replace(&from.uid.replace('-', "_"), &to.uid.replace('-', "_"))
        .replace(&from.name, &to.name)
        .replace(&from.container, &to.container)
        .replace(&from.sandbox, &to.sandbox)
        .replace(&format!("\"{}\"", from.ip), &format!("\"{}\"", to.ip));
    serde_json::from_str(&text).unwrap()
}

/// One scenario of `pattern` on one pod, in event-time order with light noise: the input of a
/// golden test.
pub fn single(pattern: &str, seed: u64) -> Vec<String> {
    let mut b = Builder {
        rng: Rng(seed),
        events: Vec::new(),
        next_id: 0,
        pods: 0,
        max_delay_ms: 1,
    };
    let peer = b.pod();
    let pod = b.pod();
    b.listed(START, &peer);
    b.listed(START + 100 * NS_PER_MS, &pod);
    b.noise(
        START + 200 * NS_PER_MS,
        START + 3_000 * NS_PER_MS,
        &pod,
        &peer,
    );
    b.steps(pattern, &pod, &peer, START + 1_000 * NS_PER_MS, None, None);
    b.events.sort_by_key(|p| (p.at, p.arrival));
    b.events.into_iter().map(|p| p.event.to_string()).collect()
}
