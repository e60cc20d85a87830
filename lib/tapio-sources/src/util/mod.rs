//! Helpers the sources share, apart from the source modules themselves.

pub(crate) mod kubepods;
pub(crate) mod lines;
pub(crate) mod listener;
#[cfg(test)]
pub(crate) mod testing;
pub mod tls;
