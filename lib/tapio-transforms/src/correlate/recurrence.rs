//! Recurrence: the same fact on the same entity again and again, over a horizon much longer
//! than a correlation group lives (a pod OOM-killed three times in half an hour, a node
//! flapping NotReady, a unit restarting in a loop). Each recurrence of the catalog keeps, per
//! key (the entity by default), only its latest `count` occurrences, in event-time order: it
//! fires when the oldest of them is within `within` of the newest, and not again until an
//! occurrence finds them spread wider, which ends the episode. Its summary lists the
//! occurrences and the correlation ids of the groups they were in, which are the ids that the
//! groups' own summaries carry.

use std::collections::VecDeque;
use std::time::Duration;

use tapio_event::id::IdGenerator;
use tapio_event::{
    ConfigDuration, CorrelationContext, EventType, SemanticContext, Timestamp, UnifiedEvent,
};

use super::catalog::{Catalog, Recurrence};
use super::summary;
use crate::util::fast_map::FastMap;

/// One occurrence of a recurring fact.
#[derive(Debug)]
struct Occurrence {
    at: Timestamp,
    event_id: String,
    correlation_id: String,
}

/// The latest occurrences of one recurrence on one key.
#[derive(Debug, Default)]
struct Series {
    /// At most the recurrence's `count`, oldest first.
    occurrences: VecDeque<Occurrence>,
    /// Whether the current episode has fired.
    fired: bool,
}

impl Series {
    fn last_at(&self) -> Timestamp {
        self.occurrences.back().map_or(Timestamp::MIN, |o| o.at)
    }
}

/// Every recurrence's series, bounded: at `max_series`, series whose occurrences all lie
/// beyond their horizon go first (they cannot fire any more), then the least recently seen,
/// counted as evicted.
#[derive(Debug)]
pub(crate) struct Recurrences {
    series: FastMap<(usize, String), Series>,
    max_series: usize,
    evicted: u64,
}

impl Recurrences {
    pub(crate) fn new(max_series: usize) -> Self {
        Recurrences {
            series: FastMap::default(),
            max_series,
            evicted: 0,
        }
    }

    /// Series dropped to stay within the bound while they could still have fired.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Records `event` (already tagged with its group's correlation id) as an occurrence of
    /// each recurrence in `matched`, and appends the summary of each that fires; returns how
    /// many did.
    pub(crate) fn observe(
        &mut self,
        catalog: &Catalog,
        matched: &[usize],
        event: &UnifiedEvent,
        out: &mut Vec<UnifiedEvent>,
    ) -> u64 {
        let mut fired = 0;
        for &index in matched {
            let recurrence = &catalog.recurrences()[index];
            let Some(key) = recurrence.key.lookup(event) else {
                continue;
            };
            let slot = (index, key.into_owned());
            if !self.series.contains_key(&slot) {
                self.make_room(catalog, event.timestamp);
            }
            let series = self.series.entry(slot).or_default();
            series.occurrences.push_back(Occurrence {
                at: event.timestamp,
                event_id: event.id.clone(),
                correlation_id: event
                    .correlation
                    .as_ref()
                    .and_then(|c| c.correlation_id.clone())
                    .unwrap_or_default(),
            });
            if series.occurrences.len() > recurrence.count as usize {
                series.occurrences.pop_front();
            }
            let spread = series.last_at().as_nanos()
                - series.occurrences.front().map_or(0, |o| o.at.as_nanos());
            let recurring = series.occurrences.len() == recurrence.count as usize
                && spread <= recurrence.within;
            if recurring && !series.fired {
                out.push(summarise(recurrence, series, event));
                fired += 1;
            }
            series.fired = recurring;
        }
        fired
    }

    /// Frees one place for a new series when the bound is reached.
    fn make_room(&mut self, catalog: &Catalog, now: Timestamp) {
        if self.series.len() < self.max_series {
            return;
        }
        let recurrences = catalog.recurrences();
        self.series.retain(|(index, _), series| {
            now.as_nanos() - series.last_at().as_nanos() <= recurrences[*index].within
        });
        if self.series.len() < self.max_series {
            return;
        }
        let oldest = self
            .series
            .iter()
            .min_by_key(|(_, series)| series.last_at())
            .map(|(slot, _)| slot.clone());
        if let Some(slot) = oldest {
            self.series.remove(&slot);
            self.evicted += 1;
        }
    }
}

/// The summary of a recurrence that fired on the occurrence `event`.
fn summarise(recurrence: &Recurrence, series: &Series, event: &UnifiedEvent) -> UnifiedEvent {
    let first = series.occurrences.front().map_or(event.timestamp, |o| o.at);
    let key = recurrence.key.lookup(event).unwrap_or_default();
    let episode = IdGenerator::derived_id(
        &[
            recurrence.name.as_bytes(),
            b"\0",
            key.as_bytes(),
            b"\0",
            &first.as_nanos().to_le_bytes(),
        ],
        first,
    );
    let correlation_id = summary::correlation_id(&episode, first, 0);
    let mut earlier: Vec<String> = Vec::with_capacity(series.occurrences.len());
    for occurrence in &series.occurrences {
        if !occurrence.correlation_id.is_empty() && !earlier.contains(&occurrence.correlation_id) {
            earlier.push(occurrence.correlation_id.clone());
        }
    }
    let within = ConfigDuration(Duration::from_nanos(recurrence.within.unsigned_abs()));
    let mut summary = UnifiedEvent::new(EventType::Correlation, "correlate", event.timestamp);
    summary.id = IdGenerator::derived_id(
        &[correlation_id.as_bytes(), b"\0", recurrence.name.as_bytes()],
        event.timestamp,
    );
    summary.entity = event.entity.clone();
    summary.semantic = Some(Box::new(SemanticContext {
        narrative: Some(format!(
            "{} {}: {} times within {within}.",
            summary::subject(event.entity.as_deref()),
            recurrence.summary.replace("{key}", &key),
            series.occurrences.len()
        )),
        confidence: Some(recurrence.confidence),
        ..SemanticContext::default()
    }));
    summary.correlation = Some(Box::new(CorrelationContext {
        correlation_id: Some(correlation_id),
        pattern: Some(recurrence.name.clone()),
        related_events: series
            .occurrences
            .iter()
            .map(|o| o.event_id.clone())
            .collect(),
        related_correlations: earlier,
        root_cause: Some(recurrence.root_cause.clone()),
        recommended_action: Some(recurrence.recommended_action.clone()),
        confidence: Some(recurrence.confidence),
        ..CorrelationContext::default()
    }));
    summary
}
