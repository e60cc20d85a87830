//! The table Tapio writes and the rows it sends. The DDL lives in
//! `distribution/clickhouse/schema.sql`, the one source of truth that users read and that
//! `create_table` runs; rows carry that table's columns, in [`FIXED_COLUMNS`] order, then the
//! `columns` option's extra ones, as RowBinary (by default) or `JSONEachRow` lines.

use std::io::Write;

use bytes::{BufMut, BytesMut};
use tapio_event::UnifiedEvent;
use tapio_event::codec::encode_json;
use tapio_event::field::FieldPath;

use super::Format;

/// The documented table's columns, in the order rows carry them, with the type RowBinary
/// writes for each (`DateTime` with any time zone is the same four bytes).
pub(super) const FIXED_COLUMNS: &[(&str, &str)] = &[
    ("timestamp", "DateTime"),
    ("timestamp_ns", "UInt32"),
    ("id", "String"),
    ("type", "String"),
    ("source", "String"),
    ("entity_type", "String"),
    ("entity_id", "String"),
    ("entity_name", "String"),
    ("namespace", "String"),
    ("node", "String"),
    ("severity", "String"),
    ("pattern", "String"),
    ("correlation_id", "String"),
    ("event", "String"),
    ("business_impact", "Float64"),
];

/// How many `String` columns come before `event` in a row, after `timestamp` and
/// `timestamp_ns` (four bytes each).
const STRINGS_BEFORE_EVENT: usize = 11;

/// The layout of the rows one sink writes: the format and the extra columns.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    pub format: Format,
    /// Extra `String` columns and the event field each holds (`columns` option).
    pub extras: Vec<(String, FieldPath)>,
}

impl Layout {
    /// The `INSERT` statement for `target`, naming every column the rows carry.
    pub fn insert_sql(&self, target: &str) -> String {
        let names: Vec<String> = FIXED_COLUMNS
            .iter()
            .map(|(name, _)| *name)
            .chain(self.extras.iter().map(|(name, _)| name.as_str()))
            .map(|name| format!("`{name}`"))
            .collect();
        let format = match self.format {
            Format::RowBinary => "RowBinary",
            Format::JsonEachRow => "JSONEachRow",
        };
        format!(
            "INSERT INTO {target} ({}) FORMAT {format}",
            names.join(", ")
        )
    }

    /// Appends the row of `event` to `out`, using `scratch` for the event's own JSON form.
    pub fn write_row(&self, event: &UnifiedEvent, scratch: &mut Vec<u8>, out: &mut BytesMut) {
        scratch.clear();
        encode_json(event, scratch);
        let event_json = std::str::from_utf8(scratch).expect("serde_json writes UTF-8");
        let columns = Columns::of(event, event_json);
        match self.format {
            Format::JsonEachRow => write_json_row(&columns, event, &self.extras, &mut out.writer()),
            Format::RowBinary => write_binary_row(&columns, event, &self.extras, out),
        }
    }

    /// The `event` column of one row: the event's JSON form, for the dead-letter file.
    pub fn event_of(&self, row: &[u8]) -> String {
        match self.format {
            Format::JsonEachRow => event_of(row),
            Format::RowBinary => binary_event_of(row)
                .map(|event| String::from_utf8_lossy(event).into_owned())
                .unwrap_or_else(|| String::from_utf8_lossy(row).into_owned()),
        }
    }

    /// Checks the answer of `DESCRIBE TABLE` (`TabSeparated`: name, type, default kind, …)
    /// against the columns the rows carry; says what does not fit. RowBinary needs each
    /// column's exact type (it carries no text to convert); `JSONEachRow` only needs the
    /// columns, whose text the server converts. A `MATERIALIZED` or `ALIAS` column cannot be
    /// inserted into.
    pub fn check(&self, describe: &str) -> Result<(), String> {
        let table: Vec<Vec<&str>> = describe
            .lines()
            .map(|line| line.split('\t').collect())
            .collect();
        let wanted = FIXED_COLUMNS.iter().copied().chain(
            self.extras
                .iter()
                .map(|(name, _)| (name.as_str(), "String")),
        );
        for (name, wanted_type) in wanted {
            let Some(found) = table.iter().find(|fields| fields.first() == Some(&name)) else {
                return Err(format!(
                    "it has no column `{name}` ({wanted_type}), which the rows carry; add it (ALTER TABLE … ADD COLUMN {name} {wanted_type})"
                ));
            };
            let found_type = found.get(1).copied().unwrap_or_default();
            if let Some(kind @ ("MATERIALIZED" | "ALIAS")) = found.get(2).copied() {
                return Err(format!(
                    "column `{name}` is {kind}, which an insert cannot write; make it a plain {wanted_type} column"
                ));
            }
            let fits = match wanted_type {
                "DateTime" => found_type == "DateTime" || found_type.starts_with("DateTime("),
                exact => found_type == exact,
            };
            if self.format == Format::RowBinary && !fits {
                return Err(format!(
                    "column `{name}` is {found_type}, but RowBinary writes {wanted_type}; change the column or set `format = \"json_each_row\"`, whose text the server converts"
                ));
            }
        }
        Ok(())
    }
}

/// The values of the fixed columns of one event.
struct Columns<'a> {
    seconds: u32,
    nanos: u32,
    strings: [&'a str; 12],
    business_impact: f64,
}

impl<'a> Columns<'a> {
    /// Absent values become the column's empty value (`""`, `0`) because 18.16 cannot use
    /// Nullable columns in the sorting key; the `event` column keeps the full event, where
    /// absent stays absent.
    fn of(event: &'a UnifiedEvent, event_json: &'a str) -> Columns<'a> {
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
        let civil = event.timestamp.civil();
        Columns {
            // Before 1970 or after 2106 does not fit `DateTime`; such an event is sent with
            // 0 (1970-01-01) and keeps its real timestamp in `event`.
            seconds: u32::try_from(event.timestamp.as_nanos().div_euclid(1_000_000_000))
                .unwrap_or(0),
            nanos: civil.nanos,
            strings: [
                event.id.as_str(),
                event.kind.as_str(),
                event.source.as_str(),
                entity.map_or("", |e| e.kind.as_str()),
                entity.map_or("", |e| e.id.as_str()),
                entity.and_then(|e| e.name.as_deref()).unwrap_or(""),
                namespace.unwrap_or(""),
                node.unwrap_or(""),
                impact.and_then(|i| i.severity).map_or("", |s| s.as_str()),
                correlation.and_then(|c| c.pattern.as_deref()).unwrap_or(""),
                correlation
                    .and_then(|c| c.correlation_id.as_deref())
                    .unwrap_or(""),
                event_json,
            ],
            business_impact: impact
                .and_then(|i| i.business_impact)
                .filter(|v| v.is_finite())
                .unwrap_or(0.0),
        }
    }
}

/// Appends one RowBinary row: `DateTime` and `UInt32` as four little-endian bytes, each
/// `String` as its LEB128 length and bytes, `Float64` as eight little-endian bytes.
fn write_binary_row(
    columns: &Columns<'_>,
    event: &UnifiedEvent,
    extras: &[(String, FieldPath)],
    out: &mut BytesMut,
) {
    out.put_u32_le(columns.seconds);
    out.put_u32_le(columns.nanos);
    for value in columns.strings {
        put_string(out, value.as_bytes());
    }
    out.put_f64_le(columns.business_impact);
    for (_, field) in extras {
        put_string(out, field.lookup(event).as_deref().unwrap_or("").as_bytes());
    }
}

/// A RowBinary `String`.
fn put_string(out: &mut BytesMut, value: &[u8]) {
    let mut length = value.len();
    while length >= 0x80 {
        out.put_u8((length as u8) | 0x80);
        length >>= 7;
    }
    out.put_u8(length as u8);
    out.put_slice(value);
}

/// The `event` column's bytes in a RowBinary row, if the row is well formed.
fn binary_event_of(row: &[u8]) -> Option<&[u8]> {
    let mut rest = row.get(8..)?;
    for index in 0..=STRINGS_BEFORE_EVENT {
        let mut length = 0usize;
        let mut shift = 0;
        loop {
            let (&byte, tail) = rest.split_first()?;
            rest = tail;
            length |= usize::from(byte & 0x7f).checked_shl(shift)?;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let value = rest.get(..length)?;
        if index == STRINGS_BEFORE_EVENT {
            return Some(value);
        }
        rest = &rest[length..];
    }
    None
}

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

/// Appends the `JSONEachRow` line (newline included) of one event to `out`.
fn write_json_row(
    columns: &Columns<'_>,
    event: &UnifiedEvent,
    extras: &[(String, FieldPath)],
    out: &mut impl Write,
) {
    let civil = event.timestamp.civil();
    write!(
        out,
        "{{\"timestamp\":\"{:04}-{:02}-{:02} {:02}:{:02}:{:02}\",\"timestamp_ns\":{}",
        civil.year, civil.month, civil.day, civil.hour, civil.minute, civil.second, columns.nanos
    )
    .expect("writing to memory cannot fail");
    let fixed = FIXED_COLUMNS[2..]
        .iter()
        .map(|(name, _)| *name)
        .zip(columns.strings);
    for (column, value) in fixed {
        write_json_string(out, column, value);
    }
    write!(out, ",\"business_impact\":{:?}", columns.business_impact)
        .expect("writing to memory cannot fail");
    for (column, field) in extras {
        write_json_string(out, column, field.lookup(event).as_deref().unwrap_or(""));
    }
    writeln!(out, "}}").expect("writing to memory cannot fail");
}

/// Appends `,"column":"value"` to a `JSONEachRow` line.
fn write_json_string(out: &mut impl Write, column: &str, value: &str) {
    for piece in [b",\"", column.as_bytes(), b"\":"] {
        out.write_all(piece).expect("writing to memory cannot fail");
    }
    serde_json::to_writer(&mut *out, value).expect("a string always serialises");
}

/// The `event` column of a row line: the event's JSON form, for the dead-letter file.
fn event_of(line: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct EventColumn {
        event: String,
    }
    serde_json::from_slice::<EventColumn>(line)
        .map(|row| row.event)
        .unwrap_or_else(|_| String::from_utf8_lossy(line).into_owned())
}
