//! The TLS options of sources that are servers (`otlp`, `grpc`): the config block, reading its
//! files when the source is built, and tonic's server TLS made from them.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::ComponentError;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The receivers' TLS files.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
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

/// The TLS files, read when the source is built so a missing file fails the start.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    pub crt: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Option<Vec<u8>>,
}

impl TlsConfig {
    /// Reads the files; an error names the option and the path.
    pub(crate) fn read(&self) -> Result<TlsFiles, ComponentError> {
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
    /// tonic's server TLS: this identity, and client certificates required when a CA is set.
    pub(crate) fn grpc_server(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(Identity::from_pem(&self.crt, &self.key));
        match &self.ca {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }
}
