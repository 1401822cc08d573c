mod canary;
mod catalog;
mod exec;
mod fake_upstream;
mod multiprocess;
mod oauth;
mod oauth_fake_ext;
mod postgres_cli;
mod postgres_store;
mod server;
mod server_http;
mod server_interop;
mod server_limits;
mod share;
#[path = "../support/mod.rs"]
mod support;
mod vault;
