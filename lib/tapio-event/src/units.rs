//! Durations (`"30s"`, `"500ms"`) and sizes (`"256MiB"`) as config values. They deserialize from
//! strings (and sizes also from plain integers) so a bad value is a config error on its own line,
//! and serialize back to the same notation, so the generated reference shows defaults the way a
//! user writes them.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A config duration such as `"1m30s"`, `"500ms"`, `"2h"`. Parsing caps it at `u64::MAX`
/// nanoseconds (about 584 years), so that adding one to an `Instant` (a deadline, the next
/// scan) cannot overflow wherever it is used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

/// A config size in bytes such as `"1MiB"`, `"64KB"` or `65536`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ConfigDuration {
    /// Parses a sequence of `<number><unit>` with units ns, us, ms, s, m, h, d.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err("empty duration; write e.g. \"30s\" or \"500ms\"".into());
        }
        let too_large =
            || format!("invalid duration {text:?}: too large (at most about 584 years)");
        let mut total_nanos = 0u64;
        let mut rest = trimmed;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!(
                    "invalid duration {text:?}: expected a number at {rest:?}"
                ));
            }
            let value: u64 = rest[..digits]
                .parse()
                .map_err(|_| format!("invalid duration {text:?}: number too large"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let nanos_per_unit: u64 = match unit {
                "ns" => 1,
                "us" | "µs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "d" => 86_400_000_000_000,
                "" => {
                    return Err(format!(
                        "invalid duration {text:?}: missing unit (ns, us, ms, s, m, h, d)"
                    ));
                }
                other => {
                    return Err(format!(
                        "invalid duration {text:?}: unknown unit {other:?} (use ns, us, ms, s, m, h, d)"
                    ));
                }
            };
            total_nanos = value
                .checked_mul(nanos_per_unit)
                .and_then(|nanos| total_nanos.checked_add(nanos))
                .ok_or_else(too_large)?;
        }
        Ok(ConfigDuration(Duration::from_nanos(total_nanos)))
    }
}

impl ByteSize {
    /// Parses `<number>[unit]` with units B, KB, MB, GB (powers of 1000) and KiB, MiB, GiB.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let digits = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        if digits == 0 {
            return Err(format!(
                "invalid size {text:?}: write e.g. \"256MiB\" or \"64KB\""
            ));
        }
        let value: u64 = trimmed[..digits]
            .parse()
            .map_err(|_| format!("invalid size {text:?}: number too large"))?;
        let multiplier: u64 = match trimmed[digits..].trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => {
                return Err(format!(
                    "invalid size {text:?}: unknown unit {other:?} (use B, KB, MB, GB, KiB, MiB, GiB)"
                ));
            }
        };
        value
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {text:?}: too large"))
    }
}

/// Duration units from the largest down, as [`ConfigDuration::parse`] reads them.
const DURATION_UNITS: [(&str, u128); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Size units from the largest down, binary before decimal: `8MiB` reads better than `8388608`.
const SIZE_UNITS: [(&str, u64); 6] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
];

/// Writes the duration as `parse` reads it, each unit at most once (`"1m30s"`, `"250ms"`).
impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0.as_nanos();
        if rest == 0 {
            return f.write_str("0s");
        }
        for (unit, nanos) in DURATION_UNITS {
            if rest >= nanos {
                write!(f, "{}{unit}", rest / nanos)?;
                rest %= nanos;
            }
        }
        Ok(())
    }
}

/// Writes the size in the largest unit that holds it exactly (`"1MiB"`, `"64KB"`), else in bytes.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match SIZE_UNITS
            .iter()
            .find(|(_, bytes)| self.0 >= *bytes && self.0.is_multiple_of(*bytes))
        {
            Some((unit, bytes)) => write!(f, "{}{unit}", self.0 / bytes),
            None => write!(f, "{}B", self.0),
        }
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl JsonSchema for ConfigDuration {
    fn schema_name() -> Cow<'static, str> {
        "ConfigDuration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "duration",
            "description": "Numbers each followed by a unit: ns, us, ms, s, m, h or d, e.g. `\"500ms\"`, `\"1m30s\"`, `\"2h\"`."
        })
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "integer"],
            "format": "size",
            "description": "A number of bytes, or a number with a unit: B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024), e.g. `\"64KB\"`, `\"256MiB\"`, `65536`."
        })
    }
}

impl JsonSchema for crate::template::Template {
    fn schema_name() -> Cow<'static, str> {
        "Template".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "template",
            "description": "Literal text with `{{ field.path }}` references into the event (`{{ source }}`, `{{ entity.namespace }}`, `{{ kubernetes.labels.app }}`) and strftime fields `%Y %m %d %H %M %S %j %F` from the event's timestamp. An unknown field is a config error."
        })
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ConfigDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"1MiB\" or a number of bytes")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl<'de> Deserialize<'de> for crate::template::Template {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        crate::template::Template::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            ConfigDuration::parse("30s").unwrap().0,
            Duration::from_secs(30)
        );
        assert_eq!(
            ConfigDuration::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            ConfigDuration::parse("1m30s").unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            ConfigDuration::parse("2h").unwrap().0,
            Duration::from_secs(7200)
        );
        assert_eq!(
            ConfigDuration::parse("1d").unwrap().0,
            Duration::from_secs(86_400)
        );
        assert_eq!(
            ConfigDuration::parse("250us").unwrap().0,
            Duration::from_micros(250)
        );
        assert!(
            ConfigDuration::parse("30")
                .unwrap_err()
                .contains("missing unit")
        );
        assert!(
            ConfigDuration::parse("5 minutes")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(ConfigDuration::parse("").is_err());
        assert!(ConfigDuration::parse("ms").is_err());
    }

    #[test]
    fn durations_are_written_as_they_are_read() {
        for text in [
            "0s",
            "250ms",
            "1s",
            "1m30s",
            "5m",
            "10m",
            "2h",
            "1d1h1m1s1ms1us1ns",
        ] {
            let parsed = ConfigDuration::parse(text).unwrap();
            assert_eq!(parsed.to_string(), text);
            assert_eq!(serde_json::to_value(parsed).unwrap(), text);
        }
        assert_eq!(ConfigDuration(Duration::from_secs(90)).to_string(), "1m30s");
    }

    #[test]
    fn sizes_are_written_in_the_largest_exact_unit() {
        for (bytes, text) in [
            (8 << 20, "8MiB"),
            (1 << 10, "1KiB"),
            (3 << 30, "3GiB"),
            (1_000_000, "1MB"),
            (64_000, "64KB"),
            (1500, "1500B"),
            (0, "0B"),
        ] {
            assert_eq!(ByteSize(bytes).to_string(), text);
            assert_eq!(ByteSize::parse(text).unwrap(), ByteSize(bytes));
            assert_eq!(serde_json::to_value(ByteSize(bytes)).unwrap(), text);
        }
    }

    #[test]
    fn durations_beyond_u64_nanoseconds_are_errors() {
        assert_eq!(
            ConfigDuration::parse("18446744073709551615ns").unwrap().0,
            Duration::from_nanos(u64::MAX)
        );
        for text in [
            "99999999999999h",
            "18446744073709551616ns",
            "5124095h5124095h",
            "18446744073709551615ns1ns",
        ] {
            let error = ConfigDuration::parse(text).unwrap_err();
            assert!(error.contains("too large"), "{text}: {error}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("256MiB").unwrap().0, 256 << 20);
        assert_eq!(ByteSize::parse("64KB").unwrap().0, 64_000);
        assert_eq!(ByteSize::parse("1 GiB").unwrap().0, 1 << 30);
        assert_eq!(ByteSize::parse("1024").unwrap().0, 1024);
        assert!(ByteSize::parse("12XB").unwrap_err().contains("XB"));
        assert!(ByteSize::parse("MiB").is_err());
        assert!(ByteSize::parse("99999999999999999999GiB").is_err());
        assert!(
            ByteSize::parse("99999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            ByteSize::parse("99999999999PiB")
                .unwrap_err()
                .contains("PiB")
        );
    }
}
