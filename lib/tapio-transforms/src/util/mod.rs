//! Helpers the transforms share, apart from the transform modules themselves.

pub mod condition;
pub(crate) mod in_place;
pub(crate) mod split;
#[cfg(test)]
pub(crate) mod testing;
