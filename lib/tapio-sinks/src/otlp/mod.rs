//! `otlp`: sends events to an OpenTelemetry receiver (a collector, Jaeger, Tempo, a vendor's
//! endpoint) as OTLP logs, and correlation summaries also as traces, over gRPC or HTTP/protobuf.
//!
//! Every event is one log record under the resource it is about (`k8s.pod.name`,
//! `container.id`, `process.pid`, … per the semantic conventions), so one `ResourceLogs` per
//! resource per request; each correlation summary is also a trace: a root span named after the
//! pattern with one child per related event the sink saw pass (see [`encode`]). The message
//! types are `opentelemetry-proto`'s, sent by the sink itself: `opentelemetry-otlp`'s exporters
//! carry one resource per provider, which cannot group by each event's own resource.
//!
//! Delivery: events are gathered into requests of up to `batch.max_events` records or
//! `batch.max_bytes` encoded bytes (or whatever waited `batch.timeout`), up to `concurrency`
//! in flight. A batch is acknowledged upstream once every request holding its events was
//! answered. Retryable answers (gRPC `UNAVAILABLE`, `RESOURCE_EXHAUSTED` with `RetryInfo`, …;
//! HTTP 429, 502, 503, 504; a receiver that cannot be reached) are retried with the same
//! bytes, after the receiver's `RetryInfo` / `Retry-After` when it gave one and with capped
//! backoff otherwise, holding the batch so backpressure reaches the sources. A request refused
//! for good (HTTP 400, gRPC `INVALID_ARGUMENT`, …) sends its events to the dead-letter file
//! `<data_dir>/dead_letter/<sink>.ndjson`. A partial success names no records: the rejected
//! count is counted as errors (`partial_success`), the receiver's message logged, and the
//! batch acknowledged. Credentials or paths the receiver refuses (401, 403, 404,
//! `UNAUTHENTICATED`, `UNIMPLEMENTED`) stop the sink with one error instead.
//!
//! The healthcheck sends an empty logs export when the sink starts (valid OTLP, which a
//! receiver accepts without storing anything), so a receiver that is down or refuses the
//! credentials fails the start with one clear line (exit 69).

mod encode;
#[cfg(test)]
mod tests;
mod transport;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tapio_event::throttle::Throttle;
use tapio_event::{
    AckToken, BatchStatus, BufferReceiver, BuildContext, ByteSize, ComponentConfig, ComponentError,
    ComponentFuture, ComponentMetrics, ConfigDuration, Secret, Sink, SinkContext, Timestamp,
    UnifiedEvent,
};
use tokio::time::Instant;

use self::encode::{Grouped, RelatedEvents};
use self::transport::{Failure, Settings, Signal, Transport};
use crate::util::dead_letter::DeadLetter;
use crate::util::retry::sink_backoff;
pub use crate::util::tls::TlsConfig;

/// Options of the `otlp` sink.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpSinkConfig {
    /// The receiver's base URL, as in `OTEL_EXPORTER_OTLP_ENDPOINT`: `http://` or `https://`
    /// (TLS), host and port. Over `http/protobuf`, `/v1/logs` and `/v1/traces` are appended to
    /// it (after any path it has). Unset: `http://127.0.0.1:4317` for gRPC,
    /// `http://127.0.0.1:4318` for HTTP.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `"grpc"` (OTLP/gRPC) or `"http/protobuf"` (OTLP/HTTP, protobuf bodies over HTTP/1.1
    /// with `Content-Length`).
    #[serde(default)]
    pub protocol: Protocol,
    /// Compression of each request: `"gzip"` or `"none"`.
    #[serde(default)]
    pub compression: Compression,
    /// Headers (gRPC metadata) sent with every request, such as a vendor's API key; write
    /// `"${ENV_VAR}"` to keep a key out of the file. Values show as `***` wherever the config is
    /// printed.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// TLS for an `https://` endpoint. Without `ca_file` the receiver's certificate is checked
    /// against the web's root CAs (Mozilla's, built in).
    #[serde(default)]
    pub tls: TlsConfig,
    /// The `service.name` resource attribute of everything the sink sends.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Send each correlation summary as a trace too (its log record is always sent).
    #[serde(default = "default_true")]
    pub traces: bool,
    /// When to send a request: as soon as any of its limits is reached.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How long one request may take before it counts as failed and is retried.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: ConfigDuration,
    /// Send an empty logs export when the sink starts; if the receiver does not accept it, the
    /// run stops with one error line naming the cause (exit 69). With `false` the sink starts
    /// anyway and retries until the receiver answers.
    #[serde(default = "default_true")]
    pub healthcheck: bool,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Protocol {
    /// OTLP/gRPC.
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// How each request is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Sent as is.
    None,
    /// gzip (gRPC message compression, or `Content-Encoding: gzip` over HTTP).
    #[default]
    Gzip,
}

/// The `batch` options: a request is sent when any limit is reached.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Log records per request.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Encoded (uncompressed) bytes per request. Keep it below the receiver's limit: 4 MiB by
    /// default for gRPC receivers.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// The longest an event waits for its request.
    #[serde(default = "default_batch_timeout")]
    pub timeout: ConfigDuration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: default_max_events(),
            max_bytes: default_max_bytes(),
            timeout: default_batch_timeout(),
        }
    }
}

fn default_service_name() -> String {
    "tapio".into()
}

fn default_true() -> bool {
    true
}

fn default_concurrency() -> usize {
    2
}

fn default_request_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

fn default_max_events() -> usize {
    1000
}

fn default_max_bytes() -> ByteSize {
    ByteSize(3 << 20)
}

fn default_batch_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}

/// Related events remembered for the traces of summaries that name them.
const RELATED_EVENTS_REMEMBERED: usize = 100_000;

/// The longest a receiver's `RetryInfo` / `Retry-After` is honoured for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How often a failing receiver is reported at most; every failure is still counted.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

impl OtlpSinkConfig {
    /// The endpoint as given or the protocol's default, without a trailing `/`, checked.
    fn endpoint(&self) -> Result<String, String> {
        let endpoint = match (&self.endpoint, self.protocol) {
            (Some(endpoint), _) => endpoint.trim_end_matches('/').to_owned(),
            (None, Protocol::Grpc) => "http://127.0.0.1:4317".to_owned(),
            (None, Protocol::HttpProtobuf) => "http://127.0.0.1:4318".to_owned(),
        };
        let authority = endpoint
            .split_once("://")
            .map_or(endpoint.as_str(), |(_, rest)| rest)
            .split(['/', '?', '#'])
            .next()
            .unwrap_or_default();
        if authority.contains('@') {
            return Err(
                "`endpoint` must not carry credentials (`user:password@`): it is shown in logs; put them in `headers`".into(),
            );
        }
        let uri: hyper::Uri = endpoint
            .parse()
            .map_err(|e| format!("`endpoint` {endpoint:?} is not a URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "`endpoint` must be an http:// or https:// URL such as \"http://127.0.0.1:4317\", got {endpoint:?}"
            ));
        }
        if self.protocol == Protocol::Grpc && !matches!(uri.path(), "" | "/") {
            return Err(format!(
                "`endpoint` {endpoint:?}: a gRPC endpoint is a scheme, host and port without a path"
            ));
        }
        if self.tls.is_set() && uri.scheme_str() != Some("https") {
            return Err(format!(
                "`tls` is set but `endpoint` {endpoint:?} is not https://"
            ));
        }
        Ok(endpoint)
    }

    /// The transport, checked: endpoint, headers and TLS files.
    fn transport(&self) -> Result<Transport, String> {
        if self.concurrency == 0 || self.batch.max_events == 0 || self.batch.max_bytes.0 == 0 {
            return Err(
                "`concurrency`, `batch.max_events` and `batch.max_bytes` must be at least 1".into(),
            );
        }
        let settings = Settings {
            endpoint: self.endpoint()?,
            gzip: self.compression == Compression::Gzip,
            headers: self
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.expose().to_owned()))
                .collect(),
            tls: self.tls.read()?,
            timeout: self.request_timeout.0,
        };
        match self.protocol {
            Protocol::Grpc => Transport::grpc(&settings),
            Protocol::HttpProtobuf => Transport::http(&settings),
        }
    }
}

impl ComponentConfig for OtlpSinkConfig {
    type Component = dyn Sink;

    fn uses_data_dir(&self) -> bool {
        true
    }

    /// Checks the options and reads the TLS files; the receiver is first contacted by the
    /// healthcheck.
    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Sink>, ComponentError> {
        let transport = self.transport().map_err(ComponentError::config)?;
        Ok(Box::new(OtlpSink {
            config: self.clone(),
            endpoint: self.endpoint().map_err(ComponentError::config)?,
            transport: Arc::new(transport),
            dead_letter: DeadLetter::new(&cx.data_dir, &cx.name),
        }))
    }
}

struct OtlpSink {
    config: OtlpSinkConfig,
    endpoint: String,
    transport: Arc<Transport>,
    dead_letter: DeadLetter,
}

impl Sink for OtlpSink {
    /// An empty logs export: proves the receiver answers and takes the credentials.
    fn healthcheck(&self) -> BoxFuture<'static, Result<(), ComponentError>> {
        if !self.config.healthcheck {
            return Box::pin(std::future::ready(Ok(())));
        }
        let transport = Arc::clone(&self.transport);
        let endpoint = self.endpoint.clone();
        Box::pin(async move {
            let empty = Bytes::from(ExportLogsServiceRequest::default().encode_to_vec());
            let outcome = match transport.prepare(empty).await {
                Ok(body) => transport.export(Signal::Logs, body).await,
                Err(failure) => Err(failure),
            };
            outcome.map(drop).map_err(|failure| {
                ComponentError::unavailable(format!(
                    "otlp healthcheck (an empty logs export to {endpoint}) failed: {}; start the receiver, fix `endpoint`/`protocol`/`headers`, or set `healthcheck = false` to start anyway and retry",
                    failure.message()
                ))
            })
        })
    }

    fn run(self: Box<Self>, mut input: BufferReceiver, cx: SinkContext) -> ComponentFuture {
        Box::pin(async move {
            let config = self.config;
            let shared = Arc::new(Delivery {
                transport: self.transport,
                dead_letter: self.dead_letter,
                metrics: cx.metrics,
                warnings: Mutex::new(Throttle::new(WARN_INTERVAL)),
            });
            let mut pending = Pending::new(&config);
            let mut in_flight = FuturesUnordered::new();
            loop {
                let deadline = pending.deadline();
                tokio::select! {
                    Some(done) = in_flight.next() => done?,
                    batch = input.recv() => {
                        let Some(batch) = batch else { break };
                        let (events, acks) = batch.into_parts();
                        for request in pending.add(&events, acks) {
                            if in_flight.len() >= config.concurrency
                                && let Some(done) = in_flight.next().await
                            {
                                done?;
                            }
                            in_flight.push(Arc::clone(&shared).deliver(request));
                        }
                    }
                    () = sleep_until(deadline), if in_flight.len() < config.concurrency => {
                        in_flight.push(Arc::clone(&shared).deliver(pending.take()));
                    }
                }
            }
            if !pending.is_empty() {
                in_flight.push(Arc::clone(&shared).deliver(pending.take()));
            }
            while let Some(done) = in_flight.next().await {
                done?;
            }
            Ok(())
        })
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Events of one input batch that went into a request: the batch (shared) and their range.
type Part = (Arc<Vec<UnifiedEvent>>, Range<usize>);

/// One request's worth of events, encoded as OTLP messages, with what settles once they are
/// answered.
struct Request {
    logs: ExportLogsServiceRequest,
    records: usize,
    traces: Option<ExportTraceServiceRequest>,
    /// Every event in `logs`, for the dead-letter file.
    events: Vec<Part>,
    /// The summaries whose spans are in `traces`, for the dead-letter file.
    summaries: Vec<Part>,
    /// A copy of the token of every batch with events here.
    acks: Vec<AckToken>,
}

/// Events gathered for the next request.
struct Pending {
    service_name: String,
    traces: bool,
    max_events: usize,
    max_bytes: usize,
    timeout: Duration,
    logs: Grouped<LogRecord>,
    spans: Grouped<Span>,
    related: RelatedEvents,
    events: Vec<Part>,
    summaries: Vec<Part>,
    acks: Vec<AckToken>,
    since: Option<Instant>,
}

impl Pending {
    fn new(config: &OtlpSinkConfig) -> Pending {
        Pending {
            service_name: config.service_name.clone(),
            traces: config.traces,
            max_events: config.batch.max_events,
            max_bytes: usize::try_from(config.batch.max_bytes.0).unwrap_or(usize::MAX),
            timeout: config.batch.timeout.0,
            logs: Grouped::default(),
            spans: Grouped::default(),
            related: RelatedEvents::new(RELATED_EVENTS_REMEMBERED),
            events: Vec::new(),
            summaries: Vec::new(),
            acks: Vec::new(),
            since: None,
        }
    }

    /// Adds a batch's events; returns the requests that reached `max_events` or `max_bytes`.
    /// Each request carries a copy of the tokens of the batches it holds events of, so a batch
    /// split over several requests is acknowledged once the last of them is answered.
    fn add(&mut self, events: &Arc<Vec<UnifiedEvent>>, acks: Vec<AckToken>) -> Vec<Request> {
        let observed = u64::try_from(Timestamp::now().as_nanos()).unwrap_or(0);
        let mut full = Vec::new();
        let mut start = 0;
        for (index, event) in events.iter().enumerate() {
            self.related.remember(event);
            self.logs.push(event, encode::log_record(event, observed));
            if self.traces && encode::is_summary(event) {
                for span in encode::incident_spans(event, &self.related) {
                    self.spans.push(event, span);
                }
                self.summaries.push((Arc::clone(events), index..index + 1));
            }
            self.since.get_or_insert_with(Instant::now);
            if self.logs.len() >= self.max_events
                || self.logs.bytes() + self.spans.bytes() >= self.max_bytes
            {
                self.events.push((Arc::clone(events), start..index + 1));
                start = index + 1;
                let mut request = self.take();
                request.acks.extend(acks.iter().cloned());
                full.push(request);
            }
        }
        if start < events.len() {
            self.events.push((Arc::clone(events), start..events.len()));
            self.acks.extend(acks);
        } else {
            // Every event of this batch is in `full`, whose requests carry copies of its tokens.
            for ack in acks {
                ack.ack(BatchStatus::Delivered);
            }
        }
        full
    }

    /// When the oldest pending event has waited `timeout`; `None` when nothing is pending.
    fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + self.timeout)
    }

    fn is_empty(&self) -> bool {
        self.logs.len() == 0
    }

    /// Everything pending, as one request.
    fn take(&mut self) -> Request {
        self.since = None;
        let records = self.logs.len();
        let spans = encode::resource_spans(&mut self.spans, &self.service_name);
        Request {
            logs: ExportLogsServiceRequest {
                resource_logs: encode::resource_logs(&mut self.logs, &self.service_name),
            },
            records,
            traces: (!spans.is_empty()).then_some(ExportTraceServiceRequest {
                resource_spans: spans,
            }),
            events: std::mem::take(&mut self.events),
            summaries: std::mem::take(&mut self.summaries),
            acks: std::mem::take(&mut self.acks),
        }
    }
}

/// What every request's delivery shares.
struct Delivery {
    transport: Arc<Transport>,
    dead_letter: DeadLetter,
    metrics: Arc<ComponentMetrics>,
    /// Failed requests since the last warning, so a receiver down for an hour does not flood
    /// the log.
    warnings: Mutex<Throttle>,
}

impl Delivery {
    /// Sends a request's logs, then its traces, each until the receiver accepts or refuses it
    /// for good (its events then go to the dead-letter file); then acknowledges its batches.
    async fn deliver(self: Arc<Self>, request: Request) -> Result<(), ComponentError> {
        let logs = Bytes::from(request.logs.encode_to_vec());
        if let Err(reason) = self.export(Signal::Logs, logs).await? {
            self.dead_letter_all(&request.events, &reason).await?;
        } else {
            self.metrics.add_events_out(request.records);
        }
        if let Some(traces) = &request.traces {
            let traces = Bytes::from(traces.encode_to_vec());
            if let Err(reason) = self.export(Signal::Traces, traces).await? {
                self.dead_letter_all(&request.summaries, &reason).await?;
            }
        }
        for ack in request.acks {
            ack.ack(BatchStatus::Delivered);
        }
        Ok(())
    }

    /// Sends one encoded export until it is accepted (`Ok(Ok(()))`) or refused for good
    /// (`Ok(Err(reason))`), retrying the same bytes; a configuration the receiver refuses
    /// stops the sink.
    async fn export(
        &self,
        signal: Signal,
        body: Bytes,
    ) -> Result<Result<(), String>, ComponentError> {
        let fatal = |failure: &Failure| {
            ComponentError::runtime(format!(
                "otlp {} export: {}",
                signal.name(),
                failure.message()
            ))
        };
        let body = self.transport.prepare(body).await.map_err(|f| fatal(&f))?;
        let mut backoff = sink_backoff();
        loop {
            match self.transport.export(signal, body.clone()).await {
                Ok(accepted) => {
                    self.metrics.add_bytes_out(body.len());
                    if accepted.rejected > 0 {
                        let rejected = usize::try_from(accepted.rejected).unwrap_or(usize::MAX);
                        self.metrics.add_errors("partial_success", rejected);
                        tracing::warn!(sink = %self.metrics.name, signal = signal.name(), rejected, message = %accepted.message, "the receiver accepted the export only in part; it does not say which records it rejected");
                    } else if !accepted.message.is_empty() {
                        tracing::info!(sink = %self.metrics.name, signal = signal.name(), message = %accepted.message, "the receiver accepted the export with a warning");
                    }
                    return Ok(Ok(()));
                }
                Err(Failure::Rejected(reason)) => return Ok(Err(reason)),
                Err(failure @ Failure::Fatal(_)) => return Err(fatal(&failure)),
                Err(Failure::Retryable {
                    message,
                    retry_after,
                }) => {
                    let delay = retry_after
                        .map(|advised| advised.min(MAX_RETRY_AFTER))
                        .unwrap_or_else(|| backoff.next_delay());
                    self.metrics.add_errors("retry", 1);
                    let due = self
                        .warnings
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .add(1);
                    if let Some(failures) = due {
                        tracing::warn!(sink = %self.metrics.name, signal = signal.name(), error = %message, failures, retry_in = ?delay, "OTLP export failed; retrying");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Appends the events of `parts` to the dead-letter file with `reason` and counts them.
    async fn dead_letter_all(&self, parts: &[Part], reason: &str) -> Result<(), ComponentError> {
        let mut count = 0;
        for (events, range) in parts {
            for event in &events[range.clone()] {
                let json = serde_json::to_string(event).expect("events always serialise to JSON");
                self.dead_letter.write(reason, &json).await?;
                count += 1;
            }
        }
        self.metrics.add_errors("rejected", count);
        tracing::warn!(
            sink = %self.metrics.name,
            events = count,
            file = %self.dead_letter.path().display(),
            %reason,
            "the OTLP receiver rejected an export; its events were written to the dead-letter file"
        );
        Ok(())
    }
}
