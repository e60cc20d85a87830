//! The OTLP/HTTP receiver: `POST /v1/logs` and `POST /v1/traces` with protobuf bodies
//! (`Content-Encoding: gzip` or none) over HTTP/1.1, optionally TLS. Answers are protobuf too:
//! the empty `Export*ServiceResponse` on success, a `google.rpc.Status` otherwise, with
//! `Retry-After` on 429 as the OTLP specification asks.

use std::io::Read as _;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tapio_event::ComponentError;
use tokio::net::TcpListener;

use super::{Receiver, Refusal};

/// Accepts connections on `listener` until `stop` turns true, serving each on its own task.
pub(super) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    receiver: Arc<Receiver>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ComponentError> {
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors or a connection reset before it was taken: the next
                // accept may work, so pause briefly instead of failing the source.
                tracing::warn!(%error, "the OTLP/HTTP receiver could not accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let receiver = Arc::clone(&receiver);
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let receiver = Arc::clone(&receiver);
                async move { Ok::<_, std::convert::Infallible>(handle(&receiver, request).await) }
            });
            let http = hyper::server::conn::http1::Builder::new();
            // A connection that fails (reset, bad TLS) concerns only its sender.
            match tls {
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}

/// Answers one request.
async fn handle(receiver: &Receiver, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    if path != "/v1/logs" && path != "/v1/traces" {
        return status(StatusCode::NOT_FOUND, &format!("no OTLP signal at {path}"));
    }
    if request.method() != Method::POST {
        return status(StatusCode::METHOD_NOT_ALLOWED, "OTLP/HTTP takes POST");
    }
    let authorization = request.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    if !receiver.authorized(authorization) {
        return refused(&Refusal::Unauthenticated);
    }
    let content_type = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-protobuf") {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "this receiver takes Content-Type: application/x-protobuf",
        );
    }
    let gzip = match request
        .headers()
        .get(CONTENT_ENCODING)
        .map(|v| v.as_bytes())
    {
        None | Some(b"identity") => false,
        Some(b"gzip") => true,
        Some(_) => {
            return status(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Encoding must be gzip or none",
            );
        }
    };
    let limit = receiver.max_request_bytes;
    let body = match Limited::new(request.into_body(), limit).collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => return refused(&receiver.invalid(format!("reading the body: {error}"))),
    };
    let body = if gzip {
        let mut decoded = Vec::new();
        let read = flate2::read::GzDecoder::new(&body[..])
            .take(limit as u64 + 1)
            .read_to_end(&mut decoded);
        match read {
            Ok(_) if decoded.len() <= limit => Bytes::from(decoded),
            Ok(_) => return refused(&receiver.invalid(format!("the body is over {limit} bytes"))),
            Err(e) => return refused(&receiver.invalid(format!("the gzip body is corrupt: {e}"))),
        }
    } else {
        body
    };
    let outcome = if path == "/v1/logs" {
        match ExportLogsServiceRequest::decode(body) {
            Ok(request) => receiver
                .logs(&request)
                .map(|()| ExportLogsServiceResponse::default().encode_to_vec()),
            Err(e) => Err(receiver.invalid(format!("not an ExportLogsServiceRequest: {e}"))),
        }
    } else {
        match ExportTraceServiceRequest::decode(body) {
            Ok(request) => receiver
                .traces(&request)
                .map(|()| ExportTraceServiceResponse::default().encode_to_vec()),
            Err(e) => Err(receiver.invalid(format!("not an ExportTraceServiceRequest: {e}"))),
        }
    };
    match outcome {
        Ok(answer) => protobuf(StatusCode::OK, answer),
        Err(refusal) => refused(&refusal),
    }
}

fn protobuf(code: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

/// An error answer: a `google.rpc.Status` with `message`.
fn status(code: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = tonic_types::Status {
        code: 0,
        message: message.to_owned(),
        details: Vec::new(),
    };
    protobuf(code, body.encode_to_vec())
}

/// The HTTP answer of a refusal: 429 with `Retry-After` (whole seconds, at least 1) when busy.
fn refused(refusal: &Refusal) -> Response<Full<Bytes>> {
    match refusal {
        Refusal::Busy(after) => {
            let mut response = status(
                StatusCode::TOO_MANY_REQUESTS,
                "the pipeline is full; retry later",
            );
            let seconds = after.as_secs_f64().ceil().max(1.0) as u64;
            response.headers_mut().insert(
                RETRY_AFTER,
                seconds
                    .to_string()
                    .parse()
                    .expect("digits are a header value"),
            );
            response
        }
        Refusal::Stopping => status(StatusCode::SERVICE_UNAVAILABLE, "the pipeline is stopping"),
        Refusal::Invalid(message) => status(StatusCode::BAD_REQUEST, message),
        Refusal::Unauthenticated => status(
            StatusCode::UNAUTHORIZED,
            "a valid `authorization: Bearer` token is required",
        ),
    }
}
