//! `UnifiedEvent`, the one schema every layer shares (DESIGN.md section 2). Its JSON form is a
//! public contract: absent values are omitted (never `null`, `0` or `""`), unknown fields are an
//! error, and contexts are boxed options so an event that lacks them stays small.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::time::Timestamp;
use crate::units::ConfigDuration;

/// Free-form string map (`entity.attributes`, `kubernetes.labels`); sorted so output is stable.
pub type StringMap = BTreeMap<String, String>;

/// The event every source produces, every transform refines and every sink ships.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnifiedEvent {
    /// Unique id (`evt_` + a ULID). Read events without one are given one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// When it happened. Read events without one get the time they were read.
    #[serde(default, skip_serializing_if = "Timestamp::is_unset")]
    pub timestamp: Timestamp,
    /// Which context carries the event's main facts.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The type of the component that made the event (`ebpf`, `demo`, `correlate`, …).
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic: Option<Box<SemanticContext>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_context: Option<Box<TraceContext>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<Box<Entity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<Box<NetworkContext>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Box<ProcessContext>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<Box<KubernetesContext>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd: Option<Box<SystemdContext>>,
    /// Free-form application data (any JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact: Option<Box<ImpactContext>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Box<CorrelationContext>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anomaly: Option<Box<AnomalyContext>>,
    /// The original bytes the event was made from, standard base64 with padding on the wire.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "base64_bytes"
    )]
    #[schemars(with = "Option<String>")]
    pub raw_data: Option<Vec<u8>>,
}

impl UnifiedEvent {
    /// A bare event of `kind` from `source`; contexts are added by the caller.
    pub fn new(kind: EventType, source: impl Into<String>, timestamp: Timestamp) -> Self {
        UnifiedEvent {
            id: String::new(),
            timestamp,
            kind,
            source: source.into(),
            semantic: None,
            trace_context: None,
            entity: None,
            network: None,
            process: None,
            kubernetes: None,
            systemd: None,
            application: None,
            impact: None,
            correlation: None,
            anomaly: None,
            raw_data: None,
        }
    }
}

impl Timestamp {
    /// The zero instant doubles as "not given" on input; no real event happens at the epoch.
    pub fn is_unset(&self) -> bool {
        self.0 == 0
    }
}

/// What kind of fact an event reports: a collector's (`network` … `application`), or what a
/// transform derived (`correlation` summaries, `anomaly` for a rate far above its baseline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Network,
    Process,
    Kubernetes,
    Systemd,
    Application,
    Correlation,
    Anomaly,
}

impl EventType {
    /// Every event type, in declaration order (`kind as usize` indexes it), for tables that
    /// components index by type.
    pub const ALL: [EventType; 7] = [
        EventType::Network,
        EventType::Process,
        EventType::Kubernetes,
        EventType::Systemd,
        EventType::Application,
        EventType::Correlation,
        EventType::Anomaly,
    ];

    /// The wire name, for templates and text output.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Network => "network",
            EventType::Process => "process",
            EventType::Kubernetes => "kubernetes",
            EventType::Systemd => "systemd",
            EventType::Application => "application",
            EventType::Correlation => "correlation",
            EventType::Anomaly => "anomaly",
        }
    }
}

/// Meaning attached by collectors and `semantic_enrich`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SemanticContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// One specific sentence a human can read in a console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub narrative: Option<String>,
    /// 0..1: how sure the producer is of this interpretation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

/// W3C trace context, so events can be joined with traces.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceContext {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
}

/// The thing an event is about; correlation groups events by it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    #[serde(rename = "type")]
    pub kind: EntityType,
    /// Pod uid when known, else a stable key such as `namespace/name`.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "StringMap::is_empty")]
    pub attributes: StringMap,
}

impl Entity {
    /// An entity with only its kind and id; callers fill the rest.
    pub fn new(kind: EntityType, id: impl Into<String>) -> Self {
        Entity {
            kind,
            id: id.into(),
            name: None,
            namespace: None,
            node: None,
            attributes: StringMap::new(),
        }
    }

    /// The pod as a node-local collector knows it (CNI args, a runtime's labels): by uid when
    /// given, else by `namespace/name`, the key `semantic_enrich` completes from the pod it
    /// learned; `None` when neither identifies a pod.
    pub fn pod(uid: Option<&str>, namespace: Option<&str>, name: Option<&str>) -> Option<Self> {
        let id = match (uid, namespace, name) {
            (Some(uid), _, _) => uid.to_owned(),
            (None, Some(namespace), Some(name)) => format!("{namespace}/{name}"),
            _ => return None,
        };
        Some(Entity {
            name: name.map(str::to_owned),
            namespace: namespace.map(str::to_owned),
            ..Entity::new(EntityType::Pod, id)
        })
    }
}

/// The kinds of entity the contract knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntityType {
    Pod,
    Node,
    Container,
    Service,
    Deployment,
    Host,
    Process,
}

impl EntityType {
    /// The wire name, for templates and text output.
    pub fn as_str(self) -> &'static str {
        match self {
            EntityType::Pod => "pod",
            EntityType::Node => "node",
            EntityType::Container => "container",
            EntityType::Service => "service",
            EntityType::Deployment => "deployment",
            EntityType::Host => "host",
            EntityType::Process => "process",
        }
    }
}

/// Network facts: CNI operations and kernel socket events.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkContext {
    /// `ADD`/`DEL`/`CHECK` for CNI; `connect`, `accept`, `close`, `timeout`, `retransmit`, `error` for sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The sandbox container id a CNI call was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Process facts; also the socket owner on network events.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessContext {
    /// `exec`, `exit`, `oom_kill` or `open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// Kubernetes facts about one object (for a core/v1 Event, its involved object).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<KubeAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "StringMap::is_empty")]
    pub labels: StringMap,
}

/// What happened to a watched Kubernetes object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KubeAction {
    Added,
    Modified,
    Deleted,
}

impl KubeAction {
    /// The wire name, for templates and text output.
    pub fn as_str(self) -> &'static str {
        match self {
            KubeAction::Added => "added",
            KubeAction::Modified => "modified",
            KubeAction::Deleted => "deleted",
        }
    }
}

/// systemd unit facts (container scopes and node services).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemdContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_pid: Option<u32>,
    /// The container a scope holds (`cri-containerd-<id>.scope` and the like): its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The exit code of the unit's main process, once it has exited on its own (systemd's
    /// `ExecMainStatus` when `ExecMainCode` is "exited").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// How many times systemd restarted the service automatically (`NRestarts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<u32>,
    /// The unit's last journal lines, oldest first, on a failure (the `systemd` source's
    /// `journal` option): why it failed, travelling with the event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub journal: Vec<String>,
}

/// Business impact, set by `impact_assess`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImpactContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_impact: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_facing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_at_risk: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected_services: Vec<String>,
}

/// How bad an event is, ordered from least to most.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    /// The wire name, for templates and text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

/// Which story an event belongs to; on summaries, the story itself.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrelationContext {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// On summaries: ids of the group's events (capped by the correlator's `max_related_events`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_events: Vec<String>,
    /// On summaries: how many more events the group had than `related_events` lists, so a capped
    /// list still tells how big the story was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub related_events_omitted: Option<u64>,
    /// On recurrence summaries: the correlation ids of the groups the occurrences were in (the
    /// ids those groups' own summaries carry), oldest first, so a repeated incident links to
    /// each time it happened before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_correlations: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
}

/// What the `anomaly` transform saw: a signal's count in one interval of event time, far above
/// the baseline it had learned for the entity, for long enough to matter.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnomalyContext {
    /// What was counted (`exec`, `tcp_retransmit`, `oom_kill`, …).
    pub signal: String,
    /// The length of the intervals counted in (`"10s"`); the event's timestamp is the end of
    /// the interval that made it fire.
    pub interval: ConfigDuration,
    /// The count in that interval.
    pub observed: u64,
    /// The count the baseline expected per interval.
    pub baseline: f64,
    /// How many baseline standard deviations `observed` lies above `baseline`.
    pub deviation: f64,
}

/// serde adapter: `raw_data` bytes as standard base64 with padding.
mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => s.serialize_str(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("raw_data is not standard base64: {e}")))
    }
}
