//! `api_store`: keeps the most recent events (and the correlation summaries among them) in
//! memory for the API on `[api] address`: `QueryEvents` / `GET /v1/events`, `GetCorrelations` /
//! `GET /v1/correlations`, and the live `StreamEvents` / `GET /v1/events/stream` read it.
//!
//! Bounded: at most `max_events` events, none kept longer than `retention` after it arrived;
//! the oldest go first (counted as evicted). Indexed by time, type, source, namespace, entity,
//! correlation pattern and correlation id, so a query walks only the events of its most
//! selective filter. A live stream client that falls `stream_queue` events behind is dropped
//! and counted (`slow_stream_client`) instead of slowing the pipeline.
//!
//! The sink writes an [`ApiStore`] handle; the topology hands that handle up to the API (layers
//! only look down), so the sink itself knows nothing of HTTP or gRPC.

mod store;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;
use tapio_event::{
    BatchStatus, BufferReceiver, BuildContext, ComponentConfig, ComponentError, ComponentFuture,
    ConfigDuration, Sink, SinkContext,
};

pub use store::{ApiStore, Cursor, EventFilter, Page, Story, StreamEnd, Subscription};

/// Options of the `api_store` sink.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiStoreConfig {
    /// Events kept at most; the oldest are evicted first.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// How long an event is kept after it arrived (e.g. `"1h"`).
    #[serde(default = "default_retention")]
    pub retention: ConfigDuration,
    /// Events queued per live stream client; a client that falls this far behind is dropped
    /// (and counted) rather than slow the pipeline.
    #[serde(default = "default_stream_queue")]
    pub stream_queue: usize,
}

fn default_max_events() -> usize {
    100_000
}

fn default_retention() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(3600))
}

fn default_stream_queue() -> usize {
    4096
}

/// How often the sink drops what outlived `retention` while no events arrive.
const EXPIRE_INTERVAL: Duration = Duration::from_secs(1);

impl ApiStoreConfig {
    /// The sink and the store it writes, for the topology to hand the store to the API.
    pub fn build_shared(&self) -> Result<(ApiStore, Box<dyn Sink>), ComponentError> {
        if self.max_events == 0 {
            return Err(ComponentError::config("`max_events` must be at least 1"));
        }
        if self.stream_queue == 0 {
            return Err(ComponentError::config("`stream_queue` must be at least 1"));
        }
        if self.retention.0.is_zero() {
            return Err(ComponentError::config("`retention` must be more than 0s"));
        }
        let store = ApiStore::new(self.max_events, self.retention.0, self.stream_queue);
        Ok((
            store.clone(),
            Box::new(ApiStoreSink { store }) as Box<dyn Sink>,
        ))
    }
}

impl ComponentConfig for ApiStoreConfig {
    type Component = dyn Sink;

    /// A sink whose store nothing reads (as in `tapio test`); the topology uses
    /// [`ApiStoreConfig::build_shared`].
    fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Sink>, ComponentError> {
        self.build_shared().map(|(_, sink)| sink)
    }
}

struct ApiStoreSink {
    store: ApiStore,
}

impl Sink for ApiStoreSink {
    fn run(self: Box<Self>, mut input: BufferReceiver, cx: SinkContext) -> ComponentFuture {
        Box::pin(async move {
            self.store.attach_metrics(Arc::clone(&cx.metrics));
            let mut expire = tokio::time::interval(EXPIRE_INTERVAL);
            loop {
                tokio::select! {
                    batch = input.recv() => {
                        let Some(batch) = batch else { break };
                        let n = batch.len();
                        self.store
                            .insert(batch.events().iter().cloned().map(Arc::new), Instant::now());
                        batch.ack(BatchStatus::Delivered);
                        cx.metrics.add_events_out(n);
                    }
                    _ = expire.tick() => self.store.expire(Instant::now()),
                }
            }
            Ok(())
        })
    }
}
