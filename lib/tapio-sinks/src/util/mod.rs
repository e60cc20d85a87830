//! Helpers the sinks share, apart from the sink modules themselves: the dead-letter file for
//! events rejected for good, capped backoff for retries, reusable write buffers and gzip.

pub(crate) mod dead_letter;
pub(crate) mod gzip;
pub(crate) mod pool;
pub(crate) mod retry;
pub mod tls;
