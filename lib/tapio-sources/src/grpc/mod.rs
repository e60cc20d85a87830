//! `grpc`: the aggregator's end of the agent → aggregator path. It serves `tapio.v1`'s
//! `EventService.SubmitEvents` (and the standard `grpc.health.v1.Health`) on `address`: senders
//! (the `grpc` sink of other Tapios, or any gRPC client of the committed `.proto`) stream
//! `EventBatch`es, and each batch is answered by a `SubmitAck` with its `sequence`.
//!
//! Acknowledgements: with `acknowledgements = true` (the default) a batch is acknowledged
//! `DELIVERED` only once every sink of this pipeline that received it acknowledged it (and
//! `FAILED` when one failed, so the sender sends it again); with `false`, as soon as the
//! pipeline took it. Either way a sender that loses the stream before the ack resends, so
//! delivery is at least once.
//!
//! Backpressure: a stream's batches go into the pipeline one at a time, and the stream is not
//! read while the pipeline is full or `max_in_flight` of its batches wait for their
//! acknowledgements; HTTP/2 flow control then stops the sender. Nothing is buffered without
//! bound.
//!
//! Events that do not convert (an unknown enum value, a port above 65535, `application_json`
//! that is not an object) are counted (`invalid_event`) and sent to the `errors` output with
//! the reason, their protobuf bytes in `raw_data`; the rest of their batch goes on.
//!
//! Security: with `auth`, every `SubmitEvents` call must carry `authorization: Bearer <token>`
//! (else `UNAUTHENTICATED`, and nothing it sent enters the pipeline); the health service is
//! open. With `tls`, the server speaks TLS only (mutual TLS with `tls.ca_file`). Every stream
//! is logged once at info with the client's address and the token's name, as an audit trail.

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::BoxStream;
use prost::Message;
use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::{
    AckReceiver, AckToken, BatchStatus, BuildContext, ByteSize, ComponentConfig, ComponentError,
    ComponentFuture, ComponentMetrics, ERRORS_OUTPUT, EventBatch, Secret, Source, SourceContext,
    Timestamp, Tokens,
};
use tapio_proto::health::health_server::{Health, HealthServer};
use tapio_proto::health::{HealthCheckRequest, HealthCheckResponse, health_check_response};
use tapio_proto::v1::event_service_server::{EventService, EventServiceServer};
use tapio_proto::v1::{self, AckStatus, SubmitAck};
use tokio::sync::{mpsc, watch};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status, Streaming};

pub use crate::util::tls::TlsConfig;
use crate::util::tls::TlsFiles;

/// Options of the `grpc` source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrpcSourceConfig {
    /// `host:port` to serve on. Loopback by default: give an address other hosts reach (and
    /// turn on `tls` and `auth`) to receive from agents elsewhere.
    #[serde(default = "default_address")]
    pub address: String,
    /// TLS for the server.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Senders must present one of these bearer tokens.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Acknowledge a batch only once this pipeline's sinks delivered it (`true`), or as soon
    /// as the pipeline took it (`false`: faster, but a crash of this process loses what its
    /// buffers held).
    #[serde(default = "default_true")]
    pub acknowledgements: bool,
    /// Batches of one stream waiting for their acknowledgements before the stream is no longer
    /// read (the sender then waits, by HTTP/2 flow control).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Largest `EventBatch` message accepted, after decompression.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: ByteSize,
    /// Streams one client connection may have open at once.
    #[serde(default = "default_max_streams_per_connection")]
    pub max_streams_per_connection: u32,
    /// How long a stream may go without a message before the source ends it (the sender
    /// opens a new one when it has more to send).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: tapio_event::ConfigDuration,
}

/// The HTTP/2 flow-control window of one `SubmitEvents` stream: what a sender may have on the
/// wire before the pipeline reads it (a few batches).
const STREAM_WINDOW_BYTES: u32 = 4 << 20;
/// The window of one connection, shared by its streams.
const CONNECTION_WINDOW_BYTES: u32 = 8 << 20;

/// Bearer-token authentication of senders; tokens from both options are accepted.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// A file of tokens: one a line, optionally `name:token` (the name is what the audit log
    /// shows); blank lines and `#` comments are ignored.
    #[serde(default)]
    pub tokens_file: Option<PathBuf>,
    /// Tokens written in the config, each `token` or `name:token`; write `"${ENV_VAR}"` to
    /// keep them out of the file. They show as `***` wherever the config is printed.
    #[serde(default)]
    pub tokens: Vec<Secret>,
}

impl AuthConfig {
    /// All configured tokens; at least one, since `auth` without tokens would let nobody in.
    /// Public for the API's `[api] auth`, which takes tokens the same way.
    pub fn load(&self) -> Result<Tokens, ComponentError> {
        let mut tokens = Tokens::default();
        if let Some(path) = &self.tokens_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ComponentError::config(format!("`auth.tokens_file` {}: {e}", path.display()))
            })?;
            tokens.extend(Tokens::parse(text.lines()).map_err(|e| {
                ComponentError::config(format!("`auth.tokens_file` {}: {e}", path.display()))
            })?);
        }
        tokens.extend(
            Tokens::parse(self.tokens.iter().map(Secret::expose))
                .map_err(|e| ComponentError::config(format!("`auth.tokens`: {e}")))?,
        );
        if tokens.is_empty() {
            return Err(ComponentError::config(
                "`auth` needs `tokens_file` or `tokens` with at least one token",
            ));
        }
        Ok(tokens)
    }
}

fn default_address() -> String {
    "127.0.0.1:6788".into()
}

fn default_true() -> bool {
    true
}

fn default_max_in_flight() -> usize {
    32
}

fn default_max_message_bytes() -> ByteSize {
    ByteSize(16 << 20)
}

fn default_max_streams_per_connection() -> u32 {
    16
}

fn default_idle_timeout() -> tapio_event::ConfigDuration {
    tapio_event::ConfigDuration(Duration::from_secs(300))
}

impl ComponentConfig for GrpcSourceConfig {
    type Component = dyn Source;
    const NAMED_OUTPUTS: &'static [&'static str] = &[ERRORS_OUTPUT];

    /// Checks the address and limits and reads the TLS and token files; binds when it runs.
    fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Source>, ComponentError> {
        let address = self.address.parse::<SocketAddr>().map_err(|_| {
            ComponentError::config(format!(
                "`address` must be an IP address and port such as \"127.0.0.1:6788\", got {:?}",
                self.address
            ))
        })?;
        if self.max_in_flight == 0 {
            return Err(ComponentError::config("`max_in_flight` must be at least 1"));
        }
        if self.max_streams_per_connection == 0 {
            return Err(ComponentError::config(
                "`max_streams_per_connection` must be at least 1",
            ));
        }
        Ok(Box::new(GrpcSource {
            address,
            tls: self.tls.as_ref().map(TlsConfig::read).transpose()?,
            tokens: self
                .auth
                .as_ref()
                .map(AuthConfig::load)
                .transpose()?
                .unwrap_or_default(),
            acknowledgements: self.acknowledgements,
            max_in_flight: self.max_in_flight,
            max_message_bytes: usize::try_from(self.max_message_bytes.0).unwrap_or(usize::MAX),
            max_streams: self.max_streams_per_connection,
            idle_timeout: self.idle_timeout.0,
        }))
    }
}

struct GrpcSource {
    address: SocketAddr,
    tls: Option<TlsFiles>,
    tokens: Tokens,
    acknowledgements: bool,
    max_in_flight: usize,
    max_message_bytes: usize,
    max_streams: u32,
    idle_timeout: Duration,
}

/// What a stream hands the source's loop: the convertible events (with the batch's
/// acknowledgement when acknowledgements are on) and the error events of the rest.
struct Submitted {
    events: EventBatch,
    errors: Vec<tapio_event::UnifiedEvent>,
}

/// What one batch's `SubmitAck` waits for.
enum Awaiting {
    /// The sinks' verdict.
    Sinks(AckReceiver),
    /// Nothing: the pipeline took it (acknowledgements off, or nothing in it to deliver).
    Taken,
}

/// The service: shared by every stream.
struct Receiver {
    queue: mpsc::Sender<Submitted>,
    tokens: Tokens,
    acknowledgements: bool,
    max_in_flight: usize,
    idle_timeout: Duration,
    metrics: Arc<ComponentMetrics>,
    stop: watch::Receiver<bool>,
}

/// `EventService` on the source: only `SubmitEvents`; querying and streaming are the API
/// server's (`[api] address`).
#[derive(Clone)]
struct Service(Arc<Receiver>);

#[tonic::async_trait]
impl EventService for Service {
    type StreamEventsStream = BoxStream<'static, Result<v1::UnifiedEvent, Status>>;
    type SubmitEventsStream = BoxStream<'static, Result<SubmitAck, Status>>;

    async fn stream_events(
        &self,
        _request: Request<v1::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        Err(Status::unimplemented(
            "a grpc source only receives; StreamEvents is served on the [api] address",
        ))
    }

    async fn query_events(
        &self,
        _request: Request<v1::QueryEventsRequest>,
    ) -> Result<Response<v1::QueryEventsResponse>, Status> {
        Err(Status::unimplemented(
            "a grpc source only receives; QueryEvents is served on the [api] address",
        ))
    }

    async fn submit_events(
        &self,
        request: Request<Streaming<v1::EventBatch>>,
    ) -> Result<Response<Self::SubmitEventsStream>, Status> {
        let client = request
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let name = if self.0.tokens.is_empty() {
            "-".to_string()
        } else {
            let authorization = request
                .metadata()
                .get("authorization")
                .map(|value| value.as_bytes());
            match self.0.tokens.check(authorization) {
                Some(name) => name.to_string(),
                None => {
                    self.0.metrics.add_errors("unauthenticated", 1);
                    tracing::warn!(%client, "SubmitEvents refused: no valid bearer token");
                    return Err(Status::unauthenticated(
                        "a valid `authorization: Bearer` token is required",
                    ));
                }
            }
        };
        tracing::info!(%client, token = %name, "SubmitEvents stream opened");
        let receiver = Arc::clone(&self.0);
        let (acks_tx, acks_rx) = mpsc::channel(receiver.max_in_flight);
        let (waiting_tx, waiting_rx) = mpsc::channel(receiver.max_in_flight);
        tokio::spawn(read_stream(
            Arc::clone(&receiver),
            request.into_inner(),
            waiting_tx,
            acks_tx.clone(),
        ));
        tokio::spawn(answer(waiting_rx, acks_tx));
        let acks = futures::stream::unfold(acks_rx, |mut rx| async move {
            rx.recv().await.map(|ack| (ack, rx))
        });
        Ok(Response::new(Box::pin(acks)))
    }
}

/// Reads one stream: converts each batch, hands it to the source's loop (waiting while the
/// pipeline is full, which is what stops the sender) and queues what its ack waits for.
async fn read_stream(
    receiver: Arc<Receiver>,
    mut inbound: Streaming<v1::EventBatch>,
    waiting: mpsc::Sender<(u64, Awaiting, String)>,
    acks: mpsc::Sender<Result<SubmitAck, Status>>,
) {
    let mut stop = receiver.stop.clone();
    let mut errors = tapio_event::codec::Decoder::default();
    loop {
        let message = tokio::select! {
            () = stopped(&mut stop) => {
                let _ = acks.send(Err(Status::unavailable("the receiver is stopping"))).await;
                return;
            }
            message = tokio::time::timeout(receiver.idle_timeout, inbound.message()) => match message {
                Ok(message) => message,
                Err(_) => {
                    let _ = acks.send(Err(Status::deadline_exceeded("the stream was idle"))).await;
                    return;
                }
            },
        };
        let batch = match message {
            Ok(Some(batch)) => batch,
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(%status, "a SubmitEvents stream ended");
                return;
            }
        };
        let sequence = batch.sequence;
        let now = Timestamp::now();
        let mut good = Vec::with_capacity(batch.events.len());
        let mut bad = Vec::new();
        let mut note = String::new();
        for wire in batch.events {
            let bytes = wire.encode_to_vec();
            match tapio_proto::event_from_proto(wire) {
                Ok(event) => good.push(event),
                Err(e) => {
                    if note.is_empty() {
                        note = format!("rejected events, the first because {e}");
                    }
                    bad.push(errors.error_event(&bytes, "grpc", &e.to_string(), now));
                }
            }
        }
        receiver.metrics.add_events_in(good.len() + bad.len());
        receiver.metrics.add_errors("invalid_event", bad.len());
        let (events, awaiting) = if receiver.acknowledgements && !good.is_empty() {
            let (token, ack) = AckToken::new();
            (EventBatch::with_ack(good, token), Awaiting::Sinks(ack))
        } else {
            (EventBatch::new(good), Awaiting::Taken)
        };
        let submitted = Submitted {
            events,
            errors: bad,
        };
        if receiver.queue.send(submitted).await.is_err()
            || waiting.send((sequence, awaiting, note)).await.is_err()
        {
            return;
        }
    }
}

/// Resolves once the source stops (or is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Answers a stream's batches in the order they came, each once its acknowledgement is known.
async fn answer(
    mut waiting: mpsc::Receiver<(u64, Awaiting, String)>,
    acks: mpsc::Sender<Result<SubmitAck, Status>>,
) {
    while let Some((sequence, awaiting, message)) = waiting.recv().await {
        let status = match awaiting {
            Awaiting::Taken => BatchStatus::Delivered,
            Awaiting::Sinks(ack) => ack.status().await,
        };
        let ack = SubmitAck {
            sequence,
            status: if status.is_settled() {
                AckStatus::Delivered
            } else {
                AckStatus::Failed
            } as i32,
            message,
        };
        if acks.send(Ok(ack)).await.is_err() {
            return;
        }
    }
}

/// `grpc.health.v1.Health`: serving while the source runs.
struct Healthy;

#[tonic::async_trait]
impl Health for Healthy {
    type WatchStream = BoxStream<'static, Result<HealthCheckResponse, Status>>;

    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: health_check_response::ServingStatus::Serving as i32,
        }))
    }

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let serving = HealthCheckResponse {
            status: health_check_response::ServingStatus::Serving as i32,
        };
        let stream =
            futures::stream::once(async move { Ok(serving) }).chain(futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}

impl Source for GrpcSource {
    fn run(self: Box<Self>, cx: SourceContext) -> ComponentFuture {
        Box::pin(async move {
            let SourceContext {
                mut out,
                mut shutdown,
                metrics,
            } = cx;
            let (queue, mut pending) = mpsc::channel(1);
            let (stop_tx, stop) = watch::channel(false);
            let service = Service(Arc::new(Receiver {
                queue,
                tokens: self.tokens.clone(),
                acknowledgements: self.acknowledgements,
                max_in_flight: self.max_in_flight,
                idle_timeout: self.idle_timeout,
                metrics,
                stop: stop.clone(),
            }));
            let events = EventServiceServer::new(service)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(self.max_message_bytes);
            let routes = Routes {
                health: HealthServer::new(Healthy),
                events,
            };
            // HTTP/2's default 64 KiB window lets a sender have one small batch in flight per
            // round trip; these let `max_in_flight` batches of a thousand events flow, while
            // still bounding what one stream can push before the pipeline takes it.
            let mut server = tonic::transport::Server::builder()
                .max_concurrent_streams(Some(self.max_streams))
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .initial_stream_window_size(Some(STREAM_WINDOW_BYTES))
                .initial_connection_window_size(Some(CONNECTION_WINDOW_BYTES));
            if let Some(tls) = &self.tls {
                server = server
                    .tls_config(tls.grpc_server())
                    .map_err(|e| ComponentError::config(format!("`tls`: {e}")))?;
            }
            let (listener, standby) = crate::util::listener::listen(self.address).map_err(|e| {
                ComponentError::unavailable(format!(
                    "cannot listen on `address` {}: {e}",
                    self.address
                ))
            })?;
            // Answers are small frames: without Nagle's algorithm they leave at once instead
            // of waiting for the sender's delayed ACK, which would stall its in-flight window.
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let mut serve_stop = stop.clone();
            let address = self.address;
            let mut serving =
                tokio::spawn(
                    server.serve_with_incoming_shutdown(routes, incoming, async move {
                        stopped(&mut serve_stop).await;
                    }),
                );
            let failed = |e: String| {
                ComponentError::runtime(format!("the gRPC server on {address} failed: {e}"))
            };
            loop {
                tokio::select! {
                    () = shutdown.triggered() => break,
                    done = &mut serving => {
                        return match done {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(failed(e.to_string())),
                            Err(e) => Err(failed(e.to_string())),
                        };
                    }
                    submitted = pending.recv() => {
                        let Some(submitted) = submitted else { break };
                        if forward(&mut out, submitted).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = stop_tx.send(true);
            if shutdown.is_triggered() {
                // A graceful stop (a reload's successor may listen here next).
                standby.park();
            }
            pending.close();
            while let Some(submitted) = pending.recv().await {
                if forward(&mut out, submitted).await.is_err() {
                    break;
                }
            }
            match serving.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(failed(e.to_string())),
                Err(e) => Err(failed(e.to_string())),
            }
        })
    }
}

/// The two services on one server, by path (tonic's router would pull in axum).
#[derive(Clone)]
struct Routes {
    health: HealthServer<Healthy>,
    events: EventServiceServer<Service>,
}

/// The path prefix of the health service's methods.
const HEALTH_SERVICE: &str = "/grpc.health.v1.Health/";

type GrpcRequest = tonic::codegen::http::Request<tonic::body::Body>;
type GrpcResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl tower_service::Service<GrpcRequest> for Routes {
    type Response = GrpcResponse;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<GrpcResponse, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GrpcRequest) -> Self::Future {
        if request.uri().path().starts_with(HEALTH_SERVICE) {
            self.health.call(request)
        } else {
            self.events.call(request)
        }
    }
}

impl tonic::server::NamedService for Routes {
    const NAME: &'static str = "tapio.v1.EventService";
}

/// Sends a stream's batch on: its events to the default output, its bad ones to `errors`.
async fn forward(
    out: &mut tapio_event::Outputs,
    submitted: Submitted,
) -> Result<(), tapio_event::buffer::Closed> {
    if !submitted.errors.is_empty() {
        out.send_to(ERRORS_OUTPUT, EventBatch::new(submitted.errors))
            .await;
    }
    if submitted.events.is_empty() {
        submitted.events.ack(BatchStatus::Delivered);
        return Ok(());
    }
    out.send(submitted.events).await
}
