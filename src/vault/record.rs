//! What a connection's sealed record holds, and the key it is stored under.

use serde::{Deserialize, Serialize};

use super::crypto;
use super::keys::Keyring;
use crate::error::{Error, Result};
use crate::secret::SecretString;

/// Identifies one connection: a user's grant from one provider account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConnKey {
    pub user: String,
    pub provider: String,
    pub account: String,
}

pub const DEFAULT_USER: &str = "default";
pub const DEFAULT_ACCOUNT: &str = "default";

impl ConnKey {
    /// Build a key, checking each part: names end up in sled keys, audit lines and commands we
    /// print back to the user, so they stay short and printable.
    pub fn new(user: &str, provider: &str, account: &str) -> Result<ConnKey> {
        check_name("user", user)?;
        check_name("provider", provider)?;
        check_name("account", account)?;
        Ok(ConnKey {
            user: user.into(),
            provider: provider.into(),
            account: account.into(),
        })
    }

    /// The sled key: parts joined by NUL, which `check_name` keeps out of every part.
    pub fn storage_key(&self) -> Vec<u8> {
        let mut key =
            Vec::with_capacity(self.user.len() + self.provider.len() + self.account.len() + 2);
        key.extend_from_slice(self.user.as_bytes());
        key.push(0);
        key.extend_from_slice(self.provider.as_bytes());
        key.push(0);
        key.extend_from_slice(self.account.as_bytes());
        key
    }

    pub fn from_storage_key(bytes: &[u8]) -> Option<ConnKey> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split('\0');
        let (user, provider, account) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(ConnKey {
            user: user.into(),
            provider: provider.into(),
            account: account.into(),
        })
    }

    /// The prefix of every storage key of `user`.
    pub fn user_prefix(user: &str) -> Vec<u8> {
        let mut prefix = user.as_bytes().to_vec();
        prefix.push(0);
        prefix
    }

    /// `--user U --account A` flags for commands printed back to the user; defaults are omitted.
    pub fn cli_flags(&self) -> String {
        let mut flags = String::new();
        if self.user != DEFAULT_USER {
            flags.push_str(&format!(" --user {}", self.user));
        }
        if self.account != DEFAULT_ACCOUNT {
            flags.push_str(&format!(" --account {}", self.account));
        }
        flags
    }
}

impl std::fmt::Display for ConnKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.user, self.provider, self.account)
    }
}

/// The rule for every name keyward prints back or keys storage with (users, providers,
/// accounts, token-exchange clients): 1-128 characters from A-Z a-z 0-9 . _ @ + -.
pub(crate) fn check_name(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "invalid {what} name {value:?}: use 1-128 characters from A-Z a-z 0-9 . _ @ + -"
        )))
    }
}

/// Whether a connection can be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConnectionStatus {
    Active,
    /// The provider refused the refresh token for good; the user must connect again.
    NeedsReconnect {
        reason: String,
    },
}

impl ConnectionStatus {
    pub fn label(&self) -> String {
        match self {
            ConnectionStatus::Active => "active".into(),
            ConnectionStatus::NeedsReconnect { reason } => format!("needs_reconnect ({reason})"),
        }
    }
}

/// The sealed part of a connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub access_token: SecretString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<SecretString>,
    pub token_type: String,
    /// Unix seconds; `None` when the provider did not say (GitHub OAuth apps without expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    pub scopes: Vec<String>,
    pub obtained_at: i64,
    pub status: ConnectionStatus,
}

impl TokenRecord {
    /// Seconds until expiry at `now` (negative once expired); `None` when unknown.
    pub fn expires_in(&self, now: i64) -> Option<i64> {
        self.expires_at.map(|at| at.saturating_sub(now))
    }

    /// True when the token expires within the refresh margin of `now`: `margin_secs`, capped
    /// at half the token's lifetime (`expires_at - obtained_at`).
    ///
    /// Without the cap, a provider whose tokens live shorter than the margin (60 s tokens under
    /// the default 300 s) hands out tokens that are "near expiry" the moment they arrive: every
    /// call refreshes, and every waiter of a refresh refreshes again. With it, a token that a
    /// refresh has just produced always has more than half its life left and is used. The cap
    /// only ever lowers the margin, so a lifetime that reads too short — an imported token,
    /// whose `obtained_at` is the import time, not the issue time — delays the proactive
    /// refresh at most to half of what is left at import, never past expiry: an expired token
    /// (`expires_in <= 0`) always needs refreshing, whatever its lifetime says.
    pub fn needs_refresh(&self, now: i64, margin_secs: i64) -> bool {
        let Some(left) = self.expires_in(now) else {
            return false;
        };
        left <= self.refresh_margin(margin_secs)
    }

    /// The margin `needs_refresh` applies: `margin_secs`, at most half the lifetime, never
    /// below zero.
    pub fn refresh_margin(&self, margin_secs: i64) -> i64 {
        let lifetime = self
            .expires_at
            .map_or(0, |at| at.saturating_sub(self.obtained_at));
        margin_secs.min(lifetime / 2).max(0)
    }
}

/// A record together with where it lives and its version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connection {
    pub key: ConnKey,
    pub version: u64,
    pub record: TokenRecord,
}

/// The associated data of a connection's sealed record (invariant 7): it binds the blob to its
/// user, provider, account and version, and to nothing about where it is stored, so a record
/// moves between backends verbatim.
fn record_context(key: &ConnKey, version: u64) -> [Vec<u8>; 5] {
    [
        b"connection".to_vec(),
        key.user.as_bytes().to_vec(),
        key.provider.as_bytes().to_vec(),
        key.account.as_bytes().to_vec(),
        version.to_be_bytes().to_vec(),
    ]
}

/// Seal `record` as version `version` of `key` under the keyring's current data key.
pub fn seal_record(
    keyring: &Keyring,
    key: &ConnKey,
    version: u64,
    record: &TokenRecord,
) -> Vec<u8> {
    let json = zeroize::Zeroizing::new(serde_json::to_vec(record).expect("records serialize"));
    let ctx = record_context(key, version);
    let ctx: Vec<&[u8]> = ctx.iter().map(Vec::as_slice).collect();
    crypto::seal(keyring.current_key(), keyring.current, &ctx, &json)
}

/// Open the sealed blob of version `version` of `key`; the error is the reason it did not open.
pub fn open_record(
    keyring: &Keyring,
    key: &ConnKey,
    version: u64,
    blob: &[u8],
) -> std::result::Result<TokenRecord, OpenFailure> {
    let ctx = record_context(key, version);
    let ctx: Vec<&[u8]> = ctx.iter().map(Vec::as_slice).collect();
    let plain = crypto::open(blob, &ctx, |id| keyring.key(id)).map_err(OpenFailure::Seal)?;
    serde_json::from_slice(&plain).map_err(|e| OpenFailure::Contents(e.to_string()))
}

/// Why a sealed record did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenFailure {
    Seal(crypto::OpenError),
    Contents(String),
}

impl std::fmt::Display for OpenFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenFailure::Seal(e) => write!(f, "{e}"),
            OpenFailure::Contents(e) => write!(f, "unreadable contents: {e}"),
        }
    }
}

impl ConnKey {
    /// The error for this connection's record that did not open.
    pub fn corrupt(&self, reason: String) -> Error {
        Error::RecordCorrupt {
            record: self.to_string(),
            provider: self.provider.clone(),
            user: self.user.clone(),
            account: self.account.clone(),
            reason,
        }
    }

    /// The error for a record of `version` found where `latest` was written last: an older
    /// copy was put back (a restored backup), which every backend refuses to use.
    pub fn rolled_back(&self, version: u64, latest: u64) -> Error {
        self.corrupt(format!(
            "it is version {version} but version {latest} was written last: an older copy was \
             put back"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(obtained_at: i64, expires_at: Option<i64>) -> TokenRecord {
        TokenRecord {
            access_token: SecretString::new("a"),
            refresh_token: None,
            token_type: "bearer".into(),
            expires_at,
            scopes: Vec::new(),
            obtained_at,
            status: ConnectionStatus::Active,
        }
    }

    #[test]
    fn a_long_lived_token_uses_the_configured_margin() {
        let r = record(0, Some(3600));
        assert!(!r.needs_refresh(3299, 300));
        assert!(r.needs_refresh(3300, 300));
    }

    #[test]
    fn the_margin_is_capped_at_half_the_lifetime() {
        // 60 s tokens under a 300 s margin: fresh for their first half.
        let r = record(1000, Some(1060));
        assert_eq!(r.refresh_margin(300), 30);
        assert!(!r.needs_refresh(1000, 300), "a token just issued is used");
        assert!(!r.needs_refresh(1029, 300));
        assert!(r.needs_refresh(1030, 300));
        // Even an absurd margin leaves a new token alone.
        assert!(!r.needs_refresh(1000, i64::MAX));
    }

    #[test]
    fn expired_tokens_always_need_a_refresh() {
        // Imported already expired: `obtained_at` (the import) is after `expires_at`.
        let r = record(5000, Some(4000));
        assert_eq!(r.refresh_margin(300), 0);
        assert!(r.needs_refresh(5000, 300));
        // A token of no lifetime at all, and one at its expiry second.
        assert!(record(10, Some(10)).needs_refresh(10, 300));
        assert!(record(0, Some(60)).needs_refresh(60, 0));
        // No expiry known: never refreshed ahead of time.
        assert!(!record(0, None).needs_refresh(i64::MAX, i64::MAX));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let r = record(i64::MIN, Some(i64::MAX));
        assert_eq!(r.expires_in(i64::MIN), Some(i64::MAX));
        assert!(!r.needs_refresh(0, 300));
        let r = record(i64::MAX, Some(i64::MIN));
        assert_eq!(r.expires_in(i64::MAX), Some(i64::MIN));
        assert!(r.needs_refresh(i64::MAX, i64::MAX));
    }
}
