//! Helpers the transforms share, apart from the transform modules themselves.

pub(crate) mod in_place;
