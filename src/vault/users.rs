//! Users and their API keys, for the HTTP server.
//!
//! A remote MCP client proves who it is with `Authorization: Bearer kw_…`. The key is made once
//! by `keyward users add NAME`, printed once, and never stored: the `users` tree keeps only its
//! SHA-256. A key is 32 bytes from the operating system's CSPRNG, so a plain hash is enough (there
//! is nothing to brute-force that a slow hash would protect).
//!
//! Layout of the `users` tree:
//! - `h/` ‖ SHA-256(key) → user name (the lookup by key);
//! - `u/` ‖ user name → JSON `{"key_sha256": hex, "created": RFC 3339}` (names are unique;
//!   `list` and `remove` go through here).
//!
//! A key counts only when both entries exist and agree (compared in constant time), so an
//! interrupted `add` or `remove`, or a tampered tree, never authenticates anyone. Adding writes
//! the name entry first; removing deletes the key entry first.
//!
//! The HTTP server checks a key on every request, and its reaper re-checks the key of every open
//! session twice a second; through a relayed vault each check is two round trips to the owner.
//! [`KeyCache`] keeps what it found for [`KEY_CACHE_TTL`], and forgets everything the moment the
//! users tree changes ([`Vault::watch_users`]: this process's own changes, and every other
//! process's relayed by the owner), so `keyward users remove` still locks a user out at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AuditEntry, Vault};
use crate::error::{Error, Result};
use crate::secret::SecretString;

/// Every API key starts with this, so it is recognisable in a config file or a leak scanner.
pub const KEY_PREFIX: &str = "kw_";

const BY_HASH: &[u8] = b"h/";
const BY_NAME: &[u8] = b"u/";

/// What `list` shows about a user (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub created: String,
}

#[derive(Serialize, Deserialize)]
struct UserRecord {
    key_sha256: String,
    created: String,
}

/// SHA-256 of an API key; the only form of the key that is ever stored. Token-exchange client
/// secrets ([`super::clients`]) are made and stored the same way.
pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn key_of(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + rest.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(rest);
    key
}

/// Constant-time equality of two byte strings of public length.
pub(super) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// User names follow the rules of connection names: they appear in sled keys, audit lines and
/// commands printed back to the user.
pub fn check_user_name(name: &str) -> Result<()> {
    super::record::check_name("user", name)
}

/// `prefix` and `bytes` random bytes from the operating system's CSPRNG, base64url.
pub(super) fn new_key(prefix: &str, bytes: usize) -> SecretString {
    use rand::RngCore;
    let mut random = zeroize::Zeroizing::new(vec![0u8; bytes]);
    rand::rngs::OsRng.fill_bytes(random.as_mut());
    let encoded = zeroize::Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random.as_slice()),
    );
    SecretString::new(format!("{prefix}{}", encoded.as_str()))
}

/// Add a user and return its new API key (the only time the key exists outside the client).
/// Fails when the name is taken. Audited as `user-add`.
pub async fn add(vault: &Vault, name: &str) -> Result<SecretString> {
    check_user_name(name)?;
    let by_name = key_of(BY_NAME, name.as_bytes());
    if vault.users_get(&by_name).await?.is_some() {
        return Err(Error::usage(format!(
            "there is already a user named {name}: pick another name, or `keyward users remove \
             {name}` first to replace its key"
        )));
    }
    let key = new_key(KEY_PREFIX, 32);
    let hash = key_hash(key.expose());
    let record = UserRecord {
        key_sha256: hex(&hash),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let record = serde_json::to_vec(&record).expect("a user record serializes");
    // By name first: a key is valid only once both entries exist and agree.
    vault.users_insert(&by_name, &record).await?;
    vault
        .users_insert(&key_of(BY_HASH, &hash), name.as_bytes())
        .await?;
    vault.audit(&AuditEntry::new(name, "user-add", "ok")).await;
    vault.flush().await?;
    Ok(key)
}

/// Every user, by name.
pub async fn list(vault: &Vault) -> Result<Vec<UserInfo>> {
    let mut users = Vec::new();
    for (k, v) in vault.users_scan(BY_NAME).await? {
        let name = String::from_utf8_lossy(&k[BY_NAME.len()..]).into_owned();
        let created = serde_json::from_slice::<UserRecord>(&v)
            .map(|r| r.created)
            .unwrap_or_default();
        users.push(UserInfo { name, created });
    }
    Ok(users)
}

/// Remove a user; its key stops working for the very next request. `Ok(false)` when there was
/// no such user. A removal is audited as `user-remove`.
pub async fn remove(vault: &Vault, name: &str) -> Result<bool> {
    let by_name = key_of(BY_NAME, name.as_bytes());
    let existed = vault.users_get(&by_name).await?.is_some();
    // Every key entry of this user goes first (normally one; more only after an interrupted
    // add), so the key is dead before the name is released.
    for (k, v) in vault.users_scan(BY_HASH).await? {
        if v.as_slice() == name.as_bytes() {
            vault.users_remove(&k).await?;
        }
    }
    vault.users_remove(&by_name).await?;
    if existed {
        vault
            .audit(&AuditEntry::new(name, "user-remove", "ok"))
            .await;
    }
    vault.flush().await?;
    Ok(existed)
}

pub(super) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The user an API key belongs to, if it is a current key.
pub async fn lookup(vault: &Vault, key: &str) -> Option<String> {
    lookup_hash(vault, &key_hash(key)).await
}

/// Like [`lookup`], from the key's hash (servers keep the hash of a session's key, not the key).
pub async fn lookup_hash(vault: &Vault, hash: &[u8; 32]) -> Option<String> {
    let name = vault.users_get(&key_of(BY_HASH, hash)).await.ok()??;
    let record = vault.users_get(&key_of(BY_NAME, &name)).await.ok()??;
    let record: UserRecord = serde_json::from_slice(&record).ok()?;
    let stored = unhex(&record.key_sha256)?;
    if !ct_eq(&stored, hash) {
        return None;
    }
    String::from_utf8(name).ok()
}

/// How long [`KeyCache`] believes a key it found, without a users change. Changes clear the
/// cache at once; this is the backstop for a change notice that never arrived (a relayed process
/// that was reconnecting to a new owner just then).
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);

/// Current API keys, by hash, remembered briefly (see the module docs). Only keys that are valid
/// are remembered, so the cache holds at most one entry per user, whatever clients send.
pub struct KeyCache {
    vault: Vault,
    generation: tokio::sync::watch::Receiver<u64>,
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    /// The users generation the entries were read under.
    generation: u64,
    keys: HashMap<[u8; 32], (String, Instant)>,
}

impl KeyCache {
    pub fn new(vault: Vault) -> KeyCache {
        let generation = vault.watch_users();
        let known = Known {
            generation: *generation.borrow(),
            keys: HashMap::new(),
        };
        KeyCache {
            vault,
            generation,
            known: Mutex::new(known),
        }
    }

    /// Like [`lookup_hash`], answered from memory when the key was found valid less than
    /// [`KEY_CACHE_TTL`] ago and no user was added or removed since.
    pub async fn lookup(&self, hash: &[u8; 32]) -> Option<String> {
        let (generation, known) = self.cached(hash);
        if known.is_some() {
            return known;
        }
        let name = lookup_hash(&self.vault, hash).await?;
        self.remember(hash, generation, &name);
        Some(name)
    }

    /// The users generation now, and the name `hash` was found valid for if that is recent.
    fn cached(&self, hash: &[u8; 32]) -> (u64, Option<String>) {
        let generation = *self.generation.borrow();
        {
            let mut known = crate::sync::lock(&self.known);
            if known.generation != generation {
                known.keys.clear();
                known.generation = generation;
            }
            if let Some((name, at)) = known.keys.get(hash) {
                if at.elapsed() < KEY_CACHE_TTL {
                    return (generation, Some(name.clone()));
                }
            }
        }
        (generation, None)
    }

    /// Keep what was read at `generation`.
    fn remember(&self, hash: &[u8; 32], generation: u64, name: &str) {
        let mut known = crate::sync::lock(&self.known);
        // A change that landed while we read may not be in what we read: answer, don't keep.
        if known.generation == generation && *self.generation.borrow() == generation {
            known.keys.insert(*hash, (name.to_string(), Instant::now()));
        }
    }
}

/// True when at least one user exists.
pub async fn any(vault: &Vault) -> Result<bool> {
    Ok(!vault.users_scan(BY_NAME).await?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Home;
    use crate::vault::OpenMode;

    async fn vault() -> (tempfile::TempDir, Vault) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home {
            dir: dir.path().join("home"),
        };
        let vault = Vault::open(&home, OpenMode::Create).await.unwrap();
        (dir, vault)
    }

    #[tokio::test]
    async fn add_lookup_list_remove() {
        let (_dir, vault) = vault().await;
        assert!(!any(&vault).await.unwrap());
        let alice = add(&vault, "alice").await.unwrap();
        let bob = add(&vault, "bob").await.unwrap();
        assert!(alice.expose().starts_with("kw_"));
        assert_eq!(alice.expose().len(), 3 + 43);
        assert_ne!(alice.expose(), bob.expose());
        assert_eq!(
            lookup(&vault, alice.expose()).await.as_deref(),
            Some("alice")
        );
        assert_eq!(lookup(&vault, bob.expose()).await.as_deref(), Some("bob"));
        assert_eq!(lookup(&vault, "kw_nope").await, None);
        assert_eq!(lookup(&vault, "").await, None);
        let names: Vec<String> = list(&vault)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["alice", "bob"]);

        let again = add(&vault, "alice").await.unwrap_err().to_string();
        assert!(again.contains("already a user named alice"), "{again}");
        assert!(add(&vault, "no spaces").await.is_err());

        assert!(remove(&vault, "alice").await.unwrap());
        assert!(!remove(&vault, "alice").await.unwrap());
        assert_eq!(lookup(&vault, alice.expose()).await, None);
        assert_eq!(lookup(&vault, bob.expose()).await.as_deref(), Some("bob"));
        assert!(any(&vault).await.unwrap());
    }

    #[tokio::test]
    async fn only_the_hash_is_stored() {
        let (_dir, vault) = vault().await;
        let key = add(&vault, "carol").await.unwrap();
        for (k, v) in vault.users_scan(b"").await.unwrap() {
            let secret = key.expose().as_bytes();
            assert!(!k.windows(secret.len()).any(|w| w == secret));
            assert!(!v.windows(secret.len()).any(|w| w == secret));
        }
    }
}
