//! `route`: sends each event to the named output of every route whose [`Condition`] it passes
//! (`inputs = ["<name>.<route>"]`), and the events no route takes to `_unmatched`. Nothing is
//! sent on the default output. A batch whose events all go the same way is forwarded whole to
//! each of its outputs, sharing the events; a mixed batch is split, an event copied only for
//! the outputs after its first. Every part carries the batch's acknowledgements, so the source
//! hears about the batch once each part is settled. Outputs nothing reads are skipped, and
//! routes are evaluated only when their output, or `_unmatched`, is read.

use std::collections::BTreeMap;
use std::convert::Infallible;

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::{
    BatchStatus, BufferReceiver, BuildContext, ComponentConfig, ComponentError, ComponentFuture,
    ERRORS_OUTPUT, EventBatch, Transform, TransformContext, UnifiedEvent,
};

use crate::filter::CONDITION_ERROR;
use crate::util::condition::Condition;
use crate::util::split::{Destination, attach_error, send_parts};

/// The output of the events no route takes.
pub const UNMATCHED_OUTPUT: &str = "_unmatched";

/// Most routes one transform has: an event's outputs are one bit each of a `u64`, the last two
/// being `_unmatched` and `errors`.
const MAX_ROUTES: usize = 62;

/// Options of the `route` transform.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Route name → the condition an event must pass to be sent to the output of that name
    /// (a field test or a Rhai expression, as for `filter`), e.g.
    /// `{ critical = { field = "impact.severity", equals = "critical" } }`. An event
    /// passing several goes to each. Names use letters, digits, `_` and `-`; `errors` and
    /// `_unmatched` are taken. At most 62 routes. Events a Rhai condition fails on go to `<name>.errors`.
    #[serde(deserialize_with = "route_table")]
    pub routes: BTreeMap<String, Condition>,
}

/// Reads `routes`, checking the names where the table is written, so `tapio validate` reports
/// them with their line.
fn route_table<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Condition>, D::Error> {
    let routes = BTreeMap::<String, Condition>::deserialize(deserializer)?;
    if routes.is_empty() {
        return Err(serde::de::Error::custom(
            "needs at least one route, e.g. { critical = { field = \"impact.severity\", equals = \"critical\" } }",
        ));
    }
    if routes.len() > MAX_ROUTES {
        return Err(serde::de::Error::custom(format!(
            "{} routes; at most {MAX_ROUTES} are allowed",
            routes.len()
        )));
    }
    for name in routes.keys() {
        if name == ERRORS_OUTPUT || name == UNMATCHED_OUTPUT {
            return Err(serde::de::Error::custom(format!(
                "the route name \"{name}\" is taken by the output every route transform has"
            )));
        }
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(serde::de::Error::custom(format!(
                "the route name \"{name}\" may use only letters, digits, '_' and '-'"
            )));
        }
    }
    Ok(routes)
}

impl ComponentConfig for RouteConfig {
    type Component = dyn Transform;

    const NAMED_OUTPUTS: &'static [&'static str] = &[UNMATCHED_OUTPUT];

    fn named_outputs(&self) -> Vec<String> {
        self.routes
            .keys()
            .cloned()
            .chain([UNMATCHED_OUTPUT.to_owned()])
            .collect()
    }

    fn build(&self, cx: &BuildContext) -> Result<Box<dyn Transform>, ComponentError> {
        Ok(Box::new(Route {
            routes: self.routes.clone().into_iter().collect(),
            name: cx.name.clone(),
        }))
    }
}

struct Route {
    routes: Vec<(String, Condition)>,
    name: String,
}

/// The routes of a running transform, narrowed to what is read downstream.
struct Router {
    /// `(output index, condition)` of every route worth evaluating.
    evaluated: Vec<(usize, Condition)>,
    /// Whether a Rhai condition is among them: those need the events themselves, and may fail.
    scripted: bool,
    /// Output names by index: the routes, then `_unmatched`, then `errors`.
    outputs: Vec<String>,
    /// The bits of the routes whose output is read.
    read: u64,
    /// Whether `_unmatched` is read.
    unmatched_read: bool,
    /// The transform's name, for the events a condition fails on.
    name: String,
}

impl Router {
    fn new(route: Route, cx: &TransformContext) -> Self {
        let unmatched_read = cx.out.has_output(UNMATCHED_OUTPUT);
        let mut read = 0;
        let mut evaluated = Vec::new();
        let mut outputs = Vec::new();
        for (index, (name, condition)) in route.routes.into_iter().enumerate() {
            let is_read = cx.out.has_output(&name);
            if is_read {
                read |= 1 << index;
            }
            if is_read || unmatched_read {
                evaluated.push((index, condition));
            }
            outputs.push(name);
        }
        outputs.extend([UNMATCHED_OUTPUT.to_owned(), ERRORS_OUTPUT.to_owned()]);
        Router {
            scripted: evaluated.iter().any(|(_, c)| c.as_field().is_none()),
            evaluated,
            outputs,
            read,
            unmatched_read,
            name: route.name,
        }
    }

    fn unmatched_bit(&self) -> u64 {
        1 << (self.outputs.len() - 2)
    }

    fn errors_bit(&self) -> u64 {
        1 << (self.outputs.len() - 1)
    }

    /// The outputs an event goes to, one bit per output index, given how it fares with each
    /// condition; the first failure stops the tests.
    fn bits<E>(&self, mut passes: impl FnMut(&Condition) -> Result<bool, E>) -> Result<u64, E> {
        let mut matched = 0;
        for (index, condition) in &self.evaluated {
            if passes(condition)? {
                matched |= 1 << index;
            }
        }
        Ok(if matched == 0 && self.unmatched_read {
            self.unmatched_bit()
        } else {
            matched & self.read
        })
    }

    /// Where each event of `batch` goes. Field conditions read the shared events; Rhai ones
    /// get the batch's own copy, and an event they fail on goes to `errors` with the error.
    fn destinations(&self, batch: &mut EventBatch, cx: &TransformContext) -> Vec<u64> {
        if !self.scripted {
            let field_passes = |condition: &Condition, event: &UnifiedEvent| {
                condition
                    .as_field()
                    .is_some_and(|field| field.matches(event))
            };
            return batch
                .events()
                .iter()
                .map(|event| {
                    let Ok(bits) = self.bits::<Infallible>(|c| Ok(field_passes(c, event)));
                    bits
                })
                .collect();
        }
        let mut failed = 0;
        let destinations = batch
            .events_mut()
            .iter_mut()
            .map(|event| match self.bits(|c| c.test(event)) {
                Ok(bits) => bits,
                Err(message) => {
                    attach_error(event, &self.name, message);
                    failed += 1;
                    self.errors_bit()
                }
            })
            .collect();
        if failed > 0 {
            cx.metrics.add_errors(CONDITION_ERROR, failed);
        }
        destinations
    }

    /// Sends `batch` on to its outputs: whole when its events all go the same way, else split.
    async fn dispatch(&self, mut batch: EventBatch, cx: &mut TransformContext) {
        let destinations = self.destinations(&mut batch, cx);
        let Some(&first) = destinations.first() else {
            batch.ack(BatchStatus::Dropped);
            return;
        };
        if destinations.iter().all(|&bits| bits == first) {
            if first == 0 {
                batch.ack(BatchStatus::Dropped);
                return;
            }
            let last = highest_bit(first);
            for output in bits_of(first & !(1 << last)) {
                cx.out.send_to(&self.outputs[output], batch.clone()).await;
            }
            cx.out.send_to(&self.outputs[last], batch).await;
            return;
        }
        let mut parts: Vec<Vec<UnifiedEvent>> = vec![Vec::new(); self.outputs.len()];
        for (event, bits) in batch.take_events().into_iter().zip(destinations) {
            if bits == 0 {
                continue;
            }
            let last = highest_bit(bits);
            for output in bits_of(bits & !(1 << last)) {
                parts[output].push(event.clone());
            }
            parts[last].push(event);
        }
        let parts = parts
            .into_iter()
            .enumerate()
            .map(|(output, events)| (Destination::Named(&self.outputs[output]), events));
        send_parts(batch, parts, cx).await;
    }
}

fn highest_bit(bits: u64) -> usize {
    63 - bits.leading_zeros() as usize
}

/// The indices of the bits set in `bits`, lowest first.
fn bits_of(mut bits: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (bits != 0).then(|| {
            let index = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            index
        })
    })
}

impl Transform for Route {
    fn run(
        self: Box<Self>,
        mut input: BufferReceiver,
        mut cx: TransformContext,
    ) -> ComponentFuture {
        Box::pin(async move {
            let router = Router::new(*self, &cx);
            while let Some(batch) = input.recv().await {
                router.dispatch(batch, &mut cx).await;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::testing::{Rng, random_batches, run};
    use tapio_event::{AckToken, Severity};

    const ROUTES: &str = r#"
        [routes]
        critical = { field = "impact.severity", equals = "critical" }
        severe = { field = "impact.severity", in = ["error", "critical"] }
        web = { field = "process.comm", equals = "nginx" }
    "#;

    fn route(text: &str) -> RouteConfig {
        toml::from_str(text).unwrap()
    }

    fn build(config: &RouteConfig) -> Box<dyn Transform> {
        let cx = BuildContext {
            name: "r".into(),
            data_dir: std::env::temp_dir(),
            node_name: "n".into(),
        };
        config.build(&cx).unwrap()
    }

    #[test]
    fn outputs_are_the_routes_and_unmatched() {
        assert_eq!(
            route(ROUTES).named_outputs(),
            ["critical", "severe", "web", "_unmatched"]
        );
    }

    #[tokio::test]
    async fn each_event_reaches_every_route_it_matches() {
        for seed in 1..20 {
            let mut rng = Rng::new(seed);
            let batches = random_batches(&mut rng, 300);
            let events: Vec<_> = batches.iter().flat_map(|b| b.events().to_vec()).collect();
            let severity = |e: &UnifiedEvent| e.impact.as_ref().and_then(|i| i.severity);
            let select = |keep: &dyn Fn(&UnifiedEvent) -> bool| -> Vec<String> {
                events
                    .iter()
                    .filter(|e| keep(e))
                    .map(|e| e.source.clone())
                    .collect()
            };
            let critical = select(&|e| severity(e) == Some(Severity::Critical));
            let severe =
                select(&|e| matches!(severity(e), Some(Severity::Error | Severity::Critical)));
            let web = select(&|e| e.process.as_ref().unwrap().comm.as_deref() == Some("nginx"));
            let unmatched = select(&|e| {
                !matches!(severity(e), Some(Severity::Error | Severity::Critical))
                    && e.process.as_ref().unwrap().comm.as_deref() != Some("nginx")
            });
            let config = route(ROUTES);
            let got = run(
                build(&config),
                &["critical", "severe", "web", UNMATCHED_OUTPUT],
                batches,
            )
            .await;
            assert_eq!(got.sources("critical"), critical, "seed {seed}");
            assert_eq!(got.sources("severe"), severe, "seed {seed}");
            assert_eq!(got.sources("web"), web, "seed {seed}");
            assert_eq!(got.sources(UNMATCHED_OUTPUT), unmatched, "seed {seed}");
            assert!(
                got.sources("").is_empty(),
                "route sent on its default output"
            );
        }
    }

    #[tokio::test]
    async fn rhai_routes_agree_with_field_routes() {
        let scripted = r#"
            [routes]
            critical = 'event.impact?.severity == "critical"'
            severe = { field = "impact.severity", in = ["error", "critical"] }
            web = 'event.process.comm == "nginx"'
        "#;
        let outputs = ["critical", "severe", "web", UNMATCHED_OUTPUT];
        let mut rng = Rng::new(9);
        let batches = random_batches(&mut rng, 300);
        let by_field = run(build(&route(ROUTES)), &outputs, batches.clone()).await;
        let by_script = run(build(&route(scripted)), &outputs, batches).await;
        for output in outputs {
            assert_eq!(
                by_script.sources(output),
                by_field.sources(output),
                "{output}"
            );
        }
        let failing = route(r#"routes = { bad = 'event.source.len() > 0 && event.nothing()' }"#);
        let got = run(
            build(&failing),
            &["bad", ERRORS_OUTPUT],
            random_batches(&mut rng, 5),
        )
        .await;
        assert_eq!(got.sources(ERRORS_OUTPUT).len(), 5);
        assert_eq!(got.metrics.errors.get(CONDITION_ERROR), Some(&5));
    }

    #[tokio::test]
    async fn unread_outputs_get_nothing_and_unmatched_ignores_them() {
        let mut rng = Rng::new(7);
        let batches = random_batches(&mut rng, 100);
        let not_web: Vec<String> = batches
            .iter()
            .flat_map(|b| b.events())
            .filter(|e| e.process.as_ref().unwrap().comm.as_deref() != Some("nginx"))
            .filter(|e| {
                !matches!(
                    e.impact.as_ref().and_then(|i| i.severity),
                    Some(Severity::Error | Severity::Critical)
                )
            })
            .map(|e| e.source.clone())
            .collect();
        let got = run(build(&route(ROUTES)), &[UNMATCHED_OUTPUT], batches).await;
        assert_eq!(
            got.sources(UNMATCHED_OUTPUT),
            not_web,
            "an event taken by an unread route is still matched"
        );
    }

    #[tokio::test]
    async fn whole_batches_are_shared_and_parts_settle_the_source() {
        let mut rng = Rng::new(3);
        let mut uniform = random_batches(&mut rng, 4).remove(0);
        for event in uniform.events_mut() {
            event.process.as_mut().unwrap().comm = Some("nginx".into());
            event.impact = None;
        }
        let (token, mut status) = AckToken::new();
        let mut events = uniform.take_events();
        events[0].impact = Some(Box::new(tapio_event::ImpactContext {
            severity: Some(Severity::Critical),
            ..Default::default()
        }));
        let mixed = EventBatch::with_ack(events.clone(), token);
        let whole = EventBatch::new(events[1..].to_vec());
        let config = route(
            r#"routes = { web = { field = "process.comm", equals = "nginx" }, nginx = { field = "process.comm", matches = "^ngi" } }"#,
        );
        let got = run(build(&config), &["web", "nginx"], vec![whole]).await;
        assert_eq!(
            got.outputs["web"][0].events().as_ptr(),
            got.outputs["nginx"][0].events().as_ptr(),
            "a batch going the same way everywhere was copied"
        );
        let config = route(
            r#"routes = { web = { field = "process.comm", equals = "nginx" }, critical = { field = "impact.severity", equals = "critical" } }"#,
        );
        let got = run(build(&config), &["web", "critical"], vec![mixed]).await;
        assert_eq!(got.sources("critical").len(), 1);
        assert_eq!(got.sources("web").len(), events.len());
        let mut parts = got.outputs.into_values().flatten();
        parts.next().unwrap().ack(BatchStatus::Delivered);
        assert_eq!(status.try_status(), None, "settled before every part was");
        for part in parts {
            part.ack(BatchStatus::Failed);
        }
        assert_eq!(status.status().await, BatchStatus::Failed);
    }

    #[test]
    fn bad_route_names_are_config_errors() {
        for (text, expected) in [
            (
                r#"routes = { errors = { field = "source", exists = true } }"#,
                "taken",
            ),
            (
                r#"routes = { "a.b" = { field = "source", exists = true } }"#,
                "only letters",
            ),
            ("routes = {}", "at least one route"),
        ] {
            let error = toml::from_str::<RouteConfig>(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
