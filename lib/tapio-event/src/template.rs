//! Templates such as `/var/log/tapio/{{ entity.namespace }}/%Y-%m-%d.ndjson` or
//! `tapio.{{ source }}`: literal text, `{{ field.path }}` references into the event's JSON form,
//! and strftime fields taken from the event's timestamp (so replays land in the same files).
//! Paths are checked when the config is loaded, not per event.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::event::UnifiedEvent;

/// Scalar field paths a template may reference, besides the map entries
/// `entity.attributes.<key>`, `kubernetes.labels.<key>` and `application.<key>`.
pub const FIELD_PATHS: &[&str] = &[
    "id",
    "timestamp",
    "type",
    "source",
    "semantic.intent",
    "semantic.category",
    "semantic.narrative",
    "trace_context.trace_id",
    "trace_context.span_id",
    "trace_context.parent_span_id",
    "entity.type",
    "entity.id",
    "entity.name",
    "entity.namespace",
    "entity.node",
    "network.operation",
    "network.interface_name",
    "network.ip_address",
    "network.netns",
    "network.container_id",
    "network.protocol",
    "network.src_ip",
    "network.src_port",
    "network.dst_ip",
    "network.dst_port",
    "network.error",
    "process.operation",
    "process.pid",
    "process.ppid",
    "process.comm",
    "process.filename",
    "process.uid",
    "process.cgroup_id",
    "process.container_id",
    "process.exit_code",
    "process.signal",
    "kubernetes.kind",
    "kubernetes.name",
    "kubernetes.namespace",
    "kubernetes.uid",
    "kubernetes.action",
    "kubernetes.reason",
    "kubernetes.message",
    "kubernetes.pod_ip",
    "kubernetes.node",
    "kubernetes.phase",
    "kubernetes.container_id",
    "systemd.unit",
    "systemd.slice",
    "systemd.active_state",
    "systemd.sub_state",
    "systemd.result",
    "systemd.job_type",
    "systemd.main_pid",
    "impact.severity",
    "impact.predicted_outcome",
    "correlation.correlation_id",
    "correlation.pattern",
    "correlation.root_cause",
    "correlation.recommended_action",
];

const MAP_PREFIXES: &[&str] = &["entity.attributes.", "kubernetes.labels.", "application."];

/// Why a template string cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(String),
    Time(char),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`, rejecting unknown field paths and strftime fields.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            push_literal(&mut parts, &rest[..open])?;
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| TemplateError(format!("unclosed `{{{{` in template {text:?}")))?;
            let path = after[..close].trim();
            if !is_known_path(path) {
                return Err(TemplateError(format!(
                    "unknown field `{path}` in template {text:?}; use one of the event's fields, e.g. `source`, `entity.namespace`, `kubernetes.labels.app`"
                )));
            }
            parts.push(Part::Field(path.to_owned()));
            rest = &after[close + 2..];
        }
        push_literal(&mut parts, rest)?;
        Ok(Template { parts })
    }

    /// True when every event renders the same text (no field or time parts).
    pub fn is_static(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Renders for `event` into `out`; `Err` names a referenced field the event does not have.
    pub fn render_into(&self, event: &UnifiedEvent, out: &mut String) -> Result<(), String> {
        let mut civil = None;
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field(path) => match lookup(event, path) {
                    Some(value) => out.push_str(&value),
                    None => return Err(path.clone()),
                },
                Part::Time(spec) => {
                    let c = *civil.get_or_insert_with(|| event.timestamp.civil());
                    let _ = match spec {
                        'Y' => write!(out, "{:04}", c.year),
                        'm' => write!(out, "{:02}", c.month),
                        'd' => write!(out, "{:02}", c.day),
                        'H' => write!(out, "{:02}", c.hour),
                        'M' => write!(out, "{:02}", c.minute),
                        'S' => write!(out, "{:02}", c.second),
                        'j' => write!(out, "{:03}", c.day_of_year),
                        'F' => write!(out, "{:04}-{:02}-{:02}", c.year, c.month, c.day),
                        _ => write!(out, "%"),
                    };
                }
            }
        }
        Ok(())
    }
}

fn push_literal(parts: &mut Vec<Part>, text: &str) -> Result<(), TemplateError> {
    let mut literal = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => literal.push('%'),
            Some(spec @ ('Y' | 'm' | 'd' | 'H' | 'M' | 'S' | 'j' | 'F')) => {
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Time(spec));
            }
            other => {
                return Err(TemplateError(format!(
                    "unsupported strftime field `%{}`; supported: %Y %m %d %H %M %S %j %F %%",
                    other.map(String::from).unwrap_or_default()
                )));
            }
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(())
}

fn is_known_path(path: &str) -> bool {
    FIELD_PATHS.contains(&path)
        || MAP_PREFIXES
            .iter()
            .any(|prefix| path.len() > prefix.len() && path.starts_with(prefix))
}

/// A field path that [`lookup`] can read, checked when the config is read: rule and pattern
/// conditions use it, so a typo is a config error on its own line rather than a condition that
/// silently never matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// Checks `path` against the readable paths.
    pub fn parse(path: &str) -> Result<Self, TemplateError> {
        if is_known_path(path) {
            Ok(FieldPath(path.to_owned()))
        } else {
            Err(TemplateError(format!(
                "unknown field path `{path}`; use a field of the event such as `source`, `kubernetes.reason`, `network.operation` or `entity.attributes.<key>`"
            )))
        }
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for FieldPath {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = String::deserialize(deserializer)?;
        FieldPath::parse(&path).map_err(serde::de::Error::custom)
    }
}

/// The text of the field at `path` (a [`FIELD_PATHS`] entry or a map entry), if the event has it.
pub fn lookup<'a>(event: &'a UnifiedEvent, path: &str) -> Option<Cow<'a, str>> {
    fn text(value: &Option<String>) -> Option<Cow<'_, str>> {
        value.as_deref().map(Cow::Borrowed)
    }
    fn number<T: ToString>(value: Option<T>) -> Option<Cow<'static, str>> {
        value.map(|v| Cow::Owned(v.to_string()))
    }
    let (head, tail) = path.split_once('.').unwrap_or((path, ""));
    match head {
        "id" => Some(Cow::Borrowed(event.id.as_str())),
        "timestamp" => Some(Cow::Owned(event.timestamp.to_string())),
        "type" => Some(Cow::Borrowed(event.kind.as_str())),
        "source" => Some(Cow::Borrowed(event.source.as_str())),
        "semantic" => {
            let s = event.semantic.as_deref()?;
            match tail {
                "intent" => text(&s.intent),
                "category" => text(&s.category),
                "narrative" => text(&s.narrative),
                _ => None,
            }
        }
        "trace_context" => {
            let t = event.trace_context.as_deref()?;
            match tail {
                "trace_id" => Some(Cow::Borrowed(t.trace_id.as_str())),
                "span_id" => Some(Cow::Borrowed(t.span_id.as_str())),
                "parent_span_id" => text(&t.parent_span_id),
                _ => None,
            }
        }
        "entity" => {
            let e = event.entity.as_deref()?;
            match tail {
                "type" => Some(Cow::Borrowed(e.kind.as_str())),
                "id" => Some(Cow::Borrowed(e.id.as_str())),
                "name" => text(&e.name),
                "namespace" => text(&e.namespace),
                "node" => text(&e.node),
                _ => e
                    .attributes
                    .get(tail.strip_prefix("attributes.")?)
                    .map(|v| Cow::Borrowed(v.as_str())),
            }
        }
        "network" => {
            let n = event.network.as_deref()?;
            match tail {
                "operation" => text(&n.operation),
                "interface_name" => text(&n.interface_name),
                "ip_address" => text(&n.ip_address),
                "netns" => text(&n.netns),
                "container_id" => text(&n.container_id),
                "protocol" => text(&n.protocol),
                "src_ip" => text(&n.src_ip),
                "src_port" => number(n.src_port),
                "dst_ip" => text(&n.dst_ip),
                "dst_port" => number(n.dst_port),
                "error" => text(&n.error),
                _ => None,
            }
        }
        "process" => {
            let p = event.process.as_deref()?;
            match tail {
                "operation" => text(&p.operation),
                "pid" => number(p.pid),
                "ppid" => number(p.ppid),
                "comm" => text(&p.comm),
                "filename" => text(&p.filename),
                "uid" => number(p.uid),
                "cgroup_id" => number(p.cgroup_id),
                "container_id" => text(&p.container_id),
                "exit_code" => number(p.exit_code),
                "signal" => number(p.signal),
                _ => None,
            }
        }
        "kubernetes" => {
            let k = event.kubernetes.as_deref()?;
            match tail {
                "kind" => text(&k.kind),
                "name" => text(&k.name),
                "namespace" => text(&k.namespace),
                "uid" => text(&k.uid),
                "action" => k.action.map(|a| Cow::Borrowed(a.as_str())),
                "reason" => text(&k.reason),
                "message" => text(&k.message),
                "pod_ip" => text(&k.pod_ip),
                "node" => text(&k.node),
                "phase" => text(&k.phase),
                "container_id" => text(&k.container_id),
                _ => k
                    .labels
                    .get(tail.strip_prefix("labels.")?)
                    .map(|v| Cow::Borrowed(v.as_str())),
            }
        }
        "systemd" => {
            let s = event.systemd.as_deref()?;
            match tail {
                "unit" => text(&s.unit),
                "slice" => text(&s.slice),
                "active_state" => text(&s.active_state),
                "sub_state" => text(&s.sub_state),
                "result" => text(&s.result),
                "job_type" => text(&s.job_type),
                "main_pid" => number(s.main_pid),
                _ => None,
            }
        }
        "impact" => {
            let i = event.impact.as_deref()?;
            match tail {
                "severity" => i.severity.map(|s| Cow::Borrowed(s.as_str())),
                "predicted_outcome" => text(&i.predicted_outcome),
                _ => None,
            }
        }
        "correlation" => {
            let c = event.correlation.as_deref()?;
            match tail {
                "correlation_id" => text(&c.correlation_id),
                "pattern" => text(&c.pattern),
                "root_cause" => text(&c.root_cause),
                "recommended_action" => text(&c.recommended_action),
                _ => None,
            }
        }
        "application" => match event.application.as_deref()?.get(tail)? {
            serde_json::Value::String(s) => Some(Cow::Borrowed(s.as_str())),
            serde_json::Value::Null => None,
            other => Some(Cow::Owned(other.to_string())),
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Entity, EntityType, EventType};
    use crate::time::Timestamp;

    fn pod_event() -> UnifiedEvent {
        let ts = Timestamp::parse_rfc3339("2026-11-27T16:21:11Z").unwrap();
        let mut event = UnifiedEvent::new(EventType::Kubernetes, "kubernetes", ts);
        let mut entity = Entity::new(EntityType::Pod, "uid-1");
        entity.namespace = Some("shop".into());
        entity.attributes.insert("team".into(), "payments".into());
        event.entity = Some(Box::new(entity));
        event
    }

    fn render(template: &str, event: &UnifiedEvent) -> Result<String, String> {
        let mut out = String::new();
        Template::parse(template)
            .unwrap()
            .render_into(event, &mut out)?;
        Ok(out)
    }

    #[test]
    fn renders_fields_and_event_time() {
        let event = pod_event();
        assert_eq!(
            render(
                "/logs/{{ entity.namespace }}/{{source}}-%Y-%m-%d_%H.ndjson",
                &event
            )
            .unwrap(),
            "/logs/shop/kubernetes-2026-11-27_16.ndjson"
        );
        assert_eq!(
            render("{{ entity.attributes.team }}/%F %%", &event).unwrap(),
            "payments/2026-11-27 %"
        );
    }

    #[test]
    fn missing_field_names_the_path() {
        assert_eq!(
            render("{{ process.comm }}", &pod_event()),
            Err("process.comm".into())
        );
    }

    #[test]
    fn rejects_unknown_paths_and_specs() {
        assert!(
            Template::parse("{{ entity.nam }}")
                .unwrap_err()
                .0
                .contains("entity.nam")
        );
        assert!(Template::parse("{{ source").is_err());
        assert!(Template::parse("%Q").unwrap_err().0.contains("%Q"));
        assert!(Template::parse("plain").unwrap().is_static());
    }

    #[test]
    fn every_listed_path_is_looked_up() {
        // A path in FIELD_PATHS that `lookup` forgot would silently never render.
        let full: UnifiedEvent =
            serde_json::from_str(include_str!("../tests/full_event.json")).unwrap();
        for path in FIELD_PATHS {
            assert!(lookup(&full, path).is_some(), "{path} not looked up");
        }
    }
}
