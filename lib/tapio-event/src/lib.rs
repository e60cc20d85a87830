//! The domain layer (L0) of Tapio: the `UnifiedEvent` that flows through every component, the
//! batches that carry it, the end-to-end acknowledgements, the bounded buffers between components
//! and the contracts every source and sink implements. Nothing here does I/O, so every other layer
//! can depend on it.

pub mod ack;
pub mod backoff;
pub mod batch;
pub mod buffer;
pub mod codec;
pub mod component;
pub mod config_dir;
pub mod event;
pub mod field;
pub mod id;
pub mod metrics;
pub mod secret;
pub mod tap;
pub mod template;
pub mod throttle;
pub mod time;
pub mod units;

pub use ack::{AckReceiver, AckToken, BatchStatus, PendingAck};
pub use batch::EventBatch;
pub use buffer::{BufferReceiver, BufferSender, Fanout, WhenFull};
pub use component::{
    BuildContext, ComponentConfig, ComponentError, ComponentFuture, ERRORS_OUTPUT, ErrorKind,
    Outputs, ShutdownSignal, ShutdownTrigger, Sink, SinkContext, Source, SourceContext, Transform,
    TransformContext, error_in_option_text, position_in_option_text,
};
pub use event::*;
pub use metrics::{ComponentKind, ComponentMetrics, MetricsSnapshot};
pub use secret::{Secret, Tokens};
pub use time::Timestamp;
pub use units::{ByteSize, ConfigDuration};
