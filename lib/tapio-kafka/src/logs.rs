//! librdkafka's log, forwarded to Tapio's with the component's name.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

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

/// Writes one librdkafka log line to Tapio's log at the matching level; public for contexts
/// that do more than log (the source's consumer context) and so cannot be [`Logs`].
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
