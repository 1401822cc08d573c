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

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CustomRequest, CustomResult, ErrorCode, ErrorData,
    Extensions, Implementation, InitializeRequestParams, InitializeResult, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{NotificationContext, RequestContext, RoleServer};
use rmcp::ServerHandler;
use serde_json::Value;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::auth::AuthUser;
use super::tools::{self, META_ACCOUNT};
use super::ServerState;
use crate::exec::CallContext;
use crate::vault::AuditEntry;

/// The newest protocol revision keyward speaks. It has sessions, which keyward needs: they bind
/// an HTTP client to its user, carry `tools/list_changed`, and group calls in the audit log.
pub const MAX_PROTOCOL: ProtocolVersion = ProtocolVersion::V_2025_11_25;

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
            let (executor, mut changes) = match subscribed {
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
            let (mut last, now) = baseline(&state, &executor, &served, &user).await;
            if now != last {
                last = now;
                if peer.notify_tool_list_changed().await.is_err() {
                    return;
                }
            }
            loop {
                let changed = tokio::select! {
                    _ = stop.cancelled() => return,
                    change = changes.recv() => change,
                };
                match changed {
                    Ok(key) if key.user != user => continue,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
                let Ok(now) = state.visible_providers(&user).await else {
                    return;
                };
                if now != last {
                    last = now;
                    tracing::debug!(user, "connections changed: tools/list_changed");
                    if peer.notify_tool_list_changed().await.is_err() {
                        return;
                    }
                }
            }
        });
    }
}

/// A request that needs the tools or the vault, when they could not be built: the error says why
/// and what to do (the server also ends with it).
fn not_open(e: Arc<crate::error::Error>) -> ErrorData {
    ErrorData::internal_error(e.to_string(), None)
}

/// The providers whose tools a user sees (`None`: all), as [`ServerState::visible_with`] says.
type Visible = Option<Vec<String>>;

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
        .with_protocol_version(MAX_PROTOCOL)
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
        Ok(ListToolsResult::with_all_items(
            tools.visible(visible.as_deref()),
        ))
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
        tokio::select! {
            outcome = executor.call(&ctx, name, args) => Ok(tools::result(outcome).into()),
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
