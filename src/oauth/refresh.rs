//! Keeping access tokens fresh without ever racing.
//!
//! GitHub and Slack refresh tokens are single-use: the first refresh rotates them, and a second
//! refresh with the old one fails (strict providers then revoke the whole token family and log
//! the user out). Agents call tools in parallel, so the refresh must be *single-flight*: per
//! connection one task refreshes while every other caller waits for its result (invariant 5).
//! Who refreshes is decided in two steps, neither of which asks whether this process owns the
//! vault. In a process, one async mutex per connection ([`Vault::refresh_lock`]) admits one task
//! at a time, so this process's callers collapse into one refresh. Across processes, the vault's
//! backend decides ([`Vault::refresh_turn`], a [`RefreshTurn`]): either this process refreshes,
//! holding the backend's guard (the sled owner, whose guard is empty because it alone refreshes;
//! a database shared by several machines, whose guard is its lock on the connection), or the
//! process that owns the vault does, and this one asks it ([`Vault::refresh_by_owner`]) — so
//! that this holds across every task, every local process and every machine of a shared backend;
//! the compare-and-swap on the record's version backs it up. Each refresh takes the process's
//! lock once (a relay that becomes the owner mid-call takes its turn again under the lock it
//! already holds) and waits for it, and for the turn, no longer than the call's budget. Whoever
//! waited for a refresh takes the token it produced rather than refreshing again, and a token
//! is "near expiry" within the provider's margin capped at half its lifetime
//! ([`TokenRecord::needs_refresh`]), so a provider with tokens shorter-lived than the margin
//! still gets one refresh per token, not one per call. The new record is written and flushed
//! before anyone uses the new access token, so a crash can never leave us holding a
//! rotated-away token without knowing it: after a crash between the token endpoint's answer
//! and the write, the stored refresh token is the spent one, the next refresh is refused, and
//! the connection is marked `needs_reconnect` — loudly, never a silently dead token.
//!
//! Failures are sorted (invariant 6):
//! - `invalid_grant` and its provider spellings are **permanent**: the vault is re-read first
//!   (a concurrent writer may have replaced the refresh token we used: a lost race, not a dead
//!   grant), otherwise the connection is marked `needs_reconnect` with the provider's reason,
//!   the record is kept, and the call fails naming the `keyward connect` command;
//! - timeouts, 5xx, 429 and network errors are **transient**: retried with backoff within the
//!   call's budget, then a retryable error; a proactive refresh that fails this way falls back
//!   to the current access token while it is still valid;
//! - any other refusal (a bad request, a misconfigured client) fails the call without marking
//!   the connection, because it says nothing about the grant.
//!
//! A refresh that gives no token ends in one [`RefreshError`], wherever it ran (in this process,
//! or in the owner for a relay: the socket carries its serde mirror, [`RefreshFailure`]), which
//! says what the caller is told and whether the grant is still alive.
//!
//! Every refresh that reaches the token endpoint is audited, success or failure; never a token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http::OAuthHttp;
use super::token_endpoint::{self, Answer};
use super::token_response;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::error::Error;
use crate::secret::{Redactor, SecretString};
use crate::tool_error::{connect_command, needs_reconnect, no_connection, SignIn, ToolError};
use crate::vault::{
    AuditEntry, ConnKey, Connection, ConnectionStatus, FailureReport, RefreshFailure, RefreshTurn,
    TokenRecord, Vault,
};

/// Refresh-token error codes that mean "this grant is gone": OAuth's `invalid_grant`
/// (RFC 6749 §5.2, Google), GitHub's `bad_refresh_token`, Slack's `invalid_refresh_token` and
/// `token_revoked`.
const PERMANENT_CODES: &[&str] = &[
    "invalid_grant",
    "bad_refresh_token",
    "invalid_refresh_token",
    "token_revoked",
];

/// Error codes that blame keyward's OAuth client rather than the grant.
pub(crate) const CLIENT_CODES: &[&str] = &[
    "invalid_client",
    "unauthorized_client",
    "incorrect_client_credentials",
    "invalid_client_id",
    "bad_client_secret",
];

const DEFAULT_MARGIN_SECS: i64 = 300;

/// At most this many token endpoint attempts per refresh (transient failures only).
const MAX_ATTEMPTS: u32 = 3;

/// A proactive refresh that failed transiently falls back to the current access token only
/// while it has at least this long to live.
const FALLBACK_MIN_LIFE_SECS: i64 = 10;

/// OAuth client credentials and the refresh margin of one provider.
#[derive(Clone, Default)]
struct ClientInfo {
    token_url: String,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    margin_secs: i64,
}

/// Refreshes tokens, one refresh per connection at a time.
pub struct Refresher {
    vault: Arc<Vault>,
    http: OAuthHttp,
    clients: HashMap<String, ClientInfo>,
}

/// Why a refresh produced no token: what the caller is told, and whether the grant is still
/// alive — the one thing callers decide on (a proactive refresh that failed while the grant
/// lives falls back to the current access token while it is valid).
#[derive(Debug, Clone, PartialEq)]
pub enum RefreshError {
    /// The grant is gone: refused for good by the provider (the connection is marked
    /// `needs_reconnect`), expired without a refresh token, or its refresh token spent on a
    /// refresh whose result could not be saved.
    GrantGone(ToolError),
    /// The grant lives: the failure was transient, or says nothing about the grant (a refusal
    /// of the request, keyward's own configuration, the vault, another refresh that took too
    /// long).
    GrantAlive(ToolError),
}

impl RefreshError {
    pub fn grant_alive(&self) -> bool {
        matches!(self, RefreshError::GrantAlive(_))
    }

    pub fn tool_error(&self) -> &ToolError {
        match self {
            RefreshError::GrantGone(e) | RefreshError::GrantAlive(e) => e,
        }
    }

    pub fn into_tool_error(self) -> ToolError {
        match self {
            RefreshError::GrantGone(e) | RefreshError::GrantAlive(e) => e,
        }
    }
}

/// What a tool call tells its client: the error itself (whether the grant lives decides nothing
/// there).
impl From<RefreshError> for ToolError {
    fn from(error: RefreshError) -> Self {
        error.into_tool_error()
    }
}

/// A failure on the way (reading the vault, say) leaves the grant as it was.
impl From<ToolError> for RefreshError {
    fn from(error: ToolError) -> Self {
        RefreshError::GrantAlive(error)
    }
}

/// To the socket: the owner's refresh for another process.
impl From<RefreshError> for RefreshFailure {
    fn from(e: RefreshError) -> RefreshFailure {
        let alive = e.grant_alive();
        let e = e.into_tool_error();
        let report = FailureReport {
            message: e.message,
            hint: e.hint,
            retryable: e.retryable,
            status: e.status,
            sign_in: e.sign_in.map(|s| (s.key, s.scopes)),
        };
        if alive {
            RefreshFailure::Alive(report)
        } else {
            RefreshFailure::Gone(report)
        }
    }
}

/// From the socket: the owner's answer, as if the refresh had run here.
impl From<RefreshFailure> for RefreshError {
    fn from(f: RefreshFailure) -> RefreshError {
        let (alive, r) = match f {
            RefreshFailure::Alive(r) => (true, r),
            RefreshFailure::Gone(r) => (false, r),
        };
        let error = ToolError {
            message: r.message,
            hint: r.hint,
            retryable: r.retryable,
            status: r.status,
            sign_in: r
                .sign_in
                .map(|(key, scopes)| Box::new(SignIn { key, scopes })),
        };
        if alive {
            RefreshError::GrantAlive(error)
        } else {
            RefreshError::GrantGone(error)
        }
    }
}

impl Refresher {
    pub fn new(
        catalog: Arc<Catalog>,
        vault: Arc<Vault>,
        config: &Config,
        http: reqwest::Client,
    ) -> Refresher {
        let mut clients = HashMap::new();
        for provider in catalog.providers() {
            let overrides = config.provider(&provider.name).cloned().unwrap_or_default();
            // The catalog already applied a configured `refresh_margin_secs` to the provider.
            // A margin past `i64::MAX` seconds means "always"; `as` would make it negative.
            let margin = overrides
                .refresh_margin_secs
                .unwrap_or(provider.refresh_margin_secs);
            let margin = i64::try_from(margin).unwrap_or(i64::MAX);
            clients.insert(
                provider.name.clone(),
                ClientInfo {
                    token_url: provider.token_url.clone(),
                    client_id: overrides
                        .client_id
                        .clone()
                        .filter(|id| !id.trim().is_empty()),
                    client_secret: overrides.client_secret.clone().filter(|s| !s.is_empty()),
                    margin_secs: margin,
                },
            );
        }
        let timeout = Duration::from_millis(config.executor.read_timeout_ms.max(1000));
        Refresher {
            vault,
            http: OAuthHttp::with_client(http, timeout),
            clients,
        }
    }

    fn margin(&self, provider: &str) -> i64 {
        self.clients
            .get(provider)
            .map(|c| c.margin_secs)
            .unwrap_or(DEFAULT_MARGIN_SECS)
    }

    /// The access token to use now for `conn`: its own, or a fresh one when it is within the
    /// refresh margin of expiry. Returns the token and the record version it came from; a
    /// failure says whether the grant still lives (the token exchange answers by it).
    pub async fn fresh_token(
        &self,
        key: &ConnKey,
        conn: Connection,
        deadline: Instant,
    ) -> Result<(SecretString, u64), RefreshError> {
        let now = chrono::Utc::now().timestamp();
        if !conn.record.needs_refresh(now, self.margin(&key.provider)) {
            return Ok((conn.record.access_token.clone(), conn.version));
        }
        match self.refresh(key, conn.version, false, deadline).await {
            Ok(Some(pair)) => Ok(pair),
            Ok(None) => Ok((conn.record.access_token.clone(), conn.version)),
            Err(failure) => {
                let now = chrono::Utc::now().timestamp();
                let still_valid = conn
                    .record
                    .expires_in(now)
                    .is_some_and(|left| left > FALLBACK_MIN_LIFE_SECS);
                if failure.grant_alive() && still_valid {
                    // Refreshing ahead of time failed, but the token has not expired: use it.
                    tracing::warn!(connection = %key, error = %failure.tool_error(), "proactive refresh failed; using the current token");
                    Ok((conn.record.access_token.clone(), conn.version))
                } else {
                    Err(failure)
                }
            }
        }
    }

    /// Refresh after the provider rejected the token of record `seen_version` (a 401).
    /// `Ok(None)`: there is no refresh token, so nothing better to offer.
    pub async fn force_refresh(
        &self,
        key: &ConnKey,
        seen_version: u64,
        deadline: Instant,
    ) -> Result<Option<(SecretString, u64)>, ToolError> {
        self.refresh(key, seen_version, true, deadline)
            .await
            .map_err(RefreshError::into_tool_error)
    }

    /// Refresh `key`, whose caller last saw record `seen_version`, unless somebody already did
    /// (see the module docs for who refreshes). `Ok(None)`: there is nothing better than the
    /// record the caller has. The owner runs this for other processes' requests too.
    pub async fn refresh(
        &self,
        key: &ConnKey,
        seen_version: u64,
        force: bool,
        deadline: Instant,
    ) -> Result<Option<(SecretString, u64)>, RefreshError> {
        // This process's lock, taken once whichever way the refresh then goes: a relay that
        // becomes the owner while it holds the lock (the old owner exited) takes its turn again
        // under the same guard instead of waiting on a lock it holds.
        let _lock = self.lock(key, deadline).await?;
        loop {
            // Whoever held the lock before us — in this process or, through the backend, in
            // another — may have refreshed already: a settled record needs no turn, and a turn
            // can cost a lock of a database server. So this process's callers queued on its
            // lock take the new record one after another without a round trip each, and send
            // at most one request per process to the owner.
            let conn = self.read(key).await?;
            if let Some(pair) = settled(&conn, seen_version, force, self.margin(&key.provider)) {
                return Ok(Some(pair));
            }
            let budget = deadline.saturating_duration_since(Instant::now());
            let turn = self
                .vault
                .refresh_turn(key, budget)
                .await
                .map_err(|e| self.vault_error(e))?;
            match turn {
                RefreshTurn::Here(guard) => {
                    let refreshed = self
                        .refresh_locked(key, seen_version, force, deadline)
                        .await;
                    drop(guard);
                    return refreshed;
                }
                RefreshTurn::Owner => {
                    super::test_hooks::pause_at("refresh-remote").await;
                    let budget = deadline.saturating_duration_since(Instant::now());
                    match self
                        .vault
                        .refresh_by_owner(key, seen_version, force, budget)
                        .await
                    {
                        Some(answer) => return answer.map_err(RefreshError::from),
                        // This process took the vault over meanwhile: its turn now.
                        None => continue,
                    }
                }
            }
        }
    }

    /// The right to refresh `key` in this process: its refresh lock, waited for no longer than
    /// the call's budget. A refresh that never ends (a hung provider past every timeout, a
    /// stopped process) must not take every later call of the connection down with it.
    async fn lock(
        &self,
        key: &ConnKey,
        deadline: Instant,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, RefreshError> {
        let lock = self.vault.refresh_lock(key);
        let deadline = tokio::time::Instant::from_std(deadline);
        tokio::time::timeout_at(deadline, lock.lock_owned())
            .await
            .map_err(|_| {
                ToolError::new(format!(
                    "the {} token of {key} is being refreshed by another call, which did not \
                     finish within this call's time budget",
                    key.provider
                ))
                .hint("this is temporary; retry in a moment")
                .retryable()
                .into()
            })
    }

    /// The refresh itself, in this process; the caller holds the connection's refresh lock
    /// and turn (see [`Self::refresh`]).
    async fn refresh_locked(
        &self,
        key: &ConnKey,
        seen_version: u64,
        force: bool,
        deadline: Instant,
    ) -> Result<Option<(SecretString, u64)>, RefreshError> {
        // Whoever held the lock before us may have refreshed already.
        let conn = self.read(key).await?;
        let now = chrono::Utc::now().timestamp();
        if let ConnectionStatus::NeedsReconnect { reason } = &conn.record.status {
            return Err(RefreshError::GrantGone(needs_reconnect(key, reason)));
        }
        if let Some(pair) = settled(&conn, seen_version, force, self.margin(&key.provider)) {
            return Ok(Some(pair));
        }
        let Some(refresh_token) = conn.record.refresh_token.clone() else {
            let expired = conn.record.expires_in(now).is_some_and(|left| left <= 0);
            if expired {
                return Err(RefreshError::GrantGone(
                    ToolError::new(format!(
                        "the {} token of {key} has expired and there is no refresh token",
                        key.provider
                    ))
                    .hint(format!("run `{}`", connect_command(key))),
                ));
            }
            return Ok(None);
        };
        let client = self.clients.get(&key.provider).cloned().unwrap_or_default();
        let Some(client_id) = client.client_id.clone() else {
            let upper = key.provider.to_ascii_uppercase();
            return Err(self
                .misconfigured(
                    key,
                    format!(
                        "no OAuth client id is configured for {}: set `client_id` under [providers.{}] in config.toml or KEYWARD_{upper}_CLIENT_ID",
                        key.provider, key.provider
                    ),
                )
                .await);
        };

        let trigger = if force {
            "after a 401"
        } else {
            "ahead of expiry"
        };
        // Every reason in the answer is already redacted (see [`token_endpoint::request`]; the
        // access token the endpoint itself issued is added here), so it may be stored as a
        // `needs_reconnect` reason, audited and shown as it is.
        let answer = self
            .call_token_endpoint(key, &client, &client_id, &refresh_token, deadline)
            .await
            .redacted(&Redactor::of([&conn.record.access_token]));
        let reason = match answer {
            Answer::Token(response) => {
                super::test_hooks::pause_at("refresh-response").await;
                let merged = merge(&conn.record, &response, chrono::Utc::now().timestamp());
                let version = match self.write(key, conn.version, &merged).await {
                    Ok(version) => version,
                    Err(e) => {
                        self.audit(
                            key,
                            &format!("error: the new token could not be saved ({})", e.message),
                        )
                        .await;
                        if let Some(pair) = self.usable_latest(key, conn.version).await {
                            return Ok(Some(pair));
                        }
                        return Err(RefreshError::GrantGone(e));
                    }
                };
                self.audit(key, &format!("ok ({trigger})")).await;
                super::test_hooks::pause_at("refresh-saved").await;
                return Ok(Some((merged.access_token.clone(), version)));
            }
            Answer::Error(e) if PERMANENT_CODES.contains(&e.code.as_str()) => {
                return self.permanent(key, &conn, e.reason()).await;
            }
            Answer::Error(e) if CLIENT_CODES.contains(&e.code.as_str()) => {
                return Err(self
                    .misconfigured(
                        key,
                        format!(
                            "the provider rejected keyward's OAuth client ({}): check client_id/client_secret under [providers.{}]",
                            e.reason(),
                            key.provider
                        ),
                    )
                    .await);
            }
            Answer::Error(e) => format!("the token endpoint answered {}", e.reason()),
            Answer::Malformed(reason) => reason,
            Answer::Unavailable(reason) => {
                self.audit(key, &format!("error: {reason} (transient)"))
                    .await;
                return Err(ToolError::new(format!(
                    "refreshing the {} token failed: {reason}",
                    key.provider
                ))
                .hint("this is temporary; retry in a moment")
                .retryable()
                .into());
            }
        };
        // Refused for a reason that says nothing about the grant (a bad request, an odd answer).
        self.audit(key, &format!("error: {reason}")).await;
        Err(ToolError::new(format!(
            "refreshing the {} token failed: {reason}",
            key.provider
        ))
        .hint(format!(
            "if it keeps failing, run `{}`",
            connect_command(key)
        ))
        .into())
    }

    /// The provider refused the grant for good (`reason`). A concurrent writer (an import, a
    /// connect, another process's refresh) may have replaced the refresh token we used: then
    /// this was a lost race, not a dead grant. Otherwise the connection is marked
    /// `needs_reconnect`.
    async fn permanent(
        &self,
        key: &ConnKey,
        conn: &Connection,
        reason: String,
    ) -> Result<Option<(SecretString, u64)>, RefreshError> {
        let latest = self.read(key).await?;
        if latest.version != conn.version && latest.record.status == ConnectionStatus::Active {
            self.audit(
                key,
                &format!("ok (refused with {reason}, but the record had been replaced meanwhile)"),
            )
            .await;
            return Ok(Some((latest.record.access_token.clone(), latest.version)));
        }
        let mut broken = conn.record.clone();
        broken.status = ConnectionStatus::NeedsReconnect {
            reason: reason.clone(),
        };
        if let Err(e) = self.write(key, conn.version, &broken).await {
            tracing::warn!(connection = %key, error = %e.message, "could not mark the connection needs_reconnect");
        }
        self.audit(
            key,
            &format!("error: {reason} (connection needs reconnecting)"),
        )
        .await;
        Err(RefreshError::GrantGone(needs_reconnect(key, &reason)))
    }

    /// keyward's own OAuth client configuration is wrong (`reason` says how): audited, and the
    /// call fails without touching the connection.
    async fn misconfigured(&self, key: &ConnKey, reason: String) -> RefreshError {
        self.audit(key, &format!("error: {reason}")).await;
        ToolError::new(format!(
            "the {} token needs refreshing, but {reason}",
            key.provider
        ))
        .into()
    }

    /// The provider gave us new tokens but they could not be saved. When another writer
    /// replaced the record meanwhile (the compare-and-swap failed) with a usable token, that
    /// one is used; otherwise the call fails (and, the stored refresh token being spent now, the
    /// next refresh marks the connection `needs_reconnect`).
    async fn usable_latest(&self, key: &ConnKey, seen_version: u64) -> Option<(SecretString, u64)> {
        let latest = self.read(key).await.ok()?;
        let now = chrono::Utc::now().timestamp();
        let usable = latest.version != seen_version
            && latest.record.status == ConnectionStatus::Active
            && !latest.record.needs_refresh(now, 0);
        usable.then(|| (latest.record.access_token.clone(), latest.version))
    }

    fn vault_error(&self, e: Error) -> RefreshError {
        ToolError::from_vault(&e).into()
    }

    async fn read(&self, key: &ConnKey) -> Result<Connection, ToolError> {
        self.vault
            .get(key)
            .await
            .map_err(|e| ToolError::from_vault(&e))?
            .ok_or_else(|| no_connection(key))
    }

    async fn write(
        &self,
        key: &ConnKey,
        expected: u64,
        record: &TokenRecord,
    ) -> Result<u64, ToolError> {
        self.vault
            .put(key, Some(expected), record)
            .await
            .map_err(|e| match e {
                Error::Conflict(_) => ToolError::new(
                    "the connection was changed by another writer while it was being refreshed",
                )
                .retryable(),
                other => ToolError::new(format!("saving the refreshed token failed: {other}"))
                    .retryable(),
            })
    }

    /// Every refresh that reached the token endpoint is audited.
    async fn audit(&self, key: &ConnKey, outcome: &str) {
        self.vault
            .audit(
                &AuditEntry::new(&key.user, "refresh", outcome)
                    .connection(&key.provider, &key.account),
            )
            .await;
    }

    /// One refresh at the token endpoint: the form posted until it answers, the transient
    /// failures (timeouts, 5xx, 429, network) retried with backoff within the call's budget.
    /// The answer's reasons are redacted of every secret the form carried.
    async fn call_token_endpoint(
        &self,
        key: &ConnKey,
        client: &ClientInfo,
        client_id: &str,
        refresh_token: &SecretString,
        deadline: Instant,
    ) -> Answer {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
            ("client_id", client_id),
        ];
        if let Some(secret) = &client.client_secret {
            form.push(("client_secret", secret.expose()));
        }
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Answer::Unavailable(
                    "the call's time budget ran out before the token endpoint answered".into(),
                );
            }
            let answer = token_endpoint::request(
                &self.http,
                &client.token_url,
                &form,
                left.min(self.http.timeout()),
            )
            .await;
            let Answer::Unavailable(reason) = &answer else {
                return answer;
            };
            // Exponential backoff: 200 ms, 400 ms, … within the budget.
            let wait = Duration::from_millis(200u64 << attempt.min(5));
            if attempt >= MAX_ATTEMPTS || wait >= deadline.saturating_duration_since(Instant::now())
            {
                return answer;
            }
            tracing::debug!(connection = %key, attempt, %reason, "retrying the token endpoint");
            tokio::time::sleep(wait).await;
        }
    }
}

/// What a caller that waited for the refresh lock finds, when it answers the call without
/// another refresh: the token of an active record that someone replaced since the caller read
/// version `seen_version` (a refresh, an import, a connect), as long as it has not expired —
/// every waiter of a single-flight refresh takes its result, whatever the margin says; or,
/// unless forced by a 401, a token that is not near expiry at all.
fn settled(
    conn: &Connection,
    seen_version: u64,
    force: bool,
    margin_secs: i64,
) -> Option<(SecretString, u64)> {
    if conn.record.status != ConnectionStatus::Active {
        return None;
    }
    let now = chrono::Utc::now().timestamp();
    let replaced = conn.version != seen_version;
    let expired = conn.record.expires_in(now).is_some_and(|left| left <= 0);
    let fresh = !conn.record.needs_refresh(now, margin_secs);
    ((replaced && !expired) || (!force && fresh))
        .then(|| (conn.record.access_token.clone(), conn.version))
}

/// The record after a refresh: new access token and expiry; the refresh token replaced when
/// the provider rotated it and kept when the answer has none (Google); scopes kept unless
/// restated. The answer was checked to hold an access token.
fn merge(old: &TokenRecord, response: &serde_json::Value, now: i64) -> TokenRecord {
    match token_response::from_value(response, now) {
        Ok(mut new) => {
            if new.refresh_token.is_none() {
                new.refresh_token = old.refresh_token.clone();
            }
            if new.scopes.is_empty() {
                new.scopes = old.scopes.clone();
            }
            new
        }
        // `token_endpoint::sort` only lets answers with a non-empty access token through, so
        // this is a field of the wrong type (`expires_in: "soon"`): keep the new access token
        // and the old record's other fields rather than lose a rotated grant.
        Err(_) => {
            let mut new = old.clone();
            if let Some(token) = response.get("access_token").and_then(|v| v.as_str()) {
                new.access_token = SecretString::new(token);
                new.expires_at = None;
            }
            if let Some(token) = response.get("refresh_token").and_then(|v| v.as_str()) {
                new.refresh_token = Some(SecretString::new(token));
            }
            new.obtained_at = now;
            new.status = ConnectionStatus::Active;
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(refresh: Option<&str>) -> TokenRecord {
        TokenRecord {
            access_token: SecretString::new("old-access"),
            refresh_token: refresh.map(SecretString::new),
            token_type: "bearer".into(),
            expires_at: Some(100),
            scopes: vec!["repo".into()],
            obtained_at: 0,
            status: ConnectionStatus::Active,
        }
    }

    #[test]
    fn a_refresh_without_refresh_token_keeps_the_stored_one() {
        let merged = merge(
            &record(Some("r1")),
            &json!({"access_token": "a2", "expires_in": 3600}),
            1000,
        );
        assert_eq!(merged.access_token.expose(), "a2");
        assert_eq!(merged.refresh_token.unwrap().expose(), "r1");
        assert_eq!(merged.expires_at, Some(4600));
        assert_eq!(merged.scopes, vec!["repo"]);
    }

    #[test]
    fn a_rotated_refresh_token_replaces_the_stored_one() {
        let merged = merge(
            &record(Some("r1")),
            &json!({"access_token": "a2", "refresh_token": "r2", "expires_in": 60, "scope": "repo,gist"}),
            0,
        );
        assert_eq!(merged.refresh_token.unwrap().expose(), "r2");
        assert_eq!(merged.scopes, vec!["repo", "gist"]);
    }

    #[test]
    fn an_oddly_typed_answer_still_keeps_the_new_tokens() {
        let merged = merge(
            &record(Some("r1")),
            &json!({"access_token": "a2", "refresh_token": "r2", "expires_in": "soon"}),
            5,
        );
        assert_eq!(merged.access_token.expose(), "a2");
        assert_eq!(merged.refresh_token.unwrap().expose(), "r2");
        assert_eq!(merged.expires_at, None);
    }

    /// A refresh error crosses the socket as itself: whether the grant is alive, and every
    /// field of what the caller is told (before the mirror, a relay took every non-retryable
    /// failure of the owner for a dead grant).
    #[test]
    fn a_refresh_error_crosses_the_socket_as_itself() {
        let told = ToolError::new("refreshing failed")
            .hint("run `keyward connect github`")
            .status(400);
        let key = ConnKey::new("default", "github", "work").unwrap();
        for error in [
            RefreshError::GrantGone(needs_reconnect(&key, "revoked")),
            RefreshError::GrantGone(told.clone()),
            RefreshError::GrantAlive(told.clone()),
            RefreshError::GrantAlive(told.clone().retryable()),
        ] {
            let json = serde_json::to_string(&RefreshFailure::from(error.clone())).unwrap();
            let back: RefreshFailure = serde_json::from_str(&json).unwrap();
            assert_eq!(RefreshError::from(back), error, "{json}");
        }
    }
}
