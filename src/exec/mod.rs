//! The executor (being written).
pub mod project;
pub mod render;
