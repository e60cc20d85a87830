//! The stories the demo tells: a rollout that replaces a pod and the five incident patterns of
//! DESIGN.md section 5, each a script of steps with delays (the simulation plays them). Every
//! script ends with its subject healthy again, so the next story about it starts clean.

use super::cluster::Pod;

/// What happens to a pod, as one collector reports it.
#[derive(Debug, Clone, Copy)]
pub(super) enum PodStep {
    /// The Kubernetes watch's initial list: the pod already runs.
    Listed,
    /// A new replica takes the slot and is reported `added`, still Pending.
    Created,
    Running,
    Deleted,
    /// A container status reason on a pod update.
    Status(Status),
    Event(Reason),
    /// A CNI `ADD` or `DEL` for the pod's sandbox.
    Cni(&'static str),
    /// A CNI `CHECK` that finds the pod's interface gone.
    CniCheckFailed,
    ScopeStarted,
    /// The kubelet replaces the container (new id, cgroup and scope) and its scope starts.
    ContainerRestarted,
    ScopeStopped,
    /// The container's scope fails with this systemd `result`.
    ScopeFailed(&'static str),
    Exec,
    Exit {
        code: i32,
        signal: Option<i32>,
    },
    OomKill,
    /// Another pod's connection to this pod fails this way (`retransmit`, `timeout`, `error`).
    SocketFailure(&'static str),
}

/// What happens to a node.
#[derive(Debug, Clone, Copy)]
pub(super) enum NodeStep {
    /// The Kubernetes watch's initial list.
    Listed,
    UnitFailed,
    UnitRestarted,
    /// A core/v1 Event about the node (`NodeNotReady`, `NodeReady`).
    Event(&'static str),
}

/// Container status reasons the kubelet reports on pod updates.
#[derive(Debug, Clone, Copy)]
pub(super) enum Status {
    OomKilled,
    Error,
    CrashLoopBackOff,
}

/// Reasons of core/v1 Events about pods; some reasons come with more than one message.
#[derive(Debug, Clone, Copy)]
pub(super) enum Reason {
    Scheduled,
    Pulled,
    Created,
    Started,
    Stopping,
    ProbeKilling,
    ReadinessFailed,
    LivenessFailed,
    BackOff,
}

impl Reason {
    /// The `reason` Kubernetes reports.
    pub(super) fn name(self) -> &'static str {
        match self {
            Reason::Scheduled => "Scheduled",
            Reason::Pulled => "Pulled",
            Reason::Created => "Created",
            Reason::Started => "Started",
            Reason::Stopping | Reason::ProbeKilling => "Killing",
            Reason::ReadinessFailed | Reason::LivenessFailed => "Unhealthy",
            Reason::BackOff => "BackOff",
        }
    }

    /// The message Kubernetes reports with it, about `pod`.
    pub(super) fn message(self, pod: &Pod) -> String {
        let app = pod.app.name;
        let (ip, port) = (&pod.ip, pod.app.port);
        match self {
            Reason::Scheduled => format!("Successfully assigned {} to {}", pod.key, pod.node_name),
            Reason::Pulled => format!(
                "Container image \"{}\" already present on machine",
                pod.app.image
            ),
            Reason::Created => format!("Created container {app}"),
            Reason::Started => format!("Started container {app}"),
            Reason::Stopping => format!("Stopping container {app}"),
            Reason::ProbeKilling => {
                format!("Container {app} failed liveness probe, will be restarted")
            }
            Reason::ReadinessFailed => format!(
                "Readiness probe failed: Get \"http://{ip}:{port}/healthz\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ),
            Reason::LivenessFailed => format!(
                "Liveness probe failed: Get \"http://{ip}:{port}/healthz\": dial tcp {ip}:{port}: i/o timeout"
            ),
            Reason::BackOff => format!(
                "Back-off restarting failed container {app} in pod {}_{}({})",
                pod.name, pod.namespace, pod.uid
            ),
        }
    }
}

impl Status {
    /// The container status's reason and message, about `pod`.
    pub(super) fn reason_and_message(self, pod: &Pod) -> (&'static str, String) {
        let app = pod.app.name;
        match self {
            Status::OomKilled => (
                "OOMKilled",
                format!("container {app} terminated: OOMKilled, exit code 137"),
            ),
            Status::Error => (
                "Error",
                format!("container {app} terminated: Error, exit code 1"),
            ),
            Status::CrashLoopBackOff => (
                "CrashLoopBackOff",
                format!(
                    "back-off 40s restarting failed container={app} pod={}_{}({})",
                    pod.name, pod.namespace, pod.uid
                ),
            ),
        }
    }
}

/// The node units whose failure takes the node's container runtime down.
pub(super) const NODE_UNITS: [&str; 2] = ["containerd.service", "kubelet.service"];

/// A story's steps, each with its delay in simulated milliseconds after the previous one.
pub(super) enum Script {
    Pod(&'static [(u32, PodStep)]),
    Node(&'static [(u32, NodeStep)]),
}

/// The stories, named after the `correlate` pattern each one completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scenario {
    /// pod-deployment-sequence: the pod is replaced by a new replica (Recreate strategy). Also
    /// the cluster's background churn.
    Rollout,
    /// network-failure-cascade: connections to the pod fail, CNI finds its interface gone, the
    /// probes fail and the kubelet restarts the container.
    NetworkFailure,
    /// oom-kill-cascade: the kernel OOM-kills the main process; the kubelet backs off.
    OomKill,
    /// crash-loop: the main process exits with code 1 three times in a row; the kubelet backs off.
    CrashLoop,
    /// node-runtime-failure: containerd or the kubelet fails and the node goes NotReady.
    NodeFailure,
}

/// The incidents `incident_rate` starts, in the order they take turns.
pub(super) const INCIDENTS: [Scenario; 5] = [
    Scenario::Rollout,
    Scenario::NetworkFailure,
    Scenario::OomKill,
    Scenario::CrashLoop,
    Scenario::NodeFailure,
];

const fn exit(code: i32, signal: Option<i32>) -> PodStep {
    PodStep::Exit { code, signal }
}

const ROLLOUT: &[(u32, PodStep)] = &[
    (0, PodStep::Event(Reason::Stopping)),
    (300, exit(0, None)),
    (20, PodStep::ScopeStopped),
    (150, PodStep::Cni("DEL")),
    (100, PodStep::Deleted),
    (200, PodStep::Created),
    (5, PodStep::Event(Reason::Scheduled)),
    (400, PodStep::Cni("ADD")),
    (300, PodStep::Event(Reason::Pulled)),
    (50, PodStep::Event(Reason::Created)),
    (20, PodStep::ScopeStarted),
    (10, PodStep::Exec),
    (30, PodStep::Event(Reason::Started)),
    (1500, PodStep::Running),
];

const NETWORK_FAILURE: &[(u32, PodStep)] = &[
    (0, PodStep::SocketFailure("retransmit")),
    (200, PodStep::SocketFailure("retransmit")),
    (800, PodStep::SocketFailure("timeout")),
    (300, PodStep::CniCheckFailed),
    (700, PodStep::Event(Reason::ReadinessFailed)),
    (1000, PodStep::Event(Reason::LivenessFailed)),
    (500, PodStep::Event(Reason::ProbeKilling)),
    (300, exit(143, Some(15))),
    (20, PodStep::ScopeStopped),
    (1000, PodStep::ContainerRestarted),
    (10, PodStep::Exec),
    (2000, PodStep::Running),
];

const OOM_KILL: &[(u32, PodStep)] = &[
    (0, PodStep::OomKill),
    (5, exit(137, Some(9))),
    (20, PodStep::ScopeFailed("oom-kill")),
    (400, PodStep::Status(Status::OomKilled)),
    (1000, PodStep::Event(Reason::BackOff)),
    (1500, PodStep::ContainerRestarted),
    (10, PodStep::Exec),
    (2000, PodStep::Running),
];

const CRASH_LOOP: &[(u32, PodStep)] = &[
    (0, exit(1, None)),
    (20, PodStep::ScopeFailed("exit-code")),
    (300, PodStep::Status(Status::Error)),
    (700, PodStep::ContainerRestarted),
    (10, PodStep::Exec),
    (800, exit(1, None)),
    (20, PodStep::ScopeFailed("exit-code")),
    (1200, PodStep::ContainerRestarted),
    (10, PodStep::Exec),
    (800, exit(1, None)),
    (20, PodStep::ScopeFailed("exit-code")),
    (200, PodStep::Status(Status::CrashLoopBackOff)),
    (50, PodStep::Event(Reason::BackOff)),
    (3000, PodStep::ContainerRestarted),
    (10, PodStep::Exec),
    (2000, PodStep::Running),
];

const NODE_FAILURE: &[(u32, NodeStep)] = &[
    (0, NodeStep::UnitFailed),
    (2500, NodeStep::Event("NodeNotReady")),
    (1500, NodeStep::UnitRestarted),
    (1000, NodeStep::Event("NodeReady")),
];

impl Scenario {
    /// The steps that tell this story.
    pub(super) fn script(self) -> Script {
        match self {
            Scenario::Rollout => Script::Pod(ROLLOUT),
            Scenario::NetworkFailure => Script::Pod(NETWORK_FAILURE),
            Scenario::OomKill => Script::Pod(OOM_KILL),
            Scenario::CrashLoop => Script::Pod(CRASH_LOOP),
            Scenario::NodeFailure => Script::Node(NODE_FAILURE),
        }
    }
}
