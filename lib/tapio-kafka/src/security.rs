//! The `tls` and `sasl` options and the librdkafka properties they stand for.

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::Secret;

/// TLS options (`ssl.*`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Whether to use TLS; `false` turns off a `tls` table without removing it.
    #[serde(default = "default_tls_enabled")]
    pub enabled: bool,
    /// CA bundle to verify the brokers with (`ssl.ca.location`). Unset: the system's.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Client certificate for mutual TLS (`ssl.certificate.location`). Unset: none.
    #[serde(default)]
    pub cert_file: Option<String>,
    /// The client certificate's private key (`ssl.key.location`). Unset: none.
    #[serde(default)]
    pub key_file: Option<String>,
}

/// SASL options (`sasl.*`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `"PLAIN"`, `"SCRAM-SHA-256"` or `"SCRAM-SHA-512"` (`sasl.mechanisms`; GSSAPI is not
    /// built in).
    pub mechanism: String,
    /// The user name (`sasl.username`).
    pub username: String,
    /// The password (`sasl.password`); write `"${ENV_VAR}"` to keep it out of the file. It
    /// shows as `***` wherever the config is printed.
    pub password: Secret,
}

fn default_tls_enabled() -> bool {
    true
}

/// The `security.protocol` and `ssl.*`/`sasl.*` properties for `tls` and `sasl`, passed to `set`
/// in order.
pub fn security_properties(
    tls: Option<&TlsConfig>,
    sasl: Option<&SaslConfig>,
    mut set: impl FnMut(&str, String),
) {
    let tls = tls.filter(|tls| tls.enabled);
    let protocol = match (tls.is_some(), sasl.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    set("security.protocol", protocol.into());
    if let Some(tls) = tls {
        for (key, file) in [
            ("ssl.ca.location", &tls.ca_file),
            ("ssl.certificate.location", &tls.cert_file),
            ("ssl.key.location", &tls.key_file),
        ] {
            if let Some(file) = file {
                set(key, file.clone());
            }
        }
    }
    if let Some(sasl) = sasl {
        set("sasl.mechanisms", sasl.mechanism.clone());
        set("sasl.username", sasl.username.clone());
        set("sasl.password", sasl.password.expose().to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sasl() -> SaslConfig {
        toml::from_str("mechanism = \"PLAIN\"\nusername = \"tapio\"\npassword = \"hunter2\"")
            .unwrap()
    }

    #[test]
    fn sasl_debug_hides_the_password() {
        let printed = format!("{:?}", sasl());
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(
            printed.contains("tapio"),
            "the user name still shows: {printed}"
        );
    }

    #[test]
    fn the_password_still_reaches_librdkafka() {
        let mut props = Vec::new();
        security_properties(None, Some(&sasl()), |key, value| {
            props.push((key.to_owned(), value));
        });
        assert!(props.contains(&("sasl.password".into(), "hunter2".into())));
        assert!(props.contains(&("security.protocol".into(), "sasl_plaintext".into())));
    }
}
