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

/// The bearer tokens a server accepts (`auth.tokens_file` lines or `auth.tokens` values), each
/// with a name that the audit log shows instead of the token.
#[derive(Debug, Clone, Default)]
pub struct Tokens(Vec<(String, Secret)>);

impl Tokens {
    /// Reads token lines: one token a line, optionally `name:token`; blank lines and lines
    /// starting with `#` are ignored. A token without a name is called `token<N>` after its
    /// position (1-based) among the tokens, so the log can still tell them apart.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Tokens, String> {
        let mut tokens = Tokens::default();
        for (number, line) in lines.into_iter().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, token) = match line.split_once(':') {
                Some((name, token)) => (name.trim().to_string(), token.trim()),
                None => (format!("token{}", tokens.0.len() + 1), line),
            };
            if token.is_empty() || name.is_empty() {
                return Err(format!(
                    "line {}: expected `token` or `name:token`",
                    number + 1
                ));
            }
            tokens.0.push((name, Secret::new(token)));
        }
        Ok(tokens)
    }

    /// Adds the tokens of `other` after these.
    pub fn extend(&mut self, other: Tokens) {
        self.0.extend(other.0);
    }

    /// True when no token is configured, i.e. authentication is off.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name of the token an `authorization: Bearer <token>` header value carries, or `None`
    /// when it carries none of them. Every token is compared in constant time and all of them
    /// are compared, so timing tells neither a token nor which one matched.
    pub fn check(&self, authorization: Option<&[u8]>) -> Option<&str> {
        let given = authorization?.strip_prefix(b"Bearer ")?;
        let mut found = None;
        for (name, token) in &self.0 {
            if constant_time_eq(given, token.expose().as_bytes()) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// Compares without stopping at the first difference, so timing does not reveal the secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn token_lines_name_their_tokens_and_skip_comments() {
        let tokens = Tokens::parse("# agents\n\nagent-a:s3cret\n  plain  \n".lines()).unwrap();
        assert_eq!(tokens.check(Some(b"Bearer s3cret")), Some("agent-a"));
        assert_eq!(tokens.check(Some(b"Bearer plain")), Some("token2"));
        assert_eq!(tokens.check(Some(b"Bearer s3cre")), None);
        assert_eq!(tokens.check(Some(b"s3cret")), None);
        assert_eq!(tokens.check(None), None);
        assert!(Tokens::parse(["name:"]).unwrap_err().contains("line 1"));
        assert!(Tokens::default().is_empty());
    }
}
