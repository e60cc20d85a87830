//! The simulation loop: a simulated clock that advances a few milliseconds per event, stories
//! (rollouts, incidents) whose steps fall due on that clock, and background eBPF traffic
//! (connections, short-lived processes) filling the time between them.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use tapio_event::{KubeAction, ProcessContext, SystemdContext, Timestamp, UnifiedEvent};

use super::cluster::{Cluster, Pod, Rng};
use super::events::{
    Stamp, cni, in_container, main_process, node_entity, node_object, pod_event, pod_update,
    process_event, scope_change, tcp, unit_change, unit_state,
};
use super::scenario::{INCIDENTS, NODE_UNITS, NodeStep, PodStep, Scenario, Script};

/// Simulated time between two events when no `rate` is set: uniform in 1..4 ms.
pub(super) const STEP_NANOS: (u64, u64) = (1_000_000, 4_000_000);
/// Mean events between two background rollouts.
const ROLLOUT_EVERY: u64 = 500;
/// Open connections and running short-lived processes the background keeps at most.
const MAX_OPEN: usize = 32;
/// Short-lived commands run inside containers (probes, scripts): `comm` and executable.
const TOOLS: [(&str, &str); 6] = [
    ("sh", "/bin/sh"),
    ("curl", "/usr/bin/curl"),
    ("grpc_health_pro", "/bin/grpc_health_probe"),
    ("cat", "/bin/cat"),
    ("wget", "/usr/bin/wget"),
    ("date", "/bin/date"),
];

/// What a simulation is made of; `DemoConfig::build` has validated it.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) pods: usize,
    pub(super) nodes: usize,
    /// Incidents started per 1000 events.
    pub(super) incident_rate: f64,
    pub(super) seed: u64,
    /// Range of simulated time between two events, in ns: [`STEP_NANOS`], or around 1/rate so
    /// a rate-limited demo's clock keeps pace with the wall clock (and windows on event time,
    /// such as the correlator's, behave as they would on a real node).
    pub(super) step_nanos: (u64, u64),
}

/// One step of a story about a pod or a node.
#[derive(Debug, Clone, Copy)]
enum Action {
    Pod(usize, PodStep),
    Node(usize, &'static str, NodeStep),
}

/// A step waiting for its time; the last step of a story frees its subject.
#[derive(Debug)]
struct ScheduledStep {
    due: i64,
    seq: u64,
    action: Action,
    last: bool,
}

impl Ord for ScheduledStep {
    /// Earliest first (the heap is a max-heap), scheduling order among equals.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

impl PartialOrd for ScheduledStep {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for ScheduledStep {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for ScheduledStep {}

/// An open TCP connection, reported again when it closes.
struct Flow {
    client: Arc<Pod>,
    server: Arc<Pod>,
    src_port: u16,
    /// Seen by the server's `accept` rather than the client's `connect`.
    accepted: bool,
}

/// A short-lived process running in a container, reported again when it exits.
struct Process {
    pod: Arc<Pod>,
    pid: u32,
    tool: (&'static str, &'static str),
}

/// The running simulation; [`Simulation::fill`] is all the source calls.
pub(super) struct Simulation {
    pub(super) rng: Rng,
    pub(super) stamp: Stamp,
    pub(super) cluster: Cluster,
    pending: BinaryHeap<ScheduledStep>,
    seq: u64,
    flows: VecDeque<Flow>,
    processes: VecDeque<Process>,
    emitted: u64,
    /// Mean events between incidents; `None` when incidents are off.
    incident_every: Option<u64>,
    next_incident: u64,
    next_rollout: u64,
    incidents: usize,
    settings_step: (u64, u64),
}

impl Simulation {
    /// A cluster as the Kubernetes watch first lists it (every node and pod `added`), with the
    /// clock at `start`.
    pub(super) fn new(settings: &Settings, start: Timestamp) -> Self {
        let mut rng = Rng::new(settings.seed);
        let cluster = Cluster::new(settings.pods, settings.nodes, &mut rng);
        let incident_every = (settings.incident_rate > 0.0)
            .then(|| (1000.0 / settings.incident_rate).round().clamp(1.0, 1e12) as u64);
        let mut simulation = Simulation {
            stamp: Stamp::new(settings.seed.rotate_left(32) ^ 0x5DEE_CE66_D1CE_5EED, start),
            rng,
            cluster,
            pending: BinaryHeap::new(),
            seq: 0,
            flows: VecDeque::with_capacity(MAX_OPEN + 1),
            processes: VecDeque::with_capacity(MAX_OPEN + 1),
            emitted: 0,
            incident_every,
            next_incident: 0,
            next_rollout: 0,
            incidents: 0,
            settings_step: settings.step_nanos,
        };
        simulation.next_incident =
            incident_every.map_or(u64::MAX, |mean| simulation.interval(mean));
        simulation.next_rollout = simulation.interval(ROLLOUT_EVERY);
        // The unit is only read by unit steps, which the initial list has none of.
        for node in 0..settings.nodes {
            simulation.push(
                0,
                Action::Node(node, NODE_UNITS[0], NodeStep::Listed),
                false,
            );
        }
        for slot in 0..settings.pods {
            simulation.push(0, Action::Pod(slot, PodStep::Listed), false);
        }
        simulation
    }

    /// Appends the next `n` events to `out`, or fewer once the simulated clock would pass
    /// [`Timestamp::MAX`]: event time never wraps, so the simulation is over there.
    pub(super) fn fill(&mut self, out: &mut Vec<UnifiedEvent>, n: usize) {
        out.extend((0..n).map_while(|_| self.next_event()));
    }

    fn next_event(&mut self) -> Option<UnifiedEvent> {
        let (shortest, longest) = self.settings_step;
        let step = self.rng.range(shortest, longest);
        self.stamp.now = Timestamp(self.stamp.now.as_nanos().checked_add_unsigned(step)?);
        self.emitted += 1;
        if self.emitted >= self.next_rollout {
            self.start(Scenario::Rollout);
            self.next_rollout = self.emitted + self.interval(ROLLOUT_EVERY);
        }
        if let Some(mean) = self.incident_every
            && self.emitted >= self.next_incident
        {
            if self.start(INCIDENTS[self.incidents % INCIDENTS.len()]) {
                self.incidents += 1;
            }
            self.next_incident = self.emitted + self.interval(mean);
        }
        Some(match self.pending.peek() {
            Some(next) if next.due <= self.stamp.now.as_nanos() => {
                let pending = self.pending.pop().expect("peeked");
                self.perform(pending)
            }
            _ => self.background(),
        })
    }

    /// Events until the next story: uniform around `mean`, never zero.
    fn interval(&mut self, mean: u64) -> u64 {
        mean / 2 + self.rng.below(mean) + 1
    }

    /// Schedules `scenario` about a pod or node no other story is about; false when none was
    /// found.
    fn start(&mut self, scenario: Scenario) -> bool {
        match scenario.script() {
            Script::Pod(steps) => {
                let Some(slot) =
                    self.free(|sim, i| sim.cluster.slots[i].busy, self.cluster.slots.len())
                else {
                    return false;
                };
                self.cluster.slots[slot].busy = true;
                self.schedule(steps, |step| Action::Pod(slot, step));
            }
            Script::Node(steps) => {
                let Some(node) =
                    self.free(|sim, i| sim.cluster.nodes[i].busy, self.cluster.nodes.len())
                else {
                    return false;
                };
                self.cluster.nodes[node].busy = true;
                let unit = self.rng.pick(&NODE_UNITS);
                self.schedule(steps, |step| Action::Node(node, unit, step));
            }
        }
        true
    }

    /// A random index among `len` that is not `taken`, after a few tries.
    fn free(&mut self, taken: impl Fn(&Self, usize) -> bool, len: usize) -> Option<usize> {
        for _ in 0..8 {
            let candidate = self.rng.index(len);
            if !taken(self, candidate) {
                return Some(candidate);
            }
        }
        None
    }

    fn schedule<S: Copy>(&mut self, steps: &[(u32, S)], action: impl Fn(S) -> Action) {
        let mut due = self.stamp.now.as_nanos();
        for (i, &(delay_ms, step)) in steps.iter().enumerate() {
            // ±25 % jitter so that no two stories look alike.
            let nanos = u64::from(delay_ms) * 1_000_000;
            // A step due past the end of time never comes: the clock stops first.
            due = due.saturating_add_unsigned(nanos * 3 / 4 + self.rng.below(nanos / 2 + 1));
            self.push(due, action(step), i + 1 == steps.len());
        }
    }

    fn push(&mut self, due: i64, action: Action, last: bool) {
        self.seq += 1;
        let seq = self.seq;
        self.pending.push(ScheduledStep {
            due,
            seq,
            action,
            last,
        });
    }

    fn perform(&mut self, pending: ScheduledStep) -> UnifiedEvent {
        match pending.action {
            Action::Pod(slot, step) => {
                self.cluster.slots[slot].busy &= !pending.last;
                self.pod_step(slot, step)
            }
            Action::Node(node, unit, step) => {
                self.cluster.nodes[node].busy &= !pending.last;
                self.node_step(node, unit, step)
            }
        }
    }

    /// A running pod other than the one in `slot`: pods in a story (starting, restarting,
    /// going away) get no background traffic, unless every pod is in one.
    pub(super) fn ready_pod(&mut self, except: usize) -> Arc<Pod> {
        let len = self.cluster.slots.len();
        let slot = self
            .free(|sim, i| i == except || sim.cluster.slots[i].busy, len)
            .unwrap_or_else(|| self.rng.index(len));
        Arc::clone(&self.cluster.slots[slot].pod)
    }

    /// Three quarters TCP, one quarter processes; each opens a connection or process or ends one.
    fn background(&mut self) -> UnifiedEvent {
        let ends = self.rng.below(2) == 0;
        if self.rng.below(4) < 3 {
            match self.flows.len() {
                n if n > MAX_OPEN || (n > 0 && ends) => self.close_flow(),
                _ => self.open_flow(),
            }
        } else {
            match self.processes.len() {
                n if n > MAX_OPEN || (n > 0 && ends) => self.exit_process(),
                _ => self.exec_process(),
            }
        }
    }

    fn open_flow(&mut self) -> UnifiedEvent {
        let client = self.ready_pod(usize::MAX);
        let server = self.ready_pod(usize::MAX);
        let src_port = self.rng.range(32_768, 61_000) as u16;
        let accepted = self.rng.below(2) == 0;
        let (operation, owner) = if accepted {
            ("accept", &server)
        } else {
            ("connect", &client)
        };
        let event = tcp(
            &mut self.stamp,
            &client,
            &server,
            src_port,
            operation,
            owner,
        );
        self.flows.push_back(Flow {
            client,
            server,
            src_port,
            accepted,
        });
        event
    }

    fn close_flow(&mut self) -> UnifiedEvent {
        let flow = self.flows.pop_front().expect("only called with open flows");
        let owner = if flow.accepted {
            &flow.server
        } else {
            &flow.client
        };
        tcp(
            &mut self.stamp,
            &flow.client,
            &flow.server,
            flow.src_port,
            "close",
            owner,
        )
    }

    fn exec_process(&mut self) -> UnifiedEvent {
        let pod = self.ready_pod(usize::MAX);
        let pid = self.rng.pid();
        let tool = self.rng.pick(&TOOLS);
        let process = in_container(&pod, "exec", pid, pod.container.main_pid, tool);
        let event = process_event(&mut self.stamp, &pod, process);
        self.processes.push_back(Process { pod, pid, tool });
        event
    }

    fn exit_process(&mut self) -> UnifiedEvent {
        let Process { pod, pid, tool } = self
            .processes
            .pop_front()
            .expect("only called with running processes");
        let process = ProcessContext {
            exit_code: Some(0),
            ..in_container(&pod, "exit", pid, pod.container.main_pid, tool)
        };
        process_event(&mut self.stamp, &pod, process)
    }
}

impl Simulation {
    /// The event of `step` about the pod in `slot`, applying the step to the cluster first.
    pub(super) fn pod_step(&mut self, slot: usize, step: PodStep) -> UnifiedEvent {
        match step {
            PodStep::Created => self.cluster.replace(slot, &mut self.rng),
            PodStep::ContainerRestarted => self.cluster.restart_container(slot, &mut self.rng),
            _ => {}
        }
        let pod = Arc::clone(&self.cluster.slots[slot].pod);
        let stamp = &mut self.stamp;
        match step {
            PodStep::Listed => pod_update(stamp, &pod, KubeAction::Added, "Running"),
            PodStep::Created => pod_update(stamp, &pod, KubeAction::Added, "ScheduledStep"),
            PodStep::Running => pod_update(stamp, &pod, KubeAction::Modified, "Running"),
            PodStep::Deleted => pod_update(stamp, &pod, KubeAction::Deleted, "Running"),
            PodStep::Status(status) => {
                let mut event = pod_update(stamp, &pod, KubeAction::Modified, "Running");
                if let Some(kubernetes) = event.kubernetes.as_mut() {
                    let (reason, message) = status.reason_and_message(&pod);
                    kubernetes.reason = Some(reason.to_owned());
                    kubernetes.message = Some(message);
                }
                event
            }
            PodStep::Event(reason) => pod_event(stamp, &pod, reason.name(), reason.message(&pod)),
            PodStep::Cni(operation) => cni(stamp, &pod, operation, None),
            PodStep::CniCheckFailed => cni(
                stamp,
                &pod,
                "CHECK",
                Some("failed to set up interface eth0: link not found"),
            ),
            PodStep::ScopeStarted | PodStep::ContainerRestarted => {
                let started = SystemdContext {
                    job_type: Some("start".to_owned()),
                    main_pid: Some(pod.container.main_pid),
                    ..unit_state("active", "running")
                };
                scope_change(stamp, &pod, started)
            }
            PodStep::ScopeStopped => {
                let stopped = SystemdContext {
                    job_type: Some("stop".to_owned()),
                    result: Some("success".to_owned()),
                    ..unit_state("inactive", "dead")
                };
                scope_change(stamp, &pod, stopped)
            }
            PodStep::ScopeFailed(result) => {
                let failed = SystemdContext {
                    result: Some(result.to_owned()),
                    ..unit_state("failed", "failed")
                };
                scope_change(stamp, &pod, failed)
            }
            PodStep::Exec => process_event(stamp, &pod, main_process(&pod, "exec")),
            PodStep::Exit { code, signal } => {
                let process = ProcessContext {
                    exit_code: Some(code),
                    signal,
                    ..main_process(&pod, "exit")
                };
                process_event(stamp, &pod, process)
            }
            PodStep::OomKill => {
                let process = ProcessContext {
                    signal: Some(9),
                    ..main_process(&pod, "oom_kill")
                };
                process_event(stamp, &pod, process)
            }
            PodStep::SocketFailure(operation) => {
                let client = self.ready_pod(slot);
                let src_port = self.rng.range(32_768, 61_000) as u16;
                tcp(&mut self.stamp, &client, &pod, src_port, operation, &client)
            }
        }
    }

    /// The event of `step` about `node`, whose failing runtime unit is `unit`.
    pub(super) fn node_step(
        &mut self,
        node: usize,
        unit: &'static str,
        step: NodeStep,
    ) -> UnifiedEvent {
        let node = &self.cluster.nodes[node];
        let stamp = &mut self.stamp;
        let unit_event = |stamp: &mut Stamp, change: SystemdContext| {
            let systemd = SystemdContext {
                unit: Some(unit.to_owned()),
                ..change
            };
            unit_change(stamp, node_entity(&node.name), systemd)
        };
        match step {
            NodeStep::Listed => node_object(stamp, node, None),
            NodeStep::Event(reason) => node_object(stamp, node, Some(reason)),
            NodeStep::UnitFailed => {
                let failed = SystemdContext {
                    result: Some("exit-code".to_owned()),
                    ..unit_state("failed", "failed")
                };
                unit_event(stamp, failed)
            }
            NodeStep::UnitRestarted => {
                let restarted = SystemdContext {
                    job_type: Some("restart".to_owned()),
                    result: Some("success".to_owned()),
                    main_pid: Some(self.rng.pid()),
                    ..unit_state("active", "running")
                };
                unit_event(stamp, restarted)
            }
        }
    }
}
