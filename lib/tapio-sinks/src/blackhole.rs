//! `blackhole`: discards everything it receives. For benchmarks (with `print_interval` it logs
//! the rate it sees) and for pipelines whose value is in their metrics.

use std::time::Instant;

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::{
    BatchStatus, BufferReceiver, BuildContext, ComponentConfig, ComponentError, ComponentFuture,
    ConfigDuration, Sink, SinkContext,
};

/// Options of the `blackhole` sink.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {
    /// Log the events/s received every this often (e.g. `"1s"`). Unset: no logging.
    #[serde(default)]
    pub print_interval: Option<ConfigDuration>,
}

struct Blackhole {
    print_interval: Option<std::time::Duration>,
}

impl ComponentConfig for BlackholeConfig {
    type Component = dyn Sink;

    fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Sink>, ComponentError> {
        Ok(Box::new(Blackhole {
            print_interval: self.print_interval.map(|d| d.0),
        }))
    }
}

impl Sink for Blackhole {
    fn run(self: Box<Self>, mut input: BufferReceiver, cx: SinkContext) -> ComponentFuture {
        Box::pin(async move {
            let mut window_start = Instant::now();
            let mut window_events = 0usize;
            while let Some(batch) = input.recv().await {
                let n = batch.len();
                batch.ack(BatchStatus::Delivered);
                cx.metrics.add_events_out(n);
                if let Some(interval) = self.print_interval {
                    window_events += n;
                    let elapsed = window_start.elapsed();
                    if elapsed >= interval {
                        let rate = window_events as f64 / elapsed.as_secs_f64();
                        tracing::info!(sink = %cx.metrics.name, events_per_sec = rate.round(), "blackhole rate");
                        window_start = Instant::now();
                        window_events = 0;
                    }
                }
            }
            Ok(())
        })
    }
}
