//! The TLS options of clients (the `otlp` and `grpc` sinks, the API's own client): the config
//! block, reading its files when the client is built, and the tonic endpoint or rustls client
//! config made from them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use schemars::JsonSchema;
use serde::Deserialize;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// TLS files for an `https://` endpoint.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificates that signed the receiver's certificate, trusted instead
    /// of the built-in roots (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM certificate (chain) the sink presents to a receiver that asks for one (mutual TLS);
    /// needs `key_file`.
    #[serde(default)]
    pub crt_file: Option<PathBuf>,
    /// PEM private key of `crt_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// TLS material read from the configured files when the sink is built.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// PEM CA certificates to trust instead of the built-in web roots.
    pub(crate) ca: Option<Vec<u8>>,
    /// PEM certificate chain and key for mutual TLS.
    pub(crate) identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    /// The rustls client config for a hyper client of an `https://` URL (OTLP/HTTP, the
    /// API's own client): the configured CA, or the web's roots (webpki-roots), and the client
    /// certificate for mutual TLS.
    pub fn rustls_client(&self) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                for certificate in CertificateDer::pem_slice_iter(ca) {
                    let certificate = certificate
                        .map_err(|e| format!("`tls.ca_file`: not a PEM certificate: {e}"))?;
                    roots
                        .add(certificate)
                        .map_err(|e| format!("`tls.ca_file`: {e}"))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("`tls`: {e}"))?
        .with_root_certificates(roots);
        match &self.identity {
            Some((crt, key)) => {
                let chain = CertificateDer::pem_slice_iter(crt)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("`tls.crt_file`: not a PEM certificate: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| format!("`tls.key_file`: not a PEM private key: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("`tls.crt_file`/`tls.key_file`: {e}"))
            }
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

impl TlsConfig {
    /// Whether any TLS file is given (which needs an `https://` endpoint).
    pub(crate) fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.crt_file.is_some()
    }

    /// The files, read; an error names the option and the path.
    pub fn read(&self) -> Result<TlsFiles, String> {
        let read = |option: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("`tls.{option}` {}: {e}", path.display()))
        };
        let identity = match (&self.crt_file, &self.key_file) {
            (Some(crt), Some(key)) => Some((read("crt_file", crt)?, read("key_file", key)?)),
            (None, None) => None,
            _ => return Err("`tls.crt_file` and `tls.key_file` go together".into()),
        };
        Ok(TlsFiles {
            ca: self
                .ca_file
                .as_ref()
                .map(|path| read("ca_file", path))
                .transpose()?,
            identity,
        })
    }
}

/// A tonic endpoint for `url`, with TLS when it is `https://`: the configured CA or the web's
/// roots, and the client certificate for mutual TLS. `timeout` bounds connecting; `option`
/// names the option the URL came from, for the error.
pub(crate) fn grpc_endpoint(
    option: &str,
    url: &str,
    tls: &TlsFiles,
    timeout: Duration,
) -> Result<Endpoint, String> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("`{option}` {url:?} is not a URL: {e}"))?
        .connect_timeout(timeout);
    if url.starts_with("https://") {
        let mut config = ClientTlsConfig::new();
        config = match &tls.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
            None => config.with_webpki_roots(),
        };
        if let Some((crt, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(crt, key));
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| format!("`tls`: {e}"))?;
    }
    Ok(endpoint)
}
