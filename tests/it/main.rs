#[path = "../support/mod.rs"]
mod support;
mod fake_upstream;
mod cli;
mod vault;
mod server;
mod server_http;
mod server_support;
mod server_interop;
mod share;
mod oauth;
mod oauth_bench;
mod oauth_fake_ext;
mod exec;
mod catalog;
