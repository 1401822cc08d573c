//! Users and their API keys, for the HTTP server.
//!
//! A remote MCP client proves who it is with `Authorization: Bearer kw_…`. The key is made once
//! by `keyward users add NAME`, printed once, and never stored: the `users` tree keeps only its
//! SHA-256. A key is 32 bytes from the operating system's CSPRNG, so a plain hash is enough (there
//! is nothing to brute-force that a slow hash would protect).
//!
//! Layout of the `users` tree:
//! - `h/` ‖ SHA-256(key) → user name (the lookup by key);
//! - `u/` ‖ user name → JSON `{"key_sha256": hex, "created": RFC 3339, "oidc": true}` (names are
//!   unique; `list` and `remove` go through here). `key_sha256` is absent for a user who has no
//!   API key; `oidc` marks a user who came in through the identity provider (`[server.auth]`);
//! - `x/` ‖ user name → JSON `{"removed": RFC 3339}`: a user `keyward users remove` cut off. The
//!   identity provider keeps vouching for them, so without this mark their next request would
//!   bring them back; `keyward users add` (with or without `--oidc`) lifts it;
//! - `t/` ‖ ticket id → its expiry (unix seconds, 8 bytes big-endian): `/connect` tickets already
//!   used, so that a ticket works once whichever process sharing the vault sees it
//!   ([`redeem_ticket`]); entries are dropped once expired.
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
const REMOVED: &[u8] = b"x/";
const TICKETS: &[u8] = b"t/";

/// What `list` shows about a user (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub name: String,
    pub created: String,
    /// The user has an API key.
    pub api_key: bool,
    /// The user came in through the identity provider (or was admitted for it).
    pub oidc: bool,
}

#[derive(Serialize, Deserialize)]
struct UserRecord {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    key_sha256: String,
    created: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    oidc: bool,
}

impl UserRecord {
    fn new(key_sha256: String, oidc: bool) -> UserRecord {
        UserRecord {
            key_sha256,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            oidc,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a user record serializes")
    }
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

/// Equality of two byte strings of public length in time independent of their contents
/// (`subtle`, made for this: a plain `==` stops at the first difference).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
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
    let record = UserRecord::new(hex(&hash), false).to_bytes();
    // By name first: a key is valid only once both entries exist and agree.
    vault.users_insert(&by_name, &record).await?;
    vault
        .users_insert(&key_of(BY_HASH, &hash), name.as_bytes())
        .await?;
    vault
        .users_remove(&key_of(REMOVED, name.as_bytes()))
        .await?;
    vault.audit(&AuditEntry::new(name, "user-add", "ok")).await;
    vault.flush().await?;
    Ok(key)
}

/// Admit a user of the identity provider ahead of their first sign-in, or again after
/// `keyward users remove`: a user without an API key, marked `oidc`. Fails when the name is
/// taken. Audited as `user-add`.
pub async fn add_oidc(vault: &Vault, name: &str) -> Result<()> {
    check_user_name(name)?;
    let by_name = key_of(BY_NAME, name.as_bytes());
    if vault.users_get(&by_name).await?.is_some() {
        return Err(Error::usage(format!(
            "there is already a user named {name}: they may sign in through the identity \
             provider already"
        )));
    }
    vault
        .users_insert(&by_name, &UserRecord::new(String::new(), true).to_bytes())
        .await?;
    vault
        .users_remove(&key_of(REMOVED, name.as_bytes()))
        .await?;
    vault
        .audit(&AuditEntry::new(name, "user-add", "ok (identity provider)"))
        .await;
    vault.flush().await?;
    Ok(())
}

/// Whether the identity provider's user `name` may use keyward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// `keyward users remove` cut them off.
    Removed,
}

/// The identity provider vouched for `name`: admit them unless they were removed. A user seen
/// for the first time is created (marked `oidc`, no API key, audited as `user-add`); an API-key
/// user of the same name is the same user, and is marked `oidc` too.
pub async fn admit_oidc(vault: &Vault, name: &str) -> Result<Admission> {
    check_user_name(name)?;
    if vault
        .users_get(&key_of(REMOVED, name.as_bytes()))
        .await?
        .is_some()
    {
        return Ok(Admission::Removed);
    }
    let by_name = key_of(BY_NAME, name.as_bytes());
    let record = match vault.users_get(&by_name).await? {
        Some(bytes) => match serde_json::from_slice::<UserRecord>(&bytes) {
            Ok(record) if record.oidc => return Ok(Admission::Admitted),
            Ok(mut record) => {
                record.oidc = true;
                record
            }
            Err(_) => {
                return Err(Error::Vault(format!(
                    "the users entry of {name} is unreadable: `keyward users remove {name}`, \
                     then `keyward users add {name} --oidc`"
                )))
            }
        },
        None => UserRecord::new(String::new(), true),
    };
    let first = record.key_sha256.is_empty();
    vault.users_insert(&by_name, &record.to_bytes()).await?;
    let outcome = if first {
        "ok (first sign-in through the identity provider)"
    } else {
        "ok (identity provider, beside the API key)"
    };
    vault
        .audit(&AuditEntry::new(name, "user-add", outcome))
        .await;
    vault.flush().await?;
    Ok(Admission::Admitted)
}

/// Mark the `/connect` ticket `id` used. `Ok(false)` when it was used before (by any process
/// sharing the vault). `expires_at` (unix seconds) says when the mark may be dropped; expired
/// marks are dropped here. A read, then a write — the users tree has no compare-and-swap — so
/// the caller serialises redemptions in its process; two processes redeeming the same ticket in
/// the same instant could both succeed (both for the ticket's own user).
pub async fn redeem_ticket(vault: &Vault, id: &[u8], expires_at: i64) -> Result<bool> {
    let now = chrono::Utc::now().timestamp();
    for (k, v) in vault.users_scan(TICKETS).await? {
        let expiry = v.try_into().map(i64::from_be_bytes).unwrap_or(0);
        if expiry < now {
            vault.users_remove(&k).await?;
        }
    }
    let key = key_of(TICKETS, id);
    if vault.users_get(&key).await?.is_some() {
        return Ok(false);
    }
    vault.users_insert(&key, &expires_at.to_be_bytes()).await?;
    vault.flush().await?;
    Ok(true)
}

/// Remove every entry under `index` that points at `name` (an index maps a secret's hash or an
/// id to the name that owns it): what removing a user or an exchange client does first, so its
/// secret is dead before its name is released.
pub(super) async fn remove_index_entries(vault: &Vault, index: &[u8], name: &str) -> Result<()> {
    for (k, v) in vault.users_scan(index).await? {
        if v.as_slice() == name.as_bytes() {
            vault.users_remove(&k).await?;
        }
    }
    Ok(())
}

/// Every user, by name.
pub async fn list(vault: &Vault) -> Result<Vec<UserInfo>> {
    let mut users = Vec::new();
    for (k, v) in vault.users_scan(BY_NAME).await? {
        let name = String::from_utf8_lossy(&k[BY_NAME.len()..]).into_owned();
        let record = serde_json::from_slice::<UserRecord>(&v).ok();
        users.push(UserInfo {
            name,
            created: record
                .as_ref()
                .map(|r| r.created.clone())
                .unwrap_or_default(),
            api_key: record.as_ref().is_some_and(|r| !r.key_sha256.is_empty()),
            oidc: record.as_ref().is_some_and(|r| r.oidc),
        });
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
    remove_index_entries(vault, BY_HASH, name).await?;
    if existed {
        // Before the name goes: the identity provider must not bring them back.
        let mark = serde_json::json!({
            "removed": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
        vault
            .users_insert(
                &key_of(REMOVED, name.as_bytes()),
                mark.to_string().as_bytes(),
            )
            .await?;
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

/// The user an API key belongs to, if it is a current key. An error when the vault cannot
/// answer (a PostgreSQL store that is down): "no such key" would be a lie then.
pub async fn lookup(vault: &Vault, key: &str) -> Result<Option<String>> {
    lookup_hash(vault, &key_hash(key)).await
}

/// Like [`lookup`], from the key's hash (servers keep the hash of a session's key, not the key).
pub async fn lookup_hash(vault: &Vault, hash: &[u8; 32]) -> Result<Option<String>> {
    let Some(name) = vault.users_get(&key_of(BY_HASH, hash)).await? else {
        return Ok(None);
    };
    let Some(record) = vault.users_get(&key_of(BY_NAME, &name)).await? else {
        return Ok(None);
    };
    let matches = serde_json::from_slice::<UserRecord>(&record)
        .ok()
        .and_then(|record| unhex(&record.key_sha256))
        .is_some_and(|stored| ct_eq(&stored, hash));
    Ok(matches.then(|| String::from_utf8(name).ok()).flatten())
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
    /// Users of the identity provider found admitted (only those: one entry per user).
    admitted: HashMap<String, Instant>,
}

impl KeyCache {
    pub fn new(vault: Vault) -> KeyCache {
        let generation = vault.watch_users();
        let known = Known {
            generation: *generation.borrow(),
            ..Known::default()
        };
        KeyCache {
            vault,
            generation,
            known: Mutex::new(known),
        }
    }

    /// Like [`lookup_hash`], answered from memory when the key was found valid less than
    /// [`KEY_CACHE_TTL`] ago and no user was added or removed since.
    pub async fn lookup(&self, hash: &[u8; 32]) -> Result<Option<String>> {
        let (generation, known) = self.cached(hash);
        if known.is_some() {
            return Ok(known);
        }
        let Some(name) = lookup_hash(&self.vault, hash).await? else {
            return Ok(None);
        };
        self.remember(hash, generation, &name);
        Ok(Some(name))
    }

    /// [`admit_oidc`], answered from memory when `name` was found admitted
    /// less than [`KEY_CACHE_TTL`] ago and no user was added or removed since: the identity
    /// provider's users are checked on every request, like API keys.
    pub async fn admit_oidc(&self, name: &str) -> Result<Admission> {
        let generation = {
            let known = self.current();
            if known
                .admitted
                .get(name)
                .is_some_and(|at| at.elapsed() < KEY_CACHE_TTL)
            {
                return Ok(Admission::Admitted);
            }
            known.generation
        };
        let admission = admit_oidc(&self.vault, name).await?;
        if admission == Admission::Admitted {
            let mut known = crate::sync::lock(&self.known);
            // Admitting a new user moves the generation on: what was read is still the answer,
            // but only an answer read under the current generation is kept.
            if known.generation == generation && *self.generation.borrow() == generation {
                known.admitted.insert(name.to_string(), Instant::now());
            }
        }
        Ok(admission)
    }

    /// What is remembered, emptied first if a user was added or removed since it was read.
    fn current(&self) -> std::sync::MutexGuard<'_, Known> {
        let generation = *self.generation.borrow();
        let mut known = crate::sync::lock(&self.known);
        if known.generation != generation {
            known.keys.clear();
            known.admitted.clear();
            known.generation = generation;
        }
        known
    }

    /// The users generation now, and the name `hash` was found valid for if that is recent.
    fn cached(&self, hash: &[u8; 32]) -> (u64, Option<String>) {
        let known = self.current();
        if let Some((name, at)) = known.keys.get(hash) {
            if at.elapsed() < KEY_CACHE_TTL {
                return (known.generation, Some(name.clone()));
            }
        }
        (known.generation, None)
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
            lookup(&vault, alice.expose()).await.unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(
            lookup(&vault, bob.expose()).await.unwrap().as_deref(),
            Some("bob")
        );
        assert_eq!(lookup(&vault, "kw_nope").await.unwrap(), None);
        assert_eq!(lookup(&vault, "").await.unwrap(), None);
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
        assert_eq!(lookup(&vault, alice.expose()).await.unwrap(), None);
        assert_eq!(
            lookup(&vault, bob.expose()).await.unwrap().as_deref(),
            Some("bob")
        );
        assert!(any(&vault).await.unwrap());
    }

    #[tokio::test]
    async fn identity_provider_users_come_in_once_and_stay_out_once_removed() {
        let (_dir, vault) = vault().await;
        assert_eq!(
            admit_oidc(&vault, "dana").await.unwrap(),
            Admission::Admitted
        );
        assert_eq!(
            admit_oidc(&vault, "dana").await.unwrap(),
            Admission::Admitted
        );
        let listed = list(&vault).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].oidc && !listed[0].api_key, "{listed:?}");
        // An API-key user of the same name is the same user, now also marked.
        let key = add(&vault, "erin").await.unwrap();
        assert_eq!(
            admit_oidc(&vault, "erin").await.unwrap(),
            Admission::Admitted
        );
        let erin = list(&vault)
            .await
            .unwrap()
            .into_iter()
            .find(|u| u.name == "erin")
            .unwrap();
        assert!(erin.oidc && erin.api_key, "{erin:?}");
        assert_eq!(
            lookup(&vault, key.expose()).await.unwrap().as_deref(),
            Some("erin")
        );
        // Removed: the identity provider does not bring them back; `add --oidc` does.
        assert!(remove(&vault, "dana").await.unwrap());
        assert_eq!(
            admit_oidc(&vault, "dana").await.unwrap(),
            Admission::Removed
        );
        assert!(list(&vault).await.unwrap().iter().all(|u| u.name != "dana"));
        add_oidc(&vault, "dana").await.unwrap();
        assert_eq!(
            admit_oidc(&vault, "dana").await.unwrap(),
            Admission::Admitted
        );
        assert!(add_oidc(&vault, "dana").await.is_err());
    }

    #[tokio::test]
    async fn a_ticket_is_redeemed_once() {
        let (_dir, vault) = vault().await;
        let later = chrono::Utc::now().timestamp() + 600;
        assert!(redeem_ticket(&vault, b"t1", later).await.unwrap());
        assert!(!redeem_ticket(&vault, b"t1", later).await.unwrap());
        assert!(redeem_ticket(&vault, b"t2", later).await.unwrap());
        // An expired mark is dropped (the ticket itself is refused for its age before this).
        assert!(redeem_ticket(&vault, b"old", 0).await.unwrap());
        assert!(redeem_ticket(&vault, b"old", later).await.unwrap());
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
