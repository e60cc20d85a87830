//! An index from what an event is (its source, type and operation) to the rules or matchers
//! that could accept it, so a transform tests each event against two or three of them instead
//! of all. `semantic_enrich`'s rules and `correlate`'s catalog steps both use it: most of their
//! conditions name a source, a type or the field that says what happened.

use tapio_event::{EventType, UnifiedEvent};

use super::fast_map::FastMap;

/// The field that says what happened, for events of `kind`.
pub(crate) fn operation_path(kind: EventType) -> Option<&'static str> {
    match kind {
        EventType::Network => Some("network.operation"),
        EventType::Process => Some("process.operation"),
        EventType::Kubernetes => Some("kubernetes.reason"),
        EventType::Systemd => Some("systemd.active_state"),
        EventType::Anomaly => Some("anomaly.signal"),
        EventType::Application | EventType::Correlation => None,
    }
}

/// Whether `path` is the operation field of some event type.
pub(crate) fn is_operation_path(path: &str) -> bool {
    EventType::ALL
        .iter()
        .any(|&kind| operation_path(kind) == Some(path))
}

/// The value of `event`'s [`operation_path`] field, read directly: this runs for every event.
pub(crate) fn operation_of(event: &UnifiedEvent) -> Option<&str> {
    match event.kind {
        EventType::Network => event.network.as_deref()?.operation.as_deref(),
        EventType::Process => event.process.as_deref()?.operation.as_deref(),
        EventType::Kubernetes => event.kubernetes.as_deref()?.reason.as_deref(),
        EventType::Systemd => event.systemd.as_deref()?.active_state.as_deref(),
        EventType::Anomaly => Some(event.anomaly.as_deref()?.signal.as_str()),
        EventType::Application | EventType::Correlation => None,
    }
}

/// What an index entry stands for. `source` and `operation` are `None` for any value the
/// indexed items do not name (or, for the operation, none at all): an item admits such a key
/// unless it accepts only named values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'a> {
    pub(crate) source: Option<&'a str>,
    pub(crate) kind: EventType,
    pub(crate) operation: Option<&'a str>,
}

/// Item indices, in item order, per (source, type, operation).
#[derive(Debug, Clone, Default)]
pub(crate) struct CandidateIndex {
    /// Named sources, numbered from 1 (0: any other).
    sources: FastMap<Box<str>, usize>,
    /// Named operations, numbered from 1 (0: any other, or none).
    operations: FastMap<Box<str>, usize>,
    lists: Vec<Box<[u32]>>,
}

impl CandidateIndex {
    /// Indexes `items` items by the `sources` and `operations` they name; `admits(item, key)`
    /// says whether an item could accept an event of that key (when unsure, it must say yes).
    pub(crate) fn new(
        sources: &[&str],
        operations: &[&str],
        items: usize,
        admits: impl Fn(usize, Key<'_>) -> bool,
    ) -> CandidateIndex {
        let mut lists = Vec::new();
        for source in named(sources) {
            for kind in EventType::ALL {
                for operation in named(operations) {
                    let key = Key {
                        source,
                        kind,
                        operation,
                    };
                    lists.push(
                        (0..items)
                            .filter(|&i| admits(i, key))
                            .map(|i| i as u32)
                            .collect(),
                    );
                }
            }
        }
        let number = |names: &[&str]| -> FastMap<Box<str>, usize> {
            (1..).zip(names).map(|(i, &n)| (Box::from(n), i)).collect()
        };
        CandidateIndex {
            sources: number(sources),
            operations: number(operations),
            lists,
        }
    }

    /// The items that could accept `event`.
    pub(crate) fn get(&self, event: &UnifiedEvent) -> &[u32] {
        let source = self.sources.get(event.source.as_str()).copied();
        let operation = operation_of(event).and_then(|value| self.operations.get(value).copied());
        let key = (source.unwrap_or(0) * EventType::ALL.len() + event.kind as usize)
            * (self.operations.len() + 1)
            + operation.unwrap_or(0);
        &self.lists[key]
    }
}

/// `None` (any other value), then each of `names`.
fn named<'a>(names: &'a [&'a str]) -> impl Iterator<Item = Option<&'a str>> + 'a {
    std::iter::once(None).chain(names.iter().map(|&name| Some(name)))
}

/// Appends each of `names` to `into` that is not there yet, keeping first-seen order.
pub(crate) fn add_names<'a>(into: &mut Vec<&'a str>, names: impl IntoIterator<Item = &'a str>) {
    for name in names {
        if !into.contains(&name) {
            into.push(name);
        }
    }
}
