//! Sources (L1): everything that turns the outside world into `UnifiedEvent`s. One module per
//! config `type`; [`SourceConfig`] is the registry the topology matches on.

pub mod api;
pub mod cni;
pub mod demo;
pub mod ebpf;
pub mod file;
pub mod grpc;
pub mod kafka;
pub mod kubernetes;
pub mod otlp;
pub mod stdin;
pub mod systemd;
mod util;

pub use util::tls;

tapio_event::component_registry! {
    /// Every source type, as written in `tapio.toml` (`type = "..."`). Deserialized externally
    /// tagged (`{ <type> = { options } }`): the topology moves `type` there so that errors keep
    /// their line numbers. A new source is its module plus one line here.
    #[derive(schemars::JsonSchema)]
    pub enum SourceConfig: dyn tapio_event::Source {
        "api" => Api(api::ApiSourceConfig),
        "cni" => Cni(cni::CniConfig),
        "demo" => Demo(demo::DemoConfig),
        "ebpf" => Ebpf(ebpf::EbpfConfig),
        "file" => File(file::FileConfig),
        "grpc" => Grpc(grpc::GrpcSourceConfig),
        "kafka" => Kafka(kafka::KafkaSourceConfig),
        "kubernetes" => Kubernetes(kubernetes::KubernetesConfig),
        "otlp" => Otlp(otlp::OtlpSourceConfig),
        "stdin" => Stdin(stdin::StdinConfig),
        "systemd" => Systemd(systemd::SystemdConfig),
    }
}
