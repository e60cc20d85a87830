//! `anomaly`: notices when something happens far more often than it used to. For every entity
//! it counts a few signals per interval of event time (execs, TCP retransmits, timeouts and
//! connection errors, restarts, OOM kills, error-level events), learns each series' baseline
//! online (an exponentially weighted mean and variance, after a warm-up), and when a count is
//! both `ratio` times the baseline and `deviations` standard deviations above it for `for`
//! consecutive intervals, emits one `anomaly` event naming the entity. Every input event passes
//! through unchanged, in order; anomaly events follow the batch that closed their interval and
//! enter `correlate` like any other event about that entity.
//!
//! Intervals are on event time, so a replayed hour behaves as the live hour did. An interval is
//! judged once the newest event seen is `allowed_lateness` past its end (or when a later event
//! of the same series arrives first), and at the end of input; an event arriving after its
//! interval was judged is passed on without being counted. Memory is bounded by `max_series`.

mod detector;
mod series;
#[cfg(test)]
mod tests;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tapio_event::id::IdGenerator;
use tapio_event::{
    AnomalyContext, BufferReceiver, BuildContext, ComponentConfig, ComponentError, ComponentFuture,
    ConfigDuration, EventBatch, EventType, Severity, Timestamp, Transform, TransformContext,
    UnifiedEvent,
};

use self::detector::Rule;
use self::series::{Anomaly, SeriesStore};

/// What the transform counts, per entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Processes started (`process.operation = "exec"`).
    Exec,
    /// TCP retransmits (`network.operation = "retransmit"`).
    TcpRetransmit,
    /// TCP timeouts (`network.operation = "timeout"`).
    TcpTimeout,
    /// Connections refused, reset or unreachable (`network.operation = "error"`).
    ConnectionError,
    /// Restarts: a systemd `restart` job, or Kubernetes backing off a failed container
    /// (`BackOff`).
    Restart,
    /// OOM kills (`process.operation = "oom_kill"`).
    OomKill,
    /// Events whose `impact.severity` is `error` or `critical`.
    Error,
}

impl Signal {
    /// Every signal, in declaration order (`signal as usize` indexes it).
    const ALL: [Signal; 7] = [
        Signal::Exec,
        Signal::TcpRetransmit,
        Signal::TcpTimeout,
        Signal::ConnectionError,
        Signal::Restart,
        Signal::OomKill,
        Signal::Error,
    ];

    /// The name written to `anomaly.signal`.
    fn name(self) -> &'static str {
        match self {
            Signal::Exec => "exec",
            Signal::TcpRetransmit => "tcp_retransmit",
            Signal::TcpTimeout => "tcp_timeout",
            Signal::ConnectionError => "connection_error",
            Signal::Restart => "restart",
            Signal::OomKill => "oom_kill",
            Signal::Error => "error",
        }
    }

    /// Whether `event` counts for this signal. Summaries and anomalies never count: they are
    /// about events already counted.
    fn counts(self, event: &UnifiedEvent) -> bool {
        let process = || event.process.as_deref()?.operation.as_deref();
        let network = || event.network.as_deref()?.operation.as_deref();
        match self {
            Signal::Exec => process() == Some("exec"),
            Signal::OomKill => process() == Some("oom_kill"),
            Signal::TcpRetransmit => network() == Some("retransmit"),
            Signal::TcpTimeout => network() == Some("timeout"),
            Signal::ConnectionError => network() == Some("error"),
            Signal::Restart => {
                event.systemd.as_deref().and_then(|s| s.job_type.as_deref()) == Some("restart")
                    || event
                        .kubernetes
                        .as_deref()
                        .and_then(|k| k.reason.as_deref())
                        == Some("BackOff")
            }
            Signal::Error => matches!(
                event.impact.as_deref().and_then(|i| i.severity),
                Some(Severity::Error | Severity::Critical)
            ),
        }
    }
}

/// Options of the `anomaly` transform. With none at all it watches every signal of every
/// entity with the defaults below.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// The length of the intervals events are counted in, on event time.
    #[serde(default = "default_interval")]
    pub interval: ConfigDuration,
    /// Intervals a series learns its baseline from before it may fire; also the span of the
    /// baseline's moving average. At least 1.
    #[serde(default = "default_warmup")]
    pub warmup: u32,
    /// An interval counts as anomalous only when its count is at least this many times the
    /// baseline's mean (and `deviations` holds too).
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// An interval counts as anomalous only when its count is at least this many of the
    /// baseline's standard deviations above its mean (and `ratio` holds too). The deviation is
    /// taken as at least one count, so a series that was always quiet fires on a real burst, not
    /// on its first event.
    #[serde(default = "default_deviations")]
    pub deviations: f64,
    /// Consecutive anomalous intervals before the anomaly is reported, so a single spike is
    /// not. One anomaly event per episode, however long it lasts; an episode that outlasts
    /// `warmup` intervals becomes the new baseline. At least 1.
    #[serde(default = "default_persist", rename = "for")]
    pub persist: u32,
    /// How far behind the newest event an event may arrive and still be counted in its
    /// interval; intervals are judged this long after they end.
    #[serde(default = "default_allowed_lateness")]
    pub allowed_lateness: ConfigDuration,
    /// The signals to watch; all of them unless given.
    #[serde(default = "all_signals")]
    pub signals: Vec<Signal>,
    /// Series (one signal on one entity) kept at most. Beyond it the one idle the longest is
    /// evicted, counted (`tapio_component_evictions_total{state="anomaly_series"}`): its entity
    /// starts learning again from its next event. At least 1, at most 4294967294.
    #[serde(default = "default_max_series")]
    pub max_series: usize,
}

fn default_interval() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(10))
}

fn default_warmup() -> u32 {
    30
}

fn default_ratio() -> f64 {
    5.0
}

fn default_deviations() -> f64 {
    6.0
}

fn default_persist() -> u32 {
    2
}

fn default_allowed_lateness() -> ConfigDuration {
    ConfigDuration(std::time::Duration::from_secs(5))
}

fn all_signals() -> Vec<Signal> {
    Signal::ALL.to_vec()
}

fn default_max_series() -> usize {
    100_000
}

impl ComponentConfig for AnomalyConfig {
    type Component = dyn Transform;

    fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Transform>, ComponentError> {
        let interval = i64::try_from(self.interval.0.as_nanos()).unwrap_or(i64::MAX);
        if interval == 0 {
            return Err(ComponentError::config("`interval` must be longer than 0s"));
        }
        if self.warmup == 0 || self.persist == 0 {
            return Err(ComponentError::config(
                "`warmup` and `for` must be at least 1",
            ));
        }
        let thresholds_valid = self.ratio.is_finite()
            && self.ratio >= 1.0
            && self.deviations.is_finite()
            && self.deviations > 0.0;
        if !thresholds_valid {
            return Err(ComponentError::config(
                "`ratio` must be at least 1 and `deviations` more than 0",
            ));
        }
        if !(1..u32::MAX as usize).contains(&self.max_series) {
            return Err(ComponentError::config(
                "`max_series` must be between 1 and 4294967294",
            ));
        }
        let rule = Rule {
            warmup: self.warmup,
            ratio: self.ratio,
            deviations: self.deviations,
            persist: self.persist,
        };
        let mut watched = [false; Signal::ALL.len()];
        for &signal in &self.signals {
            watched[signal as usize] = true;
        }
        Ok(Box::new(AnomalyDetector {
            store: SeriesStore::new(rule, self.max_series),
            interval_nanos: interval,
            interval: self.interval,
            lateness: i64::try_from(self.allowed_lateness.0.as_nanos()).unwrap_or(i64::MAX),
            watched,
            newest: i64::MIN,
        }))
    }
}

/// The running transform.
struct AnomalyDetector {
    store: SeriesStore,
    interval_nanos: i64,
    interval: ConfigDuration,
    lateness: i64,
    watched: [bool; Signal::ALL.len()],
    /// The latest event time seen, in nanoseconds.
    newest: i64,
}

impl Transform for AnomalyDetector {
    fn run(
        mut self: Box<Self>,
        mut input: BufferReceiver,
        mut cx: TransformContext,
    ) -> ComponentFuture {
        Box::pin(async move {
            let mut found = Vec::new();
            while let Some(batch) = input.recv().await {
                let evicted = self.observe(batch.events(), &mut found);
                cx.metrics.add_evicted("anomaly_series", evicted);
                if cx.out.send(batch).await.is_err() {
                    return Ok(());
                }
                if !found.is_empty() && self.emit(&mut found, &mut cx).await.is_err() {
                    return Ok(());
                }
            }
            self.store.close_all(&mut found);
            let _ = self.emit(&mut found, &mut cx).await;
            Ok(())
        })
    }
}

impl AnomalyDetector {
    /// Counts `events` and judges the intervals their time closes; returns how many series it
    /// evicted.
    fn observe(&mut self, events: &[UnifiedEvent], found: &mut Vec<Anomaly>) -> u64 {
        let mut evicted = 0;
        for event in events {
            if matches!(event.kind, EventType::Correlation | EventType::Anomaly) {
                continue;
            }
            let Some(entity) = event.entity.as_deref() else {
                continue;
            };
            let at = event.timestamp.as_nanos();
            self.newest = self.newest.max(at);
            let interval = at.div_euclid(self.interval_nanos);
            for signal in Signal::ALL {
                if self.watched[signal as usize] && signal.counts(event) {
                    evicted += u64::from(self.store.count(entity, signal, interval, found));
                }
            }
        }
        let watermark = self.newest.saturating_sub(self.lateness);
        self.store
            .close_before(watermark.div_euclid(self.interval_nanos), found);
        evicted
    }

    /// Sends the anomaly events for `found`, in interval order.
    async fn emit(
        &self,
        found: &mut Vec<Anomaly>,
        cx: &mut TransformContext,
    ) -> Result<(), tapio_event::buffer::Closed> {
        found.sort_by_key(|anomaly| anomaly.interval);
        let events = found.drain(..).map(|a| self.event(a)).collect();
        cx.out.send(EventBatch::new(events)).await
    }

    /// The event reporting `anomaly`: at the end of its interval, about its entity only.
    fn event(&self, anomaly: Anomaly) -> UnifiedEvent {
        let end = anomaly
            .interval
            .saturating_add(1)
            .saturating_mul(self.interval_nanos);
        let at = Timestamp(end);
        let signal = anomaly.signal.name();
        let mut event = UnifiedEvent::new(EventType::Anomaly, "anomaly", at);
        event.id = IdGenerator::derived_id(
            &[
                anomaly.entity.id.as_bytes(),
                b"\0",
                signal.as_bytes(),
                b"\0",
                &anomaly.interval.to_le_bytes(),
            ],
            at,
        );
        event.anomaly = Some(Box::new(AnomalyContext {
            signal: signal.to_owned(),
            interval: self.interval,
            observed: anomaly.observed,
            baseline: anomaly.finding.baseline,
            deviation: anomaly.finding.deviation,
        }));
        event.entity = Some(Box::new(anomaly.entity));
        event
    }
}
