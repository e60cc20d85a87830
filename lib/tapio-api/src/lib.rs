//! The API (L4) on the `[api] address`, one port for both protocols: HTTP/1.1 for
//! `GET /health` (orchestrators' probes), `GET /metrics` (Prometheus text, from the same
//! counters the `--summary` table prints) and the REST/JSON calls under `/v1/` ([`rest`]),
//! described by the OpenAPI document at `/v1/openapi.json`; and gRPC over HTTP/2 (requests with
//! `content-type: application/grpc`, [`grpc`]). Queries and live streams read the `api_store`
//! sink's store, `POST /v1/events` writes into the `api` source: the topology hands both up.

pub mod client;
pub mod components;
mod grpc;
mod params;
mod prometheus;
mod rest;
mod tap;

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use tapio_event::backoff::Backoff;
use tapio_event::throttle::Throttle;
use tapio_event::{MetricsSnapshot, Tokens};
use tapio_sources::tls::TlsConfig;
use tapio_topology::{ApiHandles, ComponentList, Health};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

pub use prometheus::render as render_prometheus;

/// Any error a response body may end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every answer's body: whole (REST), streamed (NDJSON, SSE) or gRPC's.
pub(crate) type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

/// What the API reads: the lifecycle state and reload counts, the counters of every component
/// running now (a reload changes the list), and the store and intake inside the pipeline.
#[derive(Clone)]
pub struct ApiState {
    /// The lifecycle state `/health` and `grpc.health.v1` report.
    pub health: Arc<Health>,
    /// The counters of every component running now, for `/metrics`.
    pub metrics: Arc<ComponentList>,
    /// The store queries read, the intake `POST /v1/events` writes, the analysis chain and
    /// the taps, which a reload replaces when it changes them.
    pub handles: Reloadable<ApiHandles>,
    /// Bearer tokens every call but `/health` must present (empty: no authentication), which
    /// a reload replaces.
    pub tokens: Reloadable<Tokens>,
    /// The TLS new connections are accepted with (none: plain TCP), which a reload swaps.
    pub tls: Reloadable<Option<TlsAcceptor>>,
}

/// A setting of the API that a reload replaces while it serves: `[api] auth`'s tokens,
/// `[api] tls` (rotated certificates, a new client CA) and the store, intake and chain of the
/// pipeline apply from the next call or connection on, without rebinding the port or closing
/// the connections open.
#[derive(Clone, Default)]
pub struct Reloadable<T>(Arc<RwLock<T>>);

impl<T> Reloadable<T> {
    /// The setting `value`, to be replaced later.
    pub fn new(value: T) -> Self {
        Reloadable(Arc::new(RwLock::new(value)))
    }

    /// Uses `value` from now on.
    pub fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value;
    }

    /// The setting now, for a call to use throughout (cheap: every setting is shared inside).
    pub fn get(&self) -> T
    where
        T: Clone,
    {
        self.read().clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, T> {
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The acceptor for `[api] tls`, offering HTTP/2 (gRPC clients require it over TLS) and
/// HTTP/1.1 by ALPN; the files are read now, so a missing or bad one is reported at once.
pub fn tls_acceptor(config: &TlsConfig) -> Result<TlsAcceptor, String> {
    let files = config.read().map_err(|e| e.to_string())?;
    files.acceptor(&[b"h2", b"http/1.1"])
}

impl ApiState {
    /// The counters of every component running now, read once: what `/metrics` and
    /// `/v1/components` both answer from.
    pub(crate) fn snapshots(&self) -> Vec<MetricsSnapshot> {
        self.metrics.get().iter().map(|m| m.snapshot()).collect()
    }
}

/// Who calls: the client's address and the name of the token it presented (`-` when the API
/// has no tokens, or for `/health`), for the audit log. gRPC handlers read it from the
/// request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The client's address (`ip:port`).
    pub(crate) address: String,
    /// The name of the token it presented, `-` when none was needed.
    pub(crate) token: String,
}

/// The paths open without a token: the probes'.
fn is_open(path: &str) -> bool {
    path == "/health" || path.starts_with("/grpc.health.v1.Health/")
}

/// The caller of `request`, or the refusal to answer when the API has tokens and the request
/// carries none of them (HTTP 401, gRPC `UNAUTHENTICATED`).
fn authenticate<B>(
    tokens: &Tokens,
    request: &hyper::Request<B>,
    address: &str,
) -> Result<Caller, Box<hyper::Response<ResponseBody>>> {
    let caller = |token: &str| Caller {
        address: address.to_owned(),
        token: token.to_owned(),
    };
    if tokens.is_empty() || is_open(request.uri().path()) {
        return Ok(caller("-"));
    }
    let authorization = request
        .headers()
        .get("authorization")
        .map(|value| value.as_bytes());
    if let Some(name) = tokens.check(authorization) {
        return Ok(caller(name));
    }
    tracing::warn!(client = %address, path = %request.uri().path(), "API call refused: no valid bearer token");
    let message = "a valid `authorization: Bearer <token>` header is required";
    Err(Box::new(if is_grpc(request) {
        tonic::Status::unauthenticated(message)
            .into_http::<tonic::body::Body>()
            .map(|body| body.map_err(BoxError::from).boxed_unsync())
    } else {
        rest::unauthorized(message)
    }))
}

/// A bound, not yet serving, API listener; binding first lets `run` fail early (exit 69) when
/// the address is taken.
pub struct Api {
    listener: TcpListener,
}

impl Api {
    /// Binds `address`.
    pub async fn bind(address: SocketAddr) -> std::io::Result<Api> {
        Ok(Api {
            listener: TcpListener::bind(address).await?,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves requests until the task is dropped.
    pub async fn serve(self, state: ApiState) {
        serve_connections(self.listener, state).await;
    }
}

/// Where the API's connections come from: its TCP listener, or a stand-in in tests.
trait Listener: Send {
    type Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection and the client's address, or why none could be accepted.
    fn accept(
        &mut self,
    ) -> impl Future<Output = std::io::Result<(Self::Connection, String)>> + Send;
}

impl Listener for TcpListener {
    type Connection = TcpStream;

    /// Without Nagle's algorithm: an HTTP/2 answer is several small frames, and holding the
    /// last back for the client's delayed ACK adds ~40 ms to a gRPC call.
    async fn accept(&mut self) -> std::io::Result<(TcpStream, String)> {
        let (stream, client) = TcpListener::accept(self).await?;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %client, "cannot turn off Nagle's algorithm; serving anyway");
        }
        Ok((stream, client.to_string()))
    }
}

/// The first pause after a failed accept.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(10);
/// The longest pause between failed accepts: a scrape waits at most this long once file
/// descriptors are free again.
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);
/// How often failing accepts are logged at most.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What to do after an accept failed. An accept that fails (`EMFILE`/`ENFILE`: the process or
/// the system is out of file descriptors) fails again at once until a descriptor is freed, so
/// retrying at once would spin a core and flood the log; the pause doubles from
/// [`ACCEPT_PAUSE_MIN`] to [`ACCEPT_PAUSE_MAX`] and starts over after a success, and failures
/// are logged once per [`ACCEPT_LOG_INTERVAL`] with how many there were.
struct AcceptBackoff {
    pause: Backoff,
    failures: Throttle,
}

impl AcceptBackoff {
    fn new() -> Self {
        AcceptBackoff {
            pause: Backoff::new(ACCEPT_PAUSE_MIN, ACCEPT_PAUSE_MAX),
            failures: Throttle::new(ACCEPT_LOG_INTERVAL),
        }
    }

    /// A connection was accepted: the next failure pauses briefly again.
    fn succeeded(&mut self) {
        self.pause.reset();
    }

    /// Logs `error` if it is time to, then waits before the next accept.
    async fn failed(&mut self, error: &std::io::Error) {
        if let Some(failures) = self.failures.add(1) {
            tracing::warn!(%error, failures, retry_in = ?self.pause.peek(), "API accept failed");
        }
        tokio::time::sleep(self.pause.next_delay()).await;
    }
}

/// How long a client may take to send a request's headers (HTTP/1.1) before the connection
/// is closed, so idle or trickling connections do not hold the server's resources.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent calls (HTTP/2 streams) one client connection may have open: a bound on what one
/// client holds (live streams included).
const MAX_STREAMS_PER_CONNECTION: u32 = 64;

/// How often an HTTP/2 connection is pinged: a client that went away without closing (a
/// crashed host, a dropped NAT entry) would otherwise hold its streams, taps included, forever.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The per-connection server: HTTP/1.1 or HTTP/2 as the client speaks, with the limits above.
fn connection_builder() -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    builder
}

/// A client connection as the server reads it, plain or TLS.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// Whether a request is a gRPC call (`application/grpc`, `application/grpc+proto`, ...).
fn is_grpc<B>(request: &hyper::Request<B>) -> bool {
    request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Serves every connection `listener` accepts, each on its own task, HTTP/1.1 or HTTP/2 as
/// the client speaks.
async fn serve_connections(mut listener: impl Listener, state: ApiState) {
    let mut backoff = AcceptBackoff::new();
    let grpc = grpc::GrpcRoutes::new(state.clone());
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(accepted) => {
                backoff.succeeded();
                accepted
            }
            Err(error) => {
                backoff.failed(&error).await;
                continue;
            }
        };
        let state = state.clone();
        let grpc = grpc.clone();
        let tls = state.tls.read().clone();
        tokio::spawn(async move {
            let stream: Box<dyn Connection> = match tls {
                None => Box::new(stream),
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => Box::new(stream),
                        Ok(Err(error)) => {
                            tracing::warn!(%client, %error, "API connection refused: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%client, "API connection closed: no TLS handshake in time");
                            return;
                        }
                    }
                }
            };
            let service = hyper::service::service_fn(move |mut request| {
                let state = state.clone();
                let grpc = grpc.clone();
                let client = client.clone();
                async move {
                    let authenticated = authenticate(&state.tokens.read(), &request, &client);
                    let caller = match authenticated {
                        Ok(caller) => caller,
                        Err(refused) => return Ok(*refused),
                    };
                    let response = if is_grpc(&request) {
                        request.extensions_mut().insert(caller);
                        grpc.call(request)
                            .await
                            .map(|body| body.map_err(BoxError::from).boxed_unsync())
                    } else {
                        rest::respond(request, &state, &caller).await
                    };
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(error) = connection_builder().serve_connection(io, service).await {
                tracing::debug!(%error, "API connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tapio_event::{ComponentKind, ComponentMetrics};
    use tapio_topology::HealthState;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// A state with one sink's counters and nothing inside the pipeline.
    pub(crate) fn state() -> ApiState {
        let metrics = Arc::new(ComponentMetrics::new(
            "out",
            "blackhole",
            ComponentKind::Sink,
        ));
        metrics.add_events_out(7);
        ApiState {
            health: Arc::new(Health::default()),
            metrics: Arc::new(ComponentList::new(vec![metrics])),
            handles: Reloadable::default(),
            tokens: Reloadable::default(),
            tls: Reloadable::default(),
        }
    }

    /// `method path` answered by the REST side: the status and the body (empty for a live
    /// stream).
    pub(crate) async fn call(
        state: &ApiState,
        method: &str,
        path: &str,
        body: &str,
    ) -> (StatusCode, String) {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .body(http_body_util::Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let caller = Caller {
            address: "test".into(),
            token: "-".into(),
        };
        let response = rest::respond(request, state, &caller).await;
        let status = response.status();
        let streamed = response
            .headers()
            .get("content-type")
            .is_some_and(|t| t == "application/x-ndjson" || t == "text/event-stream");
        if streamed {
            // A live stream does not end; its status is the answer.
            return (status, String::new());
        }
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn health_follows_the_lifecycle() {
        let state = state();
        for (lifecycle, status, text) in [
            (
                HealthState::Starting,
                StatusCode::SERVICE_UNAVAILABLE,
                "starting",
            ),
            (HealthState::Running, StatusCode::OK, "running"),
            (
                HealthState::Draining,
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
            ),
            (HealthState::Reloading, StatusCode::OK, "reloading"),
        ] {
            state.health.set(lifecycle);
            let (got, body) = call(&state, "GET", "/health", "").await;
            assert_eq!(got, status);
            assert!(body.contains(text), "{body}");
        }
    }

    #[tokio::test]
    async fn metrics_other_paths_and_methods() {
        let state = state();
        state.health.count_reload(true);
        state.health.count_reload(false);
        state.health.count_reload(false);
        let (status, metrics) = call(&state, "GET", "/metrics", "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(metrics.contains("tapio_component_sent_events_total{component=\"out\""));
        assert!(
            metrics.contains("tapio_config_reloads_total{result=\"ok\"} 1\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("tapio_config_reloads_total{result=\"failed\"} 2\n"),
            "{metrics}"
        );
        assert_eq!(
            call(&state, "GET", "/nope", "").await.0,
            StatusCode::NOT_FOUND
        );
        let (status, body) = call(&state, "POST", "/health", "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(body.contains("\"error\""), "{body}");
    }

    /// `EMFILE` on Linux: the process is out of file descriptors.
    const EMFILE: i32 = 24;

    /// A listener that fails `failures` times as an exhausted process does, then hands out
    /// `connection` once and waits forever; counts accepts.
    struct Exhausted {
        failures: usize,
        connection: Option<DuplexStream>,
        attempts: Arc<AtomicUsize>,
    }

    impl Listener for Exhausted {
        type Connection = DuplexStream;

        async fn accept(&mut self) -> std::io::Result<(DuplexStream, String)> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            // A real accept returns at once as well; yielding lets a loop that never pauses
            // run up its count instead of starving the test.
            tokio::task::yield_now().await;
            if self.failures > 0 {
                self.failures -= 1;
                return Err(std::io::Error::from_raw_os_error(EMFILE));
            }
            match self.connection.take() {
                Some(connection) => Ok((connection, "test".into())),
                None => std::future::pending().await,
            }
        }
    }

    #[tokio::test]
    async fn failing_accepts_back_off_instead_of_spinning() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let listener = Exhausted {
            failures: usize::MAX,
            connection: None,
            attempts: Arc::clone(&attempts),
        };
        let server = tokio::spawn(serve_connections(listener, state()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.abort();
        // Pauses of 10, 20, 40, 80 ms: five attempts in 200 ms.
        let attempts = attempts.load(Ordering::SeqCst);
        assert!((2..=8).contains(&attempts), "{attempts} accepts in 200 ms");
    }

    #[tokio::test]
    async fn connections_are_served_once_accepts_succeed_again() {
        let (client, connection) = tokio::io::duplex(4096);
        let listener = Exhausted {
            failures: 3,
            connection: Some(connection),
            attempts: Arc::new(AtomicUsize::new(0)),
        };
        let server = tokio::spawn(serve_connections(listener, state()));
        let mut client = client;
        client
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_string(&mut answer))
            .await
            .expect("an answer")
            .unwrap();
        server.abort();
        assert!(answer.contains("starting"), "{answer}");
    }

    /// Serves one connection on which a client sends `sent` and then nothing, and reads until
    /// the server closes it (at most `limit`): how long that took, and what the server sent.
    async fn closed_after(sent: &[u8], limit: Duration) -> (Duration, Vec<u8>) {
        let (mut client, connection) = tokio::io::duplex(1 << 16);
        let listener = Exhausted {
            failures: 0,
            connection: Some(connection),
            attempts: Arc::new(AtomicUsize::new(0)),
        };
        let server = tokio::spawn(serve_connections(listener, state()));
        client.write_all(sent).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut received = Vec::new();
        tokio::time::timeout(limit, client.read_to_end(&mut received))
            .await
            .expect("the server closed the connection")
            .unwrap();
        server.abort();
        (started.elapsed(), received)
    }

    /// An HTTP/2 client that stops answering pings (a host that vanished) is disconnected
    /// after [`KEEP_ALIVE_INTERVAL`] and [`KEEP_ALIVE_TIMEOUT`] (on tokio's paused clock).
    #[tokio::test(start_paused = true)]
    async fn an_http2_client_that_stops_answering_pings_is_closed() {
        // The HTTP/2 preface and an empty SETTINGS frame, then silence.
        let (waited, frames) = closed_after(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
            (KEEP_ALIVE_INTERVAL + KEEP_ALIVE_TIMEOUT) * 3,
        )
        .await;
        assert!(waited >= KEEP_ALIVE_INTERVAL, "closed after {waited:?}");
        // A PING frame (type 6) was sent before the connection was given up.
        assert!(
            frames.windows(4).any(|w| w[3] == 6 && w[0..3] == [0, 0, 8]),
            "no PING among {} bytes",
            frames.len()
        );
    }

    /// A client that never finishes its request's headers is disconnected after
    /// [`HEADER_READ_TIMEOUT`] (on tokio's paused clock, so the test takes no real time).
    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_finishes_its_headers_is_closed() {
        let (waited, answer) =
            closed_after(b"GET /health HTTP/1.1\r\nhost", HEADER_READ_TIMEOUT * 2).await;
        assert!(waited >= HEADER_READ_TIMEOUT, "closed after {waited:?}");
        assert!(!String::from_utf8_lossy(&answer).contains("running"));
    }
}
