//! Component counters in the Prometheus text exposition format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tapio_event::MetricsSnapshot;
use tapio_event::metrics::LATENCY_BUCKETS_MICROS;

/// One metric family: name, type, help, and how to read its value(s) off a snapshot.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&MetricsSnapshot) -> u64,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "tapio_component_received_events_total",
        kind: "counter",
        help: "Events a component received (read, for a source).",
        value: |s| s.events_in,
    },
    Family {
        name: "tapio_component_sent_events_total",
        kind: "counter",
        help: "Events a component passed on (written, for a sink).",
        value: |s| s.events_out,
    },
    Family {
        name: "tapio_component_sent_bytes_total",
        kind: "counter",
        help: "Bytes a sink wrote.",
        value: |s| s.bytes_out,
    },
    Family {
        name: "tapio_buffer_events",
        kind: "gauge",
        help: "Events waiting in a component's input buffer.",
        value: |s| s.buffer_events,
    },
    Family {
        name: "tapio_buffer_max_events",
        kind: "gauge",
        help: "Capacity of a component's input buffer.",
        value: |s| s.buffer_max,
    },
];

/// A family keyed by a second label (drop reason, error kind, evicted state, …).
struct KeyedFamily {
    name: &'static str,
    kind: &'static str,
    label: &'static str,
    help: &'static str,
    counts: fn(&MetricsSnapshot) -> &BTreeMap<&'static str, u64>,
}

const KEYED_FAMILIES: &[KeyedFamily] = &[
    KeyedFamily {
        name: "tapio_component_discarded_events_total",
        kind: "counter",
        label: "reason",
        help: "Events dropped on purpose, by reason.",
        counts: |s| &s.dropped,
    },
    KeyedFamily {
        name: "tapio_component_errors_total",
        kind: "counter",
        label: "error_type",
        help: "Events that failed, by kind of error.",
        counts: |s| &s.errors,
    },
    KeyedFamily {
        name: "tapio_component_evictions_total",
        kind: "counter",
        label: "state",
        help: "Entries pushed out of a component's bounded state at its bound, by state.",
        counts: |s| &s.evicted,
    },
    KeyedFamily {
        name: "tapio_component_warnings_total",
        kind: "counter",
        label: "warning",
        help: "Warnings a component logged, by kind (a relist, an API error).",
        counts: |s| &s.warnings,
    },
    KeyedFamily {
        name: "tapio_component_state_objects",
        kind: "gauge",
        label: "state",
        help: "Objects a component holds in its state, by what they are.",
        counts: |s| &s.state_sizes,
    },
];

/// Renders every component's counters, with `component`, `component_kind` and `component_type` labels.
pub fn render(snapshots: &[MetricsSnapshot]) -> String {
    let mut out = String::new();
    let labels = |s: &MetricsSnapshot| {
        format!(
            "component=\"{}\",component_kind=\"{}\",component_type=\"{}\"",
            escape(&s.name),
            s.kind.as_str(),
            escape(&s.component_type)
        )
    };
    for family in FAMILIES {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            family.name, family.help, family.name, family.kind
        );
        for s in snapshots {
            let _ = writeln!(
                out,
                "{}{{{}}} {}",
                family.name,
                labels(s),
                (family.value)(s)
            );
        }
    }
    for family in KEYED_FAMILIES {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            family.name, family.help, family.name, family.kind
        );
        for s in snapshots {
            for (key, value) in (family.counts)(s) {
                let _ = writeln!(
                    out,
                    "{}{{{},{}=\"{key}\"}} {value}",
                    family.name,
                    labels(s),
                    family.label
                );
            }
        }
    }
    render_latency(&mut out, snapshots, labels);
    out
}

/// How many config reloads were applied and refused (`SIGHUP`, `--watch-config`).
pub fn render_reloads(out: &mut String, (ok, failed): (u64, u64)) {
    let name = "tapio_config_reloads_total";
    let _ = writeln!(
        out,
        "# HELP {name} Config reloads, by result: applied (ok) or refused (failed).\n# TYPE {name} counter\n{name}{{result=\"ok\"}} {ok}\n{name}{{result=\"failed\"}} {failed}"
    );
}

/// The live taps (`tapio tap`): how many are open, and how many were dropped for reading
/// slower than the pipeline.
pub fn render_taps(out: &mut String, taps: &tapio_event::tap::Taps) {
    let _ = writeln!(
        out,
        "# HELP tapio_tap_clients Live taps now.\n# TYPE tapio_tap_clients gauge\ntapio_tap_clients {}\n# HELP tapio_tap_dropped_clients_total Taps dropped because their client read slower than the pipeline.\n# TYPE tapio_tap_dropped_clients_total counter\ntapio_tap_dropped_clients_total {}",
        taps.clients(),
        taps.dropped_clients()
    );
}

/// The latency histogram, in seconds as Prometheus names it; components that timed no batch
/// yet (sources, or nothing received) are left out rather than shown as all zero.
fn render_latency(
    out: &mut String,
    snapshots: &[MetricsSnapshot],
    labels: impl Fn(&MetricsSnapshot) -> String,
) {
    const NAME: &str = "tapio_component_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {NAME} Time a batch spends in a component: from entering its input buffer to being sent on (transforms) or taken for writing (sinks).\n# TYPE {NAME} histogram"
    );
    for s in snapshots.iter().filter(|s| s.latency.count > 0) {
        let labels = labels(s);
        for (bound, count) in LATENCY_BUCKETS_MICROS.iter().zip(&s.latency.cumulative) {
            let seconds = *bound as f64 / 1e6;
            let _ = writeln!(out, "{NAME}_bucket{{{labels},le=\"{seconds}\"}} {count}");
        }
        let count = s.latency.count;
        let sum = s.latency.sum_micros as f64 / 1e6;
        let _ = writeln!(out, "{NAME}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{NAME}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{NAME}_count{{{labels}}} {count}");
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_event::{ComponentKind, ComponentMetrics};

    #[test]
    fn exposes_counters_with_labels() {
        let metrics = ComponentMetrics::new("out", "file", ComponentKind::Sink);
        metrics.add_events_out(42);
        metrics.add_dropped("buffer_full", 3);
        metrics.add_evicted("entity_cache_keys", 5);
        let text = render(&[metrics.snapshot()]);
        assert!(
            text.contains("# TYPE tapio_component_sent_events_total counter"),
            "{text}"
        );
        assert!(
            text.contains("tapio_component_sent_events_total{component=\"out\",component_kind=\"sink\",component_type=\"file\"} 42"),
            "{text}"
        );
        assert!(text.contains(
            "tapio_component_discarded_events_total{component=\"out\",component_kind=\"sink\",component_type=\"file\",reason=\"buffer_full\"} 3"
        ));
        assert!(text.contains(
            "tapio_component_evictions_total{component=\"out\",component_kind=\"sink\",component_type=\"file\",state=\"entity_cache_keys\"} 5"
        ));
    }

    #[test]
    fn exposes_warnings_as_counters_and_state_sizes_as_gauges() {
        let metrics = ComponentMetrics::new("cluster", "kubernetes", ComponentKind::Source);
        metrics.add_warning("relist");
        metrics.add_warning("relist");
        metrics.set_state_size("pods", 7);
        metrics.set_state_size("pods", 5);
        let text = render(&[metrics.snapshot()]);
        let labels =
            "component=\"cluster\",component_kind=\"source\",component_type=\"kubernetes\"";
        for line in [
            "# TYPE tapio_component_warnings_total counter".to_owned(),
            format!("tapio_component_warnings_total{{{labels},warning=\"relist\"}} 2"),
            "# TYPE tapio_component_state_objects gauge".to_owned(),
            format!("tapio_component_state_objects{{{labels},state=\"pods\"}} 5"),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
    }

    #[test]
    fn exposes_latency_as_a_histogram_in_seconds() {
        let metrics = ComponentMetrics::new("enrich", "semantic_enrich", ComponentKind::Transform);
        metrics.observe_latency(std::time::Duration::from_micros(300));
        metrics.observe_latency(std::time::Duration::from_secs(20));
        let idle = ComponentMetrics::new("in", "stdin", ComponentKind::Source);
        let text = render(&[metrics.snapshot(), idle.snapshot()]);
        let labels =
            "component=\"enrich\",component_kind=\"transform\",component_type=\"semantic_enrich\"";
        for line in [
            "# TYPE tapio_component_latency_seconds histogram".to_owned(),
            format!("tapio_component_latency_seconds_bucket{{{labels},le=\"0.0001\"}} 0"),
            format!("tapio_component_latency_seconds_bucket{{{labels},le=\"0.0005\"}} 1"),
            format!("tapio_component_latency_seconds_bucket{{{labels},le=\"10\"}} 1"),
            format!("tapio_component_latency_seconds_bucket{{{labels},le=\"+Inf\"}} 2"),
            format!("tapio_component_latency_seconds_sum{{{labels}}} 20.0003"),
            format!("tapio_component_latency_seconds_count{{{labels}}} 2"),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert!(
            !text.contains(
                "component=\"in\",component_kind=\"source\",component_type=\"stdin\",le="
            )
        );
    }
}
