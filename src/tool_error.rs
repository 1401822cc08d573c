//! What a failed tool call tells its client, and the fixes that are the same wherever a call
//! fails.
//!
//! A tool error is what the model (and the person behind it) reads, so each carries a message,
//! a hint that names the fix — usually the exact `keyward` command — whether the same call may
//! succeed later, and the provider's status when there was one. It lives below both the
//! executor and the refresher, which both produce it: the executor for provider answers
//! (`exec::errors`), the refresher for refresh failures (`oauth::refresh`). Neither reaches up
//! into the other for it.

use serde_json::Value;

use crate::vault::ConnKey;

/// A failed call, as the client sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolError {
    pub message: String,
    pub hint: Option<String>,
    /// True when the same call may succeed later (rate limits, timeouts, 5xx).
    pub retryable: bool,
    /// The provider's HTTP status, when there was one.
    pub status: Option<u16>,
    /// Set when only the user can fix this by signing in with the provider (again). Boxed: an
    /// error is on every call's return path, and this is rarely there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_in: Option<Box<SignIn>>,
}

/// A failure the user fixes by signing in with the provider: the connection is missing, needs
/// reconnecting, or lacks scopes the tool needs. Typed, so that a server can ask the user
/// through MCP (a URL elicitation, `server::handler`) without reading the message.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SignIn {
    /// The connection to create or replace.
    pub key: ConnKey,
    /// Exactly these scopes (`keyward connect --scopes`); `None`: the provider's default.
    pub scopes: Option<Vec<String>>,
}

impl ToolError {
    pub fn new(message: impl Into<String>) -> ToolError {
        ToolError {
            message: message.into(),
            hint: None,
            retryable: false,
            status: None,
            sign_in: None,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> ToolError {
        self.hint = Some(hint.into());
        self
    }
    pub fn retryable(mut self) -> ToolError {
        self.retryable = true;
        self
    }
    /// A vault error as a call reports it: retryable when it says so (a store that cannot
    /// answer now, a write that lost a race), decided by its type, never its text.
    pub fn from_vault(e: &crate::error::Error) -> ToolError {
        let error = ToolError::new(e.to_string());
        if e.is_retryable() {
            error.retryable()
        } else {
            error
        }
    }
    pub fn status(mut self, status: u16) -> ToolError {
        self.status = Some(status);
        self
    }
    /// The user fixes this by signing in: `key`, with exactly `scopes` if given.
    pub fn sign_in(mut self, key: &ConnKey, scopes: Option<Vec<String>>) -> ToolError {
        self.sign_in = Some(Box::new(SignIn {
            key: key.clone(),
            scopes,
        }));
        self
    }

    /// The error with every secret `redactor` knows replaced, in every field a client sees.
    pub fn redacted(mut self, redactor: &crate::secret::Redactor) -> ToolError {
        redactor.scrub(&mut self.message);
        if let Some(hint) = &mut self.hint {
            redactor.scrub(hint);
        }
        self
    }

    /// The structured form of the error (`structuredContent` of an error result).
    pub fn to_json(&self) -> Value {
        let mut obj = serde_json::Map::new();
        obj.insert("error".into(), self.message.clone().into());
        if let Some(hint) = &self.hint {
            obj.insert("hint".into(), hint.clone().into());
        }
        if let Some(status) = self.status {
            obj.insert("status".into(), status.into());
        }
        obj.insert("retryable".into(), self.retryable.into());
        Value::Object(obj)
    }
}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " — {hint}")?;
        }
        Ok(())
    }
}

pub fn connect_command(key: &ConnKey) -> String {
    format!("keyward connect {}{}", key.provider, key.cli_flags())
}

pub fn no_connection(key: &ConnKey) -> ToolError {
    ToolError::new(format!(
        "user {} has no {} connection (account {})",
        key.user, key.provider, key.account
    ))
    .hint(format!(
        "run `{}` (or `keyward import {}{}` with a token response on stdin)",
        connect_command(key),
        key.provider,
        key.cli_flags()
    ))
    .sign_in(key, None)
}

pub fn needs_reconnect(key: &ConnKey, reason: &str) -> ToolError {
    ToolError::new(format!(
        "the {} connection {} needs reconnecting ({reason})",
        key.provider, key
    ))
    .hint(format!(
        "connection needs reconnecting: run `{}`",
        connect_command(key)
    ))
    .sign_in(key, None)
}
