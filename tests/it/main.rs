mod cli;
mod vault;
mod server;
mod server_http;
mod server_support;
mod server_interop;
mod share;
