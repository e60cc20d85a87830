//! Reading an event's fields by dotted path (`kubernetes.reason`, `entity.attributes.team`), as
//! templates, rules and patterns do. A path is resolved once, when the config is read, into an
//! accessor; reading it per event is then one function call, not string parsing, which matters
//! on the hot paths of `semantic_enrich` and `correlate`. An unknown path is a config error.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

use crate::event::UnifiedEvent;

/// How one field is read.
#[derive(Clone, Copy)]
enum Accessor {
    /// A text field, borrowed from the event.
    Text(fn(&UnifiedEvent) -> Option<&str>),
    /// A numeric field, rendered as decimal text; wide enough for every signed and unsigned
    /// field, so that none is rendered as another number.
    Number(fn(&UnifiedEvent) -> Option<i128>),
    /// The event's timestamp in its wire form.
    Timestamp,
    /// An entry of a string map (`entity.attributes`, `kubernetes.labels`) or of `application`.
    Entry(MapField),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum MapField {
    Attributes,
    Labels,
    Application,
}

/// Every scalar field path, with how to read it. The order is the documentation's.
const FIELDS: &[(&str, Accessor)] = &[
    ("id", Accessor::Text(|e| Some(e.id.as_str()))),
    ("timestamp", Accessor::Timestamp),
    ("type", Accessor::Text(|e| Some(e.kind.as_str()))),
    ("source", Accessor::Text(|e| Some(e.source.as_str()))),
    (
        "semantic.intent",
        Accessor::Text(|e| e.semantic.as_deref()?.intent.as_deref()),
    ),
    (
        "semantic.category",
        Accessor::Text(|e| e.semantic.as_deref()?.category.as_deref()),
    ),
    (
        "semantic.narrative",
        Accessor::Text(|e| e.semantic.as_deref()?.narrative.as_deref()),
    ),
    (
        "trace_context.trace_id",
        Accessor::Text(|e| Some(e.trace_context.as_deref()?.trace_id.as_str())),
    ),
    (
        "trace_context.span_id",
        Accessor::Text(|e| Some(e.trace_context.as_deref()?.span_id.as_str())),
    ),
    (
        "trace_context.parent_span_id",
        Accessor::Text(|e| e.trace_context.as_deref()?.parent_span_id.as_deref()),
    ),
    (
        "entity.type",
        Accessor::Text(|e| Some(e.entity.as_deref()?.kind.as_str())),
    ),
    (
        "entity.id",
        Accessor::Text(|e| Some(e.entity.as_deref()?.id.as_str())),
    ),
    (
        "entity.name",
        Accessor::Text(|e| e.entity.as_deref()?.name.as_deref()),
    ),
    (
        "entity.namespace",
        Accessor::Text(|e| e.entity.as_deref()?.namespace.as_deref()),
    ),
    (
        "entity.node",
        Accessor::Text(|e| e.entity.as_deref()?.node.as_deref()),
    ),
    (
        "network.operation",
        Accessor::Text(|e| e.network.as_deref()?.operation.as_deref()),
    ),
    (
        "network.interface_name",
        Accessor::Text(|e| e.network.as_deref()?.interface_name.as_deref()),
    ),
    (
        "network.ip_address",
        Accessor::Text(|e| e.network.as_deref()?.ip_address.as_deref()),
    ),
    (
        "network.netns",
        Accessor::Text(|e| e.network.as_deref()?.netns.as_deref()),
    ),
    (
        "network.container_id",
        Accessor::Text(|e| e.network.as_deref()?.container_id.as_deref()),
    ),
    (
        "network.protocol",
        Accessor::Text(|e| e.network.as_deref()?.protocol.as_deref()),
    ),
    (
        "network.src_ip",
        Accessor::Text(|e| e.network.as_deref()?.src_ip.as_deref()),
    ),
    (
        "network.src_port",
        Accessor::Number(|e| e.network.as_deref()?.src_port.map(i128::from)),
    ),
    (
        "network.dst_ip",
        Accessor::Text(|e| e.network.as_deref()?.dst_ip.as_deref()),
    ),
    (
        "network.dst_port",
        Accessor::Number(|e| e.network.as_deref()?.dst_port.map(i128::from)),
    ),
    (
        "network.error",
        Accessor::Text(|e| e.network.as_deref()?.error.as_deref()),
    ),
    (
        "process.operation",
        Accessor::Text(|e| e.process.as_deref()?.operation.as_deref()),
    ),
    (
        "process.pid",
        Accessor::Number(|e| e.process.as_deref()?.pid.map(i128::from)),
    ),
    (
        "process.ppid",
        Accessor::Number(|e| e.process.as_deref()?.ppid.map(i128::from)),
    ),
    (
        "process.comm",
        Accessor::Text(|e| e.process.as_deref()?.comm.as_deref()),
    ),
    (
        "process.filename",
        Accessor::Text(|e| e.process.as_deref()?.filename.as_deref()),
    ),
    (
        "process.uid",
        Accessor::Number(|e| e.process.as_deref()?.uid.map(i128::from)),
    ),
    (
        "process.cgroup_id",
        Accessor::Number(|e| e.process.as_deref()?.cgroup_id.map(i128::from)),
    ),
    (
        "process.container_id",
        Accessor::Text(|e| e.process.as_deref()?.container_id.as_deref()),
    ),
    (
        "process.exit_code",
        Accessor::Number(|e| e.process.as_deref()?.exit_code.map(i128::from)),
    ),
    (
        "process.signal",
        Accessor::Number(|e| e.process.as_deref()?.signal.map(i128::from)),
    ),
    (
        "kubernetes.kind",
        Accessor::Text(|e| e.kubernetes.as_deref()?.kind.as_deref()),
    ),
    (
        "kubernetes.name",
        Accessor::Text(|e| e.kubernetes.as_deref()?.name.as_deref()),
    ),
    (
        "kubernetes.namespace",
        Accessor::Text(|e| e.kubernetes.as_deref()?.namespace.as_deref()),
    ),
    (
        "kubernetes.uid",
        Accessor::Text(|e| e.kubernetes.as_deref()?.uid.as_deref()),
    ),
    (
        "kubernetes.action",
        Accessor::Text(|e| e.kubernetes.as_deref()?.action.map(|a| a.as_str())),
    ),
    (
        "kubernetes.reason",
        Accessor::Text(|e| e.kubernetes.as_deref()?.reason.as_deref()),
    ),
    (
        "kubernetes.message",
        Accessor::Text(|e| e.kubernetes.as_deref()?.message.as_deref()),
    ),
    (
        "kubernetes.pod_ip",
        Accessor::Text(|e| e.kubernetes.as_deref()?.pod_ip.as_deref()),
    ),
    (
        "kubernetes.node",
        Accessor::Text(|e| e.kubernetes.as_deref()?.node.as_deref()),
    ),
    (
        "kubernetes.phase",
        Accessor::Text(|e| e.kubernetes.as_deref()?.phase.as_deref()),
    ),
    (
        "kubernetes.container_id",
        Accessor::Text(|e| e.kubernetes.as_deref()?.container_id.as_deref()),
    ),
    (
        "systemd.unit",
        Accessor::Text(|e| e.systemd.as_deref()?.unit.as_deref()),
    ),
    (
        "systemd.slice",
        Accessor::Text(|e| e.systemd.as_deref()?.slice.as_deref()),
    ),
    (
        "systemd.active_state",
        Accessor::Text(|e| e.systemd.as_deref()?.active_state.as_deref()),
    ),
    (
        "systemd.sub_state",
        Accessor::Text(|e| e.systemd.as_deref()?.sub_state.as_deref()),
    ),
    (
        "systemd.result",
        Accessor::Text(|e| e.systemd.as_deref()?.result.as_deref()),
    ),
    (
        "systemd.job_type",
        Accessor::Text(|e| e.systemd.as_deref()?.job_type.as_deref()),
    ),
    (
        "systemd.main_pid",
        Accessor::Number(|e| e.systemd.as_deref()?.main_pid.map(i128::from)),
    ),
    (
        "systemd.container_id",
        Accessor::Text(|e| e.systemd.as_deref()?.container_id.as_deref()),
    ),
    (
        "systemd.exit_status",
        Accessor::Number(|e| e.systemd.as_deref()?.exit_status.map(i128::from)),
    ),
    (
        "systemd.restarts",
        Accessor::Number(|e| e.systemd.as_deref()?.restarts.map(i128::from)),
    ),
    (
        "impact.severity",
        Accessor::Text(|e| e.impact.as_deref()?.severity.map(|s| s.as_str())),
    ),
    (
        "impact.predicted_outcome",
        Accessor::Text(|e| e.impact.as_deref()?.predicted_outcome.as_deref()),
    ),
    (
        "correlation.correlation_id",
        Accessor::Text(|e| e.correlation.as_deref()?.correlation_id.as_deref()),
    ),
    (
        "correlation.pattern",
        Accessor::Text(|e| e.correlation.as_deref()?.pattern.as_deref()),
    ),
    (
        "correlation.root_cause",
        Accessor::Text(|e| e.correlation.as_deref()?.root_cause.as_deref()),
    ),
    (
        "correlation.recommended_action",
        Accessor::Text(|e| e.correlation.as_deref()?.recommended_action.as_deref()),
    ),
    (
        "anomaly.signal",
        Accessor::Text(|e| Some(e.anomaly.as_deref()?.signal.as_str())),
    ),
    (
        "anomaly.observed",
        Accessor::Number(|e| Some(i128::from(e.anomaly.as_deref()?.observed))),
    ),
];

/// Map fields addressed as `<prefix><key>`.
const MAP_PREFIXES: &[(&str, MapField)] = &[
    ("entity.attributes.", MapField::Attributes),
    ("kubernetes.labels.", MapField::Labels),
    ("application.", MapField::Application),
];

/// The scalar field paths (map entries are `entity.attributes.<key>`, `kubernetes.labels.<key>`
/// and `application.<key>`), for documentation and error messages.
pub fn field_paths() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|(path, _)| *path)
}

/// A field path checked and resolved when the config is read.
#[derive(Clone)]
pub struct FieldPath {
    path: String,
    accessor: Accessor,
    /// For map entries: the key after the prefix.
    key_start: usize,
}

/// Why a path names no field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField(pub String);

impl std::fmt::Display for UnknownField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown field path `{}`; use a field of the event such as `source`, `kubernetes.reason`, `network.operation` or `entity.attributes.<key>`",
            self.0
        )
    }
}

impl std::error::Error for UnknownField {}

impl FieldPath {
    /// Resolves `path`, or says it names no field.
    pub fn parse(path: &str) -> Result<Self, UnknownField> {
        if let Some((_, accessor)) = FIELDS.iter().find(|(known, _)| *known == path) {
            return Ok(FieldPath {
                path: path.to_owned(),
                accessor: *accessor,
                key_start: 0,
            });
        }
        MAP_PREFIXES
            .iter()
            .find(|(prefix, _)| path.len() > prefix.len() && path.starts_with(prefix))
            .map(|(prefix, map)| FieldPath {
                path: path.to_owned(),
                accessor: Accessor::Entry(*map),
                key_start: prefix.len(),
            })
            .ok_or_else(|| UnknownField(path.to_owned()))
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The path as an owned string.
    pub fn into_string(self) -> String {
        self.path
    }

    /// The field's text in `event`, if the event has it.
    pub fn lookup<'a>(&self, event: &'a UnifiedEvent) -> Option<Cow<'a, str>> {
        match self.accessor {
            Accessor::Text(read) => read(event).map(Cow::Borrowed),
            Accessor::Timestamp => Some(Cow::Owned(event.timestamp.to_string())),
            Accessor::Number(read) => read(event).map(|v| Cow::Owned(v.to_string())),
            Accessor::Entry(map) => {
                let key = &self.path[self.key_start..];
                match map {
                    MapField::Attributes => event
                        .entity
                        .as_deref()?
                        .attributes
                        .get(key)
                        .map(|v| Cow::Borrowed(v.as_str())),
                    MapField::Labels => event
                        .kubernetes
                        .as_deref()?
                        .labels
                        .get(key)
                        .map(|v| Cow::Borrowed(v.as_str())),
                    MapField::Application => match event.application.as_deref()?.get(key)? {
                        serde_json::Value::String(s) => Some(Cow::Borrowed(s.as_str())),
                        serde_json::Value::Null => None,
                        other => Some(Cow::Owned(other.to_string())),
                    },
                }
            }
        }
    }
}

impl FieldPath {
    /// Runs `read` on the field's text in `event` without allocating for text and numeric
    /// fields (numbers are rendered on the stack), for per-event checks on hot paths such as
    /// `filter` conditions; [`FieldPath::lookup`] is the owned-or-borrowed form.
    pub fn with_text<R>(&self, event: &UnifiedEvent, read: impl FnOnce(Option<&str>) -> R) -> R {
        match self.accessor {
            Accessor::Text(text) => read(text(event)),
            Accessor::Number(number) => match number(event) {
                Some(value) => {
                    let mut digits = DecimalText::default();
                    read(Some(digits.render(value)))
                }
                None => read(None),
            },
            Accessor::Timestamp | Accessor::Entry(_) => read(self.lookup(event).as_deref()),
        }
    }
}

/// Room for any `i128` in decimal (39 digits and a sign), so numbers can be compared as text
/// without a heap allocation.
struct DecimalText {
    bytes: [u8; 40],
}

impl Default for DecimalText {
    fn default() -> Self {
        DecimalText { bytes: [0; 40] }
    }
}

impl DecimalText {
    /// Renders `value` and returns its text.
    fn render(&mut self, value: i128) -> &str {
        let mut magnitude = value.unsigned_abs();
        let mut start = self.bytes.len();
        loop {
            start -= 1;
            // A remainder of 10 is below 10, so the cast cannot truncate.
            self.bytes[start] = b'0' + (magnitude % 10) as u8;
            magnitude /= 10;
            if magnitude == 0 {
                break;
            }
        }
        if value < 0 {
            start -= 1;
            self.bytes[start] = b'-';
        }
        // Only ASCII digits and '-' were written.
        std::str::from_utf8(&self.bytes[start..]).unwrap_or_default()
    }
}

impl std::fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FieldPath({:?})", self.path)
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path)
    }
}

impl PartialEq for FieldPath {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for FieldPath {}

impl PartialOrd for FieldPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FieldPath {
    fn cmp(&self, other: &Self) -> Ordering {
        self.path.cmp(&other.path)
    }
}

impl Hash for FieldPath {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.path.hash(state);
    }
}

impl<'de> serde::Deserialize<'de> for FieldPath {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let path = String::deserialize(deserializer)?;
        FieldPath::parse(&path).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for FieldPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.path)
    }
}

impl schemars::JsonSchema for FieldPath {
    fn schema_name() -> Cow<'static, str> {
        "FieldPath".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "field-path",
            "description": "A field of the event as in its JSON form, dotted: `source`, `type`, `entity.namespace`, `kubernetes.reason`, `process.exit_code`, `entity.attributes.<key>`, `kubernetes.labels.<key>`. An unknown field is a config error."
        })
    }
}

/// The text of the field at `path`, if the path names a field and the event has it. Resolve
/// the path once with [`FieldPath::parse`] where it is read for many events.
pub fn lookup<'a>(event: &'a UnifiedEvent, path: &str) -> Option<Cow<'a, str>> {
    FieldPath::parse(path).ok()?.lookup(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_event() -> UnifiedEvent {
        serde_json::from_str(include_str!("../tests/full_event.json")).unwrap()
    }

    #[test]
    fn every_field_is_read() {
        // A field whose accessor reads the wrong context would silently never match.
        let event = full_event();
        for path in field_paths() {
            assert!(lookup(&event, path).is_some(), "{path} not read");
        }
        assert_eq!(
            lookup(&event, "kubernetes.reason").as_deref(),
            Some("Unhealthy")
        );
        assert_eq!(lookup(&event, "network.dst_port").as_deref(), Some("5432"));
        assert_eq!(lookup(&event, "process.exit_code").as_deref(), Some("0"));
        assert_eq!(
            lookup(&event, "timestamp").as_deref(),
            Some("2026-11-27T16:21:11.123456789Z")
        );
        assert_eq!(
            lookup(&event, "entity.attributes.team").as_deref(),
            Some("payments")
        );
        assert_eq!(
            lookup(&event, "kubernetes.labels.app").as_deref(),
            Some("api")
        );
        assert_eq!(lookup(&event, "application.count").as_deref(), Some("3"));
        assert_eq!(
            lookup(&event, "application.message").as_deref(),
            Some("hello")
        );
    }

    #[test]
    fn unknown_paths_are_rejected() {
        for bad in ["entity.nam", "kubernetes.labels.", "nope", "process"] {
            assert!(FieldPath::parse(bad).is_err(), "{bad} accepted");
        }
        let error = FieldPath::parse("kubernetes.reson")
            .unwrap_err()
            .to_string();
        assert!(error.contains("kubernetes.reson"), "{error}");
    }

    #[test]
    fn numbers_read_as_themselves_at_their_limits() {
        let mut event = UnifiedEvent::new(crate::EventType::Process, "x", crate::Timestamp(1));
        event.process = Some(Box::new(crate::ProcessContext {
            cgroup_id: Some(u64::MAX),
            pid: Some(u32::MAX),
            exit_code: Some(i32::MIN),
            ..Default::default()
        }));
        for (path, expected) in [
            ("process.cgroup_id", "18446744073709551615"),
            ("process.pid", "4294967295"),
            ("process.exit_code", "-2147483648"),
        ] {
            assert_eq!(lookup(&event, path).as_deref(), Some(expected), "{path}");
        }
    }

    #[test]
    fn text_without_allocation_matches_lookup() {
        let mut event = full_event();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200 {
            // xorshift: numbers of every width and sign, including the extremes.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let process = event.process.as_mut().unwrap();
            process.cgroup_id = Some(state);
            process.exit_code = Some(state as i32);
            for path in field_paths().chain(["entity.attributes.team", "application.count"]) {
                let path = FieldPath::parse(path).unwrap();
                let expected = path.lookup(&event).map(Cow::into_owned);
                path.with_text(&event, |text| {
                    assert_eq!(text, expected.as_deref(), "{path}")
                });
            }
        }
        let mut extremes = DecimalText::default();
        assert_eq!(extremes.render(i128::MIN), i128::MIN.to_string());
        assert_eq!(extremes.render(i128::MAX), i128::MAX.to_string());
        assert_eq!(extremes.render(0), "0");
    }

    #[test]
    fn absent_fields_read_as_none() {
        let event = UnifiedEvent::new(crate::EventType::Process, "x", crate::Timestamp(1));
        assert_eq!(lookup(&event, "kubernetes.reason"), None);
        assert_eq!(lookup(&event, "entity.attributes.team"), None);
        assert_eq!(lookup(&event, "source").as_deref(), Some("x"));
    }
}
