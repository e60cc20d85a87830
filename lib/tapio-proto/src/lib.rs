//! The wire layer (L0): the `tapio.v1` protobuf schema of `proto/` (the events, the batches and
//! the `EventService`/`CorrelationService` gRPC services, plus the standard
//! `grpc.health.v1.Health`), its generated prost messages and tonic stubs (committed under
//! `src/generated/`, checked against the `.proto` files by `tests/generated.rs`), and the
//! conversions between the wire `UnifiedEvent` and the domain one. The conversions are lossless
//! both ways: `tests/identity.rs` proves JSON → domain → protobuf → domain → JSON is the identity.

mod convert;

pub use convert::{ConversionError, event_from_proto, event_to_proto, events_from_proto};

/// The `tapio.v1` package: events, batches, the two services' messages, clients and servers.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    include!("generated/tapio.v1.rs");
}

/// The standard gRPC health checking protocol (`grpc.health.v1`), for load balancers and probes.
pub mod health {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    include!("generated/grpc.health.v1.rs");
}
