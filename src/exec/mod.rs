//! The executor (being assembled; see /tmp/exec_mod_full.rs).
pub mod project;
pub mod render;
