//! Helpers the transforms share, apart from the transform modules themselves.

pub(crate) mod candidates;
pub mod condition;
pub(crate) mod fast_map;
pub(crate) mod in_place;
pub(crate) mod split;
#[cfg(test)]
pub(crate) mod testing;
