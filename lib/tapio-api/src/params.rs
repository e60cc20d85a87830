//! What REST query parameters and gRPC request fields mean, in one place so both interfaces
//! accept the same values and refuse bad ones with the same messages.

use tapio_event::{EventType, Severity, Timestamp};

/// Results a page holds when the request names no limit.
pub const DEFAULT_LIMIT: usize = 100;
/// The most results one page holds.
pub const MAX_LIMIT: usize = 10_000;

/// A refused value: which parameter, and why (shown to the client as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParam(pub String);

/// An event type by its JSON name (`network`, `process`, ...).
pub fn event_type(name: &str, value: &str) -> Result<EventType, BadParam> {
    EventType::ALL
        .into_iter()
        .find(|t| t.as_str() == value)
        .ok_or_else(|| {
            let known: Vec<_> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            BadParam(format!(
                "`{name}` must be one of {}, got {value:?}",
                known.join(", ")
            ))
        })
}

/// A severity by its JSON name (`warning`, ...).
pub fn severity(name: &str, value: &str) -> Result<Severity, BadParam> {
    serde_json::from_value(serde_json::Value::String(value.to_owned())).map_err(|_| {
        BadParam(format!(
            "`{name}` must be one of debug, info, warning, error, critical, got {value:?}"
        ))
    })
}

/// A point in time: RFC 3339 (`2026-01-02T03:04:05Z`) or nanoseconds since the Unix epoch.
pub fn time(name: &str, value: &str) -> Result<i64, BadParam> {
    if let Ok(nanos) = value.parse::<i64>() {
        return Ok(nanos);
    }
    Timestamp::parse_rfc3339(value)
        .map(Timestamp::as_nanos)
        .map_err(|e| {
            BadParam(format!(
                "`{name}` must be an RFC 3339 time such as 2026-01-02T03:04:05Z or nanoseconds since the Unix epoch, got {value:?} ({e})"
            ))
        })
}

/// A page size: 1 to [`MAX_LIMIT`].
pub fn limit(name: &str, value: &str) -> Result<usize, BadParam> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| BadParam(format!("`{name}` must be 1 to {MAX_LIMIT}, got {value:?}")))
}

/// How many events a stream delivers before it ends: at least 1, no upper bound.
pub fn count(name: &str, value: &str) -> Result<usize, BadParam> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            BadParam(format!(
                "`{name}` must be a whole number of at least 1, got {value:?}"
            ))
        })
}

/// A page token from a previous answer.
pub fn page_token(name: &str, value: &str) -> Result<tapio_sinks::api_store::Cursor, BadParam> {
    tapio_sinks::api_store::Cursor::parse(value).ok_or_else(|| {
        BadParam(format!(
            "`{name}` must be a `next_page_token` of an earlier answer, got {value:?}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_bad_ones_are_named() {
        assert_eq!(event_type("type", "network"), Ok(EventType::Network));
        assert!(
            event_type("type", "netwrk")
                .unwrap_err()
                .0
                .contains("`type` must be one of network")
        );
        assert_eq!(severity("severity", "error"), Ok(Severity::Error));
        assert!(
            severity("severity", "bad")
                .unwrap_err()
                .0
                .starts_with("`severity`")
        );
        assert_eq!(time("since", "1000"), Ok(1000));
        assert_eq!(time("since", "1970-01-01T00:00:01Z"), Ok(1_000_000_000));
        assert!(
            time("until", "yesterday")
                .unwrap_err()
                .0
                .starts_with("`until` must be an RFC 3339")
        );
        assert_eq!(limit("limit", "5"), Ok(5));
        assert!(limit("limit", "0").is_err());
        assert!(limit("limit", "10001").is_err());
        assert_eq!(count("limit", "20000"), Ok(20_000));
        assert!(count("limit", "0").unwrap_err().0.contains("at least 1"));
        assert!(page_token("page_token", "x").is_err());
    }
}
