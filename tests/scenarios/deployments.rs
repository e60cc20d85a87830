//! Pod starts on busy nodes, with the arrival order that defeats linking by what the enricher
//! knew when it saw an event. A pod is scheduled; its CNI `ADD` and a status update naming its
//! IP (but not yet its container) come in either order, in event time and in arrival; the
//! systemd scope of its container starts (its slice names the pod) and the container's first
//! `exec` follows, often at the same instant and often *arriving* before the scope, so
//! `semantic_enrich` cannot resolve it when it sees it. Later processes of the container may
//! carry only their cgroup id, a peer connects to the pod's IP, and a later status update may
//! list the container. Several pods start at once on one node.
//!
//! Near misses must produce no summary: a pod whose container never execs while another pod's
//! container on the same node starts and execs at the same instants (arriving early too), and
//! a pod whose first exec comes beyond the window.

use super::*;

/// Nodes the waves of pod starts cycle through, so starts on one node overlap.
const NODES: usize = 5;
/// Event time between two waves of pod starts.
const WAVE_EVERY: i64 = 500 * NS_PER_MS;
/// Beyond the correlator's 60 s window.
const BEYOND_WINDOW: i64 = 70_000 * NS_PER_MS;

/// `waves` waves of one to four pods starting at once on one node, every third wave with a
/// pod whose container does not exec while another pod's does, every third with a pod whose
/// first exec comes beyond the window; arrival up to ~4 s out of event-time order.
pub fn generate(seed: u64, waves: usize) -> Generated {
    let (mut b, peer) = Builder::with_peer(seed);
    let mut truths = Vec::new();
    let mut clock = START + LISTED_BEFORE;
    for wave in 0..waves {
        let node = format!("node-{}", wave % NODES + 1);
        let starting = 1 + b.rng.below(4);
        for _ in 0..starting {
            let pod = b.pod_on(&node);
            let at = clock + b.ms(300);
            let (steps, others) = b.deployment(at, &pod, &peer);
            truths.push(Truth::Summary {
                pattern: "pod-deployment-sequence",
                id: pod.uid.clone(),
                steps,
                others,
            });
        }
        let near_miss_at = clock + b.ms(300);
        match wave % 3 {
            0 => {
                let (idle, other) = (b.pod_on(&node), b.pod_on(&node));
                let started = b.start_container(near_miss_at, &idle);
                let scope = b.scope_only(started.scope_at, &other);
                b.first_exec(started.scope_at, scope, &other);
                truths.push(Truth::Nothing {
                    ids: vec![idle.uid.clone(), other.uid.clone()],
                    why: "the exec is in another pod's container",
                });
            }
            1 => {
                let slow = b.pod_on(&node);
                let started = b.start_container(near_miss_at, &slow);
                b.process(started.scope_at + BEYOND_WINDOW, &slow, "exec", None);
                truths.push(Truth::Nothing {
                    ids: vec![slow.uid.clone()],
                    why: "the first exec comes beyond the window",
                });
            }
            _ => {}
        }
        clock += WAVE_EVERY;
    }
    b.events.sort_by_key(|p| (p.arrival, p.at));
    let lines = b.events.into_iter().map(|p| p.event.to_string()).collect();
    Generated { lines, truths }
}

/// A pod started up to its container's scope: where its events are among the pushed ones, and
/// when the scope started.
struct Started {
    /// Indices into the builder's events of the `Scheduled` event, the CNI `ADD` and the scope.
    steps: [usize; 3],
    /// Index of the status update.
    status: usize,
    scope: usize,
    scope_at: i64,
}

impl Builder {
    /// A new pod placed on `node`.
    fn pod_on(&mut self, node: &str) -> Pod {
        let mut pod = self.pod();
        pod.node = node.to_owned();
        pod
    }

    /// A random duration below `below_ms` milliseconds, in nanoseconds.
    fn ms(&mut self, below_ms: u64) -> i64 {
        self.rng.below(below_ms) as i64 * NS_PER_MS
    }

    /// Makes the event at index `later` arrive after the one at index `earlier` (within half
    /// a second of it) unless it already does.
    fn arrive_after(&mut self, earlier: usize, later: usize) {
        let earliest = self.events[earlier].arrival;
        let after = earliest + 1 + self.ms(500);
        let event = &mut self.events[later];
        if event.arrival <= earliest {
            event.arrival = after.max(event.at);
        }
    }

    /// A status update of a starting pod: its IP, and its container once it runs.
    fn status(&mut self, at: i64, pod: &Pod, running: bool) {
        let mut kubernetes = json!({"kind": "Pod", "name": pod.name, "namespace": pod.namespace,
            "uid": pod.uid, "action": "modified", "pod_ip": pod.ip, "node": pod.node,
            "phase": if running { "Running" } else { "Pending" }});
        if running {
            kubernetes["container_id"] = json!(format!("containerd://{}", pod.container));
        }
        let event = json!({"type": "kubernetes", "source": "kubernetes",
            "entity": {"type": "pod", "id": pod.uid, "name": pod.name, "namespace": pod.namespace, "node": pod.node},
            "kubernetes": kubernetes});
        self.push(at, event);
    }

    /// The scope of `pod`'s container starting at `at`; returns its index.
    fn scope_only(&mut self, at: i64, pod: &Pod) -> usize {
        self.scope(at, pod, "start", "active");
        self.events.len() - 1
    }

    /// `pod` scheduled at `at`, its network added and its status updated (in either order),
    /// and its container's scope started.
    fn start_container(&mut self, at: i64, pod: &Pod) -> Started {
        let scheduled = self.events.len();
        self.kube_event(at, pod, "Scheduled", "Successfully assigned the pod");
        let cni_at = at + 200 * NS_PER_MS + self.ms(600);
        self.cni(cni_at, pod, "ADD", None);
        let cni = self.events.len() - 1;
        let status_at = cni_at - 300 * NS_PER_MS + self.ms(600);
        self.status(status_at, pod, false);
        let status = self.events.len() - 1;
        if self.rng.below(2) == 0 {
            self.arrive_after(cni, status);
        } else {
            self.arrive_after(status, cni);
        }
        let scope_at = cni_at.max(status_at) + 300 * NS_PER_MS + self.ms(600);
        let scope = self.scope_only(scope_at, pod);
        Started {
            steps: [scheduled, cni, scope],
            status,
            scope,
            scope_at,
        }
    }

    /// The first exec in `pod`'s container, at the instant its scope (at index `scope`)
    /// started or up to 0.6 s later, arriving before the scope half of the time; returns its
    /// index.
    fn first_exec(&mut self, scope_at: i64, scope: usize, pod: &Pod) -> usize {
        let at = match self.rng.below(3) {
            0 => scope_at,
            _ => scope_at + 1 + self.ms(600),
        };
        self.process(at, pod, "exec", None);
        let exec = self.events.len() - 1;
        if self.rng.below(2) == 0 {
            self.arrive_after(exec, scope);
        } else {
            self.arrive_after(scope, exec);
        }
        exec
    }

    /// A whole deployment of `pod` from `at`, with the container's later traffic; returns
    /// the ids of the pattern's step events and of the pod's other events.
    fn deployment(&mut self, at: i64, pod: &Pod, peer: &Pod) -> (Vec<String>, Vec<String>) {
        let started = self.start_container(at, pod);
        let exec = self.first_exec(started.scope_at, started.scope, pod);
        let traffic = self.events.len();
        let mut later = self.events[exec].at;
        for _ in 0..3 {
            later += 200 * NS_PER_MS + self.ms(700);
            match self.rng.below(3) {
                0 => self.process(later, pod, "exec", None),
                1 => {
                    // Known by its cgroup only: linked through the exec that carried both.
                    self.process(later, pod, "exit", Some(0));
                    let exit = self.events.len() - 1;
                    if let Some(process) = self.events[exit].event["process"].as_object_mut() {
                        process.remove("container_id");
                    }
                }
                _ => self.socket(later, peer, pod, "connect"),
            }
        }
        if self.rng.below(2) == 0 {
            let running_at = later + self.ms(1000);
            self.status(running_at, pod, true);
        }
        let id = |b: &Builder, i: usize| b.events[i].event["id"].as_str().unwrap().to_owned();
        let steps = started
            .steps
            .iter()
            .chain([&exec])
            .map(|&i| id(self, i))
            .collect();
        let mut others = vec![id(self, started.status)];
        others.extend(self.ids_since(traffic));
        (steps, others)
    }
}
