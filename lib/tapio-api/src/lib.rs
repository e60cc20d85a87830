//! The API (L4) on the `[api] address`: `GET /health` for orchestrators' probes and
//! `GET /metrics` in the Prometheus text format, from the same counters the `--summary` table
//! prints. Served with hyper over plain HTTP/1.1.

mod prometheus;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tapio_event::ComponentMetrics;
use tapio_topology::{Health, HealthState};
use tokio::net::TcpListener;

pub use prometheus::render as render_prometheus;

/// What the API reads: the lifecycle state and every component's counters.
#[derive(Clone)]
pub struct ApiState {
    pub health: Arc<Health>,
    pub metrics: Arc<Vec<Arc<ComponentMetrics>>>,
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
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "API accept failed");
                    continue;
                }
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(respond(&request, &state)) }
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
}

fn respond(request: &Request<Incoming>, state: &ApiState) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("static response parts are valid")
    };
    if request.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET is supported\n".into(),
        );
    }
    match request.uri().path() {
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
        },
        "/metrics" => {
            let snapshots: Vec<_> = state.metrics.iter().map(|m| m.snapshot()).collect();
            reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                prometheus::render(&snapshots),
            )
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /health or /metrics\n".into(),
        ),
    }
}
