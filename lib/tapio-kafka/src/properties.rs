//! librdkafka properties: the pass-through `librdkafka_options` and the creation of a client
//! from a component's property list, both without letting a credential reach a log.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;
use serde::Deserialize;

/// Fragments of a property name that mark its value as a credential: `sasl.password`,
/// `ssl.key.password`, `ssl.keystore.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`,
/// `sasl.oauthbearer.config` (which carries tokens), and whatever later librdkafka versions name
/// alike. A path (`ssl.key.location`) is hidden along with them, which costs nothing.
const SECRET_NAME_PARTS: &[&str] = &[
    "password",
    "secret",
    "key",
    "token",
    "credential",
    "oauthbearer.config",
];

/// Whether librdkafka property `name` holds a credential, going by its name.
fn is_secret_property(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAME_PARTS.iter().any(|part| name.contains(part))
}

/// The `librdkafka_options` table: any librdkafka property by name, applied after the
/// component's own so that it wins. Users put credentials here whenever Tapio's `tls`/`sasl`
/// options do not cover their setup (a key's passphrase, OAUTHBEARER), so its `Debug` prints
/// `***` for every property whose name looks like one (see [`SECRET_NAME_PARTS`]).
#[derive(Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct LibrdkafkaOptions(BTreeMap<String, String>);

/// Written with secret-looking values as `***`, like its `Debug`.
impl serde::Serialize for LibrdkafkaOptions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            let shown = if is_secret_property(name) {
                "***"
            } else {
                value
            };
            map.serialize_entry(name, shown)?;
        }
        map.end()
    }
}

impl LibrdkafkaOptions {
    /// The properties in name order, as `(name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }
}

impl fmt::Debug for LibrdkafkaOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in &self.0 {
            if is_secret_property(name) {
                map.entry(name, &format_args!("***"));
            } else {
                map.entry(name, value);
            }
        }
        map.finish()
    }
}

/// Creates a librdkafka client (consumer or producer) from `properties`, set in order, so that
/// a later one overrides an earlier one. librdkafka validates every property here; the error
/// names the property but never its value (see [`describe_refusal`]).
pub fn create_client<C, T>(properties: Vec<(String, String)>, context: C) -> Result<T, String>
where
    C: ClientContext,
    T: FromClientConfigAndContext<C>,
{
    let mut config = ClientConfig::new();
    for (name, value) in properties {
        config.set(name, value);
    }
    config
        .create_with_context(context)
        .map_err(|e| format!("librdkafka refused the options: {}", describe_refusal(&e)))
}

/// rdkafka's message for a refused property ends with the property's value, which for
/// `sasl.password` (or a misspelt `sasl.pasword`) is the credential itself. This one shows the
/// value only for a known property whose name is not a secret's (`acks = "sometimes"`), where
/// it is what the user has to fix; an unknown name may be a misspelt secret one, so its value
/// is left out.
fn describe_refusal(error: &KafkaError) -> String {
    match error {
        KafkaError::ClientConfig(result, description, name, value) => {
            if *result == RDKafkaConfRes::RD_KAFKA_CONF_INVALID && !is_secret_property(name) {
                format!("`{name}` = {value:?}: {description}")
            } else if value.is_empty() {
                format!("`{name}`: {description}")
            } else {
                format!("`{name}`: {}", description.replace(value.as_str(), "***"))
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::producer::{BaseProducer, DefaultProducerContext};

    use super::*;

    /// Options written as the top-level table of `toml_text`.
    fn options(toml_text: &str) -> LibrdkafkaOptions {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn debug_hides_values_of_secret_looking_properties_only() {
        let options = options(
            r#"
"sasl.password" = "hunter2"
"ssl.key.password" = "pass-phrase"
"sasl.oauthbearer.client.secret" = "s3cr3t"
"linger.ms" = "20"
"#,
        );
        let printed = format!("{options:?}");
        for secret in ["hunter2", "pass-phrase", "s3cr3t"] {
            assert!(!printed.contains(secret), "{secret} in {printed}");
        }
        assert!(printed.contains(r#""linger.ms": "20""#), "{printed}");
        assert!(printed.contains(r#""sasl.password": ***"#), "{printed}");
    }

    #[test]
    fn iter_yields_every_property_as_written() {
        let options = options("\"sasl.password\" = \"hunter2\"\nacks = \"1\"");
        let all: Vec<_> = options.iter().collect();
        assert_eq!(all, [("acks", "1"), ("sasl.password", "hunter2")]);
    }

    fn refusal(name: &str, value: &str) -> String {
        let properties = vec![(name.to_owned(), value.to_owned())];
        match create_client::<_, BaseProducer>(properties, DefaultProducerContext) {
            Ok(_) => panic!("librdkafka accepted {name} = {value}"),
            Err(message) => message,
        }
    }

    #[test]
    fn a_refused_property_is_named_without_its_value() {
        let message = refusal("sasl.pasword", "hunter2");
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("sasl.pasword"), "{message}");
    }

    #[test]
    fn a_refused_plain_value_is_shown_for_the_user_to_fix() {
        let message = refusal("acks", "sometimes");
        assert!(message.contains("acks"), "{message}");
        assert!(message.contains("sometimes"), "{message}");
    }
}
