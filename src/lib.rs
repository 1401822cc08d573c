//! keyward — lib (module map written at the end)
#![forbid(unsafe_code)]

pub mod catalog;
pub mod config;
pub mod error;
pub mod exec;
pub mod oauth;
pub mod secret;
pub mod server;
pub mod vault;
