//! `GET /v1/components`: the lifecycle state and every running component's counters as JSON,
//! the same counters `/metrics` exposes, for programs that want numbers rather than Prometheus
//! text (`tapio top` reads it every interval). The types are public so a client decodes the
//! answer with the very shape the server writes.

use serde::{Deserialize, Serialize};
use tapio_event::MetricsSnapshot;

use crate::ApiState;

/// The answer of `GET /v1/components`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentsAnswer {
    /// The lifecycle state, named as `/health` names it (`starting`, `running`, …).
    pub health: String,
    /// Every component running now, in the order of the topology's list.
    pub components: Vec<ComponentCounters>,
}

/// One component's counters since it started (a reload that restarts it starts them over).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentCounters {
    /// The component's name in the config.
    pub id: String,
    /// `source`, `transform` or `sink`.
    pub kind: String,
    /// The component's `type` (`demo`, `file`, …).
    #[serde(rename = "type")]
    pub component_type: String,
    /// Events received (read, for a source).
    pub received_events: u64,
    /// Events passed on (written, for a sink).
    pub sent_events: u64,
    /// Bytes a sink wrote.
    pub sent_bytes: u64,
    /// Events that failed, whatever the kind of error.
    pub errors: u64,
    /// Events dropped on purpose, whatever the reason.
    pub discarded: u64,
    /// Events waiting in the component's input buffer now.
    pub buffer_events: u64,
    /// Capacity of the input buffer; 0 when the component has none (a source).
    pub buffer_max_events: u64,
}

impl From<&MetricsSnapshot> for ComponentCounters {
    fn from(snapshot: &MetricsSnapshot) -> Self {
        ComponentCounters {
            id: snapshot.name.clone(),
            kind: snapshot.kind.as_str().to_owned(),
            component_type: snapshot.component_type.clone(),
            received_events: snapshot.events_in,
            sent_events: snapshot.events_out,
            sent_bytes: snapshot.bytes_out,
            errors: snapshot.errors_total(),
            discarded: snapshot.dropped_total(),
            buffer_events: snapshot.buffer_events,
            buffer_max_events: snapshot.buffer_max,
        }
    }
}

/// What `GET /v1/components` answers for `state` now.
pub(crate) fn answer(state: &ApiState) -> ComponentsAnswer {
    let (_, health) = crate::rest::lifecycle(state.health.get());
    ComponentsAnswer {
        health: health.to_owned(),
        components: state
            .snapshots()
            .iter()
            .map(ComponentCounters::from)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;
    use std::sync::Arc;
    use tapio_event::{ComponentKind, ComponentMetrics};
    use tapio_topology::{ComponentList, HealthState};

    use crate::tests::{call, state};

    #[tokio::test]
    async fn every_component_is_listed_with_its_totals() {
        let source = Arc::new(ComponentMetrics::new("gen", "demo", ComponentKind::Source));
        source.add_events_out(10);
        let sink = Arc::new(ComponentMetrics::new("out", "file", ComponentKind::Sink));
        sink.add_events_in(9);
        sink.add_events_out(8);
        sink.add_bytes_out(800);
        sink.add_errors("write", 1);
        sink.add_errors("encode", 2);
        sink.set_buffer_max(100);
        sink.set_buffer_events(25);
        sink.add_dropped("buffer_full", 4);
        let state = ApiState {
            metrics: Arc::new(ComponentList::new(vec![source, sink])),
            ..state()
        };
        state.health.set(HealthState::Running);
        let (status, body) = call(&state, "GET", "/v1/components", "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer: ComponentsAnswer = serde_json::from_str(&body).unwrap();
        assert_eq!(answer.health, "running");
        let ids: Vec<_> = answer.components.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["gen", "out"]);
        assert_eq!(answer.components[0].kind, "source");
        assert_eq!(answer.components[0].sent_events, 10);
        let out = &answer.components[1];
        assert_eq!(
            (out.kind.as_str(), out.component_type.as_str()),
            ("sink", "file")
        );
        assert_eq!(
            (out.received_events, out.sent_events, out.sent_bytes),
            (9, 8, 800)
        );
        assert_eq!((out.errors, out.discarded), (3, 4));
        assert_eq!((out.buffer_events, out.buffer_max_events), (25, 100));
        let raw: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(raw["components"][1]["type"], "file", "{body}");
    }
}
