//! Registry names and references.

pub mod names;
