//! What `correlate` writes besides the events themselves: correlation ids and the summary event
//! of a completed pattern. Everything here is derived from the input (event ids, event time,
//! pattern names), never from randomness or the wall clock, so a replay writes the same bytes.

use tapio_event::id::IdGenerator;
use tapio_event::{
    CorrelationContext, Entity, EntityType, EventType, SemanticContext, Timestamp, UnifiedEvent,
};

use super::catalog::Pattern;
use super::groups::Related;

/// The id of the group an event opens: its own id, re-prefixed (`evt_X` → `cor_X`), so a group
/// can be traced to its first event. An event without id falls back to its time and `serial`,
/// its position in the processed stream.
pub(crate) fn correlation_id(event_id: &str, at: Timestamp, serial: u64) -> String {
    match event_id.strip_prefix("evt_").unwrap_or(event_id) {
        "" => format!("cor_{}_{serial}", at.as_nanos()),
        key => format!("cor_{key}"),
    }
}

/// A summary's id: an event id (`evt_` + ULID) at the summary's time whose random part is a
/// hash of the correlation id and the pattern, unique per group and pattern.
fn summary_id(correlation_id: &str, pattern: &str, at: Timestamp) -> String {
    IdGenerator::derived_id(&[correlation_id.as_bytes(), b"\0", pattern.as_bytes()], at)
}

/// Everything a summary tells about one group that completed a pattern.
pub(crate) struct Story<'a> {
    pub(crate) correlation_id: &'a str,
    pub(crate) entity: Option<&'a Entity>,
    /// Matching events per catalog step.
    pub(crate) counts: &'a [u32],
    /// The group's events so far.
    pub(crate) related: &'a Related,
    /// When the completing event happened.
    pub(crate) at: Timestamp,
}

/// The summary event of `pattern` for `story`.
pub(crate) fn summary(pattern: &Pattern, story: &Story<'_>) -> UnifiedEvent {
    let mut event = UnifiedEvent::new(EventType::Correlation, "correlate", story.at);
    event.id = summary_id(story.correlation_id, &pattern.name, story.at);
    event.entity = story.entity.map(|entity| Box::new(entity.clone()));
    event.semantic = Some(Box::new(SemanticContext {
        narrative: Some(narrative(pattern, story.entity, story.counts)),
        confidence: Some(pattern.confidence),
        ..SemanticContext::default()
    }));
    event.correlation = Some(Box::new(CorrelationContext {
        correlation_id: Some(story.correlation_id.to_owned()),
        pattern: Some(pattern.name.clone()),
        related_events: story.related.ids(),
        related_events_omitted: Some(story.related.omitted()).filter(|&omitted| omitted > 0),
        root_cause: Some(pattern.root_cause.clone()),
        recommended_action: Some(pattern.recommended_action.clone()),
        confidence: Some(pattern.confidence),
        ..CorrelationContext::default()
    }));
    event
}

/// "shop/api-7d9 on worker-1 lost network connectivity: TCP retransmits/timeouts/errors (3),
/// CNI interface error, failed probes (2), container restarted."
fn narrative(pattern: &Pattern, entity: Option<&Entity>, counts: &[u32]) -> String {
    let steps: Vec<String> = pattern
        .required
        .iter()
        .map(|step| {
            step.label
                .replace("{count}", &counts[step.step].to_string())
        })
        .collect();
    format!(
        "{} {}: {}.",
        subject(entity),
        pattern.summary,
        steps.join(", ")
    )
}

/// How a narrative names the group's entity.
pub(crate) fn subject(entity: Option<&Entity>) -> String {
    let Some(entity) = entity else {
        return "An unidentified subject".to_owned();
    };
    let name = match (&entity.namespace, &entity.name) {
        (Some(namespace), Some(name)) => format!("{namespace}/{name}"),
        (None, Some(name)) => name.clone(),
        _ => entity.id.clone(),
    };
    match (entity.kind, &entity.node) {
        (EntityType::Pod, Some(node)) => format!("{name} on {node}"),
        (EntityType::Pod, None) => name,
        (kind, _) => {
            let mut kind = kind.as_str().to_owned();
            kind[..1].make_ascii_uppercase();
            format!("{kind} {name}")
        }
    }
}
