//! `keyward serve`: MCP over stdin/stdout for one user.
//!
//! stdout carries nothing but JSON-RPC messages (logs go to stderr). The server stops when the
//! client closes stdin or on SIGTERM/SIGINT, and flushes the vault (the audit lines) before the
//! process exits.

use std::sync::Arc;

use rmcp::service::ServerInitializeError;
use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

use super::{random_id, KeywardServer, ServerState};
use crate::error::{Error, Result};

/// Serve one MCP client on stdin/stdout until it goes away or a signal arrives.
pub async fn serve(state: Arc<ServerState>, user: &str) -> Result<()> {
    let session = format!("stdio-{}", random_id(6));
    tracing::info!(user, session, "serving MCP on stdio");
    let server = KeywardServer::for_user(state.clone(), user, session);
    let stop = CancellationToken::new();
    let signals = tokio::spawn(cancel_on_signal(stop.clone()));
    let result = serve_until(server, stop).await;
    signals.abort();
    state.flush().await;
    result
}

async fn serve_until(server: KeywardServer, stop: CancellationToken) -> Result<()> {
    let running = tokio::select! {
        // Pipes (how MCP clients launch stdio servers) are read and written on the IO reactor;
        // anything else falls back to tokio's blocking stdin/stdout. The blocking handles cost
        // two thread hand-offs per message, which on a small machine is most of what a tool
        // call with a short answer costs.
        running = server.serve_with_ct(rmcp::transport::stdio_pipes(), stop.child_token()) => running,
        _ = stop.cancelled() => return Ok(()),
    };
    let running = match running {
        Ok(running) => running,
        // A client that closes stdin before initializing is a normal way to end.
        Err(ServerInitializeError::ConnectionClosed(why)) => {
            tracing::info!("the client went away before initializing: {why}");
            return Ok(());
        }
        Err(ServerInitializeError::Cancelled) => return Ok(()),
        Err(e) => return Err(Error::other(format!("MCP initialization failed: {e}"))),
    };
    match running.waiting().await {
        Ok(reason) => {
            tracing::info!(?reason, "MCP session ended");
            Ok(())
        }
        Err(e) => Err(Error::other(format!("the MCP session failed: {e}"))),
    }
}

/// Cancel `stop` on SIGTERM or SIGINT.
pub async fn cancel_on_signal(stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot listen for SIGTERM: {e}");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
    stop.cancel();
}
