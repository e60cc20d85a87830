//! The integration layer (L3): reads `tapio.toml` into a validated [`config::Config`], resolves
//! the DAG ([`graph`]) and runs it ([`running`]): one bounded, event-counted buffer per consuming
//! component, batches fanned out without copies, backpressure, end-to-end acknowledgements, and
//! a graceful drain on shutdown.

pub mod analyze;
pub mod config;
pub mod dead_letters;
pub mod diagnostic;
pub mod disk_buffer;
pub mod graph;
pub mod health;
pub mod reference;
pub mod reload;
pub mod running;
pub mod unit_tests;

pub use config::{Config, Loaded, load_file, load_str};
pub use diagnostic::{Diagnostic, Severity};
pub use health::{Health, HealthState};
pub use reload::ReloadRequest;
pub use running::{ApiHandles, ComponentFailure, ComponentList, Outcome, Topology};
