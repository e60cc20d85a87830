//! The TLS options of sinks that are gRPC clients (`otlp`, `grpc`): the config block, reading
//! its files when the sink is built, and the tonic endpoint for a URL with them.

use std::path::PathBuf;
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
pub(crate) struct TlsFiles {
    /// PEM CA certificates to trust instead of the built-in web roots.
    pub ca: Option<Vec<u8>>,
    /// PEM certificate chain and key for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsConfig {
    /// Whether any TLS file is given (which needs an `https://` endpoint).
    pub(crate) fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.crt_file.is_some()
    }

    /// The files, read; an error names the option and the path.
    pub(crate) fn read(&self) -> Result<TlsFiles, String> {
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
