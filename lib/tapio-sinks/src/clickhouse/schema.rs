//! The table Tapio writes and the rows it sends. The DDL lives in
//! `distribution/clickhouse/schema.sql`, the one source of truth that users read and that
//! `create_table` runs; rows are `JSONEachRow` lines whose keys are that table's columns.

use std::io::Write;

use tapio_event::UnifiedEvent;
use tapio_event::codec::encode_json;

/// The documented table, with `{database}` and `{table}` placeholders.
const SCHEMA_SQL: &str = include_str!("../../../../distribution/clickhouse/schema.sql");

/// The `CREATE TABLE IF NOT EXISTS` statement for `database.table` (both already validated as
/// plain identifiers).
pub(super) fn create_table_sql(database: &str, table: &str) -> String {
    SCHEMA_SQL
        .replace("{database}", &format!("`{database}`"))
        .replace("{table}", &format!("`{table}`"))
}

/// Whether `name` can be used as a database or table name without quoting surprises: the
/// statements Tapio builds splice it in, so anything else is refused when the config is built.
pub(super) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Appends the `JSONEachRow` line (newline included) of `event` to `out`, using `scratch` for
/// the event's own JSON form. Absent values become the column's empty value (`""`, `0`) because
/// 18.16 cannot use Nullable columns in the sorting key; the `event` column keeps the full
/// event, where absent stays absent. Rows go straight into the insert's body: no allocation
/// per row.
pub(super) fn write_row(event: &UnifiedEvent, scratch: &mut Vec<u8>, out: &mut impl Write) {
    scratch.clear();
    encode_json(event, scratch);
    let event_json = std::str::from_utf8(scratch).expect("serde_json writes UTF-8");
    let civil = event.timestamp.civil();
    let entity = event.entity.as_deref();
    let impact = event.impact.as_deref();
    let correlation = event.correlation.as_deref();
    let namespace = entity.and_then(|e| e.namespace.as_deref()).or_else(|| {
        event
            .kubernetes
            .as_deref()
            .and_then(|k| k.namespace.as_deref())
    });
    let node = entity.and_then(|e| {
        e.node
            .as_deref()
            .or_else(|| e.attributes.get("node").map(String::as_str))
    });
    let business_impact = impact
        .and_then(|i| i.business_impact)
        .filter(|v| v.is_finite())
        .unwrap_or(0.0);

    write!(
        out,
        "{{\"timestamp\":\"{:04}-{:02}-{:02} {:02}:{:02}:{:02}\",\"timestamp_ns\":{}",
        civil.year, civil.month, civil.day, civil.hour, civil.minute, civil.second, civil.nanos
    )
    .expect("writing to memory cannot fail");
    let strings = [
        ("id", Some(event.id.as_str())),
        ("type", Some(event.kind.as_str())),
        ("source", Some(event.source.as_str())),
        ("entity_type", entity.map(|e| e.kind.as_str())),
        ("entity_id", entity.map(|e| e.id.as_str())),
        ("entity_name", entity.and_then(|e| e.name.as_deref())),
        ("namespace", namespace),
        ("node", node),
        (
            "severity",
            impact.and_then(|i| i.severity).map(|s| s.as_str()),
        ),
        ("pattern", correlation.and_then(|c| c.pattern.as_deref())),
        (
            "correlation_id",
            correlation.and_then(|c| c.correlation_id.as_deref()),
        ),
        ("event", Some(event_json)),
    ];
    for (column, value) in strings {
        for piece in [b",\"", column.as_bytes(), b"\":"] {
            out.write_all(piece).expect("writing to memory cannot fail");
        }
        serde_json::to_writer(&mut *out, value.unwrap_or("")).expect("a string always serialises");
    }
    writeln!(out, ",\"business_impact\":{business_impact:?}}}")
        .expect("writing to memory cannot fail");
}

/// The `event` column of a row line: the event's JSON form, for the dead-letter file.
pub(super) fn event_of(line: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct EventColumn {
        event: String,
    }
    serde_json::from_slice::<EventColumn>(line)
        .map(|row| row.event)
        .unwrap_or_else(|_| String::from_utf8_lossy(line).into_owned())
}
