//! The two OTLP transports, sending an already encoded `Export*ServiceRequest`: gRPC with
//! tonic (the body handed over as is through a codec that does not re-encode it, so a retry
//! sends the same bytes), and HTTP/1.1 protobuf with hyper (`POST <endpoint>/v1/logs`,
//! `Content-Length`, optionally `Content-Encoding: gzip`). Both sort every answer the way the
//! OTLP specification does: success with a possible partial rejection, retryable (with the
//! receiver's `RetryInfo` / `Retry-After` advice), rejected for good, or a configuration that
//! can never work.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::header::{
    CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

use crate::util::gzip::gzip;
use crate::util::tls::{TlsFiles, grpc_endpoint};

/// The two kinds of OTLP data the sink sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    Logs,
    Traces,
}

impl Signal {
    /// The path appended to the endpoint over HTTP.
    pub fn http_path(self) -> &'static str {
        match self {
            Signal::Logs => "/v1/logs",
            Signal::Traces => "/v1/traces",
        }
    }

    fn grpc_path(self) -> &'static str {
        match self {
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        }
    }

    /// `logs` or `traces`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Traces => "traces",
        }
    }

    /// Reads this signal's `Export*ServiceResponse`.
    fn accepted(self, body: impl Buf) -> Result<Accepted, prost::DecodeError> {
        Ok(match self {
            Signal::Logs => {
                let partial = ExportLogsServiceResponse::decode(body)?.partial_success;
                partial.map_or_else(Accepted::default, |p| Accepted {
                    rejected: p.rejected_log_records,
                    message: p.error_message,
                })
            }
            Signal::Traces => {
                let partial = ExportTraceServiceResponse::decode(body)?.partial_success;
                partial.map_or_else(Accepted::default, |p| Accepted {
                    rejected: p.rejected_spans,
                    message: p.error_message,
                })
            }
        })
    }
}

/// A successful export: how many records or spans the receiver still rejected (a partial
/// success names none of them), and what it said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Accepted {
    pub rejected: i64,
    pub message: String,
}

/// Why an export did not succeed, sorted by what the sink does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// Unreachable, overloaded or briefly failing: send the same request again, after
    /// `retry_after` when the receiver said how long to wait.
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The receiver refused this request for good (HTTP 400, gRPC `INVALID_ARGUMENT`, …): its
    /// events go to the dead-letter file.
    Rejected(String),
    /// No request can succeed as configured (bad credentials, wrong path or service): the sink
    /// stops with this message rather than dead-letter everything.
    Fatal(String),
}

impl Failure {
    fn retryable(message: String) -> Failure {
        Failure::Retryable {
            message,
            retry_after: None,
        }
    }

    /// What went wrong, for the log and the dead-letter file.
    pub fn message(&self) -> &str {
        match self {
            Failure::Retryable { message, .. }
            | Failure::Rejected(message)
            | Failure::Fatal(message) => message,
        }
    }
}

/// What both transports need to know.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    /// The base URL, without a trailing `/`.
    pub endpoint: String,
    pub gzip: bool,
    pub headers: Vec<(String, String)>,
    pub tls: TlsFiles,
    pub timeout: Duration,
}

/// A sender to one receiver, over the configured protocol.
pub(super) enum Transport {
    Grpc(Box<GrpcClient>),
    Http(Box<HttpClient>),
}

impl Transport {
    /// A gRPC transport; fails on an endpoint, header or TLS file that cannot be used.
    pub fn grpc(settings: &Settings) -> Result<Transport, String> {
        let endpoint = grpc_endpoint(
            "endpoint",
            &settings.endpoint,
            &settings.tls,
            settings.timeout,
        )?
        .timeout(settings.timeout);
        let mut metadata = MetadataMap::new();
        for (name, value) in &settings.headers {
            let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("`headers`: {name:?} is not a valid gRPC metadata name"))?;
            let mut value = MetadataValue::try_from(value.as_str()).map_err(|_| {
                format!("`headers.{name}`: the value holds a character that cannot be sent")
            })?;
            value.set_sensitive(true);
            metadata.insert(key, value);
        }
        Ok(Transport::Grpc(Box::new(GrpcClient {
            endpoint,
            channel: OnceLock::new(),
            metadata,
            gzip: settings.gzip,
            target: settings.endpoint.clone(),
        })))
    }

    /// An HTTP/protobuf transport; fails on a header or TLS file that cannot be used.
    pub fn http(settings: &Settings) -> Result<Transport, String> {
        let mut headers = HeaderMap::new();
        for (name, value) in &settings.headers {
            let key = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`headers`: {name:?} is not a valid HTTP header name"))?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                format!("`headers.{name}`: the value holds a character that cannot be sent")
            })?;
            value.set_sensitive(true);
            headers.insert(key, value);
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(settings.tls.rustls_client()?)
            .https_or_http()
            .enable_http1()
            .build();
        let client = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Transport::Http(Box::new(HttpClient {
            client,
            endpoint: settings.endpoint.clone(),
            headers,
            gzip: settings.gzip,
            timeout: settings.timeout,
        })))
    }

    /// The request body as it goes on the wire, once for every attempt: gzip-compressed over
    /// HTTP when configured (on a blocking thread: a few megabytes take milliseconds); over gRPC
    /// tonic compresses each message itself.
    pub async fn prepare(&self, body: Bytes) -> Result<Bytes, Failure> {
        match self {
            Transport::Http(http) if http.gzip => tokio::task::spawn_blocking(move || gzip(&body))
                .await
                .map(Bytes::from)
                .map_err(|e| Failure::Fatal(format!("compressing a request did not finish: {e}"))),
            _ => Ok(body),
        }
    }

    /// Sends one prepared request of `signal`.
    pub async fn export(&self, signal: Signal, body: Bytes) -> Result<Accepted, Failure> {
        match self {
            Transport::Grpc(grpc) => grpc.export(signal, body).await,
            Transport::Http(http) => http.export(signal, body).await,
        }
    }
}

/// OTLP/gRPC to one endpoint; the channel connects on first use (tonic needs the runtime).
pub(super) struct GrpcClient {
    endpoint: Endpoint,
    channel: OnceLock<Channel>,
    metadata: MetadataMap,
    gzip: bool,
    target: String,
}

impl GrpcClient {
    async fn export(&self, signal: Signal, body: Bytes) -> Result<Accepted, Failure> {
        let channel = self
            .channel
            .get_or_init(|| self.endpoint.connect_lazy())
            .clone();
        let mut grpc = tonic::client::Grpc::new(channel);
        if self.gzip {
            grpc = grpc.send_compressed(CompressionEncoding::Gzip);
        }
        grpc.ready()
            .await
            .map_err(|e| Failure::retryable(format!("{}: {}", self.target, chain(&e))))?;
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(signal.grpc_path());
        match grpc.unary(request, path, PreEncoded { signal }).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(classify_status(&self.target, &status)),
        }
    }
}

/// The error and its causes, which name what actually failed (refused, reset, …).
fn chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    message
}

/// Sorts a gRPC status as the OTLP specification does: `CANCELLED`, `DEADLINE_EXCEEDED`,
/// `ABORTED`, `OUT_OF_RANGE`, `UNAVAILABLE` and `DATA_LOSS` are retried, `RESOURCE_EXHAUSTED`
/// only when the receiver sent `RetryInfo` (it can recover); `UNAUTHENTICATED`,
/// `PERMISSION_DENIED` and `UNIMPLEMENTED` mean the configuration is wrong; the rest rejects
/// the data.
pub(super) fn classify_status(target: &str, status: &tonic::Status) -> Failure {
    use tonic::Code;
    let message = format!(
        "{target}: {:?}: {}{}",
        status.code(),
        status.message(),
        std::error::Error::source(status)
            .map(|source| format!(": {}", chain(source)))
            .unwrap_or_default()
    );
    let retry_after = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Failure::Retryable {
            message,
            retry_after,
        },
        Code::ResourceExhausted if retry_after.is_some() => Failure::Retryable {
            message,
            retry_after,
        },
        Code::Unauthenticated | Code::PermissionDenied | Code::Unimplemented => {
            Failure::Fatal(message)
        }
        _ => Failure::Rejected(message),
    }
}

/// A tonic codec that sends an encoded request as it is and reads the signal's response.
struct PreEncoded {
    signal: Signal,
}

struct BytesEncoder;

struct ResponseDecoder {
    signal: Signal,
}

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = Accepted;
    type Encoder = BytesEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder {
            signal: self.signal,
        }
    }
}

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = Accepted;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Accepted>, tonic::Status> {
        self.signal
            .accepted(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable response: {e}")))
    }
}

/// OTLP/HTTP (protobuf) to one endpoint.
pub(super) struct HttpClient {
    client: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    endpoint: String,
    headers: HeaderMap,
    gzip: bool,
    timeout: Duration,
}

impl HttpClient {
    async fn export(&self, signal: Signal, body: Bytes) -> Result<Accepted, Failure> {
        let uri = format!("{}{}", self.endpoint, signal.http_path());
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(&uri)
            .header(CONTENT_TYPE, "application/x-protobuf");
        if self.gzip {
            request = request.header(CONTENT_ENCODING, "gzip");
        }
        let mut request = request
            .body(Full::new(body))
            .map_err(|e| Failure::Fatal(format!("cannot build a request to {uri}: {e}")))?;
        request.headers_mut().extend(self.headers.clone());
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Failure::retryable(format!("{uri}: {}", chain(&e))))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| Failure::retryable(format!("{uri}: reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, Failure>((status, retry_after, body))
        };
        let (status, retry_after, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                Failure::retryable(format!("{uri}: no answer within {:?}", self.timeout))
            })??;
        classify_http(&uri, signal, status, retry_after, &body)
    }
}

/// Sorts an HTTP answer as the OTLP specification does: 2xx is success (its body may report a
/// partial success); 429, 502, 503 and 504 are retried, after `Retry-After` when given; 401,
/// 403, 404 and 405 mean the configuration is wrong; any other status rejects the data.
pub(super) fn classify_http(
    uri: &str,
    signal: Signal,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Accepted, Failure> {
    if status.is_success() {
        // A receiver that answers with an empty or non-protobuf body accepted everything.
        return Ok(signal.accepted(body).unwrap_or_default());
    }
    let detail = match tonic_types::Status::decode(body) {
        Ok(decoded) if !decoded.message.is_empty() => decoded.message,
        _ => String::from_utf8_lossy(body).trim().to_owned(),
    };
    let message = format!("{uri} answered {status}: {detail}");
    match status.as_u16() {
        429 | 502 | 503 | 504 => Err(Failure::Retryable {
            message,
            retry_after,
        }),
        401 | 403 | 404 | 405 => Err(Failure::Fatal(message)),
        _ => Err(Failure::Rejected(message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;

    #[test]
    fn http_answers_are_sorted_as_otlp_says() {
        let uri = "http://127.0.0.1:1/v1/logs";
        let partial = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 3,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            classify_http(uri, Signal::Logs, StatusCode::OK, None, &partial),
            Ok(Accepted {
                rejected: 3,
                message: "too old".into()
            })
        );
        assert_eq!(
            classify_http(uri, Signal::Logs, StatusCode::OK, None, b"{}"),
            Ok(Accepted::default())
        );
        for code in [429, 502, 503, 504] {
            let status = StatusCode::from_u16(code).unwrap();
            let after = Some(Duration::from_secs(7));
            assert!(matches!(
                classify_http(uri, Signal::Logs, status, after, b""),
                Err(Failure::Retryable { retry_after, .. }) if retry_after == after
            ));
        }
        let bad = tonic_types::Status {
            code: 3,
            message: "body.string is not UTF-8".into(),
            details: Vec::new(),
        }
        .encode_to_vec();
        assert_eq!(
            classify_http(uri, Signal::Logs, StatusCode::BAD_REQUEST, None, &bad),
            Err(Failure::Rejected(format!(
                "{uri} answered 400 Bad Request: body.string is not UTF-8"
            )))
        );
        assert!(matches!(
            classify_http(uri, Signal::Traces, StatusCode::UNAUTHORIZED, None, b"no"),
            Err(Failure::Fatal(_))
        ));
    }

    #[test]
    fn grpc_statuses_are_sorted_as_otlp_says() {
        use tonic_types::ErrorDetails;
        assert!(matches!(
            classify_status("t", &tonic::Status::unavailable("down")),
            Failure::Retryable {
                retry_after: None,
                ..
            }
        ));
        // RESOURCE_EXHAUSTED is retried only with the receiver's RetryInfo, and after it.
        assert!(matches!(
            classify_status("t", &tonic::Status::resource_exhausted("full")),
            Failure::Rejected(_)
        ));
        let advised = tonic::Status::with_error_details(
            tonic::Code::ResourceExhausted,
            "full",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(1500))),
        );
        assert!(matches!(
            classify_status("t", &advised),
            Failure::Retryable { retry_after: Some(d), .. } if d == Duration::from_millis(1500)
        ));
        assert!(matches!(
            classify_status("t", &tonic::Status::invalid_argument("bad")),
            Failure::Rejected(_)
        ));
        assert!(matches!(
            classify_status("t", &tonic::Status::unauthenticated("who")),
            Failure::Fatal(_)
        ));
    }
}
