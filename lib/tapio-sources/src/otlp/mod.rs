//! `otlp`: an OTLP receiver for applications' own logs and traces, over gRPC
//! (`grpc_address`) and HTTP/protobuf (`http_address`, `POST /v1/logs` and `/v1/traces`), so
//! their error logs and failed spans join the correlation with what the kernel and Kubernetes
//! saw of the same pod (see [`decode`] for what becomes an event).
//!
//! Backpressure: decoded requests wait for the pipeline in a queue of `max_pending_requests`.
//! When it is full (the pipeline is slower than the senders), a request is answered at once
//! with gRPC `RESOURCE_EXHAUSTED` carrying `RetryInfo`, or HTTP 429 with `Retry-After`
//! (`retry_after`), which OTLP exporters honour by sending it again later, instead of being
//! buffered without bound. A success answer means the events were queued for the pipeline.
//!
//! With `auth.token`, every request must carry `authorization: Bearer <token>` (gRPC
//! metadata or HTTP header), else it is refused with `UNAUTHENTICATED` / 401. With `tls`, both
//! receivers speak TLS only (and with `tls.ca_file`, require client certificates signed by it).

mod decode;
mod http;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::{
    BuildContext, ComponentConfig, ComponentError, ComponentFuture, ComponentMetrics,
    ConfigDuration, EventBatch, Secret, Source, SourceContext, Timestamp, UnifiedEvent,
};
use tokio::sync::mpsc;
use tonic::codec::CompressionEncoding;
use tonic_types::{ErrorDetails, StatusExt};

use self::decode::Decoder;
pub use crate::util::tls::TlsConfig;
use crate::util::tls::TlsFiles;

/// Options of the `otlp` source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpSourceConfig {
    /// `host:port` of the OTLP/gRPC receiver (4317 is OTLP's port). Unset: no gRPC receiver.
    /// At least one of `grpc_address` and `http_address` is needed.
    #[serde(default)]
    pub grpc_address: Option<String>,
    /// `host:port` of the OTLP/HTTP receiver (4318 is OTLP's port), protobuf bodies, gzip or
    /// not. Unset: no HTTP receiver.
    #[serde(default)]
    pub http_address: Option<String>,
    /// TLS for both receivers.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Senders must present this token.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Decoded requests waiting for the pipeline; when that many wait, new ones are refused
    /// with `RESOURCE_EXHAUSTED` / 429 until the pipeline catches up.
    #[serde(default = "default_max_pending_requests")]
    pub max_pending_requests: usize,
    /// How long a sender refused for backpressure is told to wait (`RetryInfo`,
    /// `Retry-After`, in whole seconds over HTTP).
    #[serde(default = "default_retry_after")]
    pub retry_after: ConfigDuration,
    /// Largest request body accepted, after decompression (bigger ones get 400 /
    /// `RESOURCE_EXHAUSTED` without retry advice).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: tapio_event::ByteSize,
}

/// Bearer-token authentication of senders.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// The token senders send as `authorization: Bearer <token>`; write `"${ENV_VAR}"` to keep
    /// it out of the file. It shows as `***` wherever the config is printed.
    pub token: Secret,
}

fn default_max_pending_requests() -> usize {
    64
}

fn default_retry_after() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(1))
}

fn default_max_request_bytes() -> tapio_event::ByteSize {
    tapio_event::ByteSize(16 << 20)
}

impl ComponentConfig for OtlpSourceConfig {
    type Component = dyn Source;

    /// Checks the addresses and reads the TLS files; the receivers bind when the source runs.
    fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Source>, ComponentError> {
        let invalid = |message: String| ComponentError::config(message);
        let address = |option: &str, text: &Option<String>| {
            text.as_deref()
                .map(|text| {
                    text.parse::<SocketAddr>().map_err(|_| {
                        invalid(format!(
                            "`{option}` must be an IP address and port such as \"127.0.0.1:4317\", got {text:?}"
                        ))
                    })
                })
                .transpose()
        };
        let grpc = address("grpc_address", &self.grpc_address)?;
        let http = address("http_address", &self.http_address)?;
        if grpc.is_none() && http.is_none() {
            return Err(invalid(
                "set `grpc_address`, `http_address` or both: the source has nothing to listen on"
                    .into(),
            ));
        }
        if grpc.is_some() && grpc == http {
            return Err(invalid(
                "`grpc_address` and `http_address` must differ".into(),
            ));
        }
        if self.max_pending_requests == 0 {
            return Err(invalid("`max_pending_requests` must be at least 1".into()));
        }
        let tls = self.tls.as_ref().map(TlsConfig::read).transpose()?;
        let http_tls = tls
            .as_ref()
            .map(|files| files.acceptor(&[]))
            .transpose()
            .map_err(invalid)?;
        Ok(Box::new(OtlpSource {
            grpc,
            http,
            tls,
            http_tls,
            token: self.auth.as_ref().map(|auth| auth.token.clone()),
            max_pending: self.max_pending_requests,
            retry_after: self.retry_after.0,
            max_request_bytes: usize::try_from(self.max_request_bytes.0).unwrap_or(usize::MAX),
        }))
    }
}

struct OtlpSource {
    grpc: Option<SocketAddr>,
    http: Option<SocketAddr>,
    tls: Option<TlsFiles>,
    http_tls: Option<tokio_rustls::TlsAcceptor>,
    token: Option<Secret>,
    max_pending: usize,
    retry_after: Duration,
    max_request_bytes: usize,
}

/// Why a request was not taken, answered as the protocol's status.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// The queue is full: come back after the advised delay.
    Busy(Duration),
    /// The pipeline is stopping.
    Stopping,
    /// The request cannot be decoded or is too large.
    Invalid(String),
    /// No or a wrong token.
    Unauthenticated,
}

/// What the receivers share: the queue into the pipeline, the decoder, the token.
struct Receiver {
    queue: mpsc::Sender<EventBatch>,
    decoder: std::sync::Mutex<Decoder>,
    token: Option<Secret>,
    retry_after: Duration,
    max_request_bytes: usize,
    metrics: Arc<ComponentMetrics>,
}

impl Receiver {
    /// Whether the `authorization` header value lets the request in.
    fn authorized(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(given) = authorization.and_then(|value| value.strip_prefix(b"Bearer ")) else {
            return false;
        };
        tapio_event::secret::constant_time_eq(given, token.expose().as_bytes())
    }

    /// Queues events for the pipeline, or says why not.
    fn accept(&self, events: Vec<UnifiedEvent>) -> Result<(), Refusal> {
        if events.is_empty() {
            return Ok(());
        }
        match self.queue.try_send(EventBatch::new(events)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(batch)) => {
                self.metrics.add_errors("busy", 1);
                batch.ack(tapio_event::BatchStatus::Dropped);
                Err(Refusal::Busy(self.retry_after))
            }
            Err(mpsc::error::TrySendError::Closed(batch)) => {
                batch.ack(tapio_event::BatchStatus::Dropped);
                Err(Refusal::Stopping)
            }
        }
    }

    fn logs(&self, request: &ExportLogsServiceRequest) -> Result<(), Refusal> {
        let events = self
            .decoder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .logs(request, Timestamp::now());
        self.accept(events)
    }

    fn traces(&self, request: &ExportTraceServiceRequest) -> Result<(), Refusal> {
        let events = self
            .decoder
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .traces(request, Timestamp::now());
        self.accept(events)
    }

    /// Counts a request that could not be decoded.
    fn invalid(&self, message: String) -> Refusal {
        self.metrics.add_errors("invalid_request", 1);
        Refusal::Invalid(message)
    }
}

impl Refusal {
    /// The gRPC status of a refusal: `RESOURCE_EXHAUSTED` with `RetryInfo` when busy (OTLP
    /// exporters retry it after the advised delay), `UNAVAILABLE` when stopping.
    fn status(&self) -> tonic::Status {
        match self {
            Refusal::Busy(after) => tonic::Status::with_error_details(
                tonic::Code::ResourceExhausted,
                "the pipeline is full; retry later",
                ErrorDetails::with_retry_info(Some(*after)),
            ),
            Refusal::Stopping => tonic::Status::unavailable("the pipeline is stopping"),
            Refusal::Invalid(message) => tonic::Status::invalid_argument(message.clone()),
            Refusal::Unauthenticated => {
                tonic::Status::unauthenticated("a valid `authorization: Bearer` token is required")
            }
        }
    }
}

/// The gRPC side: both services answer through the shared receiver.
#[derive(Clone)]
struct Grpc(Arc<Receiver>);

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.0.logs(request.get_ref()).map_err(|r| r.status())?;
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.traces(request.get_ref()).map_err(|r| r.status())?;
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// One gRPC service for both OTLP services, routing by path, and checking the token first.
#[derive(Clone)]
struct Routes {
    receiver: Arc<Receiver>,
    logs: LogsServiceServer<Grpc>,
    traces: TraceServiceServer<Grpc>,
}

/// The path prefix of the OTLP trace service's methods.
const TRACE_SERVICE: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/";

type GrpcRequest = tonic::codegen::http::Request<tonic::body::Body>;
type GrpcResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl tower_service::Service<GrpcRequest> for Routes {
    type Response = GrpcResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<GrpcResponse, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: GrpcRequest) -> Self::Future {
        let authorization = request
            .headers()
            .get("authorization")
            .map(|value| value.as_bytes());
        if !self.receiver.authorized(authorization) {
            let response = Refusal::Unauthenticated.status().into_http();
            return Box::pin(std::future::ready(Ok(response)));
        }
        if request.uri().path().starts_with(TRACE_SERVICE) {
            self.traces.call(request)
        } else {
            self.logs.call(request)
        }
    }
}

impl Source for OtlpSource {
    fn run(self: Box<Self>, cx: SourceContext) -> ComponentFuture {
        Box::pin(async move {
            let SourceContext {
                mut out,
                mut shutdown,
                metrics,
            } = cx;
            let (queue, mut pending) = mpsc::channel(self.max_pending);
            let receiver = Arc::new(Receiver {
                queue,
                decoder: std::sync::Mutex::new(Decoder::new()),
                token: self.token.clone(),
                retry_after: self.retry_after,
                max_request_bytes: self.max_request_bytes,
                metrics,
            });
            let (stop_tx, stop) = tokio::sync::watch::channel(false);
            let mut servers = tokio::task::JoinSet::new();
            let mut standbys = Vec::new();
            if let Some(address) = self.grpc {
                let (serving, standby) =
                    self.serve_grpc(address, Arc::clone(&receiver), stop.clone())?;
                servers.spawn(serving);
                standbys.push(standby);
            }
            if let Some(address) = self.http {
                let (listener, standby) = crate::util::listener::listen(address).map_err(|e| {
                    ComponentError::unavailable(format!(
                        "cannot listen on `http_address` {address}: {e}"
                    ))
                })?;
                standbys.push(standby);
                servers.spawn(http::serve(
                    listener,
                    self.http_tls.clone(),
                    Arc::clone(&receiver),
                    stop.clone(),
                ));
            }
            drop(receiver);
            loop {
                tokio::select! {
                    () = shutdown.triggered() => break,
                    Some(done) = servers.join_next() => {
                        done.map_err(|e| ComponentError::runtime(format!("a receiver failed: {e}")))??;
                    }
                    batch = pending.recv() => {
                        let Some(batch) = batch else { break };
                        if out.send(batch).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = stop_tx.send(true);
            if shutdown.is_triggered() {
                // A graceful stop (a reload's successor may listen here next).
                standbys
                    .into_iter()
                    .for_each(crate::util::listener::Standby::park);
            }
            pending.close();
            while let Some(batch) = pending.recv().await {
                if out.send(batch).await.is_err() {
                    break;
                }
            }
            while let Some(done) = servers.join_next().await {
                done.map_err(|e| ComponentError::runtime(format!("a receiver failed: {e}")))??;
            }
            Ok(())
        })
    }
}

impl OtlpSource {
    /// The gRPC receiver on `address`, bound now so a taken port fails the start, serving
    /// until `stop` turns true, and its socket's standby.
    fn serve_grpc(
        &self,
        address: SocketAddr,
        receiver: Arc<Receiver>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<
        (
            BoxFuture<'static, Result<(), ComponentError>>,
            crate::util::listener::Standby,
        ),
        ComponentError,
    > {
        let limit = receiver.max_request_bytes;
        let grpc = Grpc(Arc::clone(&receiver));
        let routes = Routes {
            receiver,
            logs: LogsServiceServer::new(grpc.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
            traces: TraceServiceServer::new(grpc)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit),
        };
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = &self.tls {
            server = server
                .tls_config(tls.grpc_server())
                .map_err(|e| ComponentError::config(format!("`tls`: {e}")))?;
        }
        let (listener, standby) = crate::util::listener::listen(address).map_err(|e| {
            ComponentError::unavailable(format!("cannot listen on `grpc_address` {address}: {e}"))
        })?;
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let serving = Box::pin(async move {
            server
                .serve_with_incoming_shutdown(routes, incoming, async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                })
                .await
                .map_err(|e| {
                    ComponentError::runtime(format!("the gRPC receiver on {address} failed: {e}"))
                })
        });
        Ok((serving, standby))
    }
}
