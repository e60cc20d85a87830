//! How the dashboard looks: a header (where, the lifecycle state or the error, the totals), the
//! table of components and the keys. Drawing reads a [`Dashboard`] and nothing else, so a test
//! draws one on ratatui's `TestBackend` and reads the screen back as text.

use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style, Stylize as _};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Row as TableRow, Table};

use super::model::{Dashboard, Row, Totals};

/// Where the dashboard reads from and how often, for its header.
pub struct Source<'a> {
    /// The API's address as the user gave it.
    pub address: &'a str,
    /// How often the API is read.
    pub interval: Duration,
}

/// The table's columns: title and width.
const COLUMNS: [(&str, Constraint); 9] = [
    ("ID", Constraint::Fill(2)),
    ("KIND", Constraint::Length(9)),
    ("TYPE", Constraint::Fill(1)),
    ("IN/S", Constraint::Length(10)),
    ("OUT/S", Constraint::Length(10)),
    ("ERRORS", Constraint::Length(8)),
    ("ERR/S", Constraint::Length(8)),
    ("DISCARDED", Constraint::Length(9)),
    ("BUFFER", Constraint::Length(20)),
];

/// Draws `dashboard` over the whole frame.
pub fn draw(frame: &mut Frame, dashboard: &Dashboard, source: &Source) {
    let [header, table, keys] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header_lines(dashboard, source)), header);
    let widths = COLUMNS.map(|(_, width)| width);
    let titles = TableRow::new(COLUMNS.map(|(title, _)| title))
        .style(Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED));
    let rows = dashboard.rows.iter().map(|row| TableRow::new(cells(row)));
    frame.render_widget(Table::new(rows, widths).header(titles), table);
    frame.render_widget(Line::from("q, Esc or Ctrl-C: quit").dim(), keys);
}

/// The first line says where and how often; the second what the pipeline does, or why it
/// cannot be read.
fn header_lines(dashboard: &Dashboard, source: &Source) -> Vec<Line<'static>> {
    let health = dashboard.health.as_deref().unwrap_or("-");
    let first = Line::from(format!(
        "tapio top · {} · health: {health} · every {:?}",
        source.address, source.interval
    ))
    .bold();
    let second = match (&dashboard.error, dashboard.attempted) {
        (Some(error), _) => Line::from(format!(
            "error: {error} (retrying every {:?})",
            source.interval
        ))
        .red()
        .bold(),
        (None, false) => Line::from(format!("connecting to {}…", source.address)),
        (None, true) => {
            let totals = Totals::of(&dashboard.rows);
            Line::from(format!(
                "{} components · ingested {} ev/s · delivered {} ev/s · errors {} · discarded {}",
                totals.components,
                rate(totals.ingested_per_sec),
                rate(totals.delivered_per_sec),
                totals.errors,
                totals.discarded
            ))
        }
    };
    vec![first, second]
}

/// A row's cells, in the order of [`COLUMNS`].
fn cells(row: &Row) -> [String; 9] {
    let buffer = match row.buffer_percent() {
        Some(percent) => format!(
            "{}/{} ({percent:.0}%)",
            row.buffer_events, row.buffer_max_events
        ),
        None => "-".to_owned(),
    };
    [
        row.id.clone(),
        row.kind.clone(),
        row.component_type.clone(),
        rate(row.received_per_sec),
        rate(row.sent_per_sec),
        row.errors.to_string(),
        rate(row.errors_per_sec),
        row.discarded.to_string(),
        buffer,
    ]
}

/// A rate with one decimal, `-` when there is none yet.
fn rate(per_sec: Option<f64>) -> String {
    per_sec.map_or_else(|| "-".to_owned(), |value| format!("{value:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::tests::{answer, counters};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use std::time::Instant;

    /// The screen after drawing `dashboard` on 120×12, one string per line.
    fn screen(dashboard: &Dashboard) -> Vec<String> {
        let mut terminal = Terminal::new(TestBackend::new(120, 12)).unwrap();
        let source = Source {
            address: "127.0.0.1:8686",
            interval: Duration::from_secs(1),
        };
        terminal
            .draw(|frame| draw(frame, dashboard, &source))
            .unwrap();
        let buffer = terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect()
            })
            .collect()
    }

    /// The cells of the line whose first cell is `id`.
    fn line_of(screen: &[String], id: &str) -> Vec<String> {
        screen
            .iter()
            .map(|line| {
                line.split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .find(|cells| cells.first().is_some_and(|first| first == id))
            .unwrap_or_else(|| panic!("no line for {id} in\n{}", screen.join("\n")))
    }

    #[test]
    fn components_are_drawn_with_their_rates_and_buffer_fill() {
        let start = Instant::now();
        let mut dashboard = Dashboard::default();
        dashboard.record(
            start,
            Ok(answer(vec![
                counters("gen", "source", 0, 100, 0),
                counters("out", "sink", 100, 100, 0),
            ])),
        );
        let mut later = answer(vec![
            counters("gen", "source", 0, 350, 0),
            counters("out", "sink", 350, 300, 3),
        ]);
        later.components[1].buffer_events = 50;
        later.components[1].discarded = 7;
        dashboard.record(start + Duration::from_millis(500), Ok(later));
        let screen = screen(&dashboard);
        assert!(screen[0].contains("127.0.0.1:8686"), "{}", screen[0]);
        assert!(screen[0].contains("health: running"), "{}", screen[0]);
        assert!(
            screen[1].contains(
                "2 components · ingested 500.0 ev/s · delivered 400.0 ev/s · errors 3 · discarded 7"
            ),
            "{}",
            screen[1]
        );
        assert_eq!(
            line_of(&screen, "ID"),
            [
                "ID",
                "KIND",
                "TYPE",
                "IN/S",
                "OUT/S",
                "ERRORS",
                "ERR/S",
                "DISCARDED",
                "BUFFER"
            ]
        );
        assert_eq!(
            line_of(&screen, "gen"),
            [
                "gen",
                "source",
                "source_type",
                "0.0",
                "500.0",
                "0",
                "0.0",
                "0",
                "0/100",
                "(0%)"
            ]
        );
        assert_eq!(
            line_of(&screen, "out"),
            [
                "out",
                "sink",
                "sink_type",
                "500.0",
                "400.0",
                "3",
                "6.0",
                "7",
                "50/100",
                "(50%)"
            ]
        );
        assert!(screen.last().unwrap().contains("q, Esc or Ctrl-C: quit"));
    }

    #[test]
    fn the_first_sample_shows_dashes_for_rates() {
        let mut dashboard = Dashboard::default();
        let mut first = answer(vec![counters("gen", "source", 0, 100, 1)]);
        first.components[0].buffer_max_events = 0;
        dashboard.record(Instant::now(), Ok(first));
        let screen = screen(&dashboard);
        assert_eq!(
            line_of(&screen, "gen"),
            ["gen", "source", "source_type", "-", "-", "1", "-", "0", "-"]
        );
        assert!(screen[1].contains("ingested - ev/s"), "{}", screen[1]);
    }

    #[test]
    fn an_unreachable_api_is_said_in_the_header() {
        let mut dashboard = Dashboard::default();
        assert!(screen(&dashboard)[1].contains("connecting to 127.0.0.1:8686"));
        dashboard.record(
            Instant::now(),
            Err("cannot reach the Tapio API at 127.0.0.1:8686: Connection refused".into()),
        );
        let screen = screen(&dashboard);
        assert!(screen[0].contains("health: -"), "{}", screen[0]);
        assert!(
            screen[1].contains(
                "error: cannot reach the Tapio API at 127.0.0.1:8686: Connection refused (retrying every 1s)"
            ),
            "{}",
            screen[1]
        );
    }
}
