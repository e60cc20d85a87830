//! Config values that must never reach a log: passwords, keys, tokens. Components' configs are
//! `Debug` so that they can be logged and shown in errors; holding a credential in a [`Secret`]
//! keeps that true without a hand-written `Debug` per config.

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// A credential from the config, written there as a plain string. Its `Debug` prints `***`
/// and it has no `Display`, so a config that derives `Debug` can be logged whole; the value is
/// reachable only through [`Secret::expose`], which marks the one place it is sent.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential that did not come from a config file (a test, an environment variable
    /// read by code).
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The credential itself, for the request or client property that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Written as `***` like its `Debug` (or `""` when unset, so the reference shows an empty
/// default), so serializing a config never writes the credential either.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(if self.0.is_empty() { "" } else { "***" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserializes_from_a_plain_string_and_debug_hides_it() {
        let secret: Secret = serde_json::from_str("\"hunter2\"").unwrap();
        assert_eq!(secret.expose(), "hunter2");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(***)");
    }

    #[test]
    fn serializing_hides_it_too() {
        let secret = Secret::new("hunter2");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"***\"");
        assert_eq!(serde_json::to_string(&Secret::default()).unwrap(), "\"\"");
    }

    #[test]
    fn a_non_string_is_a_config_error() {
        assert!(serde_json::from_str::<Secret>("42").is_err());
    }
}
