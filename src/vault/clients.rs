//! Token-exchange clients: the programs (a team's own tool server, a CI bot) that may exchange a
//! user's credential for one of that user's provider tokens at `POST /oauth/token`
//! ([`crate::server::exchange`]).
//!
//! A client is registered once (`keyward clients add NAME --providers … --scopes …
//! [--accounts …]`) with what it may ever receive: the providers, the scopes a token it gets may
//! carry, and optionally the provider accounts. Registration prints a `client_id` and a secret
//! once; the secret is made and kept exactly like an API key ([`super::users`]): 32 bytes from
//! the operating system's CSPRNG, stored only as its SHA-256.
//!
//! Clients live in the users tree (so every backend stores them, relayed like API keys), under
//! their own prefixes:
//! - `ci/` ‖ client_id → client name (the lookup when a client authenticates);
//! - `cn/` ‖ client name → JSON [`StoredClient`] (names are unique; `list` and `remove` go
//!   through here).
//!
//! As for API keys, a client authenticates only when both entries exist and agree (the secret's
//! hash compared in constant time): adding writes the name entry first, removing deletes the id
//! entry first, so an interrupted command never leaves a client that authenticates. Nothing is
//! cached: a removed client is refused from its next request on.

use serde::{Deserialize, Serialize};

use super::users::{ct_eq, hex, key_hash, key_of, new_key, remove_index_entries, unhex};
use super::{AuditEntry, Vault};
use crate::error::{Error, Result};
use crate::secret::SecretString;

/// Every client id starts with this (not a secret: it names the client in requests).
pub const CLIENT_ID_PREFIX: &str = "kwc_";
/// Every client secret starts with this, so it is recognisable in a config file or a leak
/// scanner.
pub const SECRET_PREFIX: &str = "kwcs_";

const BY_ID: &[u8] = b"ci/";
const BY_NAME: &[u8] = b"cn/";

/// What a client may receive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowance {
    /// Providers it may get tokens for (`github`, `slack`, `google`, …).
    pub providers: Vec<String>,
    /// Scopes a token it gets may carry, across its providers.
    pub scopes: Vec<String>,
    /// Provider accounts it may get tokens of; empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
}

/// A registered client, as `keyward clients list` shows it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    pub name: String,
    pub client_id: String,
    #[serde(flatten)]
    pub allowance: Allowance,
    pub created: String,
}

/// The stored form: the client and the SHA-256 of its secret.
#[derive(Serialize, Deserialize)]
struct StoredClient {
    client_id: String,
    secret_sha256: String,
    #[serde(flatten)]
    allowance: Allowance,
    created: String,
}

impl StoredClient {
    fn client(self, name: &str) -> Client {
        Client {
            name: name.to_string(),
            client_id: self.client_id,
            allowance: self.allowance,
            created: self.created,
        }
    }
}

/// The last token exchange of a connection, as `keyward status` shows it (a hint, like the
/// last use: stored unsealed and unflushed; it holds no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastExchange {
    /// Unix seconds.
    pub time: i64,
    /// The client's name.
    pub client: String,
    /// `ok`, or the error code it was refused with.
    pub outcome: String,
}

/// A client just added: the only time its secret exists outside the client (Debug prints the
/// secret as `[redacted]`).
#[derive(Debug)]
pub struct NewClient {
    pub client: Client,
    pub secret: SecretString,
}

/// Check what `add` would store, before anything is opened or created. Providers are checked
/// against the catalog by the caller (the vault knows no catalog).
pub fn check(name: &str, allowance: &Allowance) -> Result<()> {
    super::record::check_name("client", name)?;
    if allowance.providers.is_empty() {
        return Err(Error::usage(
            "a client needs at least one provider: `--providers github` (comma-separated)",
        ));
    }
    for provider in &allowance.providers {
        super::record::check_name("provider", provider)?;
    }
    if allowance.scopes.is_empty() {
        return Err(Error::usage(
            "a client needs the scopes its tokens may carry: `--scopes \"repo read:user\"`",
        ));
    }
    for account in &allowance.accounts {
        super::record::check_name("account", account)?;
    }
    Ok(())
}

/// Register a client and return it with its new secret. Fails when the name is taken. Audited
/// as `client-add`.
pub async fn add(vault: &Vault, name: &str, allowance: Allowance) -> Result<NewClient> {
    check(name, &allowance)?;
    let by_name = key_of(BY_NAME, name.as_bytes());
    if vault.users_get(&by_name).await?.is_some() {
        return Err(Error::usage(format!(
            "there is already a client named {name}: pick another name, or `keyward clients \
             remove {name}` first to replace its secret"
        )));
    }
    let client_id = new_key(CLIENT_ID_PREFIX, 16).expose().to_string();
    let secret = new_key(SECRET_PREFIX, 32);
    let stored = StoredClient {
        client_id: client_id.clone(),
        secret_sha256: hex(&key_hash(secret.expose())),
        allowance,
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    let record = serde_json::to_vec(&stored).expect("a client record serializes");
    // By name first: a client authenticates only once both entries exist and agree.
    vault.users_insert(&by_name, &record).await?;
    vault
        .users_insert(&key_of(BY_ID, client_id.as_bytes()), name.as_bytes())
        .await?;
    vault.audit(&client_event(name, "client-add")).await;
    vault.flush().await?;
    Ok(NewClient {
        client: stored.client(name),
        secret,
    })
}

/// Every client, by name.
pub async fn list(vault: &Vault) -> Result<Vec<Client>> {
    let mut clients = Vec::new();
    for (k, v) in vault.users_scan(BY_NAME).await? {
        let name = String::from_utf8_lossy(&k[BY_NAME.len()..]).into_owned();
        if let Ok(stored) = serde_json::from_slice::<StoredClient>(&v) {
            clients.push(stored.client(&name));
        }
    }
    Ok(clients)
}

/// Remove a client; its secret stops working for the very next request. `Ok(false)` when there
/// was no such client. Audited as `client-remove`.
pub async fn remove(vault: &Vault, name: &str) -> Result<bool> {
    let by_name = key_of(BY_NAME, name.as_bytes());
    let existed = vault.users_get(&by_name).await?.is_some();
    // Every id entry of this client goes first (one; more only after an interrupted add), so
    // the client is dead before the name is released.
    remove_index_entries(vault, BY_ID, name).await?;
    vault.users_remove(&by_name).await?;
    if existed {
        vault.audit(&client_event(name, "client-remove")).await;
    }
    vault.flush().await?;
    Ok(existed)
}

/// The client `client_id` names, if `secret` is its current secret.
pub async fn authenticate(vault: &Vault, client_id: &str, secret: &str) -> Option<Client> {
    if !client_id.starts_with(CLIENT_ID_PREFIX) {
        return None;
    }
    let name = vault
        .users_get(&key_of(BY_ID, client_id.as_bytes()))
        .await
        .ok()??;
    let record = vault.users_get(&key_of(BY_NAME, &name)).await.ok()??;
    let stored: StoredClient = serde_json::from_slice(&record).ok()?;
    let expected = unhex(&stored.secret_sha256)?;
    // Both entries must agree, and the secret must be the current one.
    if stored.client_id != client_id || !ct_eq(&expected, &key_hash(secret)) {
        return None;
    }
    let name = String::from_utf8(name).ok()?;
    Some(stored.client(&name))
}

/// The audit entry of a change to the clients (not about any user: `user` is `-`).
fn client_event(name: &str, event: &str) -> AuditEntry {
    let mut entry = AuditEntry::new("-", event, "ok");
    entry.client = Some(name.to_string());
    entry
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

    fn allowance() -> Allowance {
        Allowance {
            providers: vec!["github".into()],
            scopes: vec!["repo".into(), "read:user".into()],
            accounts: Vec::new(),
        }
    }

    #[tokio::test]
    async fn add_authenticate_list_remove() {
        let (_dir, vault) = vault().await;
        let ci = add(&vault, "ci-bot", allowance()).await.unwrap();
        let other = add(&vault, "other", allowance()).await.unwrap();
        assert!(ci.client.client_id.starts_with(CLIENT_ID_PREFIX));
        assert!(ci.secret.expose().starts_with(SECRET_PREFIX));
        assert_ne!(ci.client.client_id, other.client.client_id);
        let id = ci.client.client_id.clone();
        let found = authenticate(&vault, &id, ci.secret.expose()).await;
        assert_eq!(found.as_ref().map(|c| c.name.as_str()), Some("ci-bot"));
        assert_eq!(found.unwrap().allowance, allowance());
        // Another client's secret, a wrong id, nothing.
        assert!(authenticate(&vault, &id, other.secret.expose())
            .await
            .is_none());
        assert!(authenticate(&vault, "kwc_nope", ci.secret.expose())
            .await
            .is_none());
        assert!(authenticate(&vault, &id, "").await.is_none());
        let names: Vec<String> = list(&vault)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["ci-bot", "other"]);
        // Clients are not users.
        assert!(!crate::vault::users::any(&vault).await.unwrap());

        let again = add(&vault, "ci-bot", allowance())
            .await
            .unwrap_err()
            .to_string();
        assert!(again.contains("already a client named ci-bot"), "{again}");
        assert!(remove(&vault, "ci-bot").await.unwrap());
        assert!(!remove(&vault, "ci-bot").await.unwrap());
        assert!(authenticate(&vault, &id, ci.secret.expose())
            .await
            .is_none());
        assert!(
            authenticate(&vault, &other.client.client_id, other.secret.expose())
                .await
                .is_some()
        );
    }

    #[tokio::test]
    async fn only_the_secrets_hash_is_stored() {
        let (_dir, vault) = vault().await;
        let new = add(&vault, "svc", allowance()).await.unwrap();
        let secret = new.secret.expose().as_bytes();
        for (k, v) in vault.users_scan(b"").await.unwrap() {
            assert!(!k.windows(secret.len()).any(|w| w == secret));
            assert!(!v.windows(secret.len()).any(|w| w == secret));
        }
    }

    #[test]
    fn registrations_are_checked() {
        assert!(check("ok", &allowance()).is_ok());
        assert!(check("no spaces", &allowance()).is_err());
        let mut none = allowance();
        none.providers.clear();
        assert!(check("x", &none).is_err());
        let mut no_scopes = allowance();
        no_scopes.scopes.clear();
        assert!(check("x", &no_scopes).is_err());
    }
}
