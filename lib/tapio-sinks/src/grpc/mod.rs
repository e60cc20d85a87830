//! `grpc`: the agent's end of the agent → aggregator path. Batches go over `tapio.v1`'s
//! `EventService.SubmitEvents` to a Tapio whose `grpc` source listens (or any server of the
//! committed `.proto`), one long-lived stream at a time, each batch numbered by `sequence`.
//!
//! Delivery is at least once: a batch is acknowledged upstream only when the receiver answered
//! its `SubmitAck` with `DELIVERED` (which, when the receiver's `acknowledgements` are on,
//! means its own sinks delivered it). Each endpoint has a lane: one long-lived stream at a
//! time, up to `max_in_flight` batches waiting for their answers. The lanes take batches from
//! the sink's buffer as each has room, so the load spreads over the receivers (round robin, by
//! who is ready) and a slow receiver takes less; when every lane is full the sink stops reading
//! its buffer and backpressure reaches the sources. A `FAILED` answer sends the batch again on
//! the same stream. A stream that breaks, or an answer that takes longer than `ack_timeout`,
//! hands every unanswered batch to whichever lane takes work next (failover), and its lane
//! waits out a capped exponential backoff, then takes work again only once its receiver
//! answers its health check. A receiver that was killed between taking a batch and answering it
//! gets it twice: the receiving side sees duplicates, never a gap.
//!
//! The healthcheck asks each endpoint's `grpc.health.v1.Health` and then opens an empty
//! `SubmitEvents` stream, so a receiver that is down, or refuses `auth.token`, fails the start
//! with one line (exit 69). A token refused later stops the sink the same way.

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tapio_event::throttle::Throttle;
use tapio_event::{
    BatchStatus, BufferReceiver, BuildContext, ComponentConfig, ComponentError, ComponentFuture,
    ComponentMetrics, ConfigDuration, EventBatch, Secret, Sink, SinkContext,
};
use tapio_proto::health::HealthCheckRequest;
use tapio_proto::health::health_check_response::ServingStatus;
use tapio_proto::health::health_client::HealthClient;
use tapio_proto::v1::event_service_client::EventServiceClient;
use tapio_proto::v1::{self, AckStatus, SubmitAck};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::util::retry::{Backoff, sink_backoff};
pub use crate::util::tls::TlsConfig;
use crate::util::tls::grpc_endpoint;

/// Options of the `grpc` sink.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcSinkConfig {
    /// The receivers, `http://host:port` or `https://host:port` (TLS). The sink streams to all
    /// of them at once, each taking batches as it has room, and what a broken stream left
    /// unanswered goes to the others.
    pub endpoints: Vec<String>,
    /// Compression of each batch: `"none"`, `"gzip"` or `"zstd"`.
    #[serde(default)]
    pub compression: Compression,
    /// TLS for `https://` endpoints. Without `ca_file` the receiver's certificate is checked
    /// against the web's root CAs (Mozilla's, built in).
    #[serde(default)]
    pub tls: TlsConfig,
    /// The bearer token the receiver requires.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Batches sent and not yet answered; when that many wait, the sink stops reading its
    /// buffer until answers come.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long an answer may take before the stream counts as broken and its unanswered
    /// batches are sent again on a new one.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: ConfigDuration,
    /// How long connecting and opening a stream may take.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: ConfigDuration,
    /// Ask the receivers whether they serve and take the token when the sink starts; if none
    /// does, the run stops with one error line naming the cause (exit 69). With `false` the
    /// sink starts anyway and retries until one answers.
    #[serde(default = "default_true")]
    pub healthcheck: bool,
}

/// The token the sink sends.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Sent as `authorization: Bearer <token>`; write `"${ENV_VAR}"` to keep it out of the
    /// file. It shows as `***` wherever the config is printed.
    pub token: Secret,
}

/// How each batch is compressed on the wire (gRPC message compression).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Sent as is (loopback, or a CPU-starved agent).
    None,
    /// gzip: understood by every gRPC server.
    Gzip,
    /// zstd: smaller and cheaper than gzip; the `grpc` source reads it.
    #[default]
    Zstd,
}

fn default_max_in_flight() -> usize {
    16
}

fn default_ack_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

fn default_connect_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

fn default_true() -> bool {
    true
}

/// How often a failing receiver is reported at most; every failure is still counted.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

impl ComponentConfig for GrpcSinkConfig {
    type Component = dyn Sink;

    /// Checks the endpoints and reads the TLS files; the receivers are first contacted by the
    /// healthcheck.
    fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Sink>, ComponentError> {
        let invalid = |message: String| ComponentError::config(message);
        if self.endpoints.is_empty() {
            return Err(invalid("`endpoints` needs at least one URL".into()));
        }
        if self.max_in_flight == 0 {
            return Err(invalid("`max_in_flight` must be at least 1".into()));
        }
        let tls = self.tls.read().map_err(invalid)?;
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for url in &self.endpoints {
            let uri: tonic::codegen::http::Uri = url
                .parse()
                .map_err(|e| invalid(format!("`endpoints`: {url:?} is not a URL: {e}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https"))
                || uri.host().is_none()
                || !matches!(uri.path(), "" | "/")
            {
                return Err(invalid(format!(
                    "`endpoints`: {url:?} must be http://host:port or https://host:port"
                )));
            }
            if self.tls.is_set() && uri.scheme_str() != Some("https") {
                return Err(invalid(format!(
                    "`tls` is set but the endpoint {url:?} is not https://"
                )));
            }
            endpoints.push((
                url.clone(),
                grpc_endpoint("endpoints", url, &tls, self.connect_timeout.0).map_err(invalid)?,
            ));
        }
        let token = self
            .auth
            .as_ref()
            .map(|auth| {
                MetadataValue::try_from(format!("Bearer {}", auth.token.expose())).map_err(|_| {
                    invalid("`auth.token` holds a character that cannot be sent in a header".into())
                })
            })
            .transpose()?
            .map(|mut value| {
                value.set_sensitive(true);
                value
            });
        Ok(Box::new(GrpcSink {
            endpoints,
            token,
            compression: match self.compression {
                Compression::None => None,
                Compression::Gzip => Some(CompressionEncoding::Gzip),
                Compression::Zstd => Some(CompressionEncoding::Zstd),
            },
            max_in_flight: self.max_in_flight,
            ack_timeout: self.ack_timeout.0,
            connect_timeout: self.connect_timeout.0,
            healthcheck: self.healthcheck,
        }))
    }
}

struct GrpcSink {
    /// Each endpoint's URL (for messages) and tonic endpoint.
    endpoints: Vec<(String, Endpoint)>,
    token: Option<MetadataValue<tonic::metadata::Ascii>>,
    compression: Option<CompressionEncoding>,
    max_in_flight: usize,
    ack_timeout: Duration,
    connect_timeout: Duration,
    healthcheck: bool,
}

/// A batch sent and not yet answered.
struct InFlight {
    sequence: u64,
    sent_at: Instant,
    batch: EventBatch,
}

/// What outlives one stream of a lane: the batches still to be answered.
struct Progress {
    input_done: bool,
    unacked: VecDeque<InFlight>,
    next_sequence: u64,
    backoff: Backoff,
}

/// What the lanes share: the sink's buffer, and the batches broken streams left unanswered,
/// which any lane takes before new ones.
struct Shared {
    input: tokio::sync::Mutex<BufferReceiver>,
    input_done: AtomicBool,
    orphans: std::sync::Mutex<VecDeque<EventBatch>>,
    orphaned: Notify,
}

impl Shared {
    fn orphans(&self) -> std::sync::MutexGuard<'_, VecDeque<EventBatch>> {
        self.orphans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch to send: one a broken stream left, else the buffer's next; `None` once
    /// the buffer has ended and nothing is left over.
    async fn next_batch(&self) -> Option<EventBatch> {
        loop {
            let orphaned = self.orphaned.notified();
            tokio::pin!(orphaned);
            // Registered before the queue is looked at, so a batch handed over meanwhile
            // wakes this lane.
            orphaned.as_mut().enable();
            if let Some(batch) = self.orphans().pop_front() {
                return Some(batch);
            }
            if self.input_done.load(Ordering::Acquire) {
                return None;
            }
            tokio::select! {
                batch = async { self.input.lock().await.recv().await } => match batch {
                    Some(batch) => return Some(batch),
                    None => self.input_done.store(true, Ordering::Release),
                },
                () = &mut orphaned => {}
            }
        }
    }

    /// Hands batches a broken stream left unanswered to the lanes.
    fn orphan(&self, batches: impl IntoIterator<Item = EventBatch>) {
        self.orphans().extend(batches);
        self.orphaned.notify_waiters();
    }

    /// Whether everything was sent: the buffer ended and no batch is left over.
    fn finished(&self) -> bool {
        self.input_done.load(Ordering::Acquire) && self.orphans().is_empty()
    }
}

/// Why a stream ended before its batches were answered.
enum Broken {
    /// Try again (the batches go to the other lanes meanwhile).
    Retry(String),
    /// The receiver refuses the credentials: no retry can succeed.
    Fatal(String),
}

/// The wire form of a batch.
fn to_wire(sequence: u64, batch: &EventBatch) -> v1::EventBatch {
    v1::EventBatch {
        sequence,
        events: batch
            .events()
            .iter()
            .map(tapio_proto::event_to_proto)
            .collect(),
    }
}

impl GrpcSink {
    /// A client of the endpoint at `index` over a channel that connects on first use.
    fn client(&self, index: usize) -> EventServiceClient<Channel> {
        let mut client = EventServiceClient::new(self.endpoints[index].1.connect_lazy())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(4 << 20);
        if let Some(encoding) = self.compression {
            client = client.send_compressed(encoding);
        }
        client
    }

    /// A request carrying the token, if any.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        request
    }

    /// Whether the endpoint at `index` serves and takes the token.
    async fn check(&self, index: usize) -> Result<(), Broken> {
        let url = &self.endpoints[index].0;
        let channel = self.endpoints[index].1.connect_lazy();
        let health = tokio::time::timeout(
            self.connect_timeout,
            HealthClient::new(channel).check(HealthCheckRequest::default()),
        )
        .await
        .map_err(|_| Broken::Retry(format!("{url}: no answer in time")))?
        .map_err(|status| Broken::Retry(format!("{url}: {}", status.message())))?;
        if health.into_inner().status != ServingStatus::Serving as i32 {
            return Err(Broken::Retry(format!("{url}: not serving")));
        }
        let empty = futures::stream::empty::<v1::EventBatch>();
        match tokio::time::timeout(
            self.connect_timeout,
            self.client(index).submit_events(self.request(empty)),
        )
        .await
        {
            Err(_) => Err(Broken::Retry(format!("{url}: no answer in time"))),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(classify(url, &status)),
        }
    }

    /// Streams batches to the endpoint at `index` until the input ends with everything
    /// answered (`Ok`), or the stream breaks (`Err`, `unacked` holding what must be sent again).
    async fn stream(
        &self,
        index: usize,
        shared: &Shared,
        progress: &mut Progress,
        metrics: &ComponentMetrics,
    ) -> Result<(), Broken> {
        let Progress {
            input_done,
            unacked,
            next_sequence,
            backoff,
        } = progress;
        let url = &self.endpoints[index].0;
        let (tx, rx) = mpsc::channel::<v1::EventBatch>(self.max_in_flight + 1);
        for pending in unacked.iter_mut() {
            pending.sent_at = Instant::now();
            let _ = tx.try_send(to_wire(pending.sequence, &pending.batch));
        }
        let outbound = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|batch| (batch, rx))
        });
        let mut answers = match tokio::time::timeout(
            self.connect_timeout,
            self.client(index).submit_events(self.request(outbound)),
        )
        .await
        {
            Err(_) => return Err(Broken::Retry(format!("{url}: no answer in time"))),
            Ok(Err(status)) => return Err(classify(url, &status)),
            Ok(Ok(response)) => response.into_inner(),
        };
        loop {
            if *input_done && unacked.is_empty() {
                return Ok(());
            }
            let deadline = unacked
                .front()
                .map(|oldest| oldest.sent_at + self.ack_timeout);
            tokio::select! {
                batch = shared.next_batch(), if !*input_done && unacked.len() < self.max_in_flight => {
                    let Some(batch) = batch else {
                        *input_done = true;
                        continue;
                    };
                    if batch.is_empty() {
                        batch.ack(BatchStatus::Delivered);
                        continue;
                    }
                    let sequence = *next_sequence;
                    *next_sequence += 1;
                    if tx.send(to_wire(sequence, &batch)).await.is_err() {
                        unacked.push_back(InFlight { sequence, sent_at: Instant::now(), batch });
                        return Err(Broken::Retry(format!("{url}: the stream closed")));
                    }
                    unacked.push_back(InFlight { sequence, sent_at: Instant::now(), batch });
                }
                answer = answers.message() => match answer {
                    Ok(Some(answer)) => {
                        if self.settle(answer, unacked, &tx, next_sequence, metrics).await {
                            backoff.reset();
                        }
                    }
                    Ok(None) => return Err(Broken::Retry(format!("{url}: the receiver ended the stream"))),
                    Err(status) => return Err(classify(url, &status)),
                },
                () = sleep_until(deadline) => {
                    return Err(Broken::Retry(format!(
                        "{url}: no answer within `ack_timeout` ({:?})",
                        self.ack_timeout
                    )));
                }
            }
        }
    }

    /// The lane of the endpoint at `index`: streams to it while there is work; when a stream
    /// breaks, hands its unanswered batches to the lanes, backs off and takes work again once
    /// the endpoint answers its health check. Ends once everything was sent, or with the
    /// error of a receiver that refuses the token.
    async fn lane(
        &self,
        index: usize,
        shared: &Shared,
        metrics: &ComponentMetrics,
    ) -> Result<(), ComponentError> {
        let mut progress = Progress {
            input_done: false,
            unacked: VecDeque::new(),
            next_sequence: 0,
            backoff: sink_backoff(),
        };
        let mut warn = Throttle::new(WARN_INTERVAL);
        loop {
            // Open a stream only with something to send, so an idle agent holds none.
            let Some(batch) = shared.next_batch().await else {
                return Ok(());
            };
            progress.input_done = false;
            progress.unacked.push_back(InFlight {
                sequence: progress.next_sequence,
                sent_at: Instant::now(),
                batch,
            });
            progress.next_sequence += 1;
            let mut broken = self.stream(index, shared, &mut progress, metrics).await;
            loop {
                match broken {
                    Ok(()) => break,
                    Err(Broken::Fatal(message)) => {
                        for pending in progress.unacked.drain(..) {
                            pending.batch.ack(BatchStatus::Failed);
                        }
                        return Err(ComponentError::unavailable(format!(
                            "the receiver refuses `auth.token`: {message}"
                        )));
                    }
                    Err(Broken::Retry(message)) => {
                        metrics.add_errors("stream_failed", 1);
                        if let Some(count) = warn.add(1) {
                            tracing::warn!(
                                failures = count,
                                unanswered = progress.unacked.len(),
                                "{message}; sending the unanswered batches again"
                            );
                        }
                        shared.orphan(progress.unacked.drain(..).map(|p| p.batch));
                        tokio::time::sleep(progress.backoff.next_delay()).await;
                        if shared.finished() {
                            return Ok(());
                        }
                        broken = self.check(index).await;
                    }
                }
            }
        }
    }

    /// Applies one answer: a delivered batch is acknowledged upstream, a failed one is sent
    /// again with a new sequence. True when the answer was a delivery.
    async fn settle(
        &self,
        answer: SubmitAck,
        unacked: &mut VecDeque<InFlight>,
        tx: &mpsc::Sender<v1::EventBatch>,
        next_sequence: &mut u64,
        metrics: &ComponentMetrics,
    ) -> bool {
        let Some(position) = unacked.iter().position(|p| p.sequence == answer.sequence) else {
            metrics.add_errors("unknown_ack", 1);
            return false;
        };
        let mut pending = unacked.remove(position).expect("position is in range");
        if answer.status == AckStatus::Delivered as i32 {
            if !answer.message.is_empty() {
                tracing::warn!(message = %answer.message, "the receiver took a batch but not all of it");
            }
            metrics.add_events_out(pending.batch.len());
            pending.batch.ack(BatchStatus::Delivered);
            return true;
        }
        metrics.add_errors("receiver_failed", 1);
        pending.sequence = *next_sequence;
        *next_sequence += 1;
        pending.sent_at = Instant::now();
        let _ = tx.send(to_wire(pending.sequence, &pending.batch)).await;
        unacked.push_back(pending);
        false
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Sorts a gRPC status: refused credentials are fatal, anything else is retried.
fn classify(url: &str, status: &tonic::Status) -> Broken {
    let message = format!("{url}: {} ({:?})", status.message(), status.code());
    match status.code() {
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => Broken::Fatal(message),
        _ => Broken::Retry(message),
    }
}

impl Sink for GrpcSink {
    fn healthcheck(&self) -> BoxFuture<'static, Result<(), ComponentError>> {
        if !self.healthcheck {
            return Box::pin(std::future::ready(Ok(())));
        }
        let sink = GrpcSink {
            endpoints: self.endpoints.clone(),
            token: self.token.clone(),
            compression: self.compression,
            max_in_flight: self.max_in_flight,
            ack_timeout: self.ack_timeout,
            connect_timeout: self.connect_timeout,
            healthcheck: true,
        };
        Box::pin(async move {
            let mut problems = Vec::new();
            for index in 0..sink.endpoints.len() {
                match sink.check(index).await {
                    Ok(()) => return Ok(()),
                    Err(Broken::Fatal(message)) => {
                        return Err(ComponentError::unavailable(format!(
                            "the receiver refuses `auth.token`: {message}"
                        )));
                    }
                    Err(Broken::Retry(message)) => problems.push(message),
                }
            }
            Err(ComponentError::unavailable(format!(
                "no receiver answers: {}",
                problems.join("; ")
            )))
        })
    }

    fn run(self: Box<Self>, input: BufferReceiver, cx: SinkContext) -> ComponentFuture {
        Box::pin(async move {
            let shared = Shared {
                input: tokio::sync::Mutex::new(input),
                input_done: AtomicBool::new(false),
                orphans: std::sync::Mutex::new(VecDeque::new()),
                orphaned: Notify::new(),
            };
            let lanes =
                (0..self.endpoints.len()).map(|index| self.lane(index, &shared, &cx.metrics));
            futures::future::try_join_all(lanes).await.map(drop)
        })
    }
}
