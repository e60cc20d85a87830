//! The API (L4) on the `[api] address`: `GET /health` for orchestrators' probes and
//! `GET /metrics` in the Prometheus text format, from the same counters the `--summary` table
//! prints. Served with hyper over plain HTTP/1.1.

mod prometheus;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Response, StatusCode};
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tapio_event::ComponentKind;

    fn state() -> ApiState {
        let metrics = Arc::new(ComponentMetrics::new(
            "out",
            "blackhole",
            ComponentKind::Sink,
        ));
        metrics.add_events_out(7);
        ApiState {
            health: Arc::new(Health::default()),
            metrics: Arc::new(vec![metrics]),
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
        let metrics = respond(&Method::GET, "/metrics", &state);
        assert_eq!(metrics.status(), StatusCode::OK);
        assert!(
            body(metrics)
                .await
                .contains("tapio_component_sent_events_total{component=\"out\"")
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
}
