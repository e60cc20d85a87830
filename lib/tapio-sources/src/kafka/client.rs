//! What the `kafka` source and the `kafka` sink share about talking to brokers: the TLS and SASL
//! options and their librdkafka properties, librdkafka's log forwarded to Tapio's, and the
//! start-up healthcheck. It lives with the source because sinks (L2) may look down at sources
//! (L1), not the other way round.

use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, KafkaResult};
use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::ComponentError;

/// How long the start-up metadata request may take.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS options (`ssl.*`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Whether to use TLS; `false` turns off a `tls` table without removing it.
    #[serde(default = "default_tls_enabled")]
    pub enabled: bool,
    /// CA bundle to verify the brokers with (`ssl.ca.location`). Unset: the system's.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificate for mutual TLS (`ssl.certificate.location`). Unset: none.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// The client certificate's private key (`ssl.key.location`). Unset: none.
    #[serde(default)]
    pub key_file: Option<String>,
}

/// SASL options (`sasl.*`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `"PLAIN"`, `"SCRAM-SHA-256"` or `"SCRAM-SHA-512"` (`sasl.mechanisms`; GSSAPI is not
    /// built in).
    pub mechanism: String,
    /// The user name (`sasl.username`).
    pub username: String,
    /// The password (`sasl.password`); write `"${ENV_VAR}"` to keep it out of the file.
    pub password: String,
}

fn default_tls_enabled() -> bool {
    true
}

/// The `security.protocol` and `ssl.*`/`sasl.*` properties for `tls` and `sasl`, passed to `set`
/// in order.
pub fn security_properties(
    tls: Option<&TlsConfig>,
    sasl: Option<&SaslConfig>,
    mut set: impl FnMut(&str, String),
) {
    let tls = tls.filter(|tls| tls.enabled);
    let protocol = match (tls.is_some(), sasl.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    set("security.protocol", protocol.into());
    if let Some(tls) = tls {
        for (key, file) in [
            ("ssl.ca.location", &tls.ca_file),
            ("ssl.certificate.location", &tls.cert_file),
            ("ssl.key.location", &tls.key_file),
        ] {
            if let Some(file) = file {
                set(key, file.clone());
            }
        }
    }
    if let Some(sasl) = sasl {
        set("sasl.mechanisms", sasl.mechanism.clone());
        set("sasl.username", sasl.username.clone());
        set("sasl.password", sasl.password.clone());
    }
}

/// A client context that forwards librdkafka's log (a broker unreachable, authentication
/// failing) to Tapio's, tagged with the component's name, so that problems show at once rather
/// than only when a message times out.
pub struct Logs {
    /// The component's name in the config.
    pub component: String,
}

impl ClientContext for Logs {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        forward_log(&self.component, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        forward_error(&self.component, &error, reason);
    }
}

/// Writes one librdkafka log line to Tapio's log at the matching level.
pub fn forward_log(component: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
    use RDKafkaLogLevel as Level;
    match level {
        Level::Emerg | Level::Alert | Level::Critical | Level::Error => {
            tracing::error!(component, facility, "librdkafka: {message}");
        }
        Level::Warning => tracing::warn!(component, facility, "librdkafka: {message}"),
        Level::Notice | Level::Info => tracing::info!(component, facility, "librdkafka: {message}"),
        Level::Debug => tracing::debug!(component, facility, "librdkafka: {message}"),
    }
}

/// Client errors repeat what the log already reported (which librdkafka rate-limits, "N
/// identical errors suppressed") every few hundred milliseconds while a broker is down, so they
/// are kept at debug level.
pub fn forward_error(component: &str, error: &KafkaError, reason: &str) {
    tracing::debug!(component, %error, "librdkafka: {reason}");
}

/// Runs `fetch_metadata` (a metadata request of at most [`HEALTHCHECK_TIMEOUT`]) on a blocking
/// thread, so that a wrong address or a broker that is down is one clear error at start rather
/// than a component that waits forever.
pub async fn check_brokers(
    fetch_metadata: impl FnOnce() -> KafkaResult<()> + Send + 'static,
    bootstrap_servers: &str,
) -> Result<(), ComponentError> {
    let answer = tokio::task::spawn_blocking(fetch_metadata)
        .await
        .map_err(|e| ComponentError(format!("kafka healthcheck did not finish: {e}")))?;
    answer.map_err(|e| {
        ComponentError(format!(
            "kafka healthcheck (metadata from {bootstrap_servers}) failed: {e}; start the brokers, fix `bootstrap_servers`/`tls`/`sasl`, or set `healthcheck = false` to start anyway and retry"
        ))
    })
}
