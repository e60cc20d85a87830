//! Sources (L1): everything that turns the outside world into `UnifiedEvent`s. One module per
//! config `type`; [`SourceConfig`] is the registry the topology matches on.

pub mod demo;
pub mod ebpf;
pub mod file;
pub mod kafka;
mod lines;
pub mod stdin;
#[cfg(test)]
mod testing;

use serde::Deserialize;
use tapio_event::{BuildContext, ComponentError, Source};

/// Every source type, as written in `tapio.toml` (`type = "..."`). Deserialized externally
/// tagged (`{ <type> = { options } }`): the topology moves `type` there so that errors keep
/// their line numbers.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceConfig {
    Demo(demo::DemoConfig),
    Ebpf(ebpf::EbpfConfig),
    File(file::FileConfig),
    Kafka(kafka::KafkaSourceConfig),
    Stdin(stdin::StdinConfig),
}

/// The `type` names of [`SourceConfig`], for error messages and docs.
pub const SOURCE_TYPES: &[&str] = &["demo", "ebpf", "file", "kafka", "stdin"];

/// Named outputs of a source `type`, known even when its options are invalid, so one mistake
/// does not also make every `<name>.errors` input look wrong.
pub fn named_outputs(type_name: &str) -> &'static [&'static str] {
    match type_name {
        "file" | "kafka" | "stdin" => &["errors"],
        _ => &[],
    }
}

impl SourceConfig {
    /// The config `type` of this source.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceConfig::Demo(_) => "demo",
            SourceConfig::Ebpf(_) => "ebpf",
            SourceConfig::File(_) => "file",
            SourceConfig::Kafka(_) => "kafka",
            SourceConfig::Stdin(_) => "stdin",
        }
    }

    /// Named outputs besides the default one (usable as `inputs = ["<name>.<output>"]`).
    pub fn named_outputs(&self) -> &'static [&'static str] {
        named_outputs(self.type_name())
    }

    /// Whether the source keeps state under `data_dir` (which must then be writable).
    pub fn uses_data_dir(&self) -> bool {
        matches!(self, SourceConfig::File(_))
    }

    /// Builds the running source; errors say what is wrong with the environment (exit 69).
    pub fn build(&self, cx: &BuildContext) -> Result<Box<dyn Source>, ComponentError> {
        match self {
            SourceConfig::Demo(config) => config.build(cx),
            SourceConfig::Ebpf(config) => config.build(cx),
            SourceConfig::File(config) => config.build(cx),
            SourceConfig::Kafka(config) => config.build(cx),
            SourceConfig::Stdin(config) => config.build(cx),
        }
    }
}
