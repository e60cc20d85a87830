//! The TLS options of servers (the `otlp` and `grpc` sources, the `[api]`): the config block,
//! reading its files when the server is built, and the server TLS made from them, tonic's or a
//! rustls acceptor for hyper.

use std::path::PathBuf;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::ComponentError;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The receivers' TLS files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate (chain) of the receiver.
    pub crt_file: PathBuf,
    /// PEM private key of `crt_file`.
    pub key_file: PathBuf,
    /// PEM CA certificates; when set, senders must present a client certificate signed by one
    /// of them (mutual TLS).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// The TLS files, read when the server is built so a missing file fails the start.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    crt: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
}

impl TlsConfig {
    /// Reads the files; an error names the option and the path.
    pub fn read(&self) -> Result<TlsFiles, ComponentError> {
        let read = |option: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| {
                ComponentError::config(format!("`tls.{option}` {}: {e}", path.display()))
            })
        };
        Ok(TlsFiles {
            crt: read("crt_file", &self.crt_file)?,
            key: read("key_file", &self.key_file)?,
            ca: self
                .ca_file
                .as_ref()
                .map(|p| read("ca_file", p))
                .transpose()?,
        })
    }
}

impl TlsFiles {
    /// A rustls acceptor for a hyper server offering `alpn` (e.g. `h2`, `http/1.1`; empty:
    /// none), requiring client certificates when a CA is set; errors name the option.
    pub fn acceptor(&self, alpn: &[&[u8]]) -> Result<tokio_rustls::TlsAcceptor, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(&self.crt)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("`tls.crt_file`: not a PEM certificate: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key)
            .map_err(|e| format!("`tls.key_file`: not a PEM private key: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("`tls`: {e}"))?;
        let builder = match &self.ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for certificate in CertificateDer::pem_slice_iter(ca) {
                    let certificate = certificate
                        .map_err(|e| format!("`tls.ca_file`: not a PEM certificate: {e}"))?;
                    roots
                        .add(certificate)
                        .map_err(|e| format!("`tls.ca_file`: {e}"))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| format!("`tls.ca_file`: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| format!("`tls.crt_file`/`tls.key_file`: {e}"))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// tonic's server TLS: this identity, and client certificates required when a CA is set.
    pub(crate) fn grpc_server(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(Identity::from_pem(&self.crt, &self.key));
        match &self.ca {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }
}
