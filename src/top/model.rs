//! What `tapio top` shows, computed from the API's answers alone: no terminal, no clock of its
//! own (the caller says when each answer was taken), so every figure can be checked in a test.

use std::time::Instant;

use tapio_api::components::{ComponentCounters, ComponentsAnswer};

/// One answer of `/v1/components` and when it arrived: rates are the counters' growth between
/// two samples over the time between them.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the answer arrived.
    pub taken: Instant,
    /// What the API answered.
    pub answer: ComponentsAnswer,
}

/// One line of the table: a component's totals and, from the second sample on, its rates.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The component's name in the config.
    pub id: String,
    /// `source`, `transform` or `sink`.
    pub kind: String,
    /// The component's `type`.
    pub component_type: String,
    /// Events received per second; `None` without an earlier sample to compare with.
    pub received_per_sec: Option<f64>,
    /// Events sent on (written, for a sink) per second.
    pub sent_per_sec: Option<f64>,
    /// Failed events since the component started.
    pub errors: u64,
    /// Failed events per second.
    pub errors_per_sec: Option<f64>,
    /// Events dropped on purpose since the component started.
    pub discarded: u64,
    /// Events waiting in the input buffer.
    pub buffer_events: u64,
    /// Capacity of the input buffer; 0 when there is none.
    pub buffer_max_events: u64,
}

impl Row {
    /// How full the input buffer is, in percent; `None` for a component without one.
    pub fn buffer_percent(&self) -> Option<f64> {
        (self.buffer_max_events > 0)
            .then(|| self.buffer_events as f64 * 100.0 / self.buffer_max_events as f64)
    }
}

/// The rows of `current`, with rates against `previous` where it has the same component. A
/// counter that went down (the component was restarted by a reload, or Tapio itself was) has
/// no rate for that sample rather than a negative or huge one.
pub fn rows(previous: Option<&Sample>, current: &Sample) -> Vec<Row> {
    let elapsed = previous
        .map(|before| {
            current
                .taken
                .saturating_duration_since(before.taken)
                .as_secs_f64()
        })
        .filter(|seconds| *seconds > 0.0);
    current
        .answer
        .components
        .iter()
        .map(|now| {
            let before = previous.and_then(|sample| {
                sample
                    .answer
                    .components
                    .iter()
                    .find(|c| c.id == now.id && c.kind == now.kind)
            });
            let rate = |count: fn(&ComponentCounters) -> u64| {
                let grown = count(now).checked_sub(count(before?))?;
                Some(grown as f64 / elapsed?)
            };
            Row {
                id: now.id.clone(),
                kind: now.kind.clone(),
                component_type: now.component_type.clone(),
                received_per_sec: rate(|c| c.received_events),
                sent_per_sec: rate(|c| c.sent_events),
                errors: now.errors,
                errors_per_sec: rate(|c| c.errors),
                discarded: now.discarded,
                buffer_events: now.buffer_events,
                buffer_max_events: now.buffer_max_events,
            }
        })
        .collect()
}

/// The header's figures for the whole pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    /// How many components run.
    pub components: usize,
    /// Events per second the sources send into the pipeline.
    pub ingested_per_sec: Option<f64>,
    /// Events per second the sinks write out of it.
    pub delivered_per_sec: Option<f64>,
    /// Failed events, every component together.
    pub errors: u64,
    /// Events dropped on purpose, every component together.
    pub discarded: u64,
}

impl Totals {
    /// The totals of `rows`; a rate is `None` while any of the rows it adds up has none.
    pub fn of(rows: &[Row]) -> Totals {
        let sent_by = |kind: &str| {
            rows.iter()
                .filter(|row| row.kind == kind)
                .map(|row| row.sent_per_sec)
                .sum::<Option<f64>>()
        };
        Totals {
            components: rows.len(),
            ingested_per_sec: sent_by("source"),
            delivered_per_sec: sent_by("sink"),
            errors: rows.iter().map(|row| row.errors).sum(),
            discarded: rows.iter().map(|row| row.discarded).sum(),
        }
    }
}

/// Everything on the screen, updated by each attempt to read the API.
#[derive(Debug, Default)]
pub struct Dashboard {
    /// The last answer, which the next one's rates are measured against.
    last: Option<Sample>,
    /// The table, from the last answer (kept while the API cannot be reached).
    pub rows: Vec<Row>,
    /// The lifecycle state of the last answer; `None` while the API does not answer.
    pub health: Option<String>,
    /// Why the last attempt failed; `None` once one succeeds.
    pub error: Option<String>,
    /// Whether any attempt finished yet.
    pub attempted: bool,
}

impl Dashboard {
    /// Takes in the outcome of one attempt, finished at `taken`.
    pub fn record(&mut self, taken: Instant, outcome: Result<ComponentsAnswer, String>) {
        self.attempted = true;
        match outcome {
            Ok(answer) => {
                let sample = Sample { taken, answer };
                self.rows = rows(self.last.as_ref(), &sample);
                self.health = Some(sample.answer.health.clone());
                self.error = None;
                self.last = Some(sample);
            }
            Err(message) => {
                self.health = None;
                self.error = Some(message);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    /// Counters of a component with `received`/`sent`/`errors` and an empty buffer of 100.
    pub(crate) fn counters(
        id: &str,
        kind: &str,
        received: u64,
        sent: u64,
        errors: u64,
    ) -> ComponentCounters {
        ComponentCounters {
            id: id.into(),
            kind: kind.into(),
            component_type: format!("{kind}_type"),
            received_events: received,
            sent_events: sent,
            sent_bytes: 0,
            errors,
            discarded: 0,
            buffer_events: 0,
            buffer_max_events: 100,
        }
    }

    pub(crate) fn answer(components: Vec<ComponentCounters>) -> ComponentsAnswer {
        ComponentsAnswer {
            health: "running".into(),
            components,
        }
    }

    #[test]
    fn the_first_sample_has_totals_but_no_rates() {
        let sample = Sample {
            taken: Instant::now(),
            answer: answer(vec![counters("gen", "source", 0, 50, 2)]),
        };
        let rows = rows(None, &sample);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].received_per_sec, rows[0].sent_per_sec),
            (None, None)
        );
        assert_eq!(rows[0].errors_per_sec, None);
        assert_eq!(rows[0].errors, 2);
        assert_eq!(Totals::of(&rows).ingested_per_sec, None);
    }

    #[test]
    fn rates_are_the_growth_over_the_time_between_samples() {
        let start = Instant::now();
        let first = Sample {
            taken: start,
            answer: answer(vec![
                counters("gen", "source", 0, 100, 0),
                counters("out", "sink", 90, 80, 1),
            ]),
        };
        let second = Sample {
            taken: start + Duration::from_secs(2),
            answer: answer(vec![
                counters("gen", "source", 0, 300, 0),
                counters("out", "sink", 290, 260, 5),
                counters("new", "transform", 10, 10, 0),
            ]),
        };
        let rows = rows(Some(&first), &second);
        assert_eq!(rows[0].sent_per_sec, Some(100.0));
        assert_eq!(rows[1].received_per_sec, Some(100.0));
        assert_eq!(rows[1].sent_per_sec, Some(90.0));
        assert_eq!((rows[1].errors, rows[1].errors_per_sec), (5, Some(2.0)));
        // Not in the first sample: nothing to compare with.
        assert_eq!(rows[2].sent_per_sec, None);
        let totals = Totals::of(&rows);
        assert_eq!(totals.components, 3);
        assert_eq!(totals.ingested_per_sec, Some(100.0));
        assert_eq!(totals.delivered_per_sec, Some(90.0));
        assert_eq!(totals.errors, 5);
    }

    #[test]
    fn a_counter_that_went_down_has_no_rate() {
        let start = Instant::now();
        let before = Sample {
            taken: start,
            answer: answer(vec![counters("gen", "source", 0, 1000, 0)]),
        };
        let restarted = Sample {
            taken: start + Duration::from_secs(1),
            answer: answer(vec![counters("gen", "source", 0, 10, 0)]),
        };
        assert_eq!(rows(Some(&before), &restarted)[0].sent_per_sec, None);
    }

    #[test]
    fn buffer_fill_is_a_percentage_of_the_capacity() {
        let mut row = rows(
            None,
            &Sample {
                taken: Instant::now(),
                answer: answer(vec![counters("out", "sink", 0, 0, 0)]),
            },
        )
        .remove(0);
        row.buffer_events = 25;
        assert_eq!(row.buffer_percent(), Some(25.0));
        row.buffer_max_events = 0;
        assert_eq!(row.buffer_percent(), None);
    }

    #[test]
    fn a_failed_attempt_keeps_the_table_and_the_next_answer_rates_against_the_last_one() {
        let start = Instant::now();
        let mut dashboard = Dashboard::default();
        dashboard.record(start, Ok(answer(vec![counters("gen", "source", 0, 0, 0)])));
        dashboard.record(
            start + Duration::from_secs(1),
            Err("cannot reach the Tapio API".into()),
        );
        assert_eq!(
            dashboard.error.as_deref(),
            Some("cannot reach the Tapio API")
        );
        assert_eq!(dashboard.health, None);
        assert_eq!(dashboard.rows.len(), 1);
        dashboard.record(
            start + Duration::from_secs(4),
            Ok(answer(vec![counters("gen", "source", 0, 40, 0)])),
        );
        assert_eq!(dashboard.error, None);
        assert_eq!(dashboard.health.as_deref(), Some("running"));
        assert_eq!(dashboard.rows[0].sent_per_sec, Some(10.0));
    }
}
