//! The conversion is lossless: for generated events of every shape (each context present or
//! absent, each optional field set, empty or unset, free-form `application` JSON of any depth),
//! the public JSON form survives JSON → domain → protobuf bytes → domain → JSON unchanged.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use prost::Message;
use serde_json::Value;
use tapio_event::*;

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z0-9_./-]{1,12}", "\\PC{0,8}"]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    option::of(text())
}

fn words() -> impl Strategy<Value = Vec<String>> {
    vec(text(), 0..4)
}

fn map() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map("[a-z.]{1,8}", text(), 0..4)
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.0), Just(1.0), -1e300f64..1e300, 0.0f64..1.0]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        number().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn event_type() -> impl Strategy<Value = EventType> {
    prop_oneof![
        Just(EventType::Network),
        Just(EventType::Process),
        Just(EventType::Kubernetes),
        Just(EventType::Systemd),
        Just(EventType::Application),
        Just(EventType::Correlation),
        Just(EventType::Anomaly),
    ]
}

fn entity() -> impl Strategy<Value = Entity> {
    (
        prop_oneof![
            Just(EntityType::Pod),
            Just(EntityType::Node),
            Just(EntityType::Container),
            Just(EntityType::Service),
            Just(EntityType::Deployment),
            Just(EntityType::Host),
            Just(EntityType::Process),
        ],
        text(),
        opt_text(),
        opt_text(),
        opt_text(),
        map(),
    )
        .prop_map(|(kind, id, name, namespace, node, attributes)| Entity {
            kind,
            id,
            name,
            namespace,
            node,
            attributes,
        })
}

fn network() -> impl Strategy<Value = NetworkContext> {
    (
        (opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
        (opt_text(), opt_text(), any::<Option<u16>>()),
        (opt_text(), any::<Option<u16>>(), opt_text()),
    )
        .prop_map(
            |(
                (operation, interface_name, ip_address, netns, container_id),
                (protocol, src_ip, src_port),
                (dst_ip, dst_port, error),
            )| NetworkContext {
                operation,
                interface_name,
                ip_address,
                netns,
                container_id,
                protocol,
                src_ip,
                src_port,
                dst_ip,
                dst_port,
                error,
            },
        )
}

fn process() -> impl Strategy<Value = ProcessContext> {
    (
        (
            opt_text(),
            any::<Option<u32>>(),
            any::<Option<u32>>(),
            opt_text(),
            opt_text(),
        ),
        (any::<Option<u32>>(), any::<Option<u64>>(), opt_text()),
        (any::<Option<i32>>(), any::<Option<i32>>()),
    )
        .prop_map(
            |(
                (operation, pid, ppid, comm, filename),
                (uid, cgroup_id, container_id),
                (exit_code, signal),
            )| {
                ProcessContext {
                    operation,
                    pid,
                    ppid,
                    comm,
                    filename,
                    uid,
                    cgroup_id,
                    container_id,
                    exit_code,
                    signal,
                }
            },
        )
}

fn kubernetes() -> impl Strategy<Value = KubernetesContext> {
    (
        (opt_text(), opt_text(), opt_text(), opt_text()),
        option::of(prop_oneof![
            Just(KubeAction::Added),
            Just(KubeAction::Modified),
            Just(KubeAction::Deleted),
        ]),
        (
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
            opt_text(),
        ),
        map(),
    )
        .prop_map(
            |(
                (kind, name, namespace, uid),
                action,
                (reason, message, pod_ip, node, phase, container_id),
                labels,
            )| {
                KubernetesContext {
                    kind,
                    name,
                    namespace,
                    uid,
                    action,
                    reason,
                    message,
                    pod_ip,
                    node,
                    phase,
                    container_id,
                    labels,
                }
            },
        )
}

fn systemd() -> impl Strategy<Value = SystemdContext> {
    (
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        opt_text(),
        any::<Option<u32>>(),
        (
            opt_text(),
            any::<Option<i32>>(),
            any::<Option<u32>>(),
            words(),
        ),
    )
        .prop_map(
            |(
                unit,
                slice,
                active_state,
                sub_state,
                result,
                job_type,
                main_pid,
                (container_id, exit_status, restarts, journal),
            )| SystemdContext {
                unit,
                slice,
                active_state,
                sub_state,
                result,
                job_type,
                main_pid,
                container_id,
                exit_status,
                restarts,
                journal,
            },
        )
}

fn impact() -> impl Strategy<Value = ImpactContext> {
    (
        option::of(prop_oneof![
            Just(Severity::Debug),
            Just(Severity::Info),
            Just(Severity::Warning),
            Just(Severity::Error),
            Just(Severity::Critical),
        ]),
        option::of(number()),
        any::<Option<bool>>(),
        any::<Option<bool>>(),
        opt_text(),
        words(),
    )
        .prop_map(
            |(
                severity,
                business_impact,
                customer_facing,
                sla_at_risk,
                predicted_outcome,
                affected_services,
            )| {
                ImpactContext {
                    severity,
                    business_impact,
                    customer_facing,
                    sla_at_risk,
                    predicted_outcome,
                    affected_services,
                }
            },
        )
}

fn correlation() -> impl Strategy<Value = CorrelationContext> {
    (
        (opt_text(), opt_text(), words(), any::<Option<u64>>()),
        (words(), opt_text(), opt_text(), option::of(number())),
    )
        .prop_map(
            |(
                (correlation_id, pattern, related_events, related_events_omitted),
                (related_correlations, root_cause, recommended_action, confidence),
            )| {
                CorrelationContext {
                    correlation_id,
                    pattern,
                    related_events,
                    related_events_omitted,
                    related_correlations,
                    root_cause,
                    recommended_action,
                    confidence,
                }
            },
        )
}

fn anomaly() -> impl Strategy<Value = AnomalyContext> {
    (
        text(),
        0u64..1_000_000,
        0u32..1_000_000_000,
        any::<u64>(),
        number(),
        number(),
    )
        .prop_map(
            |(signal, secs, nanos, observed, baseline, deviation)| AnomalyContext {
                signal,
                interval: ConfigDuration(Duration::new(secs, nanos)),
                observed,
                baseline,
                deviation,
            },
        )
}

fn semantic() -> impl Strategy<Value = SemanticContext> {
    (
        opt_text(),
        opt_text(),
        words(),
        opt_text(),
        option::of(number()),
    )
        .prop_map(
            |(intent, category, tags, narrative, confidence)| SemanticContext {
                intent,
                category,
                tags,
                narrative,
                confidence,
            },
        )
}

fn trace() -> impl Strategy<Value = TraceContext> {
    ("[0-9a-f]{32}", "[0-9a-f]{16}", option::of("[0-9a-f]{16}")).prop_map(
        |(trace_id, span_id, parent_span_id)| TraceContext {
            trace_id,
            span_id,
            parent_span_id,
        },
    )
}

fn boxed<T: std::fmt::Debug + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<Option<Box<T>>> {
    option::of(s.prop_map(Box::new)).boxed()
}

fn event() -> impl Strategy<Value = UnifiedEvent> {
    (
        (
            text(),
            0i64..4_102_444_800_000_000_000,
            event_type(),
            text(),
        ),
        (
            boxed(semantic()),
            boxed(trace()),
            boxed(entity()),
            boxed(network()),
        ),
        (boxed(process()), boxed(kubernetes()), boxed(systemd())),
        option::of(btree_map("[a-z]{1,6}", json(), 0..4)),
        (boxed(impact()), boxed(correlation()), boxed(anomaly())),
        option::of(vec(any::<u8>(), 0..16)),
    )
        .prop_map(
            |(
                (id, nanos, kind, source),
                (semantic, trace_context, entity, network),
                (process, kubernetes, systemd),
                application,
                (impact, correlation, anomaly),
                raw_data,
            )| {
                let mut event = UnifiedEvent::new(kind, source, Timestamp(nanos));
                event.id = id;
                event.semantic = semantic;
                event.trace_context = trace_context;
                event.entity = entity;
                event.network = network;
                event.process = process;
                event.kubernetes = kubernetes;
                event.systemd = systemd;
                event.application = application.map(|m| Box::new(m.into_iter().collect()));
                event.impact = impact;
                event.correlation = correlation;
                event.anomaly = anomaly;
                event.raw_data = raw_data;
                event
            },
        )
}

/// Runs in a thread with a large stack: the event strategy's generated types nest deeply and
/// overflow the default test thread's stack in debug builds.
#[test]
fn json_to_proto_to_json_is_the_identity() {
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(|| {
            let mut runner = TestRunner::new(ProptestConfig::with_cases(2000));
            runner
                .run(&event(), |generated| {
                    let json = serde_json::to_string(&generated).unwrap();
                    let read: UnifiedEvent = serde_json::from_str(&json).unwrap();
                    let bytes = tapio_proto::event_to_proto(&read).encode_to_vec();
                    let wire = tapio_proto::v1::UnifiedEvent::decode(bytes.as_slice()).unwrap();
                    let back = tapio_proto::event_from_proto(wire).unwrap();
                    prop_assert_eq!(serde_json::to_string(&back).unwrap(), json);
                    prop_assert_eq!(back, read);
                    Ok(())
                })
                .unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}
