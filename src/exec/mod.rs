//! The executor: one validated tool call in, one compact result out.
//!
//! The data path of a call, in the order this module runs it:
//! 1. find the tool in the catalog and validate the arguments ([`render::validate_args`]) —
//!    a bad argument is an error result and no request is made;
//! 2. pick the connection (user, provider, account) and check that its granted scopes cover
//!    the tool's ([`crate::catalog::scopes`]);
//! 3. take the access token from the vault just in time ([`crate::oauth::refresh`] refreshes
//!    it first when it is near expiry);
//! 4. render the request ([`render::render`]: path segments encoded, host pinned) and send it
//!    ([`client`]: timeouts, size cap, retries, no cross-host redirects);
//! 5. map provider errors to tool errors with a hint ([`errors`]);
//! 6. project the response to the declared fields ([`project::project`]);
//! 7. redact the result *or the error* with every secret keyward knows for the call — the
//!    user's tokens, a token a refresh just issued, the OAuth client secrets
//!    ([`crate::secret::Redactor`]) — and only then audit and return it. Errors are redacted
//!    exactly like results because a provider's error body is the likeliest place for a token
//!    to be quoted back (`422 Validation Failed for Bearer …`).

pub mod client;
pub mod errors;
pub mod project;
pub mod render;
pub mod resolve;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::catalog::{missing_scopes, Catalog, Provider, Tool};
use crate::config::{Config, ExecutorConfig};
use crate::error::{Error, Result};
use crate::oauth::refresh::{RefreshError, Refresher};
use crate::secret::{Redactor, SecretString};
use crate::vault::{AuditEntry, ConnKey, Connection, ConnectionStatus, Vault, DEFAULT_ACCOUNT};

pub use errors::ToolError;

/// Who is calling, on whose behalf.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The keyward user whose connections the call may use.
    pub user: String,
    /// The provider account to use; `None` picks `default`, or the only one there is.
    pub account: Option<String>,
    /// The MCP session id, for the audit log.
    pub session: Option<String>,
}

impl CallContext {
    pub fn new(user: impl Into<String>) -> CallContext {
        CallContext {
            user: user.into(),
            account: None,
            session: None,
        }
    }
}

/// What a call produced: the (projected, redacted) result, or the (redacted) tool error.
pub type CallOutcome = Result<Value, ToolError>;

/// Runs tool calls. Cheap to share behind an `Arc`.
pub struct Executor {
    catalog: Arc<Catalog>,
    vault: Arc<Vault>,
    client: client::Upstream,
    refresher: Refresher,
    limits: ExecutorConfig,
    /// Per tool: the parts of a response its projection reads (see [`project::Reads`]).
    reads: HashMap<String, project::Reads>,
    /// The OAuth client secrets of every provider: redacted from every call's output.
    client_secrets: Redactor,
    /// Names resolved to ids, per connection ([`resolve`]).
    names: resolve::NameCache,
}

impl Executor {
    pub fn new(catalog: Arc<Catalog>, vault: Arc<Vault>, config: &Config) -> Result<Executor> {
        let client = client::Upstream::new(&config.executor)?;
        Ok(Executor::with_upstream(catalog, vault, config, client))
    }

    /// [`Executor::new`] with an HTTP client built beforehand (`keyward serve` builds it while
    /// the catalog and the vault load).
    pub fn with_upstream(
        catalog: Arc<Catalog>,
        vault: Arc<Vault>,
        config: &Config,
        client: client::Upstream,
    ) -> Executor {
        let refresher = Refresher::new(
            catalog.clone(),
            vault.clone(),
            config,
            client.http().clone(),
        );
        let reads = catalog
            .tools()
            .map(|(provider, tool)| {
                let reads = project::Reads::of(tool, &provider.answer_fields());
                (tool.name.clone(), reads)
            })
            .collect();
        let client_secrets = Redactor::of(
            config
                .providers
                .values()
                .filter_map(|p| p.client_secret.as_ref()),
        );
        Executor {
            catalog,
            vault,
            client,
            refresher,
            limits: config.executor.clone(),
            reads,
            client_secrets,
            names: resolve::NameCache::default(),
        }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    /// The providers the user has a connection with, each with its account names.
    pub async fn connected_accounts(&self, user: &str) -> Vec<(String, Vec<String>)> {
        self.vault.accounts_of(user).await.unwrap_or_default()
    }

    /// Run one tool call. Never panics on bad input; every failure is a [`ToolError`] that
    /// says what happened and what to do.
    pub async fn call(
        &self,
        ctx: &CallContext,
        tool_name: &str,
        args: Map<String, Value>,
    ) -> CallOutcome {
        let started = Instant::now();
        let (ctx, args) = account_argument(ctx, self.catalog.tool(tool_name), args);
        let ctx = &ctx;
        let Some((provider, tool)) = self.catalog.tool(tool_name) else {
            return Err(
                ToolError::new(format!("there is no tool named {tool_name:?}"))
                    .hint("`keyward tools` lists the tools (or ask the client for tools/list)"),
            );
        };
        let mut audit = AuditEntry::new(&ctx.user, "tool-call", "ok");
        audit.tool = Some(tool.name.clone());
        audit.session = ctx.session.clone();
        audit.provider = Some(provider.name.clone());
        audit.scopes = Some(tool.scopes.clone());
        // Filled by `run` as it learns secrets (the user's tokens, a refreshed token), so that
        // an error from any step is redacted with everything known by then.
        let mut redactor = self.client_secrets.clone();
        let outcome = self
            .run(ctx, provider, tool, args, &mut audit, &mut redactor)
            .await;
        audit.latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        let outcome = match outcome {
            Ok(v) => Ok(redactor.value(v)),
            Err(e) => {
                let e = e.redacted(&redactor);
                audit.outcome = format!("error: {}", e.message);
                Err(e)
            }
        };
        self.vault.audit(&audit).await;
        outcome
    }

    async fn run(
        &self,
        ctx: &CallContext,
        provider: &Provider,
        tool: &Tool,
        args: Map<String, Value>,
        audit: &mut AuditEntry,
        redactor: &mut Redactor,
    ) -> Result<Value, ToolError> {
        let mut valid = render::validate_args(tool, &args)
            .map_err(|e| ToolError::new(format!("invalid arguments for {}: {e}", tool.name)))?;
        // One read of the user's connections serves the whole call: the one it uses, and every
        // secret the vault holds for the user (redacted from the result). Through a relay this
        // is one round trip to the vault's owner instead of three.
        let (conn, secrets) = self.user_connection(ctx, provider).await?;
        redactor.extend(&secrets);
        let key = conn.key.clone();
        audit.account = Some(key.account.clone());
        if let ConnectionStatus::NeedsReconnect { reason } = &conn.record.status {
            return Err(errors::needs_reconnect(&key, reason));
        }
        // An import without a `scope` field tells us nothing; the provider will enforce it.
        if !conn.record.scopes.is_empty() {
            let missing = missing_scopes(provider, &conn.record.scopes, &tool.scopes);
            if !missing.is_empty() {
                return Err(errors::missing_scopes(
                    &key,
                    tool,
                    &missing,
                    &conn.record.scopes,
                ));
            }
        }
        let render_request = |valid: &render::ValidArgs| {
            render::render(provider, tool, valid).map_err(|e| {
                ToolError::new(format!(
                    "{} cannot run with these arguments: {e}",
                    tool.name
                ))
            })
        };
        // Rendered before the token is touched: a refused argument costs no refresh.
        let mut request = render_request(&valid)?;
        let granted = conn.record.scopes.clone();
        let deadline = client::deadline_after(Duration::from_millis(self.limits.call_budget_ms));
        let (mut token, mut version) = self.refresher.fresh_token(&key, conn, deadline).await?;
        redactor.add(&token);
        // Names become ids with the call's own connection and token.
        let lookup = resolve::Lookup {
            catalog: &self.catalog,
            client: &self.client,
            provider,
            key: &key,
            granted: &granted,
            token: &token,
            deadline,
        };
        if self.names.resolve(&lookup, tool, &mut valid).await? {
            request = render_request(&valid)?;
        }
        audit.method = Some(request.method.to_string());
        audit.host = request.url.host_str().map(String::from);
        audit.path = Some(request.url.path().to_string());
        let mut refreshed_after_401 = false;
        let response = loop {
            let response = self.client.send(&request, &token, deadline).await?;
            audit.status = Some(response.status.as_u16());
            // A 401 on a token we believed valid (providers that omit `expires_in` never tell
            // us it expired): one forced refresh, one retry.
            if errors::is_unauthorized(provider, &response) && !refreshed_after_401 {
                refreshed_after_401 = true;
                match self
                    .refresher
                    .force_refresh(&key, version, deadline)
                    .await?
                {
                    Some((t, v)) => {
                        redactor.add(&t);
                        token = t;
                        version = v;
                        continue;
                    }
                    None => break response,
                }
            }
            break response;
        };
        self.vault.touch(&key).await;
        let reads = self.reads.get(&tool.name);
        let body = errors::check_with(provider, tool, &key, &response, reads)?;
        Ok(project::project(tool, &response.headers, body))
    }

    /// The access token of `conn` for a program outside keyward (the token exchange,
    /// [`crate::server::exchange`]), within the call budget: the record's own token, or — near
    /// expiry — the one the refresher produces, single-flight with every tool call of the
    /// connection (invariant 5). Returns the record the token belongs to (after a refresh, the
    /// new one: its expiry and scopes are the token's). The connection counts as used.
    pub async fn token_for(&self, conn: Connection) -> Result<Connection, RefreshError> {
        let deadline = client::deadline_after(Duration::from_millis(self.limits.call_budget_ms));
        let key = conn.key.clone();
        let seen = conn.version;
        let (_, version) = self
            .refresher
            .fresh_token(&key, conn.clone(), deadline)
            .await?;
        let conn = if version == seen {
            conn
        } else {
            // The refresh wrote a new record: read it for the new token's expiry and scopes. A
            // writer after it (another refresh, a reconnect) left a token as good, if active.
            let latest = self
                .vault
                .get(&key)
                .await
                .map_err(|e| ToolError::new(e.to_string()))?;
            let now = chrono::Utc::now().timestamp();
            match latest {
                Some(latest)
                    if latest.version == version
                        || (latest.record.status == ConnectionStatus::Active
                            && !latest.record.needs_refresh(now, 0)) =>
                {
                    latest
                }
                _ => {
                    return Err(ToolError::new(format!(
                        "the {key} connection changed while its token was being refreshed"
                    ))
                    .hint("this is temporary; retry in a moment")
                    .retryable()
                    .into())
                }
            }
        };
        self.vault.touch(&key).await;
        Ok(conn)
    }

    /// The connection a call uses — the account asked for, else `default`, else the only one —
    /// and every token the vault holds for the user, so that an upstream echoing one (even of
    /// another connection) cannot leak it.
    async fn user_connection(
        &self,
        ctx: &CallContext,
        provider: &Provider,
    ) -> Result<(Connection, Vec<SecretString>), ToolError> {
        let rows = self
            .vault
            .list(Some(&ctx.user))
            .await
            .map_err(|e| ToolError::from_vault(&e))?;
        let mut secrets = Vec::new();
        let mut accounts: Vec<(String, Result<Connection, Error>)> = Vec::new();
        for row in rows {
            match row {
                Ok((conn, _)) => {
                    secrets.push(conn.record.access_token.clone());
                    secrets.extend(conn.record.refresh_token.clone());
                    if conn.key.provider == provider.name {
                        accounts.push((conn.key.account.clone(), Ok(conn)));
                    }
                }
                // A record that does not open fails only the calls that need it.
                Err(e) => match &e {
                    Error::RecordCorrupt {
                        provider: p,
                        account,
                        ..
                    } => {
                        if *p == provider.name {
                            let account = account.clone();
                            accounts.push((account, Err(e)));
                        }
                    }
                    _ => return Err(ToolError::from_vault(&e)),
                },
            }
        }
        let wanted = match &ctx.account {
            Some(account) => account.clone(),
            None if accounts.len() == 1 => accounts[0].0.clone(),
            None if accounts.is_empty() || accounts.iter().any(|(a, _)| a == DEFAULT_ACCOUNT) => {
                DEFAULT_ACCOUNT.to_string()
            }
            None => {
                let names: Vec<&str> = accounts.iter().map(|(a, _)| a.as_str()).collect();
                return Err(ToolError::new(format!(
                    "user {} has several {} accounts ({}) and none was chosen",
                    ctx.user,
                    provider.name,
                    names.join(", ")
                ))
                .hint(format!(
                    "pass the `{ACCOUNT_ARGUMENT}` argument (one of: {}), or start the server with \
                     `--account NAME` (or pass --account to `keyward call`)",
                    names.join(", ")
                )));
            }
        };
        let key = ConnKey::new(&ctx.user, &provider.name, &wanted)
            .map_err(|e| ToolError::from_vault(&e))?;
        match accounts.into_iter().find(|(a, _)| *a == wanted) {
            Some((_, Ok(conn))) => Ok((conn, secrets)),
            Some((_, Err(e))) => Err(ToolError::new(e.to_string())),
            None => Err(errors::no_connection(&key)),
        }
    }
}

/// The model-visible `account` argument: tools/list offers it (an enum of the user's accounts)
/// on the tools of a provider the user has several accounts with. It picks the account unless
/// the client already did (`_meta` `keyward/account`, `serve --account`: those win), and is
/// taken out before the tool's own arguments are checked — unless the tool declares an
/// `account` parameter of its own, which then keeps it.
fn account_argument(
    ctx: &CallContext,
    tool: Option<(&Provider, &Tool)>,
    mut args: Map<String, Value>,
) -> (CallContext, Map<String, Value>) {
    let mut ctx = ctx.clone();
    let declared = tool.is_some_and(|(_, tool)| tool.param(ACCOUNT_ARGUMENT).is_some());
    if !declared {
        if let Some(value) = args.remove(ACCOUNT_ARGUMENT) {
            if ctx.account.is_none() {
                // Not a string: named as given, so that the "no such connection" error shows it.
                ctx.account = match value {
                    Value::Null => None,
                    Value::String(name) => Some(name),
                    other => Some(other.to_string()),
                };
            }
        }
    }
    (ctx, args)
}

/// The name of the optional argument that picks one of the user's accounts of a provider.
pub const ACCOUNT_ARGUMENT: &str = "account";
