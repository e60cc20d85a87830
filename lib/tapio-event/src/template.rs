//! Templates such as `/var/log/tapio/{{ entity.namespace }}/%Y-%m-%d.ndjson` or
//! `tapio.{{ source }}`: literal text, `{{ field.path }}` references into the event's JSON form,
//! and strftime fields taken from the event's timestamp (so replays land in the same files).
//! Paths are checked when the config is loaded, not per event.

use std::fmt::Write as _;

use crate::event::UnifiedEvent;

pub use crate::field::{FieldPath, lookup};

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
    Field(FieldPath),
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
            let field = FieldPath::parse(path).map_err(|_| {
                TemplateError(format!(
                    "unknown field `{path}` in template {text:?}; use one of the event's fields, e.g. `source`, `entity.namespace`, `kubernetes.labels.app`"
                ))
            })?;
            parts.push(Part::Field(field));
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
    /// The name is borrowed: narratives try alternatives per event, and a missing field is
    /// their normal case, not worth an allocation.
    pub fn render_into(&self, event: &UnifiedEvent, out: &mut String) -> Result<(), &str> {
        let mut civil = None;
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field(field) => match field.lookup(event) {
                    Some(value) => out.push_str(&value),
                    None => return Err(field.as_str()),
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
}
