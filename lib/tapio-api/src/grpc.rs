//! The gRPC side of the API (HTTP/2, `content-type: application/grpc`): `tapio.v1`'s
//! `EventService` (`QueryEvents`, `StreamEvents`; `SubmitEvents` is a `grpc` source's),
//! `CorrelationService.GetCorrelations` and the standard `grpc.health.v1.Health`, which says
//! `SERVING` while the pipeline runs.

use futures::StreamExt as _;
use futures::stream::BoxStream;
use tapio_event::EventType;
use tapio_proto::health::health_server::{Health, HealthServer};
use tapio_proto::health::{HealthCheckRequest, HealthCheckResponse, health_check_response};
use tapio_proto::v1;
use tapio_proto::v1::correlation_service_server::{CorrelationService, CorrelationServiceServer};
use tapio_proto::v1::event_service_server::{EventService, EventServiceServer};
use tapio_sinks::api_store::{ApiStore, EventFilter, StreamEnd};
use tapio_topology::HealthState;
use tonic::{Request, Response, Status, Streaming};

use crate::params::{self, BadParam, DEFAULT_LIMIT, MAX_LIMIT};
use crate::tap::{DROPPED, Tap, TapItem};
use crate::{ApiState, Caller};
use tapio_event::tap::TapDirection;

/// The services on the API port, dispatched by path.
#[derive(Clone)]
pub(crate) struct GrpcRoutes {
    events: EventServiceServer<Api>,
    correlations: CorrelationServiceServer<Api>,
    health: HealthServer<Api>,
}

impl GrpcRoutes {
    /// The three services over one shared state.
    pub(crate) fn new(state: ApiState) -> Self {
        let api = Api(state);
        GrpcRoutes {
            events: EventServiceServer::new(api.clone()),
            correlations: CorrelationServiceServer::new(api.clone()),
            health: HealthServer::new(api),
        }
    }

    /// Answers one gRPC call.
    pub(crate) async fn call<B>(
        &self,
        request: hyper::Request<B>,
    ) -> hyper::Response<tonic::body::Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<crate::BoxError> + Send + 'static,
    {
        use tower_service::Service as _;
        let path = request.uri().path();
        let answer = if path.starts_with("/tapio.v1.EventService/") {
            self.events.clone().call(request).await
        } else if path.starts_with("/tapio.v1.CorrelationService/") {
            self.correlations.clone().call(request).await
        } else if path.starts_with("/grpc.health.v1.Health/") {
            self.health.clone().call(request).await
        } else {
            Ok(Status::unimplemented(format!("no gRPC service serves {path}")).into_http())
        };
        match answer {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// The services' shared state.
#[derive(Clone)]
struct Api(ApiState);

impl Api {
    fn store(&self) -> Result<ApiStore, Status> {
        self.0
            .handles
            .get()
            .store
            .map(|(_, store)| store)
            .ok_or_else(|| {
                Status::failed_precondition(
                    "no `api_store` sink is declared: add a sink with `type = \"api_store\"`",
                )
            })
    }
}

impl Api {
    /// `StreamEvents` with `tap`: the events crossing the components `pattern` names.
    fn tap(
        &self,
        pattern: &str,
        inputs_of: bool,
        filter: EventFilter,
        limit: u64,
        caller: &Caller,
    ) -> Result<Response<BoxStream<'static, Result<v1::UnifiedEvent, Status>>>, Status> {
        let tap = Tap {
            pattern,
            direction: if inputs_of {
                TapDirection::Inputs
            } else {
                TapDirection::Outputs
            },
            filter,
            limit: usize::try_from(limit).ok().filter(|&n| n > 0),
        };
        let items = tap
            .open(&self.0.handles.get().taps, &self.0.metrics.get(), caller)
            .map_err(invalid)?;
        let events = items.flat_map(|item| {
            let answers: Vec<_> = match item {
                TapItem::Batch(tapped) => tapped
                    .events
                    .iter()
                    .map(|event| Ok(tapio_proto::event_to_proto(event)))
                    .collect(),
                TapItem::Dropped => vec![Err(Status::resource_exhausted(DROPPED))],
            };
            futures::stream::iter(answers)
        });
        Ok(Response::new(events.boxed()))
    }
}

fn invalid(BadParam(message): BadParam) -> Status {
    Status::invalid_argument(message)
}

/// A time bound: 0 is none.
fn bound(nanos: i64) -> Option<i64> {
    (nanos != 0).then_some(nanos)
}

fn filter(wire: Option<v1::EventFilter>) -> Result<EventFilter, Status> {
    let wire = wire.unwrap_or_default();
    Ok(EventFilter {
        kind: wire
            .r#type
            .as_deref()
            .map(|t| params::event_type("filter.type", t))
            .transpose()
            .map_err(invalid)?,
        source: wire.source,
        namespace: wire.namespace,
        entity: wire.entity,
        since: bound(wire.since_unix_nano),
        until: bound(wire.until_unix_nano),
        ..Default::default()
    })
}

/// A request's limit: 0 is the default; above [`MAX_LIMIT`] is refused.
fn limit(limit: u32) -> Result<usize, Status> {
    match limit as usize {
        0 => Ok(DEFAULT_LIMIT),
        n if n <= MAX_LIMIT => Ok(n),
        n => Err(Status::invalid_argument(format!(
            "`limit` must be at most {MAX_LIMIT}, got {n}"
        ))),
    }
}

/// Who calls, as the connection recorded it.
fn caller<T>(request: &Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_else(|| Caller {
            address: "unknown".to_owned(),
            token: "-".to_owned(),
        })
}

fn to_wire<'a>(
    events: impl IntoIterator<Item = &'a std::sync::Arc<tapio_event::UnifiedEvent>>,
) -> Vec<v1::UnifiedEvent> {
    events
        .into_iter()
        .map(|e| tapio_proto::event_to_proto(e))
        .collect()
}

#[tonic::async_trait]
impl EventService for Api {
    type StreamEventsStream = BoxStream<'static, Result<v1::UnifiedEvent, Status>>;
    type SubmitEventsStream = BoxStream<'static, Result<v1::SubmitAck, Status>>;

    async fn stream_events(
        &self,
        request: Request<v1::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let caller = caller(&request);
        let request = request.into_inner();
        let filter = filter(request.filter)?;
        if let Some(pattern) = &request.tap {
            return self.tap(pattern, request.inputs_of, filter, request.limit, &caller);
        }
        let subscription = self.store()?.subscribe(filter);
        tracing::info!(client = %caller.address, token = %caller.token, "StreamEvents opened");
        let events = futures::stream::unfold(Some(subscription), |subscription| async move {
            let mut subscription = subscription?;
            match subscription.next().await {
                Ok(event) => Some((Ok(tapio_proto::event_to_proto(&event)), Some(subscription))),
                Err(StreamEnd::TooSlow) => Some((
                    Err(Status::resource_exhausted(
                        "the client fell behind the live events and was dropped",
                    )),
                    None,
                )),
                Err(StreamEnd::Closed) => None,
            }
        });
        let stream = match usize::try_from(request.limit) {
            Ok(0) | Err(_) => events.boxed(),
            Ok(n) => events.take(n).boxed(),
        };
        Ok(Response::new(stream))
    }

    async fn query_events(
        &self,
        request: Request<v1::QueryEventsRequest>,
    ) -> Result<Response<v1::QueryEventsResponse>, Status> {
        let request = request.into_inner();
        let filter = filter(request.filter)?;
        let limit = limit(request.limit)?;
        let after = if request.page_token.is_empty() {
            None
        } else {
            Some(params::page_token("page_token", &request.page_token).map_err(invalid)?)
        };
        let page = self.store()?.query(&filter, limit, after);
        Ok(Response::new(v1::QueryEventsResponse {
            events: to_wire(&page.events),
            next_page_token: page.next.map(|c| c.token()).unwrap_or_default(),
        }))
    }

    async fn submit_events(
        &self,
        _request: Request<Streaming<v1::EventBatch>>,
    ) -> Result<Response<Self::SubmitEventsStream>, Status> {
        Err(Status::unimplemented(
            "SubmitEvents is served by a `grpc` source on its own address, not on [api] address",
        ))
    }
}

#[tonic::async_trait]
impl CorrelationService for Api {
    async fn get_correlations(
        &self,
        request: Request<v1::GetCorrelationsRequest>,
    ) -> Result<Response<v1::GetCorrelationsResponse>, Status> {
        let request = request.into_inner();
        let store = self.store()?;
        if let Some(id) = &request.correlation_id {
            let story = store.story(id).ok_or_else(|| {
                Status::not_found(format!(
                    "the store holds no correlation summary with id {id:?}"
                ))
            })?;
            return Ok(Response::new(v1::GetCorrelationsResponse {
                correlations: to_wire(&story.summaries),
                related_events: to_wire(&story.related),
            }));
        }
        let filter = EventFilter {
            kind: Some(EventType::Correlation),
            pattern: request.pattern,
            namespace: request.namespace,
            min_severity: request
                .severity
                .as_deref()
                .map(|s| params::severity("severity", s))
                .transpose()
                .map_err(invalid)?,
            since: bound(request.since_unix_nano),
            ..Default::default()
        };
        let page = store.query(&filter, limit(request.limit)?, None);
        Ok(Response::new(v1::GetCorrelationsResponse {
            correlations: to_wire(&page.events),
            related_events: Vec::new(),
        }))
    }

    async fn analyze_events(
        &self,
        request: Request<v1::AnalyzeEventsRequest>,
    ) -> Result<Response<v1::AnalyzeEventsResponse>, Status> {
        let events = from_wire(request.into_inner().events)?;
        let analyzer = self.0.handles.get().analyzer;
        let out = analyzer
            .analyze(events)
            .await
            .map_err(Status::failed_precondition)?;
        Ok(Response::new(v1::AnalyzeEventsResponse {
            events: out.iter().map(tapio_proto::event_to_proto).collect(),
        }))
    }

    async fn predict_impact(
        &self,
        request: Request<v1::PredictImpactRequest>,
    ) -> Result<Response<v1::PredictImpactResponse>, Status> {
        let event = request
            .into_inner()
            .event
            .ok_or_else(|| Status::invalid_argument("`event` is required"))?;
        let event = from_wire(vec![event])?.remove(0);
        let analyzer = self.0.handles.get().analyzer;
        let impact = analyzer
            .predict_impact(event)
            .await
            .map_err(Status::failed_precondition)?;
        // The wire form of the impact: the scored event's, converted as every event is.
        let mut scored = tapio_event::UnifiedEvent::new(
            EventType::Application,
            "predict_impact",
            tapio_event::Timestamp(0),
        );
        scored.impact = impact.map(Box::new);
        Ok(Response::new(v1::PredictImpactResponse {
            impact: tapio_proto::event_to_proto(&scored).impact,
        }))
    }
}

/// Wire events as domain events; the first that does not convert is refused, named.
fn from_wire(events: Vec<v1::UnifiedEvent>) -> Result<Vec<tapio_event::UnifiedEvent>, Status> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            tapio_proto::event_from_proto(e)
                .map_err(|e| Status::invalid_argument(format!("event {}: {e}", i + 1)))
        })
        .collect()
}

impl Api {
    fn serving(&self) -> HealthCheckResponse {
        let status = match self.0.health.get() {
            // A reload keeps serving: it stops and starts only what changed.
            HealthState::Running | HealthState::Reloading => {
                health_check_response::ServingStatus::Serving
            }
            HealthState::Starting | HealthState::Draining => {
                health_check_response::ServingStatus::NotServing
            }
        };
        HealthCheckResponse {
            status: status as i32,
        }
    }
}

#[tonic::async_trait]
impl Health for Api {
    type WatchStream = BoxStream<'static, Result<HealthCheckResponse, Status>>;

    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(self.serving()))
    }

    /// The status now and again each time it changes (checked every second).
    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let api = self.clone();
        let stream = futures::stream::unfold((api, None), |(api, last)| async move {
            loop {
                let now = api.serving();
                if last != Some(now.status) {
                    let status = now.status;
                    return Some((Ok(now), (api, Some(status))));
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        });
        Ok(Response::new(stream.boxed()))
    }
}
