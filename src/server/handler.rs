//! The rmcp `ServerHandler` over the executor. One `KeywardServer` serves one MCP session (a
//! stdio process, a Streamable HTTP session or a legacy SSE stream).
//!
//! Choices a client can observe:
//! - `tools/list` lists the tools the server's filter allows whose provider the user has
//!   connected (all of them with `all_tools`). Each definition carries annotations and, in
//!   `_meta`, `keyward/provider`, `keyward/toolset` and `keyward/scopes`.
//! - `tools/call` of a tool the filter does not allow, or that does not exist, is a JSON-RPC
//!   *invalid params* error (-32602, "unknown tool: NAME"), as the MCP specification prescribes
//!   for unknown tools: as far as this server is concerned the tool does not exist. A tool that
//!   is allowed but hidden because its provider is not connected is callable and answers with
//!   an `isError` result naming the command that connects it.
//! - Every other failure (bad arguments, missing scopes, provider errors, timeouts) is an
//!   `isError` result whose text is the message plus the hint, with the same fields in
//!   `structuredContent`.
//! - `notifications/cancelled` for a running call drops it, which aborts the upstream request;
//!   no response is sent for it.
//! - A request's `_meta` may carry `keyward/account` to pick one of the user's accounts of the
//!   tool's provider. It can only ever name an account of the session's own user.
//! - 2026-07-28 (stateless): `tools/list` carries `ttlMs` ([`TOOLS_LIST_TTL_MS`]) and
//!   `cacheScope: private`; `subscriptions/listen` delivers the same `tools/list_changed` a
//!   2025-era session gets; on stdio a call that needs the user to sign in is answered, for a
//!   client that declared `elicitation.url`, with an `InputRequiredResult` ([`super::sign_in`]).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CustomRequest, CustomResult, ErrorCode,
    ErrorData, Extensions, Implementation, InitializeRequestParams, InitializeResult,
    ListToolsResult, PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
    SubscriptionFilter, Tool,
};
use rmcp::service::{NotificationContext, RequestContext, RoleServer, SubscriptionContext};
use rmcp::ServerHandler;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::auth::AuthUser;
use super::sign_in::{SignIns, SIGN_IN_REQUEST};
use super::tools::{self, META_ACCOUNT};
use super::ServerState;
use crate::exec::CallContext;
use crate::vault::AuditEntry;

/// The newest protocol revision keyward speaks with an `initialize` handshake: what a handshake
/// asking for a newer one is answered with. Its sessions bind an HTTP client to its user, carry
/// `tools/list_changed`, and group calls in the audit log.
pub const MAX_HANDSHAKE_PROTOCOL: ProtocolVersion = ProtocolVersion::V_2025_11_25;

/// The newest revision keyward speaks: 2026-07-28, stateless. Each request carries its version,
/// the client's capabilities and info in `_meta`; the user comes from the request's credential
/// (HTTP) or the process (stdio), never from a session (invariant 14).
pub const MAX_PROTOCOL: ProtocolVersion = ProtocolVersion::V_2026_07_28;

/// How long a 2026-07-28 client may keep a `tools/list` answer (`ttlMs`). The list depends on
/// the user's connections, which change when they run `keyward connect` — a person waits for
/// that, so ten seconds is the longest a client that does not listen for changes
/// (`subscriptions/listen`) shows a stale list; one that listens is told at once.
pub const TOOLS_LIST_TTL_MS: u64 = 10_000;

/// Who a session acts for.
#[derive(Debug, Clone)]
enum Binding {
    /// stdio (`--user`) and legacy SSE (the key that opened the stream): fixed for the session.
    Fixed { user: String, session: String },
    /// Streamable HTTP: every request carries its authenticated user; the first (`initialize`)
    /// binds the session to it, and later requests must be from the same user.
    PerRequest,
}

/// The MCP server of one session.
pub struct KeywardServer {
    state: Arc<ServerState>,
    binding: Binding,
    session_user: OnceLock<String>,
    /// The providers behind the last `tools/list` this session answered (`None` inside: all
    /// tools), for the `list_changed` watcher: a watcher that subscribes after the vault opened
    /// compares against what the client was told.
    served: Arc<tokio::sync::Mutex<Option<Visible>>>,
    /// Subscriptions to the vault's changes taken when a `subscriptions/listen` was accepted,
    /// before rmcp acknowledged it, for its `listen` to take (see
    /// [`ServerHandler::accepted_subscription_filter`] below): a change right after the
    /// acknowledgment is never missed.
    listening: Mutex<VecDeque<broadcast::Receiver<crate::vault::ConnKey>>>,
    /// How users are asked to sign in: stdio's own browser flows, or (HTTP with `public_url`)
    /// `/connect` links.
    sign_ins: Option<Arc<SignIns>>,
    /// Stops this session's `list_changed` watcher when the session ends.
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
}

impl KeywardServer {
    fn with_binding(state: Arc<ServerState>, binding: Binding) -> KeywardServer {
        let stop = CancellationToken::new();
        KeywardServer {
            state,
            binding,
            session_user: OnceLock::new(),
            served: Arc::default(),
            listening: Mutex::default(),
            sign_ins: None,
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
        }
    }

    /// A session that acts for `user` throughout; `session` names it in the audit log.
    pub fn for_user(
        state: Arc<ServerState>,
        user: impl Into<String>,
        session: impl Into<String>,
    ) -> KeywardServer {
        Self::with_binding(
            state,
            Binding::Fixed {
                user: user.into(),
                session: session.into(),
            },
        )
    }

    /// Ask 2026-07-28 clients that declared `elicitation.url` to sign in when a call needs it
    /// (stdio: the browser and keyward are on the same machine; HTTP with `public_url`: a
    /// `/connect` link, also given to other clients in the error's hint).
    pub fn with_sign_ins(mut self, sign_ins: Arc<SignIns>) -> KeywardServer {
        self.sign_ins = Some(sign_ins);
        self
    }

    /// A Streamable HTTP session: the user comes with each request (see [`AuthUser`]).
    pub fn per_request(state: Arc<ServerState>) -> KeywardServer {
        Self::with_binding(state, Binding::PerRequest)
    }

    /// The user and MCP session id of a request.
    fn who(&self, extensions: &Extensions) -> Result<(String, Option<String>), ErrorData> {
        match &self.binding {
            Binding::Fixed { user, session } => Ok((user.clone(), Some(session.clone()))),
            Binding::PerRequest => {
                let parts = extensions.get::<http::request::Parts>();
                let user = parts
                    .and_then(|p| p.extensions.get::<AuthUser>())
                    .map(|a| a.name.clone())
                    .ok_or_else(|| {
                        ErrorData::internal_error("the request carries no authenticated user", None)
                    })?;
                if let Some(bound) = self.session_user.get() {
                    if *bound != user {
                        return Err(ErrorData::invalid_request(
                            "this session belongs to another user",
                            None,
                        ));
                    }
                }
                let session = parts
                    .and_then(|p| p.headers.get("mcp-session-id"))
                    .and_then(|v| v.to_str().ok())
                    .map(String::from);
                Ok((user, session))
            }
        }
    }

    /// Send `notifications/tools/list_changed` whenever the set of providers `user` has
    /// connected changes, until the session ends.
    fn watch_connections(&self, user: String, peer: rmcp::Peer<RoleServer>) {
        if self.state.offer().all_tools {
            return; // the list never depends on connections
        }
        let state = self.state.clone();
        let stop = self.stop.clone();
        let served = self.served.clone();
        // Subscribed before this returns when the vault is open, so that no change after
        // `notifications/initialized` is missed; else as soon as it opens (see `baseline`).
        let subscribed = state
            .executor_now()
            .map(|executor| (executor.clone(), executor.vault().subscribe_changes()));
        tokio::spawn(async move {
            let (executor, changes) = match subscribed {
                Some(subscribed) => subscribed,
                None => {
                    let executor = tokio::select! {
                        _ = stop.cancelled() => return,
                        executor = state.executor() => match executor {
                            Ok(executor) => executor,
                            // A vault that does not open has no changes (and ends the server).
                            Err(_) => return,
                        },
                    };
                    let changes = executor.vault().subscribe_changes();
                    (executor, changes)
                }
            };
            let (told, now) = baseline(&state, &executor, &served, &user).await;
            let notify = || async { peer.notify_tool_list_changed().await.is_ok() };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = follow_connections(&state, changes, &user, told, now, notify) => {}
            }
        });
    }
}

/// Call `notify` (`tools/list_changed`) whenever the providers `user` sees differ from what the
/// client was last told (`told`), starting with `now` if it already does, and after each change
/// of the user's connections `changes` reports; until `notify` fails or the vault goes away.
/// What 2025-era sessions and 2026-07-28 `subscriptions/listen` streams are told is the same.
async fn follow_connections<N, F>(
    state: &ServerState,
    mut changes: broadcast::Receiver<crate::vault::ConnKey>,
    user: &str,
    mut told: Visible,
    now: Visible,
    mut notify: N,
) where
    N: FnMut() -> F,
    F: Future<Output = bool>,
{
    if now != told {
        told = now;
        if !notify().await {
            return;
        }
    }
    loop {
        match changes.recv().await {
            Ok(key) if key.user != user => continue,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
        let Ok(now) = state.visible_providers(user).await else {
            return;
        };
        if now != told {
            told = now;
            tracing::debug!(user, "connections changed: tools/list_changed");
            if !notify().await {
                return;
            }
        }
    }
}

/// A request that needs the tools or the vault, when they could not be built: the error says why
/// and what to do (the server also ends with it).
fn not_open(e: Arc<crate::error::Error>) -> ErrorData {
    ErrorData::internal_error(e.to_string(), None)
}

/// The providers whose tools a user sees (`None`: all), as [`ServerState::visible_with`] says.
type Visible = Option<Vec<super::Connected>>;

/// Where a session's watcher starts, once it has subscribed to the vault's changes: what the
/// client was last told (the last `tools/list` answered, else what it would be told now) and
/// what it would be told now. Under the `served` lock, which `tools/list` holds from reading the
/// connections to recording them: every list is either recorded before this reads it, or read
/// after the subscription, so a change is never lost between a list and a late subscription.
async fn baseline(
    state: &ServerState,
    executor: &crate::exec::Executor,
    served: &tokio::sync::Mutex<Option<Visible>>,
    user: &str,
) -> (Visible, Visible) {
    let served = served.lock().await;
    let now = state.visible_with(executor, user).await;
    let told = served.clone().unwrap_or_else(|| now.clone());
    (told, now)
}

/// Whether a change of `user`'s connections is waiting in `changes` (or some were missed).
fn changed_for(changes: &mut broadcast::Receiver<crate::vault::ConnKey>, user: &str) -> bool {
    let mut changed = false;
    loop {
        match changes.try_recv() {
            Ok(key) => changed |= key.user == user,
            Err(broadcast::error::TryRecvError::Lagged(_)) => changed = true,
            Err(_) => return changed,
        }
    }
}

/// Whether the request's client can show its user a URL (`elicitation.url`).
fn declares_url_elicitation(context: &RequestContext<RoleServer>) -> bool {
    context
        .client_capabilities()
        .and_then(|capabilities| capabilities.elicitation)
        .is_some_and(|elicitation| elicitation.url.is_some())
}

/// Whether the user accepted keyward's sign-in request (a retry's `inputResponses`).
fn accepted(responses: Option<&rmcp::model::InputResponses>) -> bool {
    responses
        .and_then(|r| r.get(SIGN_IN_REQUEST))
        .and_then(|answer| serde_json::from_value::<rmcp::model::ElicitResult>(answer.clone()).ok())
        .is_some_and(|answer| answer.action == rmcp::model::ElicitationAction::Accept)
}

/// Whether a request speaks a stateless revision (2026-07-28 and later: no `initialize`).
fn is_stateless(context: &RequestContext<RoleServer>) -> bool {
    context
        .protocol_version()
        .is_some_and(|version| !version.has_initialize())
}

fn account_from_meta(meta: Option<&serde_json::Map<String, Value>>) -> Option<String> {
    meta?.get(META_ACCOUNT)?.as_str().map(String::from)
}

impl ServerHandler for KeywardServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_protocol_version(MAX_HANDSHAKE_PROTOCOL)
        .with_server_info(
            Implementation::new("keyward", env!("CARGO_PKG_VERSION")).with_title("keyward"),
        )
        .with_instructions(
            "Tools for GitHub, Slack and Google Calendar that act with the user's own accounts. \
             keyward holds the OAuth tokens; a failed call explains what to do (often a \
             `keyward connect` command for the user to run).",
        )
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&MAX_PROTOCOL))
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, ErrorData> {
        if let Binding::PerRequest = self.binding {
            let (user, _) = self.who(&context.extensions)?;
            let _ = self.session_user.set(user);
        }
        context.peer.set_peer_info(request.clone());
        self.negotiate_initialize(&request)
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let user = match &self.binding {
            Binding::Fixed { user, .. } => Some(user.clone()),
            Binding::PerRequest => self.session_user.get().cloned(),
        };
        if let Some(user) = user {
            self.watch_connections(user, context.peer);
        }
    }

    /// `subscriptions/listen` (2026-07-28): keyward's one change notification is
    /// `tools/list_changed`. The subscription to the vault's changes is taken here, before rmcp
    /// sends the acknowledgment, and handed to [`Self::listen`].
    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        if requested.tools_list_changed == Some(true) {
            if let Some(executor) = self.state.executor_now() {
                crate::sync::lock(&self.listening).push_back(executor.vault().subscribe_changes());
            }
        }
        Some(SubscriptionFilter::builder().tools_list_changed().build())
    }

    /// One `subscriptions/listen` stream: the same `tools/list_changed` events a 2025-era
    /// session gets (a connection of the user added or removed, by any local process), until
    /// the client cancels it or goes away.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        if context.accepted().tools_list_changed != Some(true) || self.state.offer().all_tools {
            context.cancelled().await; // nothing will ever change
            return Ok(());
        }
        let (user, _) = self.who(&context.request_context().extensions)?;
        let executor = self.state.executor().await.map_err(not_open)?;
        // The oldest subscription taken before an acknowledgment: at least as old as this
        // stream's own (several listens at once on one stdio connection share the queue).
        let taken = crate::sync::lock(&self.listening).pop_front();
        let mut changes = taken.unwrap_or_else(|| executor.vault().subscribe_changes());
        let now = self.state.visible_with(&executor, &user).await;
        let sink = context.sink().clone();
        let notify = || async { sink.notify_tool_list_changed().await.is_ok() };
        // A change since the subscription may or may not be in `now`, and the client may have
        // listed its tools before it: tell it to list again.
        if changed_for(&mut changes, &user) && !notify().await {
            return Ok(());
        }
        tokio::select! {
            _ = context.cancelled() => {}
            _ = follow_connections(&self.state, changes, &user, now.clone(), now, notify) => {}
        }
        Ok(())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let (user, _) = self.who(&context.extensions)?;
        let tools = self.state.tools().await.map_err(not_open)?;
        let visible = if self.state.offer().all_tools {
            None
        } else {
            let executor = self.state.executor().await.map_err(not_open)?;
            let mut served = self.served.lock().await;
            let visible = self.state.visible_with(&executor, &user).await;
            *served = Some(visible.clone());
            visible
        };
        let result = ListToolsResult::with_all_items(tools.visible(visible.as_deref()));
        // Caching directives are 2026-07-28's; 2025-era answers stay as they were. The list
        // depends on the user's connections: only their own client may keep it.
        Ok(if is_stateless(&context) {
            result
                .with_ttl_ms(TOOLS_LIST_TTL_MS)
                .with_cache_scope(CacheScope::Private)
        } else {
            result
        })
    }

    /// Used by the Streamable HTTP service, whose server builds its tools before it listens.
    fn get_tool(&self, name: &str) -> Option<Tool> {
        let tools = self.state.tools_now()?;
        tools.offered(name).map(|o| o.tool.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.as_ref();
        let tools = self.state.tools().await.map_err(not_open)?;
        let Some(offered) = tools.offered(name) else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool: {name}"),
                Some(serde_json::json!({ "tool": name })),
            ));
        };
        let (user, session) = self.who(&context.extensions)?;
        let account = account_from_meta(Some(&context.meta.0 .0))
            .or_else(|| account_from_meta(request.meta.as_ref().map(|m| &m.0 .0)))
            .or_else(|| self.state.offer().account.clone());
        let ctx = CallContext {
            user,
            account,
            session,
        };
        let args = request.arguments.unwrap_or_default();
        let executor = self.state.executor().await.map_err(not_open)?;
        // A client that can show the user a URL is asked to sign in (MRTR), once per call: a
        // retry (it carries the sealed `requestState`) waits for that sign-in and gets the
        // outcome of the call either way.
        let sign_ins = self
            .sign_ins
            .as_ref()
            .filter(|_| is_stateless(&context) && declares_url_elicitation(&context));
        let retry =
            match (&request.request_state, &self.sign_ins) {
                (None, _) => None,
                (Some(sealed), Some(sign_ins)) => Some(
                    sign_ins
                        .open(sealed, &ctx.user, name, &args)
                        .map_err(|why| {
                            ErrorData::invalid_params(
                                format!(
                                "requestState is not one keyward issued for this call ({why}); \
                                 call the tool again without it"
                            ),
                                None,
                            )
                        })?,
                ),
                (Some(_), None) => return Err(ErrorData::invalid_params(
                    "requestState is not one keyward issued for this call; call the tool again \
                     without it",
                    None,
                )),
            };
        let call = async {
            let accepted = accepted(request.input_responses.as_ref());
            // Remote: subscribed before the call, so a connection stored meanwhile is not missed.
            let changes = match (&retry, &self.sign_ins) {
                (Some(_), Some(sign_ins)) if accepted && sign_ins.waits_for_change() => {
                    Some(executor.vault().subscribe_changes())
                }
                _ => None,
            };
            if let (Some(awaited), Some(sign_ins)) = (&retry, &self.sign_ins) {
                if accepted {
                    sign_ins.wait(&awaited.key).await;
                }
            }
            let mut outcome = executor.call(&ctx, name, args.clone()).await;
            if let (Some(changes), Some(awaited), Some(sign_ins), Err(e)) =
                (changes, &retry, &self.sign_ins, &outcome)
            {
                let still_missing = e.sign_in.as_ref().is_some_and(|s| s.key == awaited.key);
                if still_missing && sign_ins.wait_for_change(changes, awaited).await {
                    outcome = executor.call(&ctx, name, args.clone()).await;
                }
            }
            if let (Err(e), Some(sign_ins), None) = (&outcome, sign_ins, &retry) {
                if let Some(sign_in) = &e.sign_in {
                    let vault = executor.vault();
                    match sign_ins
                        .ask(vault, executor.catalog(), sign_in, name, &args)
                        .await
                    {
                        Ok(ask) => return CallToolResponse::InputRequired(ask),
                        Err(why) => tracing::warn!("could not start a sign-in: {why}"),
                    }
                }
            }
            // Not asked (or asked already): a remote user gets the link in the hint.
            let outcome = match (outcome, &self.sign_ins) {
                (Err(e), Some(sign_ins)) => Err(sign_ins.with_link(e)),
                (outcome, _) => outcome,
            };
            tools::result(outcome).into()
        };
        tokio::select! {
            response = call => Ok(response),
            // Dropping the call aborts the upstream request; rmcp sends no response for a
            // request the client cancelled. The executor had no chance to audit it: do it here.
            _ = context.ct.cancelled() => {
                let mut entry = AuditEntry::new(&ctx.user, "tool-call", "error: cancelled by the client");
                entry.tool = Some(name.to_string());
                entry.session = ctx.session.clone();
                entry.provider = Some(offered.provider.clone());
                entry.account = ctx.account.clone();
                executor.vault().audit(&entry).await;
                Err(ErrorData::new(ErrorCode::INTERNAL_ERROR, "the request was cancelled", None))
            }
        }
    }

    /// rmcp hands a request whose params do not parse (e.g. `tools/call` with `"arguments":
    /// 5`) to this method under its own name: answer those with *invalid params*, not with
    /// *method not found*.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, ErrorData> {
        const KNOWN: [&str; 5] = [
            "initialize",
            "ping",
            "tools/list",
            "tools/call",
            "notifications/cancelled",
        ];
        if KNOWN.contains(&request.method.as_str()) {
            Err(ErrorData::invalid_params(
                format!("malformed params for {}", request.method),
                None,
            ))
        } else {
            Err(ErrorData::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!("method not found: {}", request.method),
                None,
            ))
        }
    }
}
