//! The `kafka` sink's options and how they map onto librdkafka properties. The mapping is a
//! plain list of `(property, value)` pairs so that it can be tested without a broker, and
//! `librdkafka_options` are applied last so that users can override anything Tapio sets.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tapio_event::template::Template;
use tapio_event::{ByteSize, ConfigDuration};
use tapio_kafka::{LibrdkafkaOptions, SaslConfig, TlsConfig, security_properties};

/// Options of the `kafka` sink.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Comma-separated `host:port` list of brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// The topic each event goes to, a template like the `file` sink's `path` (the default
    /// makes one topic per source type). Topics are not created by the sink. An event missing a
    /// referenced field is dead-lettered.
    #[serde(default = "default_topic")]
    #[schemars(with = "Template")]
    pub topic: String,
    /// The message key, a template such as `"{{ entity.namespace }}"`. Unset: the entity's
    /// routing key (`namespace/name` for
    /// pods, the name for nodes, the entity id otherwise), so that one entity's events stay in
    /// one partition, in order. Events without one are sent without a key (spread over
    /// partitions) and counted in the sink's shutdown log.
    #[serde(default)]
    #[schemars(with = "Option<Template>")]
    pub key: Option<String>,
    /// How events are written into message values: `"json"`, the event's JSON form.
    #[serde(default)]
    pub encoding: Encoding,
    /// Compression of message batches (`compression.codec`).
    #[serde(default)]
    pub compression: Compression,
    /// Which brokers confirm a message before it counts as written: `"all"`, every in-sync
    /// replica (`acks=all` with `enable.idempotence=true`, so retries neither duplicate nor
    /// reorder), or `"leader"` (`acks=1`, idempotence off, one request in flight per broker to
    /// keep order; a leader lost before replicating loses the message).
    #[serde(default)]
    pub acks: Acks,
    /// How librdkafka groups messages into produce requests.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Message headers: name → template (e.g. `{ "x-namespace" = "{{ entity.namespace }}" }`);
    /// a header whose field the event lacks is left out. Events with a `trace_context` also get
    /// a W3C `traceparent` header.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Template>")]
    pub headers: BTreeMap<String, String>,
    /// Any librdkafka producer property (`{ "client.id" = "tapio-agent" }`), applied after
    /// every other option so that it wins. A property librdkafka does not know is an error at
    /// start. Wherever the config is printed, the values of properties whose name contains
    /// `password`, `secret`, `key`, `token`, `credential` or `oauthbearer.config` show as `***`,
    /// and an error about a refused property leaves its value out unless it is a known,
    /// non-secret one (an unknown name may be a misspelt secret).
    #[serde(default)]
    pub librdkafka_options: LibrdkafkaOptions,
    /// Connect to the brokers with TLS (`security.protocol` `ssl`, or `sasl_ssl` with `sasl`).
    /// Unset: plain TCP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Authenticate to the brokers with SASL. Unset: no authentication.
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
    /// Fetch the cluster's metadata when the sink starts; if no broker answers within 10 s the
    /// run stops with one error line naming the cause (exit 69). With `false` the sink starts
    /// anyway and retries.
    #[serde(default = "default_healthcheck")]
    pub healthcheck: bool,
    /// How long librdkafka keeps trying one message before reporting it failed
    /// (`message.timeout.ms`); the sink then sends it again, so this only bounds one attempt.
    /// A message re-sent after this timeout lands after later messages of its partition that
    /// got through, so keep it long.
    #[serde(default = "default_message_timeout")]
    pub message_timeout: ConfigDuration,
}

/// How events are serialised into message values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The event's JSON form, the contract every Tapio reader understands.
    #[default]
    Json,
}

/// librdkafka's `compression.codec`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Uncompressed.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// Who confirms a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Acks {
    /// Every in-sync replica (`acks=all`), with `enable.idempotence=true`.
    #[default]
    All,
    /// The partition leader only (`acks=1`): faster, but a leader lost before replicating
    /// loses the message. Idempotence needs `all`, so order is kept with one request in
    /// flight per broker instead.
    Leader,
}

/// The `batch` options, mapped onto librdkafka's batching.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Messages per produce request (`batch.num.messages`); also the most buffered events the
    /// sink hands to librdkafka in one delivery round.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Bytes per produce request (`batch.size`).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// How long a message may wait for its produce request to fill (`linger.ms`).
    #[serde(default = "default_batch_timeout")]
    pub timeout: ConfigDuration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_events: default_max_events(),
            max_bytes: default_max_bytes(),
            timeout: default_batch_timeout(),
        }
    }
}

fn default_topic() -> String {
    "tapio.{{ source }}".into()
}

fn default_healthcheck() -> bool {
    true
}

fn default_message_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(300))
}

fn default_max_events() -> usize {
    10_000
}

fn default_max_bytes() -> ByteSize {
    ByteSize(1_000_000)
}

fn default_batch_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(5))
}

impl KafkaSinkConfig {
    /// The librdkafka producer properties these options stand for, in the order they are set.
    pub(super) fn properties(&self) -> Vec<(String, String)> {
        let mut props: Vec<(String, String)> = Vec::new();
        let mut set = |key: &str, value: String| props.push((key.to_owned(), value));
        set("bootstrap.servers", self.bootstrap_servers.clone());
        set("message.timeout.ms", millis(self.message_timeout.0));
        let codec = match self.compression {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        };
        set("compression.codec", codec.into());
        match self.acks {
            Acks::All => {
                set("acks", "all".into());
                set("enable.idempotence", "true".into());
            }
            Acks::Leader => {
                set("acks", "1".into());
                set("enable.idempotence", "false".into());
                set("max.in.flight.requests.per.connection", "1".into());
            }
        }
        set("batch.num.messages", self.batch.max_events.to_string());
        set("batch.size", self.batch.max_bytes.0.to_string());
        set("linger.ms", millis(self.batch.timeout.0));
        security_properties(self.tls.as_ref(), self.sasl.as_ref(), &mut set);
        for (key, value) in self.librdkafka_options.iter() {
            set(key, value.to_owned());
        }
        props
    }
}

/// A duration in whole milliseconds, as librdkafka wants it.
fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> KafkaSinkConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn value<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
        props
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn defaults_are_idempotent_acks_all_uncompressed() {
        let props = parse("bootstrap_servers = \"b:9092\"").properties();
        for (key, expected) in [
            ("bootstrap.servers", "b:9092"),
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("compression.codec", "none"),
            ("message.timeout.ms", "300000"),
            ("batch.num.messages", "10000"),
            ("batch.size", "1000000"),
            ("linger.ms", "5"),
            ("security.protocol", "plaintext"),
        ] {
            assert_eq!(value(&props, key), Some(expected), "{key}");
        }
    }

    #[test]
    fn options_map_onto_librdkafka_and_pass_through_wins() {
        let config = parse(
            r#"
bootstrap_servers = "b:9092"
compression = "zstd"
acks = "leader"
message_timeout = "10s"
batch = { max_events = 500, max_bytes = "64KiB", timeout = "20ms" }
tls = { ca_file = "/ca.pem", cert_file = "/c.pem", key_file = "/k.pem" }
sasl = { mechanism = "SCRAM-SHA-512", username = "u", password = "p" }
librdkafka_options = { "linger.ms" = "50", "client.id" = "tapio" }
"#,
        );
        let props = config.properties();
        for (key, expected) in [
            ("compression.codec", "zstd"),
            ("acks", "1"),
            ("enable.idempotence", "false"),
            ("max.in.flight.requests.per.connection", "1"),
            ("message.timeout.ms", "10000"),
            ("batch.num.messages", "500"),
            ("batch.size", "65536"),
            ("linger.ms", "50"),
            ("client.id", "tapio"),
            ("security.protocol", "sasl_ssl"),
            ("ssl.ca.location", "/ca.pem"),
            ("ssl.certificate.location", "/c.pem"),
            ("ssl.key.location", "/k.pem"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ] {
            assert_eq!(value(&props, key), Some(expected), "{key}");
        }
        assert_eq!(
            props.last().unwrap().0,
            "linger.ms",
            "pass-through is applied last"
        );
    }

    #[test]
    fn security_protocol_follows_tls_and_sasl() {
        let protocol = |extra: &str| {
            let props = parse(&format!("bootstrap_servers = \"b\"\n{extra}")).properties();
            value(&props, "security.protocol").unwrap().to_owned()
        };
        assert_eq!(protocol("tls = {}"), "ssl");
        assert_eq!(protocol("tls = { enabled = false }"), "plaintext");
        assert_eq!(
            protocol("sasl = { mechanism = \"PLAIN\", username = \"u\", password = \"p\" }"),
            "sasl_plaintext"
        );
    }

    #[test]
    fn debug_of_the_config_hides_secrets() {
        let config = parse(
            r#"
bootstrap_servers = "b:9092"
sasl = { mechanism = "PLAIN", username = "u", password = "hunter2" }
librdkafka_options = { "ssl.key.password" = "pass-phrase", "linger.ms" = "50" }
"#,
        );
        let printed = format!("{config:?}");
        for secret in ["hunter2", "pass-phrase"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains("linger.ms"), "{printed}");
    }

    #[test]
    fn unknown_options_are_rejected() {
        assert!(
            toml::from_str::<KafkaSinkConfig>("bootstrap_servers = \"b\"\nacks = \"0\"").is_err()
        );
        assert!(
            toml::from_str::<KafkaSinkConfig>("bootstrap_servers = \"b\"\nlinger = 1").is_err()
        );
    }
}
