//! `kafka`: produces each event as one Kafka message (its JSON form) with librdkafka, through
//! the `rdkafka` crate and its bundled librdkafka (the system one may be too old for the
//! broker).
//!
//! Routing: the topic is a template (`tapio.{{ source }}`); the key is by default the entity's
//! routing key, so one entity's events land in one partition, in the order the sink received
//! them. Events about no entity are sent without a key and counted (reported when the sink
//! stops); they are not dropped.
//!
//! Delivery: a batch is acknowledged upstream only once the broker confirmed every message of
//! it (with `acks = "all"` by default, on an idempotent producer, so librdkafka's own retries
//! neither duplicate nor reorder). The sink works in rounds: it takes the batches waiting in its
//! buffer (up to `batch.max_events` events), enqueues their messages in order, and while the
//! broker confirms them starts the next round, up to [`ROUNDS_IN_FLIGHT`] at once, so the
//! producer never idles between rounds. Messages that fail with a retriable error (broker down,
//! message timed out) are sent again, in their original order, with capped backoff while their
//! round is held, so backpressure reaches the sources and nothing is lost. A message the broker
//! rejects for good (too large, invalid) is written with the reason to the dead-letter file
//! `<data_dir>/dead_letter/<sink>.ndjson` and counted as error `rejected`. Delivery is at least
//! once: a message whose confirmation was lost is sent again. Order within a partition holds
//! except when a message is re-sent after `message_timeout`: later messages of its partition
//! that got through stay ahead of it.
//!
//! The healthcheck fetches the cluster's metadata when the sink starts; if the brokers do not
//! answer the sink fails at once with one clear error (exit 69). With `healthcheck = false` it
//! starts anyway and retries.

mod config;
mod record;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tapio_event::template::Template;
use tapio_event::{
    AckToken, BatchStatus, BufferReceiver, BuildContext, ComponentConfig, ComponentError,
    ComponentFuture, ComponentMetrics, Sink, SinkContext, UnifiedEvent,
};
use tapio_kafka::{HEALTHCHECK_TIMEOUT, Logs, check_brokers, create_client};

pub use self::config::{Acks, BatchConfig, Compression, Encoding, KafkaSinkConfig};
use self::record::{Recipe, Record};
use crate::util::dead_letter::DeadLetter;
use crate::util::retry::sink_backoff;

/// How long to wait before enqueueing again when librdkafka's local queue is full.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(10);

impl KafkaSinkConfig {
    /// The sink itself, for `build` and for tests that drive its delivery directly.
    fn create(&self, cx: &BuildContext) -> Result<KafkaSink, ComponentError> {
        let invalid = |message: String| ComponentError::config(message);
        if self.bootstrap_servers.trim().is_empty() {
            return Err(invalid(
                "`bootstrap_servers` must name at least one broker".into(),
            ));
        }
        let template = |option: &str, text: &str| {
            Template::parse(text).map_err(|e| invalid(format!("`{option}`: {e}")))
        };
        let recipe = Recipe {
            topic: template("topic", &self.topic)?,
            key: self
                .key
                .as_deref()
                .map(|key| template("key", key))
                .transpose()?,
            headers: self
                .headers
                .iter()
                .map(|(name, text)| Ok((name.clone(), template("headers", text)?)))
                .collect::<Result<_, ComponentError>>()?,
            encoding: self.encoding,
        };
        let logs = Logs {
            component: cx.name.clone(),
        };
        let producer: FutureProducer<Logs> =
            create_client(self.properties(), logs).map_err(invalid)?;
        Ok(KafkaSink {
            producer,
            recipe,
            bootstrap_servers: self.bootstrap_servers.clone(),
            healthcheck: self.healthcheck,
            gather_max: self.batch.max_events,
            dead_letter: DeadLetter::new(&cx.data_dir, &cx.name),
        })
    }
}

impl ComponentConfig for KafkaSinkConfig {
    type Component = dyn Sink;

    fn uses_data_dir(&self) -> bool {
        true
    }

    /// Checks the options and creates the producer (librdkafka validates every property here,
    /// so a misspelt `librdkafka_options` key fails before anything runs).
    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Sink>, ComponentError> {
        Ok(Box::new(self.create(cx)?))
    }
}

/// The running sink: one producer and the recipe that turns events into its messages.
struct KafkaSink {
    producer: FutureProducer<Logs>,
    recipe: Recipe,
    bootstrap_servers: String,
    healthcheck: bool,
    /// The most events handed to librdkafka in one delivery round (`batch.max_events`):
    /// batches that piled up while a round waited for the broker go out together, so a round
    /// trip is paid per this many events rather than per (possibly small) input batch.
    gather_max: usize,
    dead_letter: DeadLetter,
}

/// How many delivery rounds may wait for the broker at once. While one round waits, the next
/// is already enqueued, so the producer is never idle between rounds; each round holds up to
/// `batch.max_events` events.
const ROUNDS_IN_FLIGHT: usize = 4;

/// One message handed to librdkafka: its event's position in the round, its record (kept to
/// send again), and its delivery or why it was refused at once.
type Sent = (usize, Record, Result<DeliveryFuture, Failure>);

/// The batches of one delivery round and what became of their messages so far.
struct Round {
    batches: Vec<(Arc<Vec<UnifiedEvent>>, Vec<AckToken>)>,
    sent: Vec<Sent>,
    /// Events dead-lettered, by position in the round, with the reason.
    rejected: Vec<(usize, String)>,
    unkeyed: usize,
}

/// Why a message was not written, sorted by what the sink does next.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// The brokers are unreachable or slow: the message is sent again after a backoff.
    Retryable(String),
    /// The broker (or librdkafka) refuses this message itself: it goes to the dead-letter file.
    Rejected(String),
    /// Nothing sent by this producer can succeed (a fatal idempotence error, no permission to
    /// write the topic): the sink stops with this message.
    Fatal(String),
}

/// Sorts a librdkafka error into what the sink does about it.
fn classify(error: &KafkaError) -> Failure {
    use RDKafkaErrorCode as Code;
    let message = error.to_string();
    match error.rdkafka_error_code() {
        Some(
            Code::MessageSizeTooLarge
            | Code::InvalidMessageSize
            | Code::InvalidMessage
            | Code::InvalidRecord
            | Code::MessageBatchTooLarge
            | Code::InvalidTopic,
        ) => Failure::Rejected(message),
        Some(Code::Fatal | Code::TopicAuthorizationFailed) => Failure::Fatal(message),
        _ => Failure::Retryable(message),
    }
}

impl Sink for KafkaSink {
    /// Fails the start with one clear error if the brokers do not answer.
    fn healthcheck(&self) -> BoxFuture<'static, Result<(), ComponentError>> {
        if !self.healthcheck {
            return Box::pin(std::future::ready(Ok(())));
        }
        let producer = self.producer.clone();
        let fetch = move || {
            producer
                .client()
                .fetch_metadata(None, HEALTHCHECK_TIMEOUT)
                .map(drop)
        };
        let bootstrap_servers = self.bootstrap_servers.clone();
        Box::pin(async move { check_brokers(fetch, &bootstrap_servers).await })
    }

    fn run(self: Box<Self>, mut input: BufferReceiver, cx: SinkContext) -> ComponentFuture {
        Box::pin(async move {
            let mut unkeyed = 0;
            let mut rounds = FuturesOrdered::new();
            loop {
                tokio::select! {
                    Some(done) = rounds.next() => unkeyed += done?,
                    batch = input.recv(), if rounds.len() < ROUNDS_IN_FLIGHT => {
                        let Some(batch) = batch else { break };
                        let mut batches = vec![batch.into_parts()];
                        let mut gathered = batches[0].0.len();
                        while gathered < self.gather_max
                            && let Some(more) = input.try_recv()
                        {
                            gathered += more.len();
                            batches.push(more.into_parts());
                        }
                        let round = self.start_round(batches).await;
                        rounds.push_back(self.finish_round(round, &cx.metrics));
                    }
                }
            }
            while let Some(done) = rounds.next().await {
                unkeyed += done?;
            }
            if unkeyed > 0 {
                tracing::info!(
                    sink = %cx.metrics.name,
                    events = unkeyed,
                    "events without an entity (or without the key's fields) were sent without a key"
                );
            }
            Ok(())
        })
    }
}

impl KafkaSink {
    /// Turns a round's events into records and hands them to librdkafka, in order (a full
    /// local queue is waited out); events whose record cannot be made are set aside as rejected.
    async fn start_round(&self, batches: Vec<(Arc<Vec<UnifiedEvent>>, Vec<AckToken>)>) -> Round {
        let mut pending = Vec::with_capacity(batches.iter().map(|(events, _)| events.len()).sum());
        let mut rejected = Vec::new();
        let events = batches.iter().flat_map(|(events, _)| events.iter());
        for (index, event) in events.enumerate() {
            match self.recipe.record(event) {
                Ok(record) => pending.push((index, record)),
                Err(reason) => rejected.push((index, reason)),
            }
        }
        let unkeyed = pending.iter().filter(|(_, r)| r.key.is_none()).count();
        Round {
            sent: self.enqueue(pending).await,
            batches,
            rejected,
            unkeyed,
        }
    }

    /// Enqueues `records` in the given order; each comes back with its delivery, or with why
    /// librdkafka refused it at once.
    async fn enqueue(&self, records: Vec<(usize, Record)>) -> Vec<Sent> {
        let mut sent = Vec::with_capacity(records.len());
        for (index, record) in records {
            let delivery = loop {
                match self.producer.send_result(future_record(&record)) {
                    Ok(delivery) => break Ok(delivery),
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(QUEUE_FULL_WAIT).await;
                    }
                    Err((error, _)) => break Err(classify(&error)),
                }
            };
            sent.push((index, record, delivery));
        }
        sent
    }

    /// Waits for the broker to confirm every message of a round, sending retriable failures
    /// again (with capped backoff) and dead-lettering the ones rejected for good; then
    /// acknowledges the round's batches. Returns how many events went without a key.
    async fn finish_round(
        &self,
        round: Round,
        metrics: &ComponentMetrics,
    ) -> Result<usize, ComponentError> {
        let Round {
            batches,
            mut sent,
            mut rejected,
            unkeyed,
        } = round;
        let mut backoff = sink_backoff();
        while !sent.is_empty() {
            let mut retry = Vec::new();
            let mut last_error = None;
            for (index, record, delivery) in sent {
                let outcome = match delivery {
                    Ok(delivery) => settle(delivery).await,
                    Err(failure) => Err(failure),
                };
                match outcome {
                    Ok(()) => {
                        metrics.add_events_out(1);
                        metrics.add_bytes_out(record.value.len());
                    }
                    Err(Failure::Rejected(reason)) => rejected.push((index, reason)),
                    Err(Failure::Retryable(reason)) => {
                        last_error = Some(reason);
                        retry.push((index, record));
                    }
                    Err(Failure::Fatal(reason)) => {
                        return Err(ComponentError::runtime(format!("kafka producer: {reason}")));
                    }
                }
            }
            if let Some(error) = last_error {
                let delay = backoff.next_delay();
                metrics.add_errors("delivery", retry.len());
                tracing::warn!(sink = %metrics.name, messages = retry.len(), %error, retry_in = ?delay, "Kafka did not confirm messages; sending them again");
                tokio::time::sleep(delay).await;
            }
            sent = self.enqueue(retry).await;
        }
        if !rejected.is_empty() {
            rejected.sort_by_key(|(index, _)| *index);
            let events: Vec<&UnifiedEvent> = batches
                .iter()
                .flat_map(|(events, _)| events.iter())
                .collect();
            self.dead_letter_all(&events, &rejected, metrics).await?;
        }
        for ack in batches.into_iter().flat_map(|(_, acks)| acks) {
            ack.ack(BatchStatus::Delivered);
        }
        Ok(unkeyed)
    }

    /// Writes one round of batches, or dead-letters what the broker rejects for good; returns
    /// how many events went without a key.
    #[cfg(test)]
    async fn deliver(
        &self,
        batches: Vec<(Arc<Vec<UnifiedEvent>>, Vec<AckToken>)>,
        metrics: &ComponentMetrics,
    ) -> Result<usize, ComponentError> {
        let round = self.start_round(batches).await;
        self.finish_round(round, metrics).await
    }

    /// Appends the rejected events to the dead-letter file and counts them.
    async fn dead_letter_all(
        &self,
        events: &[&UnifiedEvent],
        rejected: &[(usize, String)],
        metrics: &ComponentMetrics,
    ) -> Result<(), ComponentError> {
        for (index, reason) in rejected {
            let json =
                serde_json::to_string(&events[*index]).expect("events always serialise to JSON");
            self.dead_letter.write(reason, &json).await?;
        }
        if let Some((_, reason)) = rejected.first() {
            metrics.add_errors("rejected", rejected.len());
            tracing::warn!(
                sink = %metrics.name,
                events = rejected.len(),
                file = %self.dead_letter.path().display(),
                %reason,
                "Kafka rejected events; written to the dead-letter file"
            );
        }
        Ok(())
    }
}

/// The librdkafka record for `record`, borrowing its parts.
fn future_record(record: &Record) -> FutureRecord<'_, str, [u8]> {
    let mut out = FutureRecord::to(&record.topic).payload(record.value.as_slice());
    if let Some(key) = &record.key {
        out = out.key(key.as_str());
    }
    if !record.headers.is_empty() {
        let headers = record.headers.iter().fold(
            OwnedHeaders::new_with_capacity(record.headers.len()),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value.as_str()),
                })
            },
        );
        out = out.headers(headers);
    }
    out
}

/// Waits for one message's confirmation.
async fn settle(delivery: DeliveryFuture) -> Result<(), Failure> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(classify(&error)),
        Err(_) => Err(Failure::Retryable(
            "the producer dropped the message before it was confirmed".into(),
        )),
    }
}

#[cfg(test)]
mod tests;
