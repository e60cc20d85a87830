//! Line input shared by the `stdin` and `file` sources: input is read in big chunks and cut at
//! the last newline ([`framing`]), so a chunk of complete lines travels on without copying each
//! line; chunks are decoded in parallel on blocking threads while the output keeps the input's
//! order ([`decoding`]); and bad lines (undecodable, oversized) are counted, reported and routed
//! the same way by both ([`problems`], which the `kafka` source shares).

pub(crate) mod decoding;
pub(crate) mod framing;
pub(crate) mod problems;
#[cfg(test)]
mod tests;

pub(crate) use decoding::{DecodePool, Decoded, decode_depth};
pub use framing::Decoding;
pub(crate) use framing::{Framed, LineBuffer, LineSettings, READ_CHUNK, default_max_line_bytes};
pub(crate) use problems::Problems;
