//! Keeping access tokens fresh without ever racing.
//!
//! GitHub and Slack refresh tokens are single-use: the first refresh rotates them, and a second
//! refresh with the old one fails (strict providers then revoke the whole token family and log
//! the user out). Agents call tools in parallel, so the refresh must be *single-flight*: per
//! connection one task refreshes while every other caller waits for its result (invariant 5).
//! The new record is written with compare-and-swap on its version and flushed before anyone
//! uses the new access token, so a crash can never leave us holding a rotated-away token
//! without knowing it.
//!
//! Failures are sorted into two kinds (invariant 6): `invalid_grant` and its provider spellings
//! are permanent — the connection is marked `needs_reconnect` (after re-reading the vault, in
//! case another refresher won a race) — while timeouts, 5xx and network errors are transient,
//! retried within the call's budget and never mark anything broken.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::token_response;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::exec::errors::{connect_command, needs_reconnect};
use crate::exec::ToolError;
use crate::secret::SecretString;
use crate::vault::{AuditEntry, ConnKey, Connection, ConnectionStatus, TokenRecord, Vault};

/// Refresh-token error codes that mean "this grant is gone": OAuth's `invalid_grant`
/// (RFC 6749 §5.2, Google), GitHub's `bad_refresh_token`, Slack's `invalid_refresh_token`.
const PERMANENT_CODES: &[&str] = &["invalid_grant", "bad_refresh_token", "invalid_refresh_token", "token_revoked"];

const DEFAULT_MARGIN_SECS: i64 = 300;

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
    http: reqwest::Client,
    clients: HashMap<String, ClientInfo>,
}

enum RefreshFailure {
    /// The provider refused the grant for good.
    Permanent(String),
    /// Worth trying again later.
    Transient(String),
    /// keyward's own configuration is wrong (client id or secret).
    Config(String),
}

impl Refresher {
    pub fn new(catalog: Arc<Catalog>, vault: Arc<Vault>, config: &Config, http: reqwest::Client) -> Refresher {
        let mut clients = HashMap::new();
        for provider in catalog.providers() {
            let overrides = config.provider(&provider.name).cloned().unwrap_or_default();
            let margin = overrides
                .refresh_margin_secs
                .map(|s| s as i64)
                .or(Some(provider.refresh_margin_secs as i64))
                .unwrap_or(DEFAULT_MARGIN_SECS);
            clients.insert(
                provider.name.clone(),
                ClientInfo {
                    token_url: provider.token_url.clone(),
                    client_id: overrides.client_id.clone(),
                    client_secret: overrides.client_secret.clone(),
                    margin_secs: margin,
                },
            );
        }
        Refresher { vault, http, clients }
    }

    fn margin(&self, provider: &str) -> i64 {
        self.clients.get(provider).map(|c| c.margin_secs).unwrap_or(DEFAULT_MARGIN_SECS)
    }

    /// The access token to use now for `conn`: its own, or a fresh one when it is within the
    /// refresh margin of expiry. Returns the token and the record version it came from.
    pub async fn fresh_token(&self, key: &ConnKey, conn: Connection, deadline: Instant) -> Result<(SecretString, u64), ToolError> {
        let now = chrono::Utc::now().timestamp();
        if !conn.record.needs_refresh(now, self.margin(&key.provider)) {
            return Ok((conn.record.access_token.clone(), conn.version));
        }
        match self.refresh(key, conn.version, false, deadline).await? {
            Some(pair) => Ok(pair),
            None => Ok((conn.record.access_token.clone(), conn.version)),
        }
    }

    /// Refresh after the provider rejected the token of record `seen_version` (a 401).
    /// `Ok(None)`: there is no refresh token, so nothing better to offer.
    pub async fn force_refresh(&self, key: &ConnKey, seen_version: u64, deadline: Instant) -> Result<Option<(SecretString, u64)>, ToolError> {
        self.refresh(key, seen_version, true, deadline).await
    }

    async fn refresh(&self, key: &ConnKey, seen_version: u64, force: bool, deadline: Instant) -> Result<Option<(SecretString, u64)>, ToolError> {
        // Only the process that owns the vault refreshes (single-flight across processes);
        // any other process asks it to.
        let budget = deadline.saturating_duration_since(Instant::now());
        let vault = self.vault.clone();
        let remote_key = key.clone();
        let remote = tokio::task::spawn_blocking(move || vault.remote_refresh(&remote_key, seen_version, force, budget))
            .await
            .map_err(|e| ToolError::new(format!("the refresh task failed: {e}")))?;
        match remote {
            Some(answer) => answer,
            None => self.refresh_here(key, seen_version, force, deadline).await,
        }
    }

    /// Refresh in this process, which owns the vault. Waits for any refresh of the same
    /// connection already running here, then re-checks before calling the token endpoint.
    pub async fn refresh_here(&self, key: &ConnKey, seen_version: u64, force: bool, deadline: Instant) -> Result<Option<(SecretString, u64)>, ToolError> {
        let lock = self.vault.refresh_lock(key);
        let _turn = lock.lock().await;
        // Whoever held the lock before us may have refreshed already.
        let conn = self.read(key)?;
        let now = chrono::Utc::now().timestamp();
        if let ConnectionStatus::NeedsReconnect { reason } = &conn.record.status {
            return Err(needs_reconnect(key, reason));
        }
        let stale = conn.record.needs_refresh(now, self.margin(&key.provider));
        if conn.version != seen_version && !stale {
            return Ok(Some((conn.record.access_token.clone(), conn.version)));
        }
        if !force && !stale {
            return Ok(Some((conn.record.access_token.clone(), conn.version)));
        }
        let Some(refresh_token) = conn.record.refresh_token.clone() else {
            let expired = conn.record.expires_in(now).is_some_and(|left| left <= 0);
            if expired {
                return Err(ToolError::new(format!("the {} token of {key} has expired and there is no refresh token", key.provider))
                    .hint(format!("run `{}`", connect_command(key))));
            }
            return Ok(None);
        };

        let result = self.call_token_endpoint(key, &refresh_token, deadline).await;
        match result {
            Ok(response) => {
                let merged = merge(&conn.record, response);
                let version = self.write(key, conn.version, &merged).await?;
                self.audit(key, "ok");
                Ok(Some((merged.access_token.clone(), version)))
            }
            Err(RefreshFailure::Permanent(reason)) => {
                // A concurrent writer (another process's refresh, an import) may have replaced
                // the refresh token we used: then this was a lost race, not a dead grant.
                let latest = self.read(key)?;
                if latest.version != conn.version && latest.record.status == ConnectionStatus::Active {
                    return Ok(Some((latest.record.access_token.clone(), latest.version)));
                }
                let mut broken = conn.record.clone();
                broken.status = ConnectionStatus::NeedsReconnect { reason: reason.clone() };
                let _ = self.write(key, conn.version, &broken).await;
                self.audit(key, &format!("error: {reason} (connection needs reconnecting)"));
                Err(needs_reconnect(key, &reason))
            }
            Err(RefreshFailure::Transient(reason)) => {
                self.audit(key, &format!("error: {reason} (transient)"));
                Err(ToolError::new(format!("refreshing the {} token failed: {reason}", key.provider))
                    .hint("this is temporary; retry in a moment")
                    .retryable())
            }
            Err(RefreshFailure::Config(reason)) => {
                self.audit(key, &format!("error: {reason}"));
                Err(ToolError::new(format!("the {} token needs refreshing, but {reason}", key.provider)))
            }
        }
    }

    fn read(&self, key: &ConnKey) -> Result<Connection, ToolError> {
        self.vault
            .get(key)
            .map_err(|e| ToolError::new(e.to_string()))?
            .ok_or_else(|| crate::exec::errors::no_connection(key))
    }

    async fn write(&self, key: &ConnKey, expected: u64, record: &TokenRecord) -> Result<u64, ToolError> {
        let vault = self.vault.clone();
        let key = key.clone();
        let record = record.clone();
        // `put` flushes to disk: keep the fsync off the async workers.
        tokio::task::spawn_blocking(move || vault.put(&key, Some(expected), &record))
            .await
            .map_err(|e| ToolError::new(format!("saving the refreshed token failed: {e}")))?
            .map_err(|e| ToolError::new(format!("saving the refreshed token failed: {e}")).retryable())
    }

    fn audit(&self, key: &ConnKey, outcome: &str) {
        self.vault.audit(&AuditEntry::new(&key.user, "refresh", outcome).connection(&key.provider, &key.account));
    }

    async fn call_token_endpoint(&self, key: &ConnKey, refresh_token: &SecretString, deadline: Instant) -> Result<Value, RefreshFailure> {
        let client = self.clients.get(&key.provider).cloned().unwrap_or_default();
        let Some(client_id) = client.client_id.clone() else {
            let upper = key.provider.to_ascii_uppercase();
            return Err(RefreshFailure::Config(format!(
                "no OAuth client id is configured for {}: set `client_id` under [providers.{}] in config.toml or KEYWARD_{upper}_CLIENT_ID",
                key.provider, key.provider
            )));
        };
        let mut attempt = 0u32;
        loop {
            let mut form: Vec<(&str, &str)> = vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.expose()),
                ("client_id", client_id.as_str()),
            ];
            if let Some(secret) = &client.client_secret {
                form.push(("client_secret", secret.expose()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let send = self.http.post(&client.token_url).header("accept", "application/json").form(&form).send();
            let outcome = match tokio::time::timeout(left, async {
                let resp = send.await?;
                let status = resp.status();
                let body = resp.bytes().await?;
                Ok::<_, reqwest::Error>((status, body))
            })
            .await
            {
                Err(_) => Err(RefreshFailure::Transient("the token endpoint did not answer in time".into())),
                Ok(Err(e)) => Err(RefreshFailure::Transient(if e.is_timeout() {
                    "the token endpoint timed out".into()
                } else {
                    "the token endpoint could not be reached".into()
                })),
                Ok(Ok((status, body))) => classify(status, &body),
            };
            match outcome {
                Err(RefreshFailure::Transient(reason)) => {
                    attempt += 1;
                    let wait = Duration::from_millis(200u64 << attempt.min(5));
                    if attempt >= 3 || Instant::now() + wait >= deadline {
                        return Err(RefreshFailure::Transient(reason));
                    }
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }
}

/// Sort a token endpoint answer: a usable response, a permanent refusal, or a passing failure.
fn classify(status: http::StatusCode, body: &[u8]) -> Result<Value, RefreshFailure> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let code = json.as_ref().and_then(|v| v.get("error")).and_then(Value::as_str).map(String::from);
    if let Some(code) = code {
        let desc = json.as_ref().and_then(|v| v.get("error_description")).and_then(Value::as_str).unwrap_or("");
        let reason = if desc.is_empty() { code.clone() } else { format!("{code}: {desc}") };
        if PERMANENT_CODES.contains(&code.as_str()) {
            return Err(RefreshFailure::Permanent(reason));
        }
        if matches!(code.as_str(), "invalid_client" | "unauthorized_client" | "incorrect_client_credentials" | "invalid_client_id") {
            return Err(RefreshFailure::Config(format!("the provider rejected keyward's OAuth client ({reason}): check client_id/client_secret in config.toml")));
        }
        if status.is_server_error() || code == "ratelimited" || code == "temporarily_unavailable" {
            return Err(RefreshFailure::Transient(reason));
        }
        return Err(RefreshFailure::Permanent(reason));
    }
    if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
        return Err(RefreshFailure::Transient(format!("the token endpoint answered {status}")));
    }
    match json {
        Some(value) if status.is_success() => Ok(value),
        _ => Err(RefreshFailure::Transient(format!("the token endpoint answered {status} without a token"))),
    }
}

/// The record after a refresh: new access token and expiry; the refresh token replaced when the
/// provider rotated it and kept when it did not say (Google); scopes kept unless restated.
fn merge(old: &TokenRecord, response: Value) -> TokenRecord {
    let now = chrono::Utc::now().timestamp();
    match token_response::from_value(&response, now) {
        Ok(mut new) => {
            if new.refresh_token.is_none() {
                new.refresh_token = old.refresh_token.clone();
            }
            if new.scopes.is_empty() {
                new.scopes = old.scopes.clone();
            }
            new
        }
        // A 2xx body without an access token: keep what we had rather than lose the grant.
        Err(_) => old.clone(),
    }
}
