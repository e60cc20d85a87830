//! The `--summary` table printed when a run ends: one row per component, the same counters
//! `/metrics` serves.

use std::fmt::Write as _;

use tapio_event::MetricsSnapshot;

/// Renders the table (header plus one row per component).
pub fn table(snapshots: &[MetricsSnapshot]) -> String {
    let headers = [
        "component",
        "kind",
        "type",
        "events_in",
        "events_out",
        "dropped",
        "errors",
        "bytes_out",
    ];
    let rows: Vec<[String; 8]> = snapshots
        .iter()
        .map(|s| {
            [
                s.name.clone(),
                s.kind.as_str().to_owned(),
                s.component_type.clone(),
                s.events_in.to_string(),
                s.events_out.to_string(),
                s.dropped_total().to_string(),
                s.errors_total().to_string(),
                s.bytes_out.to_string(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let sep = if i + 1 == cells.len() { "\n" } else { "  " };
            let _ = write!(out, "{cell:<width$}{sep}");
        }
    };
    line(&headers);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_event::{ComponentKind, ComponentMetrics};

    #[test]
    fn one_aligned_row_per_component() {
        let metrics = ComponentMetrics::new("demo", "demo", ComponentKind::Source);
        metrics.add_events_out(1000);
        let text = table(&[metrics.snapshot()]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("component  kind    type  events_in  events_out"),
            "{text}"
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            ["demo", "source", "demo", "0", "1000", "0", "0", "0"]
        );
    }
}
