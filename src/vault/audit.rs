//! The audit log: who did what with which connection, when, and how it ended. Never a token.
//!
//! Entries live in the `audit` tree under a big-endian sequence number, so sled's ordered
//! iteration is time order. Appends are not flushed one by one (a tool call should not pay an
//! fsync for its audit line); the vault flushes them on an orderly shutdown and with every
//! credential write.

use serde::{Deserialize, Serialize};

/// One audit record. Optional fields are present for tool calls and refreshes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub time: String,
    pub user: String,
    /// `import`, `disconnect`, `rotate-key`, `rekey`, `open-failed`, `tool-call`, `refresh`,
    /// `token-exchange`, `client-add`, …
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `ok`, or `error: …` with the reason.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The token-exchange client (`keyward clients add`) a `token-exchange` was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

impl AuditEntry {
    /// A new entry stamped with the current time.
    pub fn new(user: &str, event: &str, outcome: impl Into<String>) -> AuditEntry {
        AuditEntry {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            user: user.into(),
            event: event.into(),
            outcome: outcome.into(),
            ..Default::default()
        }
    }

    pub fn connection(mut self, provider: &str, account: &str) -> AuditEntry {
        self.provider = Some(provider.into());
        self.account = Some(account.into());
        self
    }

    /// One human-readable line for `keyward audit`.
    pub fn line(&self) -> String {
        let mut line = format!("{}  {:<10} {:<14}", self.time, self.user, self.event);
        if let (Some(p), Some(a)) = (&self.provider, &self.account) {
            line.push_str(&format!(" {p}/{a}"));
        }
        if let Some(tool) = &self.tool {
            line.push_str(&format!(" {tool}"));
        }
        if let Some(client) = &self.client {
            line.push_str(&format!(" client {client}"));
        }
        if let (Some(m), Some(h), Some(p)) = (&self.method, &self.host, &self.path) {
            line.push_str(&format!(" {m} {h}{p}"));
        }
        if let Some(status) = self.status {
            line.push_str(&format!(" {status}"));
        }
        if let Some(ms) = self.latency_ms {
            line.push_str(&format!(" {ms:.1}ms"));
        }
        line.push_str(&format!("  {}", self.outcome));
        line
    }
}
