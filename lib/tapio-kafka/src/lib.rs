//! The Kafka client layer (L1): what the `kafka` source and the `kafka` sink share about
//! talking to brokers — the TLS and SASL options and their librdkafka properties, the
//! pass-through `librdkafka_options`, librdkafka's log forwarded to Tapio's, and the start-up
//! healthcheck. It sits below both so that outputs never depend on the collectors (DESIGN.md
//! section 1): a sink build does not compile the sources, eBPF loader included.

mod healthcheck;
mod logs;
mod properties;
mod security;

pub use healthcheck::{HEALTHCHECK_TIMEOUT, check_brokers};
pub use logs::{Logs, forward_error, forward_log};
pub use properties::{LibrdkafkaOptions, create_client};
pub use security::{SaslConfig, TlsConfig, security_properties};
