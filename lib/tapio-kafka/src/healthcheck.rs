//! The start-up metadata request that turns a wrong address or a broker that is down into one
//! clear error.

use std::time::Duration;

use rdkafka::error::KafkaResult;
use tapio_event::ComponentError;

/// How long the start-up metadata request may take.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `fetch_metadata` (a metadata request of at most [`HEALTHCHECK_TIMEOUT`]) on a blocking
/// thread, so that a wrong address or a broker that is down is one clear error at start rather
/// than a component that waits forever.
pub async fn check_brokers(
    fetch_metadata: impl FnOnce() -> KafkaResult<()> + Send + 'static,
    bootstrap_servers: &str,
) -> Result<(), ComponentError> {
    let answer = tokio::task::spawn_blocking(fetch_metadata)
        .await
        .map_err(|e| {
            ComponentError::unavailable(format!("kafka healthcheck did not finish: {e}"))
        })?;
    answer.map_err(|e| {
        ComponentError::unavailable(format!(
            "kafka healthcheck (metadata from {bootstrap_servers}) failed: {e}; start the brokers, fix `bootstrap_servers`/`tls`/`sasl`, or set `healthcheck = false` to start anyway and retry"
        ))
    })
}
