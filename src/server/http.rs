//! `keyward serve --http [ADDR]`: MCP for remote clients.
//!
//! Routes:
//! - `/mcp` — Streamable HTTP (rmcp's `StreamableHttpService` with its in-memory session
//!   manager): POST JSON-RPC, answered with an SSE stream (or plain JSON with
//!   `--json-response`), GET for the session's server-to-client stream, DELETE to end a session;
//!   sessions are named by `Mcp-Session-Id`;
//! - `GET /sse` + `POST /messages?sessionId=…` — the legacy HTTP+SSE transport ([`super::sse`]);
//! - `GET /healthz` — `ok`, without authentication and without details.
//!
//! Every other request goes through `guard`: Host and Origin checks (403), the bearer API key
//! (401), and the session's owner (404 for another user's session); see [`super::auth`].
//! A background task closes, within half a second, every session whose API key was removed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{header, Method};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::auth::{self, Access, Ownership, SessionOwners};
use super::sse::{self, SseSessions};
use super::streamable;
use super::{KeywardServer, ServerState};
use crate::config::ServerConfig;
use crate::error::{Error, Result};
use crate::vault::{users, Vault};

/// The default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8787";

const SESSION_HEADER: &str = "mcp-session-id";

/// How the HTTP server runs.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub addr: SocketAddr,
    /// Answer a POST with `application/json` when its reply is a single message (the default is
    /// an SSE stream, which also carries progress and keeps long calls alive through proxies).
    pub json_response: bool,
}

/// Refuse to expose the server beyond this machine without API keys (invariant 9).
pub fn check_bind(addr: &SocketAddr, vault: &Vault) -> Result<()> {
    if addr.ip().is_loopback() {
        if !users::any(vault)? {
            tracing::warn!(
                "there are no users yet, so every request will get 401: add one with \
                 `keyward users add NAME` and send its key as `Authorization: Bearer <key>`"
            );
        }
        return Ok(());
    }
    if !users::any(vault)? {
        return Err(Error::usage(format!(
            "refusing to listen on {addr}: it is reachable from other machines and there are no \
             API keys yet. Create one with `keyward users add NAME` (clients send it as \
             `Authorization: Bearer <key>`), or listen on 127.0.0.1"
        )));
    }
    Ok(())
}

/// State of the HTTP routes.
#[derive(Clone)]
pub struct App {
    pub(crate) state: Arc<ServerState>,
    access: Arc<Access>,
    owners: Arc<SessionOwners>,
    sessions: Arc<LocalSessionManager>,
    pub(crate) sse: Arc<SseSessions>,
    pub(crate) shutdown: CancellationToken,
    json_response: bool,
}

impl App {
    fn vault(&self) -> &Vault {
        self.state.executor().vault()
    }
}

/// A running HTTP server.
pub struct HttpServer {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HttpServer {
    /// Bind `options.addr` (after [`check_bind`]) and serve in the background.
    pub async fn start(
        state: Arc<ServerState>,
        server_config: &ServerConfig,
        options: HttpOptions,
    ) -> Result<HttpServer> {
        check_bind(&options.addr, state.executor().vault())?;
        let listener = tokio::net::TcpListener::bind(options.addr)
            .await
            .map_err(|e| Error::io(format!("listening on {}", options.addr), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        let shutdown = CancellationToken::new();
        let app = App {
            state,
            access: Arc::new(Access::new(local_addr, server_config)),
            owners: Arc::new(SessionOwners::default()),
            sessions: Arc::new(LocalSessionManager::default()),
            sse: Arc::new(SseSessions::default()),
            shutdown: shutdown.clone(),
            json_response: options.json_response,
        };
        tokio::spawn(reap(app.clone()));
        let router = router(app);
        let stop = shutdown.clone();
        // TCP_NODELAY: an answer on an event stream is a small write that follows another
        // (the priming event, or the previous answer); with Nagle it waits for the client's
        // delayed ACK, about 40 ms on Linux.
        let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
            let _ = stream.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        tracing::info!(
            "serving MCP on http://{local_addr}/mcp (Streamable HTTP) and http://{local_addr}/sse (legacy SSE)"
        );
        Ok(HttpServer {
            local_addr,
            shutdown,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Cancelling this token stops the server (sessions first, then the listener).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Wait until the server stops (after the shutdown token is cancelled).
    pub async fn wait(self) -> Result<()> {
        let result = self.task.await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::io("serving HTTP", e)),
            Err(e) => Err(Error::other(format!("the HTTP server failed: {e}"))),
        }
    }

    /// Stop and wait (at most a few seconds for open streams to end).
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(5), self.wait()).await {
            Ok(result) => result,
            Err(_) => Ok(()),
        }
    }
}

fn router(app: App) -> Router {
    let state = app.state.clone();
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(app.shutdown.child_token())
        // `guard` checks Host and Origin for every route, with the config's extra entries.
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(super::jsonrpc::MAX_MESSAGE_BYTES);
    let mcp = StreamableHttpService::new(
        move || Ok(KeywardServer::per_request(state.clone())),
        Arc::new(streamable::EventIds(app.sessions.clone())),
        config,
    );
    let edges = streamable::Edges {
        json_response: app.json_response,
    };
    Router::new()
        .route_service("/mcp", mcp)
        // Only `/mcp`: what rmcp answers wrongly there (see `streamable`).
        .route_layer(middleware::from_fn_with_state(edges, streamable::edges))
        .route("/sse", get(sse::open))
        .route("/messages", post(sse::message))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .route("/healthz", get(healthz))
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Host, Origin, API key and session owner, for every route but `/healthz`.
async fn guard(State(app): State<App>, mut request: Request, next: Next) -> Response {
    if let Err(rejection) = app.access.check_host(request.headers()) {
        return rejection.into_response();
    }
    if let Err(rejection) = app.access.check_origin(request.headers()) {
        return rejection.into_response();
    }
    let user = match auth::authenticate(app.vault(), request.headers()) {
        Ok(user) => user,
        Err(rejection) => return rejection.into_response(),
    };
    // Past this point nothing needs the key: keep it out of every layer below.
    request.headers_mut().remove(header::AUTHORIZATION);
    request.extensions_mut().insert(user.clone());

    let is_mcp = request.uri().path() == "/mcp";
    if !is_mcp {
        return next.run(request).await;
    }
    let session = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    if let Some(session) = &session {
        if app.owners.check(session, &user) != Ownership::Own {
            return auth::session_not_found();
        }
    }
    let method = request.method().clone();
    let response = next.run(request).await;
    match (&session, &method) {
        (None, _) => {
            if let Some(id) = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                tracing::info!(user = user.name, session = id, "MCP session opened");
                app.owners.insert(id.to_string(), user.clone());
            }
        }
        (Some(id), &Method::DELETE) if response.status().is_success() => app.owners.remove(id),
        _ => {}
    }
    response
}

/// Every half second: forget sessions rmcp has closed, and close those whose key is gone.
async fn reap(app: App) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (id, owner) in app.owners.snapshot() {
            let session_id: Arc<str> = id.as_str().into();
            if !app.sessions.has_session(&session_id).await.unwrap_or(false) {
                app.owners.remove(&id);
            } else if !owner.still_valid(app.vault()) {
                tracing::info!(
                    user = owner.name,
                    session = id,
                    "the session's API key was removed: closing it"
                );
                let _ = app.sessions.close_session(&session_id).await;
                app.owners.remove(&id);
            }
        }
        app.sse.reap(app.vault());
    }
}

/// Serve until SIGTERM/SIGINT, then close sessions and flush the vault.
pub async fn serve(
    state: Arc<ServerState>,
    server_config: &ServerConfig,
    options: HttpOptions,
) -> Result<()> {
    let server = HttpServer::start(state.clone(), server_config, options).await?;
    let stop = server.shutdown_token();
    let signals = tokio::spawn(super::stdio::cancel_on_signal(stop.clone()));
    stop.cancelled().await;
    signals.abort();
    let result = server.stop().await;
    state.flush().await;
    result
}
