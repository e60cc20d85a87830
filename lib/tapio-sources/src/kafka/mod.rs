//! `kafka`: consumes topics as a member of a consumer group — the aggregator side of Tapio's
//! distributed mode, where node agents produce to Kafka and a pool of aggregators splits the
//! partitions between them.
//!
//! Each message becomes one event (`decoding = "json"`: a `UnifiedEvent`; `"text"`: an
//! `application` event with the payload in `raw_data`). A message that does not decode is
//! counted and sent to the `errors` output; its offset still advances.
//!
//! Delivery is at least once. Offsets are committed only for messages whose events every sink
//! downstream acknowledged (a message that made no event counts as acknowledged when everything
//! before it is), through librdkafka's offset store and its periodic commit (`commit_interval`),
//! plus a synchronous commit before partitions are revoked and at shutdown. A crash (or SIGKILL)
//! therefore re-delivers what was sent but not yet committed — duplicates, never gaps. Before a
//! rebalance takes partitions away the source waits up to `drain_timeout` for their events in
//! flight, so a planned rebalance or stop usually re-delivers nothing.
//!
//! The consumer is polled by a dedicated thread ([`consumer`]); the source's task forwards its
//! batches to the outputs. When downstream is full the partitions are paused (the consumer stays
//! in its group) until there is room again.

mod consumer;
mod offsets;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tapio_event::{
    BuildContext, ComponentConfig, ComponentError, ComponentFuture, ConfigDuration, ERRORS_OUTPUT,
    Source, SourceContext,
};
use tapio_kafka::{
    HEALTHCHECK_TIMEOUT, LibrdkafkaOptions, SaslConfig, TlsConfig, check_brokers, create_client,
    security_properties,
};
use tokio::sync::mpsc;

use self::consumer::{Context, Outgoing, Poller};
use self::offsets::Offsets;
pub use crate::util::lines::Decoding;

/// Consumes Kafka topics in a consumer group.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Comma-separated `host:port` list of brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// Topics to consume, at least one. An entry starting with `^` is a regular
    /// expression (`"^tapio\\..*"`): every matching topic, including ones created later.
    pub topics: Vec<String>,
    /// The consumer group. Aggregators sharing a group split the partitions between
    /// them; a group's committed offsets are where a restart resumes.
    pub group_id: String,
    /// Where a partition without a committed offset for the group starts: `"earliest"` (a new
    /// group reads everything the topic still holds, so nothing is skipped) or `"latest"` (only
    /// messages produced from now on).
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// How each message becomes an event: `"json"` reads a `UnifiedEvent`; `"text"` makes an
    /// `application` event with the payload in `raw_data`. Messages that do not decode are
    /// counted as `decode` errors and sent to the `errors` output; their offsets advance.
    #[serde(default)]
    pub decoding: Decoding,
    /// How often acknowledged offsets are committed (`auto.commit.interval.ms`). Shorter means
    /// fewer messages read again after a crash.
    #[serde(default = "default_commit_interval")]
    pub commit_interval: ConfigDuration,
    /// How long the group waits for a silent member before giving its partitions to others
    /// (`session.timeout.ms`).
    #[serde(default = "default_session_timeout")]
    pub session_timeout: ConfigDuration,
    /// How long a rebalance or a stop waits for sinks to acknowledge the events in flight of the
    /// partitions being let go, so their offsets can be committed first. What is not
    /// acknowledged by then is read again by the partitions' next owner.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: ConfigDuration,
    /// Any librdkafka consumer property (`{ "fetch.max.bytes" = "10485760" }`), applied after
    /// every other option so that it wins. `enable.auto.offset.store`, `enable.partition.eof`,
    /// `group.id` and `bootstrap.servers` are refused: delivery or another option depends on
    /// them. Secret-looking values are kept out of logs and errors as for the `kafka` sink.
    #[serde(default)]
    pub librdkafka_options: LibrdkafkaOptions,
    /// Connect to the brokers with TLS (`security.protocol` `ssl`, or `sasl_ssl` with `sasl`).
    /// Unset: plain TCP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Authenticate to the brokers with SASL. Unset: no authentication.
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    /// Fetch the cluster's metadata when the source starts; if no broker answers within 10 s
    /// the run stops with one error line (exit 69). With `false` the source starts anyway and
    /// keeps trying.
    #[serde(default = "default_healthcheck")]
    pub healthcheck: bool,
}

/// librdkafka's `auto.offset.reset`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    /// The oldest message the partition holds.
    #[default]
    Earliest,
    /// The next message produced.
    Latest,
}

/// librdkafka properties the source's delivery guarantee relies on; users may not override them.
const RESERVED_PROPERTIES: &[&str] = &[
    "enable.auto.offset.store",
    "enable.partition.eof",
    "group.id",
    "bootstrap.servers",
];

fn default_commit_interval() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}

fn default_session_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

fn default_drain_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

fn default_healthcheck() -> bool {
    true
}

impl KafkaSourceConfig {
    /// The librdkafka consumer properties these options stand for, in the order they are set.
    fn properties(&self) -> Vec<(String, String)> {
        let mut props: Vec<(String, String)> = Vec::new();
        let mut set = |key: &str, value: String| props.push((key.to_owned(), value));
        set("bootstrap.servers", self.bootstrap_servers.clone());
        set("group.id", self.group_id.clone());
        let reset = match self.auto_offset_reset {
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        };
        set("auto.offset.reset", reset.into());
        set("enable.auto.commit", "true".into());
        set("enable.auto.offset.store", "false".into());
        set("enable.partition.eof", "false".into());
        set(
            "auto.commit.interval.ms",
            self.commit_interval.0.as_millis().to_string(),
        );
        set(
            "session.timeout.ms",
            self.session_timeout.0.as_millis().to_string(),
        );
        security_properties(self.tls.as_ref(), self.sasl.as_ref(), &mut set);
        for (key, value) in self.librdkafka_options.iter() {
            set(key, value.to_owned());
        }
        props
    }
}

impl ComponentConfig for KafkaSourceConfig {
    type Component = dyn Source;
    const NAMED_OUTPUTS: &'static [&'static str] = &[ERRORS_OUTPUT];

    /// Checks the options and creates the consumer (librdkafka validates every property here);
    /// the group is joined when the source runs.
    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>, ComponentError> {
        let invalid = |message: String| ComponentError::config(message);
        if self.bootstrap_servers.trim().is_empty() {
            return Err(invalid(
                "`bootstrap_servers` must name at least one broker".into(),
            ));
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(
                "`topics` must list at least one topic, none empty".into(),
            ));
        }
        if self.group_id.trim().is_empty() {
            return Err(invalid("`group_id` must not be empty".into()));
        }
        if let Some((key, _)) = self
            .librdkafka_options
            .iter()
            .find(|(key, _)| RESERVED_PROPERTIES.contains(key))
        {
            return Err(invalid(format!(
                "`librdkafka_options` may not set `{key}`: the source's delivery guarantee (or \
                 one of its own options) depends on it"
            )));
        }
        let context = Context {
            component: cx.name.clone(),
            drain_timeout: self.drain_timeout.0,
            offsets: Mutex::new(Offsets::default()),
            revoked: Mutex::new(Vec::new()),
            assignments: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        };
        let consumer: BaseConsumer<Context> =
            create_client(self.properties(), context).map_err(invalid)?;
        Ok(Box::new(KafkaSource {
            consumer: Arc::new(consumer),
            config: self.clone(),
        }))
    }
}

struct KafkaSource {
    consumer: Arc<BaseConsumer<Context>>,
    config: KafkaSourceConfig,
}

impl Source for KafkaSource {
    fn run(self: Box<Self>, cx: SourceContext) -> ComponentFuture {
        Box::pin(async move {
            let SourceContext {
                mut out,
                mut shutdown,
                metrics,
            } = cx;
            let KafkaSource { consumer, config } = *self;
            if config.healthcheck {
                let probe = Arc::clone(&consumer);
                let fetch = move || probe.fetch_metadata(None, HEALTHCHECK_TIMEOUT).map(drop);
                check_brokers(fetch, &config.bootstrap_servers).await?;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let (tx, mut rx) = mpsc::channel::<Outgoing>(2);
            let poller = Poller {
                consumer,
                topics: config.topics,
                decoding: config.decoding,
                keep_errors: out.has_output(ERRORS_OUTPUT),
                metrics,
                out: tx,
                stop: Arc::clone(&stop),
                runtime: tokio::runtime::Handle::current(),
            };
            let polling = tokio::task::spawn_blocking(move || poller.run());
            let mut connected = true;
            loop {
                tokio::select! {
                    () = shutdown.triggered(), if !stop.load(Ordering::Acquire) => {
                        stop.store(true, Ordering::Release);
                    }
                    outgoing = rx.recv() => {
                        let Some(Outgoing { events, errors }) = outgoing else { break };
                        if let Some(errors) = errors {
                            out.send_to(ERRORS_OUTPUT, errors).await;
                        }
                        if let Some(events) = events
                            && connected
                            && out.send(events).await.is_err()
                        {
                            connected = false;
                            stop.store(true, Ordering::Release);
                        }
                    }
                }
            }
            drop(out);
            polling.await.map_err(|e| {
                ComponentError::runtime(format!("the kafka consumer thread failed: {e}"))
            })?
        })
    }
}
