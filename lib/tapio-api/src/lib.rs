//! The API (L4) on the `[api] address`: `GET /health` for orchestrators' probes and
//! `GET /metrics` in the Prometheus text format, from the same counters the `--summary` table
//! prints. Served with hyper over plain HTTP/1.1.

mod prometheus;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Response, StatusCode};
use tapio_event::throttle::Throttle;
use tapio_topology::{ComponentList, Health, HealthState};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

pub use prometheus::render as render_prometheus;

/// What the API reads: the lifecycle state and reload counts, and the counters of every
/// component running now (a reload changes the list).
#[derive(Clone)]
pub struct ApiState {
    pub health: Arc<Health>,
    pub metrics: Arc<ComponentList>,
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

    /// The next connection, or why none could be accepted.
    fn accept(&mut self) -> impl Future<Output = std::io::Result<Self::Connection>> + Send;
}

impl Listener for TcpListener {
    type Connection = TcpStream;

    async fn accept(&mut self) -> std::io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(stream, _)| stream)
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
    pause: Duration,
    failures: Throttle,
}

impl AcceptBackoff {
    fn new() -> Self {
        AcceptBackoff {
            pause: ACCEPT_PAUSE_MIN,
            failures: Throttle::new(ACCEPT_LOG_INTERVAL),
        }
    }

    /// A connection was accepted: the next failure pauses briefly again.
    fn succeeded(&mut self) {
        self.pause = ACCEPT_PAUSE_MIN;
    }

    /// Logs `error` if it is time to, then waits before the next accept.
    async fn failed(&mut self, error: &std::io::Error) {
        if let Some(failures) = self.failures.add(1) {
            tracing::warn!(%error, failures, retry_in = ?self.pause, "API accept failed");
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(ACCEPT_PAUSE_MAX);
    }
}

/// Serves every connection `listener` accepts, each on its own task.
async fn serve_connections(mut listener: impl Listener, state: ApiState) {
    let mut backoff = AcceptBackoff::new();
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => {
                backoff.succeeded();
                stream
            }
            Err(error) => {
                backoff.failed(&error).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move {
                    Ok::<_, Infallible>(respond(request.method(), request.uri().path(), &state))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%error, "API connection ended with an error");
            }
        });
    }
}

/// The answer to `method path`; separate from the connection so it can be tested directly.
fn respond(method: &Method, path: &str, state: &ApiState) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid")
    };
    if method != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET is supported\n".into(),
        );
    }
    match path {
        "/health" => match state.health.get() {
            HealthState::Running => reply(
                StatusCode::OK,
                "application/json",
                "{\"status\":\"running\"}\n".into(),
            ),
            HealthState::Starting => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                "{\"status\":\"starting\"}\n".into(),
            ),
            HealthState::Draining => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                "{\"status\":\"draining\"}\n".into(),
            ),
            // Still serving: a reload stops and starts only what changed.
            HealthState::Reloading => reply(
                StatusCode::OK,
                "application/json",
                "{\"status\":\"reloading\"}\n".into(),
            ),
        },
        "/metrics" => {
            let snapshots: Vec<_> = state.metrics.get().iter().map(|m| m.snapshot()).collect();
            let mut text = prometheus::render(&snapshots);
            prometheus::render_reloads(&mut text, state.health.reloads());
            reply(StatusCode::OK, "text/plain; version=0.0.4", text)
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /health or /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tapio_event::{ComponentKind, ComponentMetrics};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn state() -> ApiState {
        let metrics = Arc::new(ComponentMetrics::new(
            "out",
            "blackhole",
            ComponentKind::Sink,
        ));
        metrics.add_events_out(7);
        ApiState {
            health: Arc::new(Health::default()),
            metrics: Arc::new(ComponentList::new(vec![metrics])),
        }
    }

    async fn body(response: Response<Full<Bytes>>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
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
            let response = respond(&Method::GET, "/health", &state);
            assert_eq!(response.status(), status);
            assert!(body(response).await.contains(text));
        }
    }

    #[tokio::test]
    async fn metrics_other_paths_and_methods() {
        let state = state();
        state.health.count_reload(true);
        state.health.count_reload(false);
        state.health.count_reload(false);
        let metrics = respond(&Method::GET, "/metrics", &state);
        assert_eq!(metrics.status(), StatusCode::OK);
        let text = body(metrics).await;
        assert!(text.contains("tapio_component_sent_events_total{component=\"out\""));
        assert!(
            text.contains("tapio_config_reloads_total{result=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("tapio_config_reloads_total{result=\"failed\"} 2\n"),
            "{text}"
        );
        assert_eq!(
            respond(&Method::GET, "/nope", &state).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            respond(&Method::POST, "/health", &state).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
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

        async fn accept(&mut self) -> std::io::Result<DuplexStream> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            // A real accept returns at once as well; yielding lets a loop that never pauses
            // run up its count instead of starving the test.
            tokio::task::yield_now().await;
            if self.failures > 0 {
                self.failures -= 1;
                return Err(std::io::Error::from_raw_os_error(EMFILE));
            }
            match self.connection.take() {
                Some(connection) => Ok(connection),
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
}
