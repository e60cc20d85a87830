//! Narratives: the one sentence a rule writes into `semantic.narrative`. A narrative is a list of
//! alternatives tried in order; the first that renders is used. Each alternative is a template
//! (`{{ field.path }}` placeholders, as in `tapio_event::template`) in which text between `[[`
//! and `]]` is optional: it is left out when a field it references is missing, so
//! `"Readiness probe failed for {{ kubernetes.namespace }}/{{ kubernetes.name }}[[ on {{ entity.node }}]]"`
//! reads well with or without a node, and never shows a blank.

use tapio_event::UnifiedEvent;
use tapio_event::template::Template;

/// A parsed narrative: its alternatives, in order.
#[derive(Debug, Clone)]
pub(super) struct Narrative {
    alternatives: Vec<Vec<Segment>>,
}

/// A run of template text; an optional one is dropped when the event lacks one of its fields.
#[derive(Debug, Clone)]
struct Segment {
    template: Template,
    optional: bool,
}

impl Narrative {
    /// Parses each alternative; the error names what is wrong and where.
    pub(super) fn parse(alternatives: &[String]) -> Result<Self, String> {
        if alternatives.is_empty() {
            return Err("`narrative` needs at least one template".into());
        }
        let alternatives = alternatives
            .iter()
            .map(|text| parse_alternative(text))
            .collect::<Result<_, _>>()?;
        Ok(Narrative { alternatives })
    }

    /// Renders the first alternative whose required fields `event` has into `out` (cleared
    /// first); false, with `out` empty, when none does.
    pub(super) fn render(&self, event: &UnifiedEvent, out: &mut String) -> bool {
        for segments in &self.alternatives {
            out.clear();
            if render_alternative(segments, event, out) {
                return true;
            }
        }
        out.clear();
        false
    }
}

fn render_alternative(segments: &[Segment], event: &UnifiedEvent, out: &mut String) -> bool {
    for segment in segments {
        let mark = out.len();
        if segment.template.render_into(event, out).is_err() {
            if !segment.optional {
                return false;
            }
            out.truncate(mark);
        }
    }
    !out.is_empty()
}

fn parse_alternative(text: &str) -> Result<Vec<Segment>, String> {
    let mut segments = Vec::new();
    let mut push = |part: &str, optional: bool| -> Result<(), String> {
        if part.is_empty() {
            return Ok(());
        }
        let template = Template::parse(part).map_err(|e| format!("narrative {text:?}: {e}"))?;
        segments.push(Segment { template, optional });
        Ok(())
    };
    let mut rest = text;
    while let Some(open) = rest.find("[[") {
        let (required, after) = (&rest[..open], &rest[open + 2..]);
        if required.contains("]]") {
            return Err(format!("narrative {text:?}: `]]` without a `[[` before it"));
        }
        push(required, false)?;
        let close = after
            .find("]]")
            .ok_or_else(|| format!("narrative {text:?}: `[[` without a closing `]]`"))?;
        if after[..close].contains("[[") {
            return Err(format!(
                "narrative {text:?}: optional `[[ … ]]` parts cannot be nested"
            ));
        }
        push(&after[..close], true)?;
        rest = &after[close + 2..];
    }
    if rest.contains("]]") {
        return Err(format!("narrative {text:?}: `]]` without a `[[` before it"));
    }
    push(rest, false)?;
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_event::{Entity, EntityType, EventType, Timestamp};

    fn render(alternatives: &[&str], event: &UnifiedEvent) -> Option<String> {
        let alternatives: Vec<String> = alternatives.iter().map(|s| s.to_string()).collect();
        let narrative = Narrative::parse(&alternatives).expect("valid narrative");
        let mut out = String::new();
        narrative.render(event, &mut out).then_some(out)
    }

    #[test]
    fn optional_parts_drop_out_and_alternatives_fall_back() {
        let mut event = UnifiedEvent::new(EventType::Systemd, "systemd", Timestamp(1));
        assert_eq!(
            render(&["Unit seen[[ on {{ entity.node }}]]"], &event).as_deref(),
            Some("Unit seen")
        );
        assert_eq!(
            render(&["On {{ entity.node }}", "From {{ source }}"], &event).as_deref(),
            Some("From systemd")
        );
        assert_eq!(render(&["{{ entity.node }}"], &event), None);
        event.entity = Some(Box::new(Entity {
            node: Some("worker-1".into()),
            ..Entity::new(EntityType::Host, "worker-1")
        }));
        assert_eq!(
            render(
                &["Unit seen[[ on {{ entity.node }}]][[ in {{ entity.namespace }}]]"],
                &event
            )
            .as_deref(),
            Some("Unit seen on worker-1")
        );
    }

    #[test]
    fn rejects_unbalanced_and_unknown() {
        for bad in ["a [[ b", "a ]] b", "[[ a [[ b ]] ]]", "{{ nope }}", "100%"] {
            assert!(Narrative::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert!(Narrative::parse(&[]).is_err());
    }
}
