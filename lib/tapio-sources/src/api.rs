//! `api`: events POSTed to the API's `POST /v1/events` (on `[api] address`) enter the pipeline
//! here. The body is one JSON event, a JSON array of events, or NDJSON (one event a line); each
//! event gets the contract's defaults (`id`, `timestamp`) as from any NDJSON reader. A body with
//! a line that is not an event is refused whole with the line's number (nothing of it enters the
//! pipeline) and its bad lines are counted (`invalid_event`).
//!
//! Backpressure: a request is answered once this source handed its events to the pipeline, so a
//! full pipeline makes clients wait instead of growing a queue. Without a source of this type
//! `POST /v1/events` answers 404.
//!
//! The source owns an [`ApiIngest`] handle; the topology hands it up to the API (layers only
//! look down), so the source knows nothing of HTTP.

use std::sync::{Arc, OnceLock};

use schemars::JsonSchema;
use serde::Deserialize;
use tapio_event::codec::{DecodeError, Decoder};
use tapio_event::{
    BuildContext, ByteSize, ComponentConfig, ComponentError, ComponentFuture, ComponentMetrics,
    EventBatch, Source, SourceContext, Timestamp, UnifiedEvent,
};
use tokio::sync::{mpsc, oneshot};

/// Options of the `api` source.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiSourceConfig {
    /// Largest request body `POST /v1/events` accepts (larger: HTTP 413).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: ByteSize,
}

fn default_max_body_bytes() -> ByteSize {
    ByteSize(10 << 20)
}

/// One request's events and who waits for them to be taken.
struct Submission {
    events: Vec<UnifiedEvent>,
    taken: oneshot::Sender<()>,
}

/// The API's side of the source: decodes bodies and submits them. Cloning is cheap.
#[derive(Clone)]
pub struct ApiIngest {
    queue: mpsc::Sender<Submission>,
    max_body_bytes: usize,
    metrics: Arc<OnceLock<Arc<ComponentMetrics>>>,
}

/// Why submitted events did not enter the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRunning;

impl std::fmt::Display for NotRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the api source is not running (the pipeline is starting or stopping)")
    }
}

/// Why a body is not events: how many lines (or array elements) are bad, and the first,
/// named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBody {
    /// Lines (or array elements) that are not events, counted as `invalid_event` errors.
    pub bad: usize,
    /// The first of them, named (`line 3: ...`), for the client.
    pub first: String,
}

/// The events of `body`: a JSON array of events, or one event a line (a single JSON object
/// is one line), each given a missing `id` or `timestamp` as any NDJSON reader does. The error
/// names the first bad line (or array element). Shared with the API's analysis calls, which
/// take events the same way without a source.
pub fn decode_events(body: &[u8]) -> Result<Vec<UnifiedEvent>, BadBody> {
    let now = Timestamp::now();
    let mut decoder = Decoder::default();
    let mut events = Vec::new();
    let mut first = None;
    let mut bad = 0;
    let mut check =
        |decoded: Result<UnifiedEvent, DecodeError>, name: &dyn Fn() -> String| match decoded {
            Ok(event) => events.push(event),
            Err(e) => {
                bad += 1;
                first.get_or_insert_with(|| format!("{}: {e}", name()));
            }
        };
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let items: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(|e| BadBody {
            bad: 1,
            first: format!("the body is not a JSON array: {e}"),
        })?;
        for (i, item) in items.iter().enumerate() {
            check(
                decoder.decode_json(item.to_string().as_bytes(), now),
                &|| format!("array element {}", i + 1),
            );
        }
    } else {
        for (i, line) in body.split(|b| *b == b'\n').enumerate() {
            if !line.iter().all(u8::is_ascii_whitespace) {
                check(decoder.decode_json(line, now), &|| {
                    format!("line {}", i + 1)
                });
            }
        }
    }
    match first {
        Some(first) => Err(BadBody { bad, first }),
        None => Ok(events),
    }
}

impl ApiIngest {
    /// The largest body to read.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The events of `body` (see [`decode_events`]); bad lines are counted as this source's
    /// `invalid_event` errors.
    pub fn decode(&self, body: &[u8]) -> Result<Vec<UnifiedEvent>, String> {
        decode_events(body).map_err(|BadBody { bad, first }| {
            if let Some(metrics) = self.metrics.get() {
                metrics.add_errors("invalid_event", bad);
            }
            first
        })
    }

    /// Hands `events` to the pipeline; returns once the source sent them on.
    pub async fn submit(&self, events: Vec<UnifiedEvent>) -> Result<(), NotRunning> {
        let (taken, waiting) = oneshot::channel();
        self.queue
            .send(Submission { events, taken })
            .await
            .map_err(|_| NotRunning)?;
        waiting.await.map_err(|_| NotRunning)
    }
}

impl ApiSourceConfig {
    /// The source and its handle, for the topology to hand the handle to the API.
    pub fn build_shared(&self) -> Result<(ApiIngest, Box<dyn Source>), ComponentError> {
        if self.max_body_bytes.0 == 0 {
            return Err(ComponentError::config(
                "`max_body_bytes` must be more than 0",
            ));
        }
        let (queue, submissions) = mpsc::channel(1);
        let metrics = Arc::new(OnceLock::new());
        let ingest = ApiIngest {
            queue,
            max_body_bytes: usize::try_from(self.max_body_bytes.0).unwrap_or(usize::MAX),
            metrics: Arc::clone(&metrics),
        };
        Ok((
            ingest,
            Box::new(ApiSource {
                submissions,
                metrics,
            }),
        ))
    }
}

impl ComponentConfig for ApiSourceConfig {
    type Component = dyn Source;

    /// A source nothing submits to (as in `tapio test`); the topology uses
    /// [`ApiSourceConfig::build_shared`].
    fn build(&self, _cx: &BuildContext) -> Result<Box<dyn Source>, ComponentError> {
        self.build_shared().map(|(_, source)| source)
    }
}

struct ApiSource {
    submissions: mpsc::Receiver<Submission>,
    metrics: Arc<OnceLock<Arc<ComponentMetrics>>>,
}

impl Source for ApiSource {
    fn run(self: Box<Self>, cx: SourceContext) -> ComponentFuture {
        Box::pin(async move {
            let SourceContext {
                mut out,
                mut shutdown,
                metrics,
            } = cx;
            let _ = self.metrics.set(Arc::clone(&metrics));
            let mut submissions = self.submissions;
            loop {
                let submission = tokio::select! {
                    () = shutdown.triggered() => break,
                    submission = submissions.recv() => match submission {
                        Some(submission) => submission,
                        None => break,
                    },
                };
                metrics.add_events_in(submission.events.len());
                if out.send(EventBatch::new(submission.events)).await.is_err() {
                    break;
                }
                let _ = submission.taken.send(());
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest() -> ApiIngest {
        let config = ApiSourceConfig {
            max_body_bytes: default_max_body_bytes(),
        };
        config.build_shared().unwrap().0
    }

    #[test]
    fn bodies_decode_as_ndjson_a_single_object_or_an_array() {
        let ingest = ingest();
        let line = |id: &str| format!(r#"{{"id":"{id}","type":"process","source":"t"}}"#);
        let ndjson = format!("{}\n\n{}\n", line("a"), line("b"));
        let ids = |events: Vec<UnifiedEvent>| events.into_iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(ingest.decode(ndjson.as_bytes()).unwrap()), ["a", "b"]);
        assert_eq!(ids(ingest.decode(line("c").as_bytes()).unwrap()), ["c"]);
        let array = format!(" [{}, {}]", line("d"), line("e"));
        assert_eq!(ids(ingest.decode(array.as_bytes()).unwrap()), ["d", "e"]);
        // A missing id is filled, as every NDJSON reader does.
        let filled = ingest
            .decode(br#"{"type":"network","source":"t"}"#)
            .unwrap();
        assert!(!filled[0].id.is_empty());
    }

    #[test]
    fn a_bad_line_or_element_is_named() {
        let ingest = ingest();
        let body = "{\"id\":\"a\",\"type\":\"process\",\"source\":\"t\"}\n{\"type\":\"nope\",\"source\":\"t\"}\n";
        let error = ingest.decode(body.as_bytes()).unwrap_err();
        assert!(error.starts_with("line 2: "), "{error}");
        assert!(error.contains("nope"), "{error}");
        let error = ingest
            .decode(br#"[{"type":"process","source":"t"}, {"source":"t"}]"#)
            .unwrap_err();
        assert!(error.starts_with("array element 2: "), "{error}");
        assert!(error.contains("type"), "{error}");
        let error = ingest.decode(b"[{").unwrap_err();
        assert!(error.contains("not a JSON array"), "{error}");
    }

    #[tokio::test]
    async fn submitting_without_a_running_source_fails() {
        let ingest = ingest();
        assert_eq!(ingest.submit(Vec::new()).await, Err(NotRunning));
    }
}
