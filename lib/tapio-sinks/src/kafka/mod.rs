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
//! neither duplicate nor reorder). The sink handles one batch at a time: messages that fail with
//! a retriable error (broker down, message timed out) are sent again, in their original order,
//! with capped backoff while the batch is held, so backpressure reaches the sources and nothing
//! is lost. A message the broker rejects for good (too large, invalid) is written with the
//! reason to the dead-letter file `<data_dir>/dead_letter/<sink>.ndjson` and counted as error
//! `rejected`. Delivery is at least once: a message whose confirmation was lost is sent again.
//! Order within a partition holds except when a message is re-sent after `message_timeout`:
//! later messages of its partition that got through stay ahead of it.
//!
//! The healthcheck fetches the cluster's metadata when the sink starts; if the brokers do not
//! answer the sink fails at once with one clear error (exit 70). With `healthcheck = false` it
//! starts anyway and retries.

mod config;
mod record;

use std::collections::VecDeque;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tapio_event::template::Template;
use tapio_event::{
    BatchStatus, BufferReceiver, BuildContext, ComponentError, ComponentFuture, ComponentMetrics,
    Sink, SinkContext, UnifiedEvent,
};

pub use self::config::{Acks, BatchConfig, Compression, Encoding, KafkaSinkConfig};
use self::record::{Recipe, Record};
use crate::dead_letter::DeadLetter;
use crate::retry::Backoff;
use tapio_sources::kafka::client::{HEALTHCHECK_TIMEOUT, Logs, check_brokers};

/// How long to wait before enqueueing again when librdkafka's queue is full and none of this
/// batch's messages is outstanding (the queue is then full of other work).
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(10);

impl KafkaSinkConfig {
    /// Checks the options and creates the producer (librdkafka validates every property here,
    /// so a misspelt `librdkafka_options` key fails before anything runs).
    pub(crate) fn build(&self, cx: &BuildContext) -> Result<Box<dyn Sink>, ComponentError> {
        Ok(Box::new(self.create(cx)?))
    }

    /// The sink itself, for `build` and for tests that drive its delivery directly.
    fn create(&self, cx: &BuildContext) -> Result<KafkaSink, ComponentError> {
        let invalid = |message: String| ComponentError(format!("kafka sink: {message}"));
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
        let mut client = ClientConfig::new();
        for (key, value) in self.properties() {
            client.set(key, value);
        }
        let logs = Logs {
            component: cx.name.clone(),
        };
        let producer: FutureProducer<Logs> = client
            .create_with_context(logs)
            .map_err(|e| invalid(format!("librdkafka refused the options: {e}")))?;
        Ok(KafkaSink {
            producer,
            recipe,
            bootstrap_servers: self.bootstrap_servers.clone(),
            healthcheck: self.healthcheck,
            dead_letter: DeadLetter::new(&cx.data_dir, &cx.name),
        })
    }
}

/// The running sink: one producer and the recipe that turns events into its messages.
struct KafkaSink {
    producer: FutureProducer<Logs>,
    recipe: Recipe,
    bootstrap_servers: String,
    healthcheck: bool,
    dead_letter: DeadLetter,
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
    fn run(self: Box<Self>, mut input: BufferReceiver, cx: SinkContext) -> ComponentFuture {
        Box::pin(async move {
            if self.healthcheck {
                self.check_brokers().await?;
            }
            let mut unkeyed = 0;
            while let Some(batch) = input.recv().await {
                let (events, acks) = batch.into_parts();
                unkeyed += self.deliver(&events, &cx.metrics).await?;
                for ack in acks {
                    ack.ack(BatchStatus::Delivered);
                }
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
    /// Fails at once, with one clear error, if the brokers do not answer.
    async fn check_brokers(&self) -> Result<(), ComponentError> {
        let producer = self.producer.clone();
        let fetch = move || {
            producer
                .client()
                .fetch_metadata(None, HEALTHCHECK_TIMEOUT)
                .map(drop)
        };
        check_brokers(fetch, &self.bootstrap_servers).await
    }

    /// Writes every event of a batch, or dead-letters the ones the broker rejects for good;
    /// returns how many went without a key.
    async fn deliver(
        &self,
        events: &[UnifiedEvent],
        metrics: &ComponentMetrics,
    ) -> Result<usize, ComponentError> {
        let mut pending = Vec::with_capacity(events.len());
        let mut rejected = Vec::new();
        for (index, event) in events.iter().enumerate() {
            match self.recipe.record(event) {
                Ok(record) => pending.push((index, record)),
                Err(reason) => rejected.push((index, reason)),
            }
        }
        let unkeyed = pending.iter().filter(|(_, r)| r.key.is_none()).count();
        let mut backoff = Backoff::new();
        while !pending.is_empty() {
            let outcomes = self.send_all(&pending).await;
            let mut retry = Vec::new();
            let mut last_error = None;
            for ((index, record), outcome) in pending.into_iter().zip(outcomes) {
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
                        return Err(ComponentError(format!("kafka producer: {reason}")));
                    }
                }
            }
            pending = retry;
            if let Some(error) = last_error {
                let delay = backoff.next_delay();
                metrics.add_errors("delivery", pending.len());
                tracing::warn!(sink = %metrics.name, messages = pending.len(), %error, retry_in = ?delay, "Kafka did not confirm messages; sending them again");
                tokio::time::sleep(delay).await;
            }
        }
        rejected.sort_by_key(|(index, _)| *index);
        self.dead_letter_all(events, &rejected, metrics).await?;
        Ok(unkeyed)
    }

    /// Enqueues `records` in order and waits for each one's confirmation; the outcomes are in
    /// the same order. A full local queue waits for this batch's oldest message, so the enqueue
    /// order (and with it the order within each partition) is kept.
    async fn send_all(&self, records: &[(usize, Record)]) -> Vec<Result<(), Failure>> {
        let mut outcomes = vec![Ok(()); records.len()];
        let mut in_flight: VecDeque<(usize, DeliveryFuture)> = VecDeque::new();
        for (position, (_, record)) in records.iter().enumerate() {
            loop {
                match self.producer.send_result(future_record(record)) {
                    Ok(delivery) => {
                        in_flight.push_back((position, delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        match in_flight.pop_front() {
                            Some((earlier, delivery)) => outcomes[earlier] = settle(delivery).await,
                            None => tokio::time::sleep(QUEUE_FULL_WAIT).await,
                        }
                    }
                    Err((error, _)) => {
                        outcomes[position] = Err(classify(&error));
                        break;
                    }
                }
            }
        }
        for (position, delivery) in in_flight {
            outcomes[position] = settle(delivery).await;
        }
        outcomes
    }

    /// Appends the rejected events to the dead-letter file and counts them.
    async fn dead_letter_all(
        &self,
        events: &[UnifiedEvent],
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
