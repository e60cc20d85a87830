//! The event's wire forms: NDJSON in (with the contract's defaults for a missing `id` or
//! `timestamp`), NDJSON out, the one-line text form people read in a console, and the error event
//! that carries a line that could not be decoded to a component's `errors` output.

use std::fmt::Write as _;

use crate::event::{EventType, UnifiedEvent};
use crate::id::IdGenerator;
use crate::time::Timestamp;

/// Why a line is not a `UnifiedEvent` (serde's message names the field and the column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Turns lines into events, filling what the contract says a reader fills.
#[derive(Debug, Clone)]
pub struct Decoder {
    ids: IdGenerator,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            ids: IdGenerator::from_entropy(),
        }
    }
}

impl Decoder {
    /// One NDJSON line as a `UnifiedEvent`; `read_at` stamps an event without a timestamp.
    pub fn decode_json(
        &mut self,
        line: &[u8],
        read_at: Timestamp,
    ) -> Result<UnifiedEvent, DecodeError> {
        // Validating the line's UTF-8 once is much cheaper than serde_json's check per string.
        let parsed = match std::str::from_utf8(line) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(line),
        };
        let mut event: UnifiedEvent = parsed.map_err(|e| DecodeError(e.to_string()))?;
        if event.timestamp.is_unset() {
            event.timestamp = read_at;
        }
        if event.id.is_empty() {
            event.id = self.ids.next_id(event.timestamp);
        }
        Ok(event)
    }

    /// A raw line as an `application` event from `source`, the line kept in `raw_data`.
    pub fn wrap_text(&mut self, line: &[u8], source: &str, read_at: Timestamp) -> UnifiedEvent {
        let mut event = UnifiedEvent::new(EventType::Application, source, read_at);
        event.id = self.ids.next_id(read_at);
        event.raw_data = Some(line.to_vec());
        event
    }

    /// The event sent to a component's `errors` output for a line it could not use.
    pub fn error_event(
        &mut self,
        line: &[u8],
        source: &str,
        error: &str,
        read_at: Timestamp,
    ) -> UnifiedEvent {
        let mut event = self.wrap_text(line, source, read_at);
        let mut details = serde_json::Map::new();
        details.insert("error".into(), error.into());
        details.insert(
            "line".into(),
            String::from_utf8_lossy(line).into_owned().into(),
        );
        event.application = Some(Box::new(details));
        event
    }
}

/// Appends the event's JSON form (no newline) to `out`.
pub fn encode_json(event: &UnifiedEvent, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, event).expect("events always serialise to JSON");
}

/// Appends the one-line human form: time, source, entity, narrative (or the event's key facts),
/// and the correlation pattern when there is one.
pub fn encode_text(event: &UnifiedEvent, out: &mut String) {
    let _ = write!(out, "{} {:<10} ", event.timestamp, event.source);
    match &event.entity {
        Some(entity) => {
            let _ = write!(out, "{} ", entity.kind.as_str());
            if let (Some(namespace), Some(name)) = (&entity.namespace, &entity.name) {
                let _ = write!(out, "{namespace}/{name}");
            } else {
                out.push_str(entity.name.as_deref().unwrap_or(&entity.id));
            }
        }
        None => out.push('-'),
    }
    out.push_str("  ");
    match event.semantic.as_ref().and_then(|s| s.narrative.as_deref()) {
        Some(narrative) => out.push_str(narrative),
        None => write_headline(event, out),
    }
    if let Some(pattern) = event
        .correlation
        .as_ref()
        .and_then(|c| c.pattern.as_deref())
    {
        let _ = write!(out, " [{pattern}]");
    }
}

/// The facts of an event in a few words, for events no one has narrated yet.
fn write_headline(event: &UnifiedEvent, out: &mut String) {
    match event.kind {
        EventType::Network => {
            if let Some(net) = &event.network {
                let op = net.operation.as_deref().unwrap_or("network");
                let _ = write!(out, "{op}");
                if let Some(ip) = &net.ip_address {
                    let iface = net.interface_name.as_deref().unwrap_or("?");
                    let _ = write!(out, " {iface} {ip}");
                }
                if let (Some(dst), Some(port)) = (&net.dst_ip, net.dst_port) {
                    let src = net.src_ip.as_deref().unwrap_or("?");
                    let sport = net.src_port.unwrap_or(0);
                    let _ = write!(out, " {src}:{sport} -> {dst}:{port}");
                }
                if let Some(error) = &net.error {
                    let _ = write!(out, " error: {error}");
                }
            }
        }
        EventType::Process => {
            if let Some(p) = &event.process {
                let op = p.operation.as_deref().unwrap_or("process");
                let comm = p.comm.as_deref().unwrap_or("?");
                let _ = write!(out, "{op} {comm}");
                if let Some(pid) = p.pid {
                    let _ = write!(out, " pid={pid}");
                }
                if let Some(code) = p.exit_code {
                    let _ = write!(out, " exit_code={code}");
                }
            }
        }
        EventType::Kubernetes => {
            if let Some(k) = &event.kubernetes {
                let what = k
                    .reason
                    .as_deref()
                    .or(k.action.map(|a| a.as_str()))
                    .unwrap_or("kubernetes");
                let kind = k.kind.as_deref().unwrap_or("object");
                let name = k.name.as_deref().unwrap_or("?");
                let _ = write!(out, "{what} {kind} {name}");
                if let Some(message) = &k.message {
                    let _ = write!(out, ": {message}");
                }
            }
        }
        EventType::Systemd => {
            if let Some(s) = &event.systemd {
                let unit = s.unit.as_deref().unwrap_or("?");
                let job = s.job_type.as_deref().unwrap_or("state");
                let state = s.active_state.as_deref().unwrap_or("?");
                let _ = write!(out, "{unit} {job} -> {state}");
            }
        }
        EventType::Application => match event.application.as_ref().and_then(|a| a.get("error")) {
            Some(error) => {
                let _ = write!(out, "undecodable input: {}", error.as_str().unwrap_or("?"));
            }
            None => out.push_str("application event"),
        },
        EventType::Correlation => {
            if let Some(c) = &event.correlation {
                let root = c.root_cause.as_deref().unwrap_or("unknown cause");
                let _ = write!(out, "incident: {root}");
            }
        }
        EventType::Anomaly => {
            if let Some(a) = &event.anomaly {
                let _ = write!(
                    out,
                    "anomaly: {} {} per {} (baseline {:.1})",
                    a.signal, a.observed, a.interval, a.baseline
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Entity, EntityType, SemanticContext};

    #[test]
    fn fills_missing_id_and_timestamp() {
        let mut decoder = Decoder::default();
        let at = Timestamp(1_800_000_000_000_000_000);
        let event = decoder
            .decode_json(br#"{"type":"process","source":"ebpf"}"#, at)
            .unwrap();
        assert_eq!(event.timestamp, at);
        assert!(event.id.starts_with("evt_"));
    }

    #[test]
    fn rejects_unknown_fields_with_their_name() {
        let mut decoder = Decoder::default();
        let err = decoder
            .decode_json(
                br#"{"type":"process","source":"x","process":{"pidd":1}}"#,
                Timestamp(1),
            )
            .unwrap_err();
        assert!(err.0.contains("pidd"), "{err}");
        let err = decoder
            .decode_json(br#"{"type":"weird","source":"x"}"#, Timestamp(1))
            .unwrap_err();
        assert!(err.0.contains("weird"), "{err}");
    }

    #[test]
    fn raw_data_is_padded_base64() {
        let mut decoder = Decoder::default();
        let event = decoder.wrap_text(b"hi", "stdin", Timestamp(5));
        let mut out = Vec::new();
        encode_json(&event, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#""raw_data":"aGk=""#), "{text}");
        assert!(!text.contains("null"), "{text}");
        let back = decoder.decode_json(text.as_bytes(), Timestamp(9)).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn text_form_prefers_narrative_and_names_the_entity() {
        let mut event = UnifiedEvent::new(EventType::Kubernetes, "kubernetes", Timestamp(0));
        let mut entity = Entity::new(EntityType::Pod, "uid-1");
        entity.namespace = Some("shop".into());
        entity.name = Some("api-7d9".into());
        event.entity = Some(Box::new(entity));
        event.semantic = Some(Box::new(SemanticContext {
            narrative: Some("Readiness probe failed".into()),
            ..Default::default()
        }));
        let mut line = String::new();
        encode_text(&event, &mut line);
        assert_eq!(
            line,
            "1970-01-01T00:00:00.000000000Z kubernetes pod shop/api-7d9  Readiness probe failed"
        );
    }
}
