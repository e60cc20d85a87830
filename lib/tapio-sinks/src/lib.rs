//! Sinks (L2 outputs): where enriched events leave Tapio. One module per config `type`;
//! [`SinkConfig`] is the registry the topology matches on. Every sink acknowledges a batch only
//! once it is written, and retries failed writes with capped backoff while its buffer holds the
//! rest (backpressure), so a failing destination never silently loses events.

pub mod blackhole;
pub mod clickhouse;
pub mod console;
mod dead_letter;
pub mod file;
pub mod kafka;
mod retry;

use serde::Deserialize;
use tapio_event::{BuildContext, ComponentError, Sink};

/// Every sink type, as written in `tapio.toml` (`type = "..."`). Deserialized externally
/// tagged (`{ <type> = { options } }`): the topology moves `type` there so that errors keep
/// their line numbers.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkConfig {
    Blackhole(blackhole::BlackholeConfig),
    Clickhouse(clickhouse::ClickhouseConfig),
    Console(console::ConsoleConfig),
    File(file::FileSinkConfig),
    Kafka(kafka::KafkaSinkConfig),
}

/// The `type` names of [`SinkConfig`], for error messages and docs.
pub const SINK_TYPES: &[&str] = &["blackhole", "clickhouse", "console", "file", "kafka"];

impl SinkConfig {
    /// The config `type` of this sink.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::Blackhole(_) => "blackhole",
            SinkConfig::Clickhouse(_) => "clickhouse",
            SinkConfig::Console(_) => "console",
            SinkConfig::File(_) => "file",
            SinkConfig::Kafka(_) => "kafka",
        }
    }

    /// Builds the running sink; errors say what is wrong with the environment (exit 69).
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Sink>, ComponentError> {
        match self {
            SinkConfig::Blackhole(config) => Ok(config.build()),
            SinkConfig::Clickhouse(config) => config.build(cx),
            SinkConfig::Console(config) => Ok(config.build()),
            SinkConfig::File(config) => config.build(cx),
            SinkConfig::Kafka(config) => config.build(cx),
        }
    }
}
