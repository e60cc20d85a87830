//! `impact_assess`: answers "how much does this matter?" for every event, and most carefully for
//! correlation summaries. A base assessment comes from what happened (the pattern of a summary,
//! or the event's own facts), then the entity's criticality (critical namespaces and user rules
//! by namespace, label or service) raises or lowers it, and SLA targets flag services at risk.
//! Stateless and in place: each batch is assessed and forwarded as it is.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tapio_event::{
    BuildContext, ComponentConfig, ComponentError, EntityType, EventType, ImpactContext, Severity,
    Transform, TransformContext, UnifiedEvent,
};

use crate::util::in_place::run_in_place;

/// A criticality rule: entities it matches get `criticality` (and optionally a customer-facing
/// flag). Every condition given must hold; the last matching rule wins.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CriticalityRule {
    /// Matches the entity's namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Matches the service (the `app` label, else the pod name without its replica suffixes).
    #[serde(default)]
    pub service: Option<String>,
    /// Matches a Kubernetes label, written `"key=value"`.
    #[serde(default)]
    pub label: Option<String>,
    /// From 0 (unimportant) to 1 (business critical); 0.5 is neutral, 0 scales the impact to
    /// 60% and 1 to 140%.
    pub criticality: f64,
    /// Whether customers see this entity directly. Unset: as the base assessment says.
    #[serde(default)]
    pub customer_facing: Option<bool>,
}

/// Options of the `impact_assess` transform.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImpactAssessConfig {
    /// Namespaces whose entities are business critical (criticality 1).
    #[serde(default)]
    pub critical_namespaces: Vec<String>,
    /// Criticality rules (`[[transforms.<name>.rules]]`), applied after `critical_namespaces`;
    /// the last matching rule wins.
    #[serde(default)]
    pub rules: Vec<CriticalityRule>,
    /// Availability targets per service (`{ checkout = 0.999 }`). A service with a target is
    /// flagged `sla_at_risk` by error and critical events, and by warnings too when the target
    /// is 99.9% or stricter.
    #[serde(default)]
    pub sla_targets: BTreeMap<String, f64>,
}

impl ComponentConfig for ImpactAssessConfig {
    type Component = dyn Transform;

    fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Transform>, ComponentError> {
        let in_range = |v: f64| (0.0..=1.0).contains(&v);
        if let Some(rule) = self.rules.iter().find(|r| !in_range(r.criticality)) {
            return Err(ComponentError::config(format!(
                "rules: criticality {} is outside 0..=1",
                rule.criticality
            )));
        }
        if let Some((service, target)) = self.sla_targets.iter().find(|(_, t)| !in_range(**t)) {
            return Err(ComponentError::config(format!(
                "sla_targets.{service}: {target} is not an availability between 0 and 1"
            )));
        }
        Ok(Box::new(ImpactAssess {
            config: self.clone(),
        }))
    }
}

struct ImpactAssess {
    config: ImpactAssessConfig,
}

impl Transform for ImpactAssess {
    fn run(
        self: Box<Self>,
        input: tapio_event::BufferReceiver,
        cx: TransformContext,
    ) -> tapio_event::ComponentFuture {
        let config = self.config;
        run_in_place(
            move |events| {
                for event in events.iter_mut() {
                    let impact = assess(&config, event);
                    event.impact = Some(Box::new(impact));
                }
            },
            input,
            cx,
        )
    }
}

/// What happened, before the entity's criticality is considered.
struct Base {
    severity: Severity,
    business_impact: f64,
    customer_facing: bool,
    outcome: &'static str,
}

const fn base(
    severity: Severity,
    business_impact: f64,
    customer_facing: bool,
    outcome: &'static str,
) -> Base {
    Base {
        severity,
        business_impact,
        customer_facing,
        outcome,
    }
}

/// The assessment of a correlation summary, by pattern.
fn pattern_base(pattern: &str) -> Base {
    match pattern {
        "pod-deployment-sequence" => base(Severity::Info, 0.1, false, "successful-deployment"),
        "network-failure-cascade" => base(Severity::Error, 0.8, true, "service-degradation"),
        "oom-kill-cascade" => base(
            Severity::Error,
            0.65,
            false,
            "repeated-restarts-until-memory-is-fixed",
        ),
        "crash-loop" => base(
            Severity::Error,
            0.6,
            false,
            "service-unavailable-until-fixed",
        ),
        "node-runtime-failure" => base(
            Severity::Critical,
            0.9,
            true,
            "node-outage-pods-rescheduled",
        ),
        _ => base(Severity::Warning, 0.5, false, "incident"),
    }
}

/// The assessment of a single event from its own facts.
fn event_base(event: &UnifiedEvent) -> Base {
    if let Some(reason) = event
        .kubernetes
        .as_deref()
        .and_then(|k| k.reason.as_deref())
    {
        return match reason {
            "NodeNotReady" => base(Severity::Critical, 0.7, false, "node-outage"),
            "OOMKilled" => base(Severity::Error, 0.5, false, "pod-restart"),
            "BackOff" | "CrashLoopBackOff" | "Error" => {
                base(Severity::Error, 0.45, false, "pod-unavailable")
            }
            "Unhealthy" => base(Severity::Warning, 0.35, false, "pod-removed-from-service"),
            "Killing" | "FailedScheduling" => base(Severity::Warning, 0.2, false, "pod-restart"),
            _ => base(Severity::Info, 0.02, false, "none"),
        };
    }
    if event
        .systemd
        .as_deref()
        .and_then(|s| s.active_state.as_deref())
        == Some("failed")
    {
        let node_unit = event
            .entity
            .as_ref()
            .is_some_and(|e| e.kind == EntityType::Node);
        return if node_unit {
            base(Severity::Critical, 0.7, false, "node-outage")
        } else {
            base(Severity::Error, 0.35, false, "pod-restart")
        };
    }
    let network = event.network.as_deref();
    if network.is_some_and(|n| n.error.is_some()) {
        return base(Severity::Error, 0.4, false, "pod-network-down");
    }
    let process = event.process.as_deref();
    let operation = network
        .and_then(|n| n.operation.as_deref())
        .or(process.and_then(|p| p.operation.as_deref()));
    match operation {
        Some("timeout" | "error") => base(Severity::Warning, 0.25, false, "requests-failing"),
        Some("retransmit") => base(Severity::Warning, 0.15, false, "latency-increase"),
        Some("oom_kill") => base(Severity::Error, 0.5, false, "pod-restart"),
        Some("exit") if process.and_then(|p| p.exit_code).is_some_and(|c| c != 0) => {
            base(Severity::Warning, 0.2, false, "process-crash")
        }
        _ if event.kind == EventType::Application => base(Severity::Info, 0.01, false, "none"),
        _ => base(Severity::Debug, 0.0, false, "none"),
    }
}

/// The service an event's entity belongs to: the `app` label, else the pod name without its
/// ReplicaSet and pod hash suffixes (`api-7d9f8b6c5-x2k4q` → `api`).
fn service_of(event: &UnifiedEvent) -> Option<String> {
    let app = event
        .kubernetes
        .as_deref()
        .and_then(|k| k.labels.get("app"))
        .or_else(|| {
            event
                .entity
                .as_deref()
                .and_then(|e| e.attributes.get("app"))
        });
    if let Some(app) = app {
        return Some(app.clone());
    }
    let entity = event.entity.as_deref()?;
    if entity.kind != EntityType::Pod {
        return None;
    }
    let name = entity.name.as_deref()?;
    let mut parts: Vec<&str> = name.rsplitn(3, '-').collect();
    Some(match parts.len() {
        3 => parts.pop().expect("three parts").to_owned(),
        _ => name.to_owned(),
    })
}

/// The full assessment of one event.
fn assess(config: &ImpactAssessConfig, event: &UnifiedEvent) -> ImpactContext {
    let base = match (
        &event.kind,
        event
            .correlation
            .as_deref()
            .and_then(|c| c.pattern.as_deref()),
    ) {
        (EventType::Correlation, Some(pattern)) => pattern_base(pattern),
        _ => event_base(event),
    };
    let namespace = event.entity.as_deref().and_then(|e| e.namespace.as_deref());
    let service = service_of(event);
    let mut criticality = 0.5;
    let mut customer_facing = base.customer_facing;
    if namespace.is_some_and(|ns| config.critical_namespaces.iter().any(|c| c == ns)) {
        criticality = 1.0;
    }
    for rule in &config.rules {
        let label_matches = |spec: &String| {
            spec.split_once('=').is_some_and(|(key, value)| {
                event
                    .kubernetes
                    .as_deref()
                    .and_then(|k| k.labels.get(key))
                    .is_some_and(|v| v == value)
            })
        };
        let matches = rule
            .namespace
            .as_deref()
            .is_none_or(|ns| namespace == Some(ns))
            && rule
                .service
                .as_deref()
                .is_none_or(|s| service.as_deref() == Some(s))
            && rule.label.as_ref().is_none_or(label_matches);
        if matches {
            criticality = rule.criticality;
            customer_facing = rule.customer_facing.unwrap_or(customer_facing);
        }
    }
    // Neutral criticality keeps the base; 0 scales it to 60%, 1 to 140%.
    let business_impact = (base.business_impact * (0.6 + 0.8 * criticality)).clamp(0.0, 1.0);
    let severity =
        if criticality >= 0.9 && business_impact >= 0.85 && base.severity == Severity::Error {
            Severity::Critical
        } else {
            base.severity
        };
    let sla_at_risk = service
        .as_ref()
        .and_then(|s| config.sla_targets.get(s))
        .is_some_and(|&target| {
            let threshold = if target >= 0.999 {
                Severity::Warning
            } else {
                Severity::Error
            };
            severity >= threshold
        });
    ImpactContext {
        severity: Some(severity),
        business_impact: Some((business_impact * 1000.0).round() / 1000.0),
        customer_facing: Some(customer_facing),
        sla_at_risk: Some(sla_at_risk),
        predicted_outcome: Some(base.outcome.to_owned()),
        affected_services: service.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tapio_event::{CorrelationContext, Entity, KubernetesContext, Timestamp};

    fn pod_event(kind: EventType, namespace: &str, name: &str) -> UnifiedEvent {
        let mut event = UnifiedEvent::new(kind, "test", Timestamp(1));
        let mut entity = Entity::new(EntityType::Pod, "uid-1");
        entity.namespace = Some(namespace.into());
        entity.name = Some(name.into());
        event.entity = Some(Box::new(entity));
        event
    }

    fn summary(pattern: &str, namespace: &str) -> UnifiedEvent {
        let mut event = pod_event(EventType::Correlation, namespace, "api-7d9f8b6c5-x2k4q");
        event.correlation = Some(Box::new(CorrelationContext {
            pattern: Some(pattern.into()),
            ..Default::default()
        }));
        event
    }

    fn assess_default(event: &UnifiedEvent) -> ImpactContext {
        assess(&ImpactAssessConfig::default(), event)
    }

    #[test]
    fn summaries_are_scored_by_pattern() {
        let deploy = assess_default(&summary("pod-deployment-sequence", "shop"));
        assert_eq!(deploy.severity, Some(Severity::Info));
        assert!(deploy.business_impact.unwrap() <= 0.3);
        assert_eq!(
            deploy.predicted_outcome.as_deref(),
            Some("successful-deployment")
        );
        let network = assess_default(&summary("network-failure-cascade", "shop"));
        assert!(matches!(
            network.severity,
            Some(Severity::Error | Severity::Critical)
        ));
        assert_eq!(network.customer_facing, Some(true));
        assert!(network.business_impact.unwrap() >= 0.7);
        for pattern in ["oom-kill-cascade", "crash-loop"] {
            assert_eq!(
                assess_default(&summary(pattern, "shop")).severity,
                Some(Severity::Error),
                "{pattern}"
            );
        }
        assert_eq!(
            assess_default(&summary("node-runtime-failure", "shop")).severity,
            Some(Severity::Critical)
        );
        assert_eq!(network.affected_services, vec!["api".to_string()]);
    }

    #[test]
    fn criticality_raises_and_lowers_scores() {
        let config = ImpactAssessConfig {
            critical_namespaces: vec!["payments".into()],
            rules: vec![CriticalityRule {
                namespace: Some("batch".into()),
                service: None,
                label: None,
                criticality: 0.0,
                customer_facing: Some(false),
            }],
            ..Default::default()
        };
        let neutral = assess(&config, &summary("oom-kill-cascade", "shop"))
            .business_impact
            .unwrap();
        let critical = assess(&config, &summary("oom-kill-cascade", "payments"));
        let low = assess(&config, &summary("network-failure-cascade", "batch"));
        assert!(critical.business_impact.unwrap() > neutral);
        assert_eq!(
            critical.severity,
            Some(Severity::Critical),
            "a critical namespace escalates errors"
        );
        assert!(low.business_impact.unwrap() < 0.7);
        assert_eq!(low.customer_facing, Some(false));
    }

    #[test]
    fn label_and_service_rules_and_sla_targets() {
        let config = ImpactAssessConfig {
            rules: vec![CriticalityRule {
                namespace: None,
                service: None,
                label: Some("tier=frontend".into()),
                criticality: 0.9,
                customer_facing: Some(true),
            }],
            sla_targets: BTreeMap::from([("api".to_string(), 0.999), ("batch".to_string(), 0.95)]),
            ..Default::default()
        };
        let mut unhealthy = pod_event(EventType::Kubernetes, "shop", "api-7d9f8b6c5-x2k4q");
        unhealthy.kubernetes = Some(Box::new(KubernetesContext {
            reason: Some("Unhealthy".into()),
            labels: [("tier".to_string(), "frontend".to_string())].into(),
            ..Default::default()
        }));
        let impact = assess(&config, &unhealthy);
        assert_eq!(impact.customer_facing, Some(true));
        assert_eq!(impact.severity, Some(Severity::Warning));
        assert_eq!(
            impact.sla_at_risk,
            Some(true),
            "a 99.9% target is at risk from warnings"
        );
        let mut batch = unhealthy.clone();
        batch.entity.as_mut().unwrap().name = Some("batch-6c5d4f7b8-abcde".into());
        assert_eq!(
            assess(&config, &batch).sla_at_risk,
            Some(false),
            "a 95% target needs an error"
        );
    }

    #[test]
    fn plain_events_get_modest_scores() {
        let mut exec = pod_event(EventType::Process, "shop", "api-7d9f8b6c5-x2k4q");
        exec.process = Some(Box::new(tapio_event::ProcessContext {
            operation: Some("exec".into()),
            ..Default::default()
        }));
        let impact = assess_default(&exec);
        assert_eq!(impact.severity, Some(Severity::Debug));
        assert_eq!(impact.business_impact, Some(0.0));
        let mut crash = exec.clone();
        crash.process.as_mut().unwrap().operation = Some("exit".into());
        crash.process.as_mut().unwrap().exit_code = Some(1);
        assert_eq!(assess_default(&crash).severity, Some(Severity::Warning));
    }

    #[test]
    fn services_come_from_labels_or_pod_names() {
        let event = pod_event(EventType::Process, "shop", "checkout-6tglczpxk8-fc7g8");
        assert_eq!(service_of(&event).as_deref(), Some("checkout"));
        let event = pod_event(EventType::Process, "shop", "standalone");
        assert_eq!(service_of(&event).as_deref(), Some("standalone"));
    }
}
