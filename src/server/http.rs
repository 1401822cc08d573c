//! `keyward serve --http [ADDR]`: MCP for remote clients.
//!
//! Routes:
//! - `/mcp` — Streamable HTTP (rmcp's `StreamableHttpService` with its in-memory session
//!   manager): POST JSON-RPC, answered with an SSE stream (or plain JSON with
//!   `--json-response`), GET for the session's server-to-client stream, DELETE to end a session;
//!   sessions are named by `Mcp-Session-Id`;
//! - `GET /sse` + `POST /messages?sessionId=…` — the legacy HTTP+SSE transport ([`super::sse`]);
//! - `GET /healthz` — `ok`, without authentication and without details;
//! - with `[server.auth]`: `GET /.well-known/oauth-protected-resource/mcp` (and the root form),
//!   the RFC 9728 metadata that names the identity provider, without authentication;
//! - with `[exchange] enabled`: `POST /oauth/token` (RFC 8693 token exchange, [`super::exchange`])
//!   and its RFC 8414 metadata at `/.well-known/oauth-authorization-server`. They are not
//!   behind the bearer guard: a client authenticates with its own credentials, and the metadata
//!   is public. Host and Origin are checked as everywhere;
//! - with `public_url`: the browser side — the account page at `/`, sign-in at `/auth/…`,
//!   `/connect/<provider>` links and `/oauth/callback/<provider>` ([`super::web`],
//!   [`super::connect_web`]), behind the same Host and Origin checks.
//!
//! Every other request goes through `guard`: Host and Origin checks (403), the bearer API key
//! or access token (401/403), and the session's owner (404 for another user's session); see
//! [`super::auth`].
//! A background task closes, within half a second, every session whose API key was removed.
//!
//! # Connections
//!
//! The listener is served here rather than by `axum::serve`, which has no limits: a client that
//! opens connections and never finishes a request would keep each one (and a file descriptor)
//! forever, until the process cannot accept anything, `/healthz` included. So:
//! - a request's head must arrive within `[server] header_read_timeout_ms` (hyper's header read
//!   timeout; it also closes a keep-alive connection left idle that long), else the
//!   connection is closed;
//! - at most `[server] max_unauthenticated_connections` connections are open before a request
//!   on them has presented a valid API key. Each accepted connection holds a place
//!   (`Admission`) that it gives back as soon as one of its requests authenticates; when no
//!   place is free the server stops accepting, and new connections wait in the kernel's accept
//!   queue until a slow one times out. Connections that have authenticated are not counted, so
//!   clients already at work carry on; a connection that has not (a 401, a 403, `/healthz`) is
//!   closed after its answer rather than kept alive, so it cannot hold its place idle.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http::{header, HeaderValue, Method};
use hyper_util::rt::{TokioIo, TokioTimer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::auth::{self, Access, AuthUser, Authenticator, Ownership, SessionKind, SessionOwners};
use super::exchange::{self, Exchange};
use super::oidc::Oidc;
use super::sign_in::SignIns;
use super::sse::{self, SseSessions};
use super::streamable;
use super::web::{self, Web};
use super::{KeywardServer, ServerState};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::vault::users::{self, KeyCache};
use crate::vault::Vault;

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

/// Refuse to expose the server beyond this machine without API keys or an identity provider
/// (invariant 9).
pub async fn check_bind(addr: &SocketAddr, vault: &Vault, identity_provider: bool) -> Result<()> {
    if identity_provider {
        return Ok(());
    }
    if addr.ip().is_loopback() {
        if !users::any(vault).await? {
            tracing::warn!(
                "there are no users yet, so every request will get 401: add one with \
                 `keyward users add NAME` and send its key as `Authorization: Bearer <key>`"
            );
        }
        return Ok(());
    }
    if !users::any(vault).await? {
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
    auth: Arc<Authenticator>,
    /// The browser side and remote sign-in (with `public_url`).
    web: Option<Arc<Web>>,
    /// How a session asks its user to sign in (with `public_url`).
    pub(crate) sign_ins: Option<Arc<SignIns>>,
    pub(crate) owners: Arc<SessionOwners>,
    sessions: Arc<LocalSessionManager>,
    pub(crate) sse: Arc<SseSessions>,
    pub(crate) shutdown: CancellationToken,
    json_response: bool,
}

impl App {
    /// End a session, whichever transport it lives on.
    async fn close_session(&self, id: &str, transport: SessionKind) {
        match transport {
            SessionKind::Streamable => {
                let _ = self.sessions.close_session(&Arc::from(id)).await;
            }
            SessionKind::LegacySse => self.sse.close(id),
        }
    }

    /// Close the sessions [`SessionOwners::insert`] evicted to keep `user` within the cap.
    pub(crate) async fn close_evicted(&self, user: &AuthUser, evicted: Vec<(String, SessionKind)>) {
        for (id, transport) in evicted {
            tracing::info!(
                user = user.name,
                session = id,
                "closing the user's least recently used session: they opened more than \
                 `max_sessions_per_user` ([server] in config.toml)"
            );
            self.close_session(&id, transport).await;
        }
    }
}

/// An accepted connection's place under `max_unauthenticated_connections`, given back as soon as
/// one of its requests authenticates (or the connection closes).
struct Admission {
    place: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Admission {
    fn authenticated(&self) {
        crate::sync::lock(&self.place).take();
    }

    fn pending(&self) -> bool {
        crate::sync::lock(&self.place).is_some()
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
        config: &Config,
        options: HttpOptions,
    ) -> Result<HttpServer> {
        let server_config = &config.server;
        server_config.check_http_limits()?;
        config.exchange.check()?;
        // HTTP needs the vault for every request (API keys), and the Streamable HTTP service
        // reads the tools synchronously: both are built before the port is opened.
        state.ready().await?;
        let executor = state.executor().await.map_err(super::unshared)?;
        let oidc = match (&server_config.auth, server_config.audience()?) {
            (Some(auth), Some(audience)) => Some(Arc::new(Oidc::new(auth, audience)?)),
            _ => None,
        };
        check_bind(&options.addr, executor.vault(), oidc.is_some()).await?;
        let listener = tokio::net::TcpListener::bind(options.addr)
            .await
            .map_err(|e| Error::io(format!("listening on {}", options.addr), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        let shutdown = CancellationToken::new();
        let keys = Arc::new(KeyCache::new(Vault::clone(executor.vault())));
        let access = Arc::new(Access::new(local_addr, server_config));
        let public_base = server_config.public_base()?;
        let web = web::build(
            config,
            state.clone(),
            keys.clone(),
            access.clone(),
            oidc.clone(),
            executor.vault().home(),
        )?;
        let sign_ins = web.as_ref().map(|web| {
            Arc::new(SignIns::remote(
                web.links.clone(),
                web.key.request_state_codec(),
            ))
        });
        let auth = Arc::new(Authenticator::new(keys, oidc, public_base.as_deref()));
        let exchange = config.exchange.enabled.then(|| {
            Arc::new(Exchange::new(
                executor.clone(),
                auth.clone(),
                config.exchange.clone(),
                public_base.clone(),
            ))
        });
        let app = App {
            auth,
            web,
            sign_ins,
            state,
            access,
            owners: Arc::new(SessionOwners::new(server_config.max_sessions_per_user)),
            sessions: Arc::new(LocalSessionManager::default()),
            sse: Arc::new(SseSessions::default()),
            shutdown: shutdown.clone(),
            json_response: options.json_response,
        };
        tokio::spawn(reap(app.clone()));
        let router = router(app, exchange);
        let limits = Limits {
            header_read_timeout: Duration::from_millis(server_config.header_read_timeout_ms),
            max_unauthenticated: server_config.max_unauthenticated_connections,
        };
        if let Some(base) = &public_base {
            match &server_config.auth {
                Some(auth) => tracing::info!(
                    "remote users sign in with {}; their account page is {base}/ and connect \
                     links start at {base}/connect/",
                    auth.issuer
                ),
                None => tracing::info!(
                    "connect links start at {base}/connect/ (no [server.auth]: a link alone \
                     connects an account for its user)"
                ),
            }
        }
        let task = tokio::spawn(accept(listener, router, limits, shutdown.clone()));
        tracing::info!(
            "serving MCP on http://{local_addr}/mcp (Streamable HTTP) and http://{local_addr}/sse (legacy SSE)"
        );
        if config.exchange.enabled {
            tracing::info!(
                "serving token exchange (RFC 8693) on http://{local_addr}{}",
                exchange::TOKEN_PATH
            );
        }
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

/// The connection limits of one server (see the module docs).
struct Limits {
    header_read_timeout: Duration,
    max_unauthenticated: usize,
}

/// Accept connections until `shutdown`, then wait for the open ones to finish.
async fn accept(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let places = Arc::new(Semaphore::new(limits.max_unauthenticated));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // Every connection task holds a clone of `open`; `closed()` resolves when the last is gone.
    let (all_closed, open) = tokio::sync::watch::channel(());
    loop {
        // A free place first, then accept: when none is free, new connections wait in the
        // kernel's queue instead of costing a descriptor each.
        let place = tokio::select! {
            _ = shutdown.cancelled() => break,
            place = places.clone().acquire_owned() => match place {
                Ok(place) => place,
                Err(_) => break, // never closed
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    pause_after_accept_error(e).await;
                    continue;
                }
            },
        };
        // TCP_NODELAY: an answer on an event stream is a small write that follows another
        // (the priming event, or the previous answer); with Nagle it waits for the client's
        // delayed ACK, about 40 ms on Linux.
        let _ = stream.set_nodelay(true);
        let admission = Arc::new(Admission {
            place: Mutex::new(Some(place)),
        });
        tokio::spawn(serve_connection(
            stream,
            http1.clone(),
            router.clone(),
            admission,
            shutdown.clone(),
            open.clone(),
        ));
    }
    drop(listener);
    drop(open);
    all_closed.closed().await;
    Ok(())
}

/// Serve one connection until the client closes it, a limit closes it, or the server stops
/// (then in-flight requests finish first).
async fn serve_connection(
    stream: tokio::net::TcpStream,
    http1: hyper::server::conn::http1::Builder,
    router: Router,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
    _open: tokio::sync::watch::Receiver<()>,
) {
    let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
        request.extensions_mut().insert(admission.clone());
        let mut router = router.clone();
        let admission = admission.clone();
        async move {
            let mut response =
                tower_service::Service::call(&mut router, request.map(Body::new)).await?;
            if admission.pending() {
                // Not authenticated yet: one answer, then the place goes to somebody else.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    let connection = http1.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("HTTP connection closed: {e}");
    }
}

/// After a failed accept: a connection that failed on its way in is the client's business;
/// anything else (out of file descriptors) gets a pause, so the loop does not spin while the
/// process recovers.
async fn pause_after_accept_error(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!("accepting an HTTP connection failed: {e}; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

fn router(app: App, exchange: Option<Arc<Exchange>>) -> Router {
    let state = app.state.clone();
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(app.shutdown.child_token())
        // `guard` checks Host and Origin for every route, with the config's extra entries.
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(super::jsonrpc::MAX_MESSAGE_BYTES);
    let sign_ins = app.sign_ins.clone();
    let mcp = StreamableHttpService::new(
        move || {
            let server = KeywardServer::per_request(state.clone());
            Ok(match &sign_ins {
                Some(sign_ins) => server.with_sign_ins(sign_ins.clone()),
                None => server,
            })
        },
        Arc::new(streamable::EventIds(app.sessions.clone())),
        config,
    );
    let edges = streamable::Edges {
        json_response: app.json_response,
    };
    let mut router = Router::new()
        .route_service("/mcp", mcp)
        // Only `/mcp`: what rmcp answers wrongly there (see `streamable`).
        .route_layer(middleware::from_fn_with_state(edges, streamable::edges))
        .route("/sse", get(sse::open))
        .route("/messages", post(sse::message))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .route("/healthz", get(healthz))
        .route(auth::METADATA_PATH, get(resource_metadata))
        .route(
            &format!("{}/mcp", auth::METADATA_PATH),
            get(resource_metadata),
        )
        .with_state(app.clone());
    if let Some(web) = &app.web {
        router = router.merge(web::routes(web.clone()));
    }
    if let Some(exchange) = exchange {
        // Outside the bearer guard: these routes check Host and Origin themselves, and the
        // client authenticates with its own credentials.
        let (token, metadata) = (
            (exchange.clone(), app.access.clone()),
            (exchange, app.access.clone()),
        );
        router = router
            .route(
                exchange::TOKEN_PATH,
                post(move |request: Request| {
                    let (exchange, access) = token.clone();
                    token_endpoint(exchange, access, request)
                }),
            )
            .route(
                exchange::METADATA_PATH,
                get(move |headers: http::HeaderMap| {
                    let (exchange, access) = metadata.clone();
                    async move { token_metadata(&exchange, &access, &headers) }
                }),
            );
    }
    router
}

/// `POST /oauth/token`: Host and Origin as for every route, then the exchange (which
/// authenticates the client itself).
async fn token_endpoint(
    exchange: Arc<Exchange>,
    access: Arc<Access>,
    request: Request,
) -> Response {
    if let Err(rejection) = access
        .check_host(request.headers())
        .and_then(|()| access.check_origin(request.headers()))
    {
        return rejection.into_response();
    }
    let admission = request.extensions().get::<Arc<Admission>>().cloned();
    let handled = exchange.handle(request).await;
    if handled.client_authenticated {
        if let Some(admission) = admission {
            admission.authenticated();
        }
    }
    handled.response
}

/// RFC 8414 metadata of the token endpoint: public, Host checked.
fn token_metadata(exchange: &Exchange, access: &Access, headers: &http::HeaderMap) -> Response {
    if let Err(rejection) = access.check_host(headers) {
        return rejection.into_response();
    }
    exchange.metadata(headers)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// RFC 9728 protected resource metadata: where MCP clients learn which identity provider to
/// sign their user in with. Public (no credential), and readable by any web page.
async fn resource_metadata(State(app): State<App>) -> Response {
    let base = app.web.as_ref().map(|web| web.base.clone());
    let Some(document) = base.and_then(|base| app.auth.metadata(&base)) else {
        return (
            http::StatusCode::NOT_FOUND,
            "404 Not Found: keyward has no [server.auth]\n",
        )
            .into_response();
    };
    let mut response = axum::Json(document).into_response();
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// Host, Origin, API key and session owner, for every route but `/healthz`.
async fn guard(State(app): State<App>, mut request: Request, next: Next) -> Response {
    if let Err(rejection) = app.access.check_host(request.headers()) {
        return rejection.into_response();
    }
    if let Err(rejection) = app.access.check_origin(request.headers()) {
        return rejection.into_response();
    }
    let user = match app.auth.authenticate(request.headers()).await {
        Ok(user) => user,
        Err(refused) => return app.auth.refuse(refused),
    };
    if let Some(admission) = request.extensions().get::<Arc<Admission>>() {
        admission.authenticated();
    }
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
                let evicted =
                    app.owners
                        .insert(id.to_string(), user.clone(), SessionKind::Streamable);
                if !evicted.is_empty() {
                    let app = app.clone();
                    tokio::spawn(async move { app.close_evicted(&user, evicted).await });
                }
            }
        }
        (Some(id), &Method::DELETE) if response.status().is_success() => app.owners.remove(id),
        _ => {}
    }
    response
}

/// Every half second: forget sessions rmcp has closed, and close those whose key is gone. Each
/// distinct key is checked once per round, through the key cache, however many sessions it
/// has: an idle server with many sessions costs next to nothing.
async fn reap(app: App) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = app.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut valid: std::collections::HashMap<AuthUser, bool> = Default::default();
        for (id, owner, transport) in app.owners.snapshot() {
            if transport == SessionKind::Streamable {
                let session_id: Arc<str> = id.as_str().into();
                if !app.sessions.has_session(&session_id).await.unwrap_or(false) {
                    app.owners.remove(&id);
                    continue;
                }
            }
            let still_valid = match valid.get(&owner) {
                Some(&known) => known,
                None => {
                    let now = owner.still_valid(app.auth.keys()).await;
                    *valid.entry(owner.clone()).or_insert(now)
                }
            };
            if !still_valid {
                tracing::info!(
                    user = owner.name,
                    session = id,
                    "the session's API key or user was removed: closing it"
                );
                app.owners.remove(&id);
                app.close_session(&id, transport).await;
            }
        }
    }
}

/// Serve until SIGTERM/SIGINT, then close sessions and flush the vault.
pub async fn serve(state: Arc<ServerState>, config: &Config, options: HttpOptions) -> Result<()> {
    let server = HttpServer::start(state.clone(), config, options).await?;
    let stop = server.shutdown_token();
    let signals = tokio::spawn(super::stdio::cancel_on_signal(stop.clone()));
    stop.cancelled().await;
    signals.abort();
    let result = server.stop().await;
    state.flush().await;
    result
}
