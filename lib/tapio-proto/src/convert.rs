//! Domain `UnifiedEvent` ⇄ wire `tapio.v1.UnifiedEvent`. Every JSON field has its protobuf field
//! and presence is kept (`optional` scalars, message-typed contexts), so nothing is lost either
//! way. Decoding checks what protobuf cannot express: enum values, port ranges, the
//! `application` JSON text, the anomaly interval.

use std::fmt;
use std::time::Duration;

use tapio_event as domain;

use crate::v1;

/// Why a wire event is not a valid domain event; names the field so a sender can fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversionError {
    /// The field path, such as `network.src_port`.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConversionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.field, self.message)
    }
}

impl std::error::Error for ConversionError {}

fn invalid(field: &'static str, message: impl Into<String>) -> ConversionError {
    ConversionError {
        field,
        message: message.into(),
    }
}

/// The wire form of `event`.
pub fn event_to_proto(event: &domain::UnifiedEvent) -> v1::UnifiedEvent {
    v1::UnifiedEvent {
        id: event.id.clone(),
        timestamp_unix_nano: event.timestamp.as_nanos(),
        r#type: event_type_to_proto(event.kind) as i32,
        source: event.source.clone(),
        semantic: event.semantic.as_deref().map(|s| v1::SemanticContext {
            intent: s.intent.clone(),
            category: s.category.clone(),
            tags: s.tags.clone(),
            narrative: s.narrative.clone(),
            confidence: s.confidence,
        }),
        trace_context: event.trace_context.as_deref().map(|t| v1::TraceContext {
            trace_id: t.trace_id.clone(),
            span_id: t.span_id.clone(),
            parent_span_id: t.parent_span_id.clone(),
        }),
        entity: event.entity.as_deref().map(|e| v1::Entity {
            r#type: entity_type_to_proto(e.kind) as i32,
            id: e.id.clone(),
            name: e.name.clone(),
            namespace: e.namespace.clone(),
            node: e.node.clone(),
            attributes: e.attributes.clone(),
        }),
        network: event.network.as_deref().map(|n| v1::NetworkContext {
            operation: n.operation.clone(),
            interface_name: n.interface_name.clone(),
            ip_address: n.ip_address.clone(),
            netns: n.netns.clone(),
            container_id: n.container_id.clone(),
            protocol: n.protocol.clone(),
            src_ip: n.src_ip.clone(),
            src_port: n.src_port.map(u32::from),
            dst_ip: n.dst_ip.clone(),
            dst_port: n.dst_port.map(u32::from),
            error: n.error.clone(),
        }),
        process: event.process.as_deref().map(|p| v1::ProcessContext {
            operation: p.operation.clone(),
            pid: p.pid,
            ppid: p.ppid,
            comm: p.comm.clone(),
            filename: p.filename.clone(),
            uid: p.uid,
            cgroup_id: p.cgroup_id,
            container_id: p.container_id.clone(),
            exit_code: p.exit_code,
            signal: p.signal,
        }),
        kubernetes: event.kubernetes.as_deref().map(|k| v1::KubernetesContext {
            kind: k.kind.clone(),
            name: k.name.clone(),
            namespace: k.namespace.clone(),
            uid: k.uid.clone(),
            action: k
                .action
                .map_or(v1::KubeAction::Unspecified, kube_action_to_proto)
                as i32,
            reason: k.reason.clone(),
            message: k.message.clone(),
            pod_ip: k.pod_ip.clone(),
            node: k.node.clone(),
            phase: k.phase.clone(),
            container_id: k.container_id.clone(),
            labels: k.labels.clone(),
        }),
        systemd: event.systemd.as_deref().map(|s| v1::SystemdContext {
            unit: s.unit.clone(),
            slice: s.slice.clone(),
            active_state: s.active_state.clone(),
            sub_state: s.sub_state.clone(),
            result: s.result.clone(),
            job_type: s.job_type.clone(),
            main_pid: s.main_pid,
            container_id: s.container_id.clone(),
            exit_status: s.exit_status,
            restarts: s.restarts,
            journal: s.journal.clone(),
        }),
        application_json: event
            .application
            .as_deref()
            .map(|a| serde_json::to_string(a).expect("a JSON object always serializes")),
        impact: event.impact.as_deref().map(|i| v1::ImpactContext {
            severity: i
                .severity
                .map_or(v1::Severity::Unspecified, severity_to_proto) as i32,
            business_impact: i.business_impact,
            customer_facing: i.customer_facing,
            sla_at_risk: i.sla_at_risk,
            predicted_outcome: i.predicted_outcome.clone(),
            affected_services: i.affected_services.clone(),
        }),
        correlation: event
            .correlation
            .as_deref()
            .map(|c| v1::CorrelationContext {
                correlation_id: c.correlation_id.clone(),
                pattern: c.pattern.clone(),
                related_events: c.related_events.clone(),
                related_events_omitted: c.related_events_omitted,
                related_correlations: c.related_correlations.clone(),
                root_cause: c.root_cause.clone(),
                recommended_action: c.recommended_action.clone(),
                confidence: c.confidence,
            }),
        anomaly: event.anomaly.as_deref().map(|a| v1::AnomalyContext {
            signal: a.signal.clone(),
            interval_seconds: a.interval.0.as_secs(),
            interval_nanos: a.interval.0.subsec_nanos(),
            observed: a.observed,
            baseline: a.baseline,
            deviation: a.deviation,
        }),
        raw_data: event.raw_data.clone(),
    }
}

/// The domain form of a wire event, or the first field that has no domain meaning.
pub fn event_from_proto(event: v1::UnifiedEvent) -> Result<domain::UnifiedEvent, ConversionError> {
    let kind = match v1::EventType::try_from(event.r#type) {
        Ok(v1::EventType::Network) => domain::EventType::Network,
        Ok(v1::EventType::Process) => domain::EventType::Process,
        Ok(v1::EventType::Kubernetes) => domain::EventType::Kubernetes,
        Ok(v1::EventType::Systemd) => domain::EventType::Systemd,
        Ok(v1::EventType::Application) => domain::EventType::Application,
        Ok(v1::EventType::Correlation) => domain::EventType::Correlation,
        Ok(v1::EventType::Anomaly) => domain::EventType::Anomaly,
        Ok(v1::EventType::Unspecified) => return Err(invalid("type", "is required")),
        Err(_) => return Err(invalid("type", format!("unknown value {}", event.r#type))),
    };
    let mut out = domain::UnifiedEvent::new(
        kind,
        event.source,
        domain::Timestamp(event.timestamp_unix_nano),
    );
    out.id = event.id;
    out.semantic = event.semantic.map(|s| {
        Box::new(domain::SemanticContext {
            intent: s.intent,
            category: s.category,
            tags: s.tags,
            narrative: s.narrative,
            confidence: s.confidence,
        })
    });
    out.trace_context = event.trace_context.map(|t| {
        Box::new(domain::TraceContext {
            trace_id: t.trace_id,
            span_id: t.span_id,
            parent_span_id: t.parent_span_id,
        })
    });
    out.entity = event.entity.map(entity_from_proto).transpose()?;
    out.network = event.network.map(network_from_proto).transpose()?;
    out.process = event.process.map(|p| {
        Box::new(domain::ProcessContext {
            operation: p.operation,
            pid: p.pid,
            ppid: p.ppid,
            comm: p.comm,
            filename: p.filename,
            uid: p.uid,
            cgroup_id: p.cgroup_id,
            container_id: p.container_id,
            exit_code: p.exit_code,
            signal: p.signal,
        })
    });
    out.kubernetes = event.kubernetes.map(kubernetes_from_proto).transpose()?;
    out.systemd = event.systemd.map(|s| {
        Box::new(domain::SystemdContext {
            unit: s.unit,
            slice: s.slice,
            active_state: s.active_state,
            sub_state: s.sub_state,
            result: s.result,
            job_type: s.job_type,
            main_pid: s.main_pid,
            container_id: s.container_id,
            exit_status: s.exit_status,
            restarts: s.restarts,
            journal: s.journal,
        })
    });
    out.application = event
        .application_json
        .map(|text| {
            serde_json::from_str(&text)
                .map(Box::new)
                .map_err(|e| invalid("application_json", format!("is not a JSON object: {e}")))
        })
        .transpose()?;
    out.impact = event.impact.map(impact_from_proto).transpose()?;
    out.correlation = event.correlation.map(|c| {
        Box::new(domain::CorrelationContext {
            correlation_id: c.correlation_id,
            pattern: c.pattern,
            related_events: c.related_events,
            related_events_omitted: c.related_events_omitted,
            related_correlations: c.related_correlations,
            root_cause: c.root_cause,
            recommended_action: c.recommended_action,
            confidence: c.confidence,
        })
    });
    out.anomaly = event
        .anomaly
        .map(|a| {
            if a.interval_nanos >= 1_000_000_000 {
                return Err(invalid("anomaly.interval_nanos", "must be below 1e9"));
            }
            Ok(Box::new(domain::AnomalyContext {
                signal: a.signal,
                interval: domain::ConfigDuration(Duration::new(
                    a.interval_seconds,
                    a.interval_nanos,
                )),
                observed: a.observed,
                baseline: a.baseline,
                deviation: a.deviation,
            }))
        })
        .transpose()?;
    out.raw_data = event.raw_data;
    Ok(out)
}

/// Converts a batch of wire events; the ones that do not convert come back apart, with their
/// position and reason, so a receiver can count and report them without losing the rest.
pub fn events_from_proto(
    events: Vec<v1::UnifiedEvent>,
) -> (Vec<domain::UnifiedEvent>, Vec<(usize, ConversionError)>) {
    let mut good = Vec::with_capacity(events.len());
    let mut bad = Vec::new();
    for (index, event) in events.into_iter().enumerate() {
        match event_from_proto(event) {
            Ok(event) => good.push(event),
            Err(e) => bad.push((index, e)),
        }
    }
    (good, bad)
}

fn entity_from_proto(e: v1::Entity) -> Result<Box<domain::Entity>, ConversionError> {
    let kind = match v1::EntityType::try_from(e.r#type) {
        Ok(v1::EntityType::Pod) => domain::EntityType::Pod,
        Ok(v1::EntityType::Node) => domain::EntityType::Node,
        Ok(v1::EntityType::Container) => domain::EntityType::Container,
        Ok(v1::EntityType::Service) => domain::EntityType::Service,
        Ok(v1::EntityType::Deployment) => domain::EntityType::Deployment,
        Ok(v1::EntityType::Host) => domain::EntityType::Host,
        Ok(v1::EntityType::Process) => domain::EntityType::Process,
        Ok(v1::EntityType::Unspecified) => return Err(invalid("entity.type", "is required")),
        Err(_) => {
            return Err(invalid(
                "entity.type",
                format!("unknown value {}", e.r#type),
            ));
        }
    };
    Ok(Box::new(domain::Entity {
        kind,
        id: e.id,
        name: e.name,
        namespace: e.namespace,
        node: e.node,
        attributes: e.attributes,
    }))
}

fn port(field: &'static str, value: Option<u32>) -> Result<Option<u16>, ConversionError> {
    value
        .map(|v| u16::try_from(v).map_err(|_| invalid(field, format!("{v} is not a port"))))
        .transpose()
}

fn network_from_proto(
    n: v1::NetworkContext,
) -> Result<Box<domain::NetworkContext>, ConversionError> {
    Ok(Box::new(domain::NetworkContext {
        operation: n.operation,
        interface_name: n.interface_name,
        ip_address: n.ip_address,
        netns: n.netns,
        container_id: n.container_id,
        protocol: n.protocol,
        src_ip: n.src_ip,
        src_port: port("network.src_port", n.src_port)?,
        dst_ip: n.dst_ip,
        dst_port: port("network.dst_port", n.dst_port)?,
        error: n.error,
    }))
}

fn kubernetes_from_proto(
    k: v1::KubernetesContext,
) -> Result<Box<domain::KubernetesContext>, ConversionError> {
    let action = match v1::KubeAction::try_from(k.action) {
        Ok(v1::KubeAction::Unspecified) => None,
        Ok(v1::KubeAction::Added) => Some(domain::KubeAction::Added),
        Ok(v1::KubeAction::Modified) => Some(domain::KubeAction::Modified),
        Ok(v1::KubeAction::Deleted) => Some(domain::KubeAction::Deleted),
        Err(_) => {
            return Err(invalid(
                "kubernetes.action",
                format!("unknown value {}", k.action),
            ));
        }
    };
    Ok(Box::new(domain::KubernetesContext {
        kind: k.kind,
        name: k.name,
        namespace: k.namespace,
        uid: k.uid,
        action,
        reason: k.reason,
        message: k.message,
        pod_ip: k.pod_ip,
        node: k.node,
        phase: k.phase,
        container_id: k.container_id,
        labels: k.labels,
    }))
}

fn impact_from_proto(i: v1::ImpactContext) -> Result<Box<domain::ImpactContext>, ConversionError> {
    let severity = match v1::Severity::try_from(i.severity) {
        Ok(v1::Severity::Unspecified) => None,
        Ok(v1::Severity::Debug) => Some(domain::Severity::Debug),
        Ok(v1::Severity::Info) => Some(domain::Severity::Info),
        Ok(v1::Severity::Warning) => Some(domain::Severity::Warning),
        Ok(v1::Severity::Error) => Some(domain::Severity::Error),
        Ok(v1::Severity::Critical) => Some(domain::Severity::Critical),
        Err(_) => {
            return Err(invalid(
                "impact.severity",
                format!("unknown value {}", i.severity),
            ));
        }
    };
    Ok(Box::new(domain::ImpactContext {
        severity,
        business_impact: i.business_impact,
        customer_facing: i.customer_facing,
        sla_at_risk: i.sla_at_risk,
        predicted_outcome: i.predicted_outcome,
        affected_services: i.affected_services,
    }))
}

fn event_type_to_proto(kind: domain::EventType) -> v1::EventType {
    match kind {
        domain::EventType::Network => v1::EventType::Network,
        domain::EventType::Process => v1::EventType::Process,
        domain::EventType::Kubernetes => v1::EventType::Kubernetes,
        domain::EventType::Systemd => v1::EventType::Systemd,
        domain::EventType::Application => v1::EventType::Application,
        domain::EventType::Correlation => v1::EventType::Correlation,
        domain::EventType::Anomaly => v1::EventType::Anomaly,
    }
}

fn entity_type_to_proto(kind: domain::EntityType) -> v1::EntityType {
    match kind {
        domain::EntityType::Pod => v1::EntityType::Pod,
        domain::EntityType::Node => v1::EntityType::Node,
        domain::EntityType::Container => v1::EntityType::Container,
        domain::EntityType::Service => v1::EntityType::Service,
        domain::EntityType::Deployment => v1::EntityType::Deployment,
        domain::EntityType::Host => v1::EntityType::Host,
        domain::EntityType::Process => v1::EntityType::Process,
    }
}

fn kube_action_to_proto(action: domain::KubeAction) -> v1::KubeAction {
    match action {
        domain::KubeAction::Added => v1::KubeAction::Added,
        domain::KubeAction::Modified => v1::KubeAction::Modified,
        domain::KubeAction::Deleted => v1::KubeAction::Deleted,
    }
}

fn severity_to_proto(severity: domain::Severity) -> v1::Severity {
    match severity {
        domain::Severity::Debug => v1::Severity::Debug,
        domain::Severity::Info => v1::Severity::Info,
        domain::Severity::Warning => v1::Severity::Warning,
        domain::Severity::Error => v1::Severity::Error,
        domain::Severity::Critical => v1::Severity::Critical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_names_the_field_that_has_no_domain_meaning() {
        let mut wire = event_to_proto(&domain::UnifiedEvent::new(
            domain::EventType::Network,
            "demo",
            domain::Timestamp(1),
        ));
        wire.network = Some(v1::NetworkContext {
            dst_port: Some(70000),
            ..Default::default()
        });
        assert_eq!(
            event_from_proto(wire.clone()).unwrap_err().field,
            "network.dst_port"
        );
        wire.network = None;
        wire.r#type = 0;
        assert_eq!(event_from_proto(wire.clone()).unwrap_err().field, "type");
        wire.r#type = 99;
        assert_eq!(event_from_proto(wire.clone()).unwrap_err().field, "type");
        wire.r#type = v1::EventType::Application as i32;
        wire.application_json = Some("[1]".into());
        assert_eq!(
            event_from_proto(wire.clone()).unwrap_err().field,
            "application_json"
        );
        wire.application_json = None;
        wire.impact = Some(v1::ImpactContext {
            severity: 42,
            ..Default::default()
        });
        let (good, bad) = events_from_proto(vec![wire.clone(), {
            let mut ok = wire;
            ok.impact = None;
            ok
        }]);
        assert_eq!(good.len(), 1);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].0, 0);
        assert_eq!(bad[0].1.field, "impact.severity");
    }
}
