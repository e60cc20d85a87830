//! The HTTP/1.1 side of the API: `/health`, `/metrics`, the REST/JSON calls under `/v1/` and
//! the OpenAPI document describing them. Every route is one row of [`ROUTES`], which both the
//! dispatch and the OpenAPI test read, so the document cannot name a route the server lacks
//! or miss one it has.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::{Body, Frame};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use tapio_event::{EventType, UnifiedEvent};
use tapio_sinks::api_store::{ApiStore, Cursor, EventFilter, Page, StreamEnd};
use tapio_topology::HealthState;

use crate::params::{self, BadParam, DEFAULT_LIMIT};
use crate::tap::Tap;
use crate::{ApiState, BoxError, Caller, ResponseBody};
use tapio_event::tap::TapDirection;

/// What a request asks for, once its method and path matched a row of [`ROUTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Health,
    Metrics,
    Components,
    OpenApi,
    ListEvents,
    SubmitEvents,
    StreamEvents,
    ListCorrelations,
    GetCorrelation,
    Analyze,
    PredictImpact,
    Tap,
}

/// Every HTTP route: method, path (with `{param}` segments, as OpenAPI writes them) and what
/// it does.
pub(crate) const ROUTES: &[(&str, &str, Route)] = &[
    ("GET", "/health", Route::Health),
    ("GET", "/metrics", Route::Metrics),
    ("GET", "/v1/components", Route::Components),
    ("GET", "/v1/openapi.json", Route::OpenApi),
    ("GET", "/v1/events", Route::ListEvents),
    ("POST", "/v1/events", Route::SubmitEvents),
    ("GET", "/v1/events/stream", Route::StreamEvents),
    ("GET", "/v1/correlations", Route::ListCorrelations),
    ("GET", "/v1/correlations/{id}", Route::GetCorrelation),
    ("POST", "/v1/analyze", Route::Analyze),
    ("POST", "/v1/predict_impact", Route::PredictImpact),
    ("GET", "/v1/tap", Route::Tap),
];

/// The largest body `/v1/analyze` and `/v1/predict_impact` read.
const MAX_ANALYZE_BODY: usize = 16 << 20;

/// The committed OpenAPI 3 document, served at `/v1/openapi.json`.
pub(crate) const OPENAPI: &str = include_str!("../openapi.json");

/// The `{param}` segment's value when `path` matches `pattern`.
fn match_path<'a>(pattern: &str, path: &'a str) -> Option<Option<&'a str>> {
    let mut param = None;
    let mut patterns = pattern.split('/');
    let mut segments = path.split('/');
    loop {
        match (patterns.next(), segments.next()) {
            (None, None) => return Some(param),
            (Some(p), Some(s)) if p.starts_with('{') && p.ends_with('}') && !s.is_empty() => {
                param = Some(s);
            }
            (Some(p), Some(s)) if p == s => {}
            _ => return None,
        }
    }
}

/// A JSON answer.
fn json(status: StatusCode, body: &impl Serialize) -> Response<ResponseBody> {
    let mut text = serde_json::to_vec(body).expect("API answers always serialise");
    text.push(b'\n');
    reply(status, "application/json", text.into())
}

/// A JSON error: `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response<ResponseBody> {
    #[derive(Serialize)]
    struct Error {
        error: String,
    }
    json(
        status,
        &Error {
            error: message.into(),
        },
    )
}

fn reply(status: StatusCode, content_type: &str, body: Bytes) -> Response<ResponseBody> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(body)
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("static response parts are valid")
}

/// The refusal of a call without a valid token: 401 with the scheme to use.
pub(crate) fn unauthorized(message: &str) -> Response<ResponseBody> {
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        "www-authenticate",
        hyper::header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// The answer to `request` from `caller` (named in the audit log of calls that write or
/// stream).
pub(crate) async fn respond<B>(
    request: Request<B>,
    state: &ApiState,
    caller: &Caller,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let path = request.uri().path().to_owned();
    let mut known_path = false;
    let mut found = None;
    for (method, pattern, route) in ROUTES {
        if let Some(param) = match_path(pattern, &path) {
            known_path = true;
            if request.method().as_str() == *method {
                found = Some((*route, param.map(str::to_owned)));
                break;
            }
        }
    }
    let Some((route, param)) = found else {
        return if known_path {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} is not supported on {path}", request.method()),
            )
        } else {
            error(
                StatusCode::NOT_FOUND,
                format!("no route {path}; the routes are listed at /v1/openapi.json"),
            )
        };
    };
    let query = match parse_query(request.uri().query()) {
        Ok(query) => query,
        Err(BadParam(message)) => return error(StatusCode::BAD_REQUEST, message),
    };
    let answer = match route {
        Route::Health => Ok(health(state)),
        Route::Metrics => {
            let mut text = crate::prometheus::render(&state.snapshots());
            crate::prometheus::render_reloads(&mut text, state.health.reloads());
            crate::prometheus::render_taps(&mut text, &state.handles.get().taps);
            Ok(reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                text.into(),
            ))
        }
        Route::Components => Ok(json(StatusCode::OK, &crate::components::answer(state))),
        Route::OpenApi => Ok(reply(
            StatusCode::OK,
            "application/json",
            Bytes::from_static(OPENAPI.as_bytes()),
        )),
        Route::ListEvents => with_store(state, |store| list_events(store, &query)),
        Route::ListCorrelations => with_store(state, |store| list_correlations(store, &query)),
        Route::GetCorrelation => with_store(state, |store| {
            get_correlation(store, param.as_deref().unwrap_or_default(), &query)
        }),
        Route::StreamEvents => {
            let sse = request
                .headers()
                .get_all("accept")
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")));
            with_store(state, |store| stream_events(store, &query, sse, caller))
        }
        Route::SubmitEvents => Ok(submit_events(request, state, &query, caller).await),
        Route::Analyze => Ok(analyze(request, state, &query).await),
        Route::PredictImpact => Ok(predict_impact(request, state, &query).await),
        Route::Tap => tap_events(state, &query, caller),
    };
    answer.unwrap_or_else(|BadParam(message)| error(StatusCode::BAD_REQUEST, message))
}

fn health(state: &ApiState) -> Response<ResponseBody> {
    let (status, text) = lifecycle(state.health.get());
    json(status, &serde_json::json!({ "status": text }))
}

/// The status `/health` answers in `state` and the state's name, which `/v1/components`
/// reports too, so both name a state alike.
pub(crate) fn lifecycle(state: HealthState) -> (StatusCode, &'static str) {
    match state {
        HealthState::Running => (StatusCode::OK, "running"),
        HealthState::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        HealthState::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        // Still serving: a reload stops and starts only what changed.
        HealthState::Reloading => (StatusCode::OK, "reloading"),
    }
}

/// A request's query parameters (empty ones left out); a name given twice is refused rather than one silently
/// winning.
fn parse_query(query: Option<&str>) -> Result<HashMap<String, String>, BadParam> {
    let mut params = HashMap::new();
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        // `?type=&source=x`: an empty value is no filter, as in a form left blank.
        if value.is_empty() {
            continue;
        }
        if params
            .insert(name.to_string(), value.into_owned())
            .is_some()
        {
            return Err(BadParam(format!("`{name}` is given more than once")));
        }
    }
    Ok(params)
}

/// Refuses parameters the route does not know, naming the ones it does.
fn only(query: &HashMap<String, String>, known: &[&str]) -> Result<(), BadParam> {
    let mut unknown: Vec<_> = query
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .collect();
    unknown.sort();
    match unknown.first() {
        None => Ok(()),
        Some(name) => Err(BadParam(format!(
            "unknown parameter `{name}`; this route takes {}",
            known.join(", ")
        ))),
    }
}

/// Runs `answer` on the store, or says there is none.
fn with_store(
    state: &ApiState,
    answer: impl FnOnce(&ApiStore) -> Result<Response<ResponseBody>, BadParam>,
) -> Result<Response<ResponseBody>, BadParam> {
    match &state.handles.get().store {
        Some((_, store)) => answer(store),
        None => Ok(error(
            StatusCode::NOT_FOUND,
            "no `api_store` sink is declared: add a sink with `type = \"api_store\"` to query and stream events",
        )),
    }
}

/// The event filter of `/v1/events` and `/v1/events/stream`.
fn event_filter(query: &HashMap<String, String>) -> Result<EventFilter, BadParam> {
    let get = |name: &str| query.get(name).cloned();
    Ok(EventFilter {
        kind: get("type")
            .map(|v| params::event_type("type", &v))
            .transpose()?,
        source: get("source"),
        namespace: get("namespace"),
        entity: get("entity"),
        since: get("since")
            .map(|v| params::time("since", &v))
            .transpose()?,
        until: get("until")
            .map(|v| params::time("until", &v))
            .transpose()?,
        ..Default::default()
    })
}

/// `limit` and `page_token`.
fn paging(query: &HashMap<String, String>) -> Result<(usize, Option<Cursor>), BadParam> {
    let limit = query
        .get("limit")
        .map(|v| params::limit("limit", v))
        .transpose()?
        .unwrap_or(DEFAULT_LIMIT);
    let after = query
        .get("page_token")
        .map(|v| params::page_token("page_token", v))
        .transpose()?;
    Ok((limit, after))
}

/// Which list a page answers: its key in the answer.
#[derive(Clone, Copy)]
enum PageOf {
    Events,
    Correlations,
}

/// A list answer: `{"events" | "correlations": [...], "next_page_token": "..."}` (the token
/// only when there is a next page), serialised straight from the stored events.
fn page_json(of: PageOf, page: &Page) -> Response<ResponseBody> {
    #[derive(Serialize)]
    struct Answer<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        events: Option<Vec<&'a UnifiedEvent>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        correlations: Option<Vec<&'a UnifiedEvent>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next_page_token: Option<String>,
    }
    let listed = Some(page.events.iter().map(|e| &**e).collect());
    let (events, correlations) = match of {
        PageOf::Events => (listed, None),
        PageOf::Correlations => (None, listed),
    };
    json(
        StatusCode::OK,
        &Answer {
            events,
            correlations,
            next_page_token: page.next.map(|next| next.token()),
        },
    )
}

const EVENT_PARAMS: &[&str] = &[
    "type",
    "source",
    "namespace",
    "entity",
    "since",
    "until",
    "limit",
    "page_token",
];

fn list_events(
    store: &ApiStore,
    query: &HashMap<String, String>,
) -> Result<Response<ResponseBody>, BadParam> {
    only(query, EVENT_PARAMS)?;
    let filter = event_filter(query)?;
    let (limit, after) = paging(query)?;
    Ok(page_json(
        PageOf::Events,
        &store.query(&filter, limit, after),
    ))
}

fn list_correlations(
    store: &ApiStore,
    query: &HashMap<String, String>,
) -> Result<Response<ResponseBody>, BadParam> {
    only(
        query,
        &[
            "pattern",
            "severity",
            "namespace",
            "since",
            "limit",
            "page_token",
        ],
    )?;
    let get = |name: &str| query.get(name).cloned();
    let filter = EventFilter {
        kind: Some(EventType::Correlation),
        pattern: get("pattern"),
        namespace: get("namespace"),
        min_severity: get("severity")
            .map(|v| params::severity("severity", &v))
            .transpose()?,
        since: get("since")
            .map(|v| params::time("since", &v))
            .transpose()?,
        ..Default::default()
    };
    let (limit, after) = paging(query)?;
    Ok(page_json(
        PageOf::Correlations,
        &store.query(&filter, limit, after),
    ))
}

fn get_correlation(
    store: &ApiStore,
    id: &str,
    query: &HashMap<String, String>,
) -> Result<Response<ResponseBody>, BadParam> {
    only(query, &[])?;
    let Some(story) = store.story(id) else {
        return Ok(error(
            StatusCode::NOT_FOUND,
            format!("the store holds no correlation summary with id {id:?}"),
        ));
    };
    /// The story, serialised straight from the stored events.
    #[derive(Serialize)]
    struct Answer<'a> {
        correlation: &'a UnifiedEvent,
        summaries: Vec<&'a UnifiedEvent>,
        related_events: Vec<&'a UnifiedEvent>,
    }
    fn list(events: &[Arc<UnifiedEvent>]) -> Vec<&UnifiedEvent> {
        events.iter().map(|e| &**e).collect()
    }
    Ok(json(
        StatusCode::OK,
        &Answer {
            correlation: &story.summaries[0],
            summaries: list(&story.summaries),
            related_events: list(&story.related),
        },
    ))
}

fn stream_events(
    store: &ApiStore,
    query: &HashMap<String, String>,
    sse: bool,
    caller: &Caller,
) -> Result<Response<ResponseBody>, BadParam> {
    only(query, &["type", "source", "namespace", "entity", "limit"])?;
    let filter = event_filter(query)?;
    let limit = query
        .get("limit")
        .map(|v| params::count("limit", v))
        .transpose()?;
    tracing::info!(client = %caller.address, token = %caller.token, sse, "GET /v1/events/stream opened");
    let subscription = store.subscribe(filter);
    let frame = move |line: Vec<u8>, event: Option<&str>| {
        let mut out = Vec::with_capacity(line.len() + 16);
        if sse {
            if let Some(event) = event {
                out.extend_from_slice(format!("event: {event}\n").as_bytes());
            }
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(&line);
            out.extend_from_slice(b"\n\n");
        } else {
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
        Ok::<_, BoxError>(Frame::data(Bytes::from(out)))
    };
    let events = futures::stream::unfold(Some(subscription), move |subscription| async move {
        let mut subscription = subscription?;
        match subscription.next().await {
            Ok(event) => {
                let mut line = Vec::new();
                tapio_event::codec::encode_json(&event, &mut line);
                Some((frame(line, None), Some(subscription)))
            }
            Err(StreamEnd::TooSlow) => {
                let line = br#"{"error":"the client fell behind the live events and was dropped"}"#;
                Some((frame(line.to_vec(), Some("error")), None))
            }
            Err(StreamEnd::Closed) => None,
        }
    });
    let body = match limit {
        Some(limit) => StreamBody::new(events.take(limit).boxed()),
        None => StreamBody::new(events.boxed()),
    };
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .header("cache-control", "no-cache")
        .body(body.boxed_unsync())
        .expect("static response parts are valid"))
}

/// `GET /v1/tap`: live events at a point of the graph, as NDJSON.
fn tap_events(
    state: &ApiState,
    query: &HashMap<String, String>,
    caller: &Caller,
) -> Result<Response<ResponseBody>, BadParam> {
    only(
        query,
        &[
            "component",
            "direction",
            "limit",
            "type",
            "source",
            "namespace",
            "entity",
        ],
    )?;
    let pattern = query.get("component").ok_or_else(|| {
        BadParam("`component` (a component name or glob such as `enrich*`) is required".into())
    })?;
    let direction = match query.get("direction").map(String::as_str) {
        None | Some("outputs") => TapDirection::Outputs,
        Some("inputs") => TapDirection::Inputs,
        Some(other) => {
            return Err(BadParam(format!(
                "`direction` must be outputs or inputs, got {other:?}"
            )));
        }
    };
    let tap = Tap {
        pattern,
        direction,
        filter: event_filter(query)?,
        limit: query
            .get("limit")
            .map(|v| params::count("limit", v))
            .transpose()?,
    };
    let items = tap.open(&state.handles.get().taps, &state.metrics.get(), caller)?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/x-ndjson")
        .header("cache-control", "no-cache")
        .body(StreamBody::new(crate::tap::ndjson(items)).boxed_unsync())
        .expect("static response parts are valid"))
}

/// The whole body, at most `max` bytes (`limit` names where that limit is set).
async fn read_body<B>(
    request: Request<B>,
    max: usize,
    limit: &str,
) -> Result<Bytes, Response<ResponseBody>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match Limited::new(request.into_body(), max).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {limit} ({max} bytes)"),
        )),
        Err(e) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("cannot read the body: {e}"),
        )),
    }
}

/// The events of an analysis body, or the answer refusing it.
async fn analysis_body<B>(
    request: Request<B>,
    query: &HashMap<String, String>,
) -> Result<Vec<UnifiedEvent>, Response<ResponseBody>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Err(BadParam(message)) = only(query, &[]) {
        return Err(error(StatusCode::BAD_REQUEST, message));
    }
    let body = read_body(request, MAX_ANALYZE_BODY, "the analysis limit").await?;
    tapio_sources::api::decode_events(&body)
        .map_err(|bad| error(StatusCode::BAD_REQUEST, bad.first))
}

/// `POST /v1/analyze`: what the config's chain emits for the body's events.
async fn analyze<B>(
    request: Request<B>,
    state: &ApiState,
    query: &HashMap<String, String>,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let events = match analysis_body(request, query).await {
        Ok(events) => events,
        Err(refused) => return refused,
    };
    let analyzer = state.handles.get().analyzer;
    match analyzer.analyze(events).await {
        Ok(events) => json(StatusCode::OK, &serde_json::json!({ "events": events })),
        Err(message) => error(StatusCode::UNPROCESSABLE_ENTITY, message),
    }
}

/// `POST /v1/predict_impact`: the impact `impact_assess` gives the body's one event.
async fn predict_impact<B>(
    request: Request<B>,
    state: &ApiState,
    query: &HashMap<String, String>,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut events = match analysis_body(request, query).await {
        Ok(events) => events,
        Err(refused) => return refused,
    };
    if events.len() != 1 {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "the body must hold exactly one event, it holds {}",
                events.len()
            ),
        );
    }
    let analyzer = state.handles.get().analyzer;
    match analyzer.predict_impact(events.remove(0)).await {
        Ok(impact) => json(StatusCode::OK, &serde_json::json!({ "impact": impact })),
        Err(message) => error(StatusCode::UNPROCESSABLE_ENTITY, message),
    }
}

async fn submit_events<B>(
    request: Request<B>,
    state: &ApiState,
    query: &HashMap<String, String>,
    caller: &Caller,
) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if let Err(BadParam(message)) = only(query, &[]) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let handles = state.handles.get();
    let Some((name, ingest)) = &handles.ingest else {
        return error(
            StatusCode::NOT_FOUND,
            "no `api` source is declared: add a source with `type = \"api\"` to accept events",
        );
    };
    let body = match read_body(
        request,
        ingest.max_body_bytes(),
        "the `api` source's max_body_bytes",
    )
    .await
    {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let events = match ingest.decode(&body) {
        Ok(events) => events,
        Err(message) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{message}; nothing of this body entered the pipeline"),
            );
        }
    };
    if events.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the body holds no events");
    }
    let accepted = events.len();
    tracing::info!(client = %caller.address, token = %caller.token, source = %name, events = accepted, "POST /v1/events");
    match ingest.submit(events).await {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({ "accepted": accepted })),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_patterns_with_their_parameter() {
        assert_eq!(match_path("/v1/events", "/v1/events"), Some(None));
        assert_eq!(
            match_path("/v1/correlations/{id}", "/v1/correlations/abc"),
            Some(Some("abc"))
        );
        assert_eq!(
            match_path("/v1/correlations/{id}", "/v1/correlations/"),
            None
        );
        assert_eq!(
            match_path("/v1/correlations/{id}", "/v1/correlations/a/b"),
            None
        );
        assert_eq!(match_path("/v1/events", "/v1/events/stream"), None);
    }

    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};

    use tapio_event::{CorrelationContext, Entity, EntityType, Timestamp};
    use tapio_topology::ApiHandles;

    use crate::tests::{call, state};

    fn event(id: &str, kind: EventType, namespace: &str, nanos: i64) -> UnifiedEvent {
        let mut event = UnifiedEvent::new(kind, "test", Timestamp(nanos));
        event.id = id.into();
        let mut entity = Entity::new(EntityType::Pod, format!("{namespace}/{id}"));
        entity.namespace = Some(namespace.into());
        event.entity = Some(Box::new(entity));
        event
    }

    /// A state whose store holds `events`, and an `api` source that is not running.
    fn with_store(events: Vec<UnifiedEvent>) -> ApiState {
        let store = ApiStore::new(1000, Duration::from_secs(3600), 16);
        store.insert(events.into_iter().map(Arc::new), Instant::now());
        let config: tapio_sources::api::ApiSourceConfig = serde_json::from_str("{}").unwrap();
        let (ingest, _source) = config.build_shared().unwrap();
        ApiState {
            handles: crate::Reloadable::new(ApiHandles {
                store: Some(("store".into(), store)),
                ingest: Some(("in".into(), ingest)),
                ..ApiHandles::default()
            }),
            ..state()
        }
    }

    fn ids(body: &str, key: &str) -> Vec<String> {
        let value: serde_json::Value = serde_json::from_str(body).unwrap();
        value[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} in {body}"))
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn events_are_filtered_paged_and_bad_parameters_named() {
        let state = with_store(vec![
            event("a", EventType::Process, "shop", 10),
            event("b", EventType::Network, "shop", 20),
            event("c", EventType::Process, "shop", 30),
            event("d", EventType::Process, "bank", 40),
        ]);
        let (status, body) =
            call(&state, "GET", "/v1/events?type=process&namespace=shop", "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(ids(&body, "events"), ["c", "a"]);
        let (_, body) = call(&state, "GET", "/v1/events?since=20&until=30&source=", "").await;
        assert_eq!(ids(&body, "events"), ["c", "b"]);
        let (_, body) = call(&state, "GET", "/v1/events?entity=shop%2Fb", "").await;
        assert_eq!(ids(&body, "events"), ["b"]);
        // Paging: two, then the rest, through next_page_token.
        let (_, first) = call(&state, "GET", "/v1/events?limit=2", "").await;
        assert_eq!(ids(&first, "events"), ["d", "c"]);
        let token: serde_json::Value = serde_json::from_str(&first).unwrap();
        let token = token["next_page_token"].as_str().unwrap().to_owned();
        let (_, second) = call(
            &state,
            "GET",
            &format!("/v1/events?limit=2&page_token={token}"),
            "",
        )
        .await;
        assert_eq!(ids(&second, "events"), ["b", "a"]);
        assert!(!second.contains("next_page_token"), "{second}");
        for (query, named) in [
            ("type=bogus", "`type` must be one of"),
            ("since=yesterday", "`since` must be an RFC 3339"),
            ("limit=0", "`limit` must be 1 to 10000"),
            ("colour=red", "unknown parameter `colour`"),
            ("page_token=zz", "`page_token` must be"),
            (
                "type=process&type=network",
                "`type` is given more than once",
            ),
        ] {
            let (status, body) = call(&state, "GET", &format!("/v1/events?{query}"), "").await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
            let message: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(
                message["error"].as_str().unwrap().contains(named),
                "{query}: {body}"
            );
        }
    }

    #[tokio::test]
    async fn correlations_list_and_story() {
        let mut summary = event("s1", EventType::Correlation, "shop", 50);
        summary.correlation = Some(Box::new(CorrelationContext {
            correlation_id: Some("c1".into()),
            pattern: Some("oom_kill".into()),
            ..Default::default()
        }));
        summary.impact = Some(Box::new(tapio_event::ImpactContext {
            severity: Some(tapio_event::Severity::Error),
            ..Default::default()
        }));
        let mut tagged = event("t1", EventType::Process, "shop", 40);
        tagged.correlation = Some(Box::new(CorrelationContext {
            correlation_id: Some("c1".into()),
            ..Default::default()
        }));
        let state = with_store(vec![
            tagged,
            summary,
            event("x", EventType::Process, "shop", 45),
        ]);
        let (_, body) = call(
            &state,
            "GET",
            "/v1/correlations?pattern=oom_kill&severity=warning",
            "",
        )
        .await;
        assert_eq!(ids(&body, "correlations"), ["s1"]);
        let (_, body) = call(&state, "GET", "/v1/correlations?severity=critical", "").await;
        assert!(ids(&body, "correlations").is_empty());
        let (status, body) = call(&state, "GET", "/v1/correlations/c1", "").await;
        assert_eq!(status, StatusCode::OK);
        let story: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(story["correlation"]["id"], "s1");
        assert_eq!(ids(&body, "related_events"), ["t1"]);
        assert_eq!(
            call(&state, "GET", "/v1/correlations/nope", "").await.0,
            StatusCode::NOT_FOUND
        );
    }

    #[tokio::test]
    async fn without_a_store_or_source_the_answer_says_what_to_declare() {
        let state = state();
        let (status, body) = call(&state, "GET", "/v1/events", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("api_store"), "{body}");
        let (status, body) = call(&state, "POST", "/v1/events", "{}").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("`api` source"), "{body}");
        // With a source: a bad line is refused naming it, before the (stopped) source.
        let state = with_store(Vec::new());
        let (status, body) = call(
            &state,
            "POST",
            "/v1/events",
            "{\"type\":\"process\",\"source\":\"t\"}\nnot json\n",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("line 2: "), "{body}");
        let (status, _) = call(
            &state,
            "POST",
            "/v1/events",
            "{\"type\":\"process\",\"source\":\"t\"}",
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    /// The committed OpenAPI document names exactly the routes of [`ROUTES`], and the server
    /// answers every documented route (no "no route", no 405), so neither can drift.
    #[tokio::test]
    async fn the_openapi_document_matches_the_routes() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(
            document["openapi"].as_str().unwrap().chars().next(),
            Some('3')
        );
        let mut documented = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let served: BTreeSet<_> = ROUTES
            .iter()
            .map(|(method, path, _)| ((*method).to_owned(), (*path).to_owned()))
            .collect();
        assert_eq!(documented, served);
        let state = with_store(Vec::new());
        for (method, path) in &documented {
            let (status, body) = call(&state, method, &path.replace("{id}", "some-id"), "").await;
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(!body.contains("no route"), "{method} {path}: {body}");
        }
        let (status, body) = call(&state, "GET", "/v1/undocumented", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("no route"), "{body}");
    }

    /// A state whose analyzer is the chain of a real config, `shop` its critical namespace.
    fn with_chain() -> ApiState {
        let text = r#"
[sources.in]
type = "api"

[transforms.enrich]
type = "semantic_enrich"
inputs = ["in"]

[transforms.correlate]
type = "correlate"
inputs = ["enrich"]

[transforms.impact]
type = "impact_assess"
inputs = ["correlate"]
critical_namespaces = ["shop"]

[sinks.out]
type = "blackhole"
inputs = ["impact"]
"#;
        let config = tapio_topology::load_str("t.toml", text, |_| None)
            .config
            .unwrap();
        let state = state();
        state.handles.set(ApiHandles {
            analyzer: tapio_topology::analyze::Analyzer::from_config(&config),
            ..ApiHandles::default()
        });
        assert_eq!(
            state.handles.get().analyzer.chain(),
            ["enrich", "correlate", "impact"]
        );
        state
    }

    fn oom_kill(id: &str, namespace: &str) -> String {
        format!(
            r#"{{"id":"{id}","type":"process","source":"t","entity":{{"type":"pod","id":"uid-{id}","name":"api-{id}","namespace":"{namespace}"}},"process":{{"operation":"oom_kill","pid":42,"comm":"java"}}}}"#
        )
    }

    #[tokio::test]
    async fn analyze_runs_a_private_copy_of_the_chain() {
        let state = with_chain();
        let (status, body) = call(&state, "POST", "/v1/analyze", &oom_kill("a", "shop")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        let event = answer["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == "a")
            .unwrap_or_else(|| panic!("the event is not in {body}"));
        assert!(
            event["correlation"]["correlation_id"].is_string(),
            "{event}"
        );
        assert!(event["impact"].is_object(), "{event}");
        let (status, body) = call(&state, "POST", "/v1/analyze", "nope").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("line 1: "), "{body}");
        // Without the transforms there is nothing to analyze with.
        let (status, body) = call(
            &crate::tests::state(),
            "POST",
            "/v1/analyze",
            &oom_kill("a", "shop"),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(body.contains("no semantic_enrich"), "{body}");
    }

    #[tokio::test]
    async fn predicted_impact_follows_the_rules() {
        let state = with_chain();
        let predict = |namespace: &'static str| {
            let state = state.clone();
            async move {
                let (status, body) = call(
                    &state,
                    "POST",
                    "/v1/predict_impact",
                    &oom_kill("p", namespace),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
                answer["impact"]["business_impact"]
                    .as_f64()
                    .unwrap_or_else(|| panic!("no business_impact in {body}"))
            }
        };
        let critical = predict("shop").await;
        let ordinary = predict("blog").await;
        assert!(critical > ordinary, "shop {critical} vs blog {ordinary}");
        let two = format!("{}\n{}", oom_kill("a", "shop"), oom_kill("b", "shop"));
        let (status, body) = call(&state, "POST", "/v1/predict_impact", &two).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("exactly one event"), "{body}");
    }
}
