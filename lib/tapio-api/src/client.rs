//! The API's own HTTP/1.1 client, for the commands that talk to a running Tapio (`tapio tap`,
//! `tapio top`): one connection per call, the bearer token when there is one, and a reader
//! that splits a streamed answer (NDJSON) into lines as they arrive.

use bytes::{Buf as _, Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tapio_sinks::tls::TlsConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

/// Why a call to the API failed, worded for the person at the terminal; the kind lets a
/// command choose its exit code.
#[derive(Debug)]
pub enum ClientError {
    /// The call cannot be made as given: a bad address, an unreadable TLS file.
    Invalid(String),
    /// No answer: nothing listens there, or the connection broke.
    Unreachable(String),
    /// The API answered with this status and message (a bad parameter, a missing token).
    Refused(hyper::StatusCode, String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Invalid(message) | ClientError::Unreachable(message) => {
                f.write_str(message)
            }
            ClientError::Refused(status, message) => {
                write!(f, "the API answered {status}: {message}")
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// Where a running Tapio's API is and how to authenticate to it.
#[derive(Clone)]
pub struct ApiClient {
    /// `host:port` to connect to.
    authority: String,
    /// The bearer token sent with every call, if the API requires one.
    token: Option<String>,
    /// TLS for an `https://` address: the host's name to verify, and the connector.
    tls: Option<(ServerName<'static>, TlsConnector)>,
}

/// A connection to the API, plain or TLS.
trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

impl ApiClient {
    /// A client of the API at `address`: `host:port` or `http://host:port` as `[api] address`
    /// is written, or `https://host:port` for an API with `[api] tls` (trusting the web's
    /// roots unless [`ApiClient::with_tls`] names a CA).
    pub fn new(address: &str, token: Option<String>) -> Result<ApiClient, ClientError> {
        let (https, authority) = match address.split_once("://") {
            None => (false, address),
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            Some((scheme, _)) => {
                return Err(ClientError::Invalid(format!(
                    "address {address:?}: scheme `{scheme}` is not supported, use `host:port`, `http://host:port` or `https://host:port`"
                )));
            }
        };
        let authority = authority.trim_end_matches('/');
        let host = authority
            .rsplit_once(':')
            .map(|(host, _)| host.trim_start_matches('[').trim_end_matches(']'))
            .filter(|host| !host.is_empty() && !authority.contains('/'))
            .ok_or_else(|| {
                ClientError::Invalid(format!("address {address:?} is not `host:port`"))
            })?;
        let mut client = ApiClient {
            authority: authority.to_owned(),
            token,
            tls: None,
        };
        if https {
            let name = ServerName::try_from(host.to_owned()).map_err(|e| {
                ClientError::Invalid(format!("address {address:?}: host {host:?}: {e}"))
            })?;
            client.tls = Some((name, connector(&TlsConfig::default())?));
        }
        Ok(client)
    }

    /// The same client trusting `tls.ca_file` instead of the web's roots and presenting
    /// `tls.crt_file` (mutual TLS); only for an `https://` address.
    pub fn with_tls(mut self, tls: &TlsConfig) -> Result<ApiClient, ClientError> {
        let Some((name, _)) = self.tls.take() else {
            return Err(ClientError::Invalid(
                "TLS files are given for an address that is not `https://`".into(),
            ));
        };
        self.tls = Some((name, connector(tls)?));
        Ok(self)
    }

    /// A connection to the API, TLS when the address is `https://`.
    async fn connect(&self) -> Result<Box<dyn Connection>, ClientError> {
        let unreachable = |error: &dyn std::fmt::Display| {
            ClientError::Unreachable(format!(
                "cannot reach the Tapio API at {}: {error}",
                self.authority
            ))
        };
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| unreachable(&e))?;
        Ok(match &self.tls {
            None => Box::new(stream),
            Some((name, connector)) => Box::new(
                connector
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| unreachable(&format!("TLS: {e}")))?,
            ),
        })
    }

    /// `GET path_and_query`: the answer once its headers arrived. A status other than 200 is
    /// an error carrying the API's own message (its `{"error": …}` body).
    pub async fn get(
        &self,
        path_and_query: &str,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let unreachable = |error: &dyn std::fmt::Display| {
            ClientError::Unreachable(format!(
                "cannot reach the Tapio API at {}: {error}",
                self.authority
            ))
        };
        let stream = self.connect().await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(&e))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "API client connection ended with an error");
            }
        });
        let mut request = hyper::Request::get(path_and_query).header("host", &self.authority);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| {
                ClientError::Invalid(format!("invalid request {path_and_query:?}: {e}"))
            })?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(&e))?;
        if response.status() == hyper::StatusCode::OK {
            return Ok(response);
        }
        let status = response.status();
        let body = collect(response).await.unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
        Err(ClientError::Refused(status, message))
    }
}

/// The TLS connector for `tls`'s files, speaking HTTP/1.1.
fn connector(tls: &TlsConfig) -> Result<TlsConnector, ClientError> {
    let mut config = tls
        .read()
        .and_then(|files| files.rustls_client())
        .map_err(ClientError::Invalid)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(std::sync::Arc::new(config)))
}

/// The whole body of `response`.
pub async fn collect(response: hyper::Response<Incoming>) -> Result<Bytes, ClientError> {
    response
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes())
        .map_err(|e| ClientError::Unreachable(format!("the API's answer broke off: {e}")))
}

/// The lines of a streamed body, each as soon as its newline arrives.
pub struct Lines {
    body: Incoming,
    pending: BytesMut,
}

impl Lines {
    /// Reads `response`'s body line by line.
    pub fn new(response: hyper::Response<Incoming>) -> Lines {
        Lines {
            body: response.into_body(),
            pending: BytesMut::new(),
        }
    }

    /// The next line without its newline; `None` at the end of the body (a last line without
    /// a newline is returned first).
    pub async fn next_line(&mut self) -> Option<Result<Bytes, ClientError>> {
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line = self.pending.split_to(end).freeze();
                self.pending.advance(1);
                return Some(Ok(line));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    return Some(Err(ClientError::Unreachable(format!(
                        "the API's stream broke off: {e}"
                    ))));
                }
                None if self.pending.is_empty() => return None,
                None => return Some(Ok(self.pending.split().freeze())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_host_port_with_or_without_http() {
        for address in [
            "127.0.0.1:8686",
            "http://127.0.0.1:8686",
            "http://127.0.0.1:8686/",
        ] {
            assert_eq!(
                ApiClient::new(address, None).unwrap().authority,
                "127.0.0.1:8686"
            );
        }
        assert!(
            ApiClient::new("https://127.0.0.1:8686", None)
                .unwrap()
                .tls
                .is_some()
        );
        for bad in ["ftp://x:1", "http://x:1/v1", "", "x"] {
            assert!(ApiClient::new(bad, None).is_err(), "{bad}");
        }
    }
}
