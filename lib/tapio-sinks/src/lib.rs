//! Sinks (L2 outputs): where enriched events leave Tapio. One module per config `type`;
//! [`SinkConfig`] is the registry the topology matches on. Every sink acknowledges a batch only
//! once it is written, and retries failed writes with capped backoff while its buffer holds the
//! rest (backpressure), so a failing destination never silently loses events.

pub mod api_store;
pub mod blackhole;
pub mod clickhouse;
pub mod console;
pub mod file;
pub mod grpc;
pub mod kafka;
pub mod otlp;
mod util;

pub use util::dead_letter::{dead_letter_dir, dead_letter_path};
pub use util::tls;

tapio_event::component_registry! {
    /// Every sink type, as written in `tapio.toml` (`type = "..."`). Deserialized externally
    /// tagged (`{ <type> = { options } }`): the topology moves `type` there so that errors keep
    /// their line numbers. A new sink is its module plus one line here.
    #[derive(schemars::JsonSchema)]
    pub enum SinkConfig: dyn tapio_event::Sink {
        "api_store" => ApiStore(api_store::ApiStoreConfig),
        "blackhole" => Blackhole(blackhole::BlackholeConfig),
        "clickhouse" => Clickhouse(clickhouse::ClickhouseConfig),
        "console" => Console(console::ConsoleConfig),
        "file" => File(file::FileSinkConfig),
        "grpc" => Grpc(grpc::GrpcSinkConfig),
        "kafka" => Kafka(kafka::KafkaSinkConfig),
        "otlp" => Otlp(otlp::OtlpSinkConfig),
    }
}
