//! Where a vault is, what is in it, and moving it: the library side of `keyward store status`
//! and `keyward store copy`.
//!
//! A vault is either the embedded sled database of a home folder or a PostgreSQL database
//! ([`Location`]). A copy reads the whole of one into a [`Dump`] and writes it into the other,
//! **without opening anything**: sealed records, the keyring (sealed under the master key), the
//! API-key hashes and the audit log move byte for byte, so no master key is needed to copy and
//! none is ever written to the target. A record's associated data names its user, provider,
//! account and version, not the backend, so it opens wherever it lands — with the same master
//! key, which the copy reports by its public id.
//!
//! A copy needs a quiet source and target: a sled vault is read and written under its owner
//! lock (so no keyward process may be using it), a PostgreSQL source is read in one snapshot,
//! and a PostgreSQL target is written in one transaction. A target that already holds a vault is
//! refused unless `force`, which replaces it.

use serde::Serialize;

use super::keys::{self, Keyring};
use super::postgres::{self, StoreUrl};
use super::record::ConnKey;
use super::store;
use crate::config::{check_trusted, Config, Fix, Home};
use crate::error::{Error, Result};

/// Where a vault is.
#[derive(Debug, Clone)]
pub enum Location {
    /// The sled database in this home folder.
    Sled(Home),
    /// A PostgreSQL database (boxed: a parsed URL is large).
    Postgres(Box<StoreUrl>),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sled(home) => write!(f, "the sled vault in {}", home.dir.display()),
            Location::Postgres(url) => write!(f, "the PostgreSQL store at {url}"),
        }
    }
}

impl Location {
    /// The vault `home` uses: `KEYWARD_STORE_URL`, else `[store] url` in its `config.toml`,
    /// else its own sled database.
    pub fn of(home: &Home) -> Result<Location> {
        let config = Config::load(home)?;
        match &config.store.url {
            Some(url) => Ok(Location::Postgres(Box::new(StoreUrl::parse(
                url.expose(),
                &Config::store_url_origin(home),
            )?))),
            None => Ok(Location::Sled(home.clone())),
        }
    }

    /// A location given on the command line: a `postgres://` URL, else a home folder.
    pub fn parse(text: &str, what: &str) -> Result<Location> {
        if StoreUrl::is_postgres(text) {
            Ok(Location::Postgres(Box::new(StoreUrl::parse(text, what)?)))
        } else {
            Ok(Location::Sled(Home {
                dir: std::path::PathBuf::from(text),
            }))
        }
    }

    /// Whether both name the same vault.
    pub fn same_as(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::Sled(a), Location::Sled(b)) => {
                let canon = |h: &Home| std::fs::canonicalize(&h.dir).unwrap_or(h.dir.clone());
                canon(a) == canon(b)
            }
            (Location::Postgres(a), Location::Postgres(b)) => a.expose() == b.expose(),
            _ => false,
        }
    }
}

/// What `keyward store status` shows. No secret: counts, versions, the master key's public id.
#[derive(Debug, Clone, Serialize)]
pub struct StoreStatus {
    /// `sled` or `postgres`.
    pub backend: String,
    /// The folder, or the URL without password.
    pub location: String,
    /// The on-disk format (sled) or schema version (PostgreSQL).
    pub schema: u64,
    pub connections: u64,
    pub users: u64,
    pub audit_entries: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_trip_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key_id: Option<String>,
}

/// One stored connection as the backends keep it, unopened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawConnection {
    pub key: ConnKey,
    /// The highest version ever written (kept after a disconnect).
    pub latest: u64,
    /// The record's version and sealed blob; `None` once disconnected.
    pub sealed: Option<(u64, Vec<u8>)>,
    pub last_used: Option<i64>,
    /// The latest token exchange ([`super::clients::LastExchange`] as JSON; no secret).
    pub last_exchange: Option<String>,
}

/// A whole vault, unopened (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// The text of `keyring.json`; `None` for a vault without one.
    pub keyring: Option<String>,
    /// In key order.
    pub connections: Vec<RawConnection>,
    /// The users tree, in key order.
    pub users: Vec<(Vec<u8>, Vec<u8>)>,
    /// The audit log: sequence number and entry (JSON), in order.
    pub audit: Vec<(u64, String)>,
}

impl Dump {
    /// The public id of the master key the keyring is sealed under.
    pub fn master_key_id(&self) -> Option<String> {
        self.keyring.as_deref().and_then(keys::sealed_under)
    }

    pub fn is_empty(&self) -> bool {
        *self == Dump::default()
    }
}

/// What a copy moved.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub connections: usize,
    pub users: usize,
    pub audit_entries: usize,
    /// The master key the copied vault opens with (public id).
    pub master_key_id: Option<String>,
}

/// Read a whole vault.
pub async fn read(from: &Location) -> Result<Dump> {
    match from {
        Location::Sled(home) => {
            let home = home.clone();
            tokio::task::spawn_blocking(move || read_sled(&home))
                .await
                .map_err(|e| Error::other(format!("reading the vault failed: {e}")))?
        }
        Location::Postgres(url) => postgres::export(url).await,
    }
}

/// Write a whole vault into `to`, which must hold none unless `force`.
pub async fn write(to: &Location, dump: &Dump, force: bool) -> Result<()> {
    match to {
        Location::Sled(home) => {
            let (home, dump) = (home.clone(), dump.clone());
            tokio::task::spawn_blocking(move || write_sled(&home, &dump, force))
                .await
                .map_err(|e| Error::other(format!("writing the vault failed: {e}")))?
        }
        Location::Postgres(url) => postgres::import(url, dump, force).await,
    }
}

/// Copy the vault at `from` into `to` (see the module docs).
pub async fn copy(from: &Location, to: &Location, force: bool) -> Result<CopyReport> {
    if from.same_as(to) {
        return Err(Error::usage(format!("{from} cannot be copied onto itself")));
    }
    let dump = read(from).await?;
    if dump.keyring.is_none() {
        return Err(Error::NotFound(format!(
            "there is no vault to copy in {from}: it has no keyring"
        )));
    }
    write(to, &dump, force).await?;
    Ok(CopyReport {
        connections: dump
            .connections
            .iter()
            .filter(|c| c.sealed.is_some())
            .count(),
        users: dump
            .users
            .iter()
            .filter(|(k, _)| k.starts_with(b"u/"))
            .count(),
        audit_entries: dump.audit.len(),
        master_key_id: dump.master_key_id(),
    })
}

/// The error for a target that already holds a vault.
pub(crate) fn not_empty(to: &impl std::fmt::Display) -> Error {
    Error::usage(format!(
        "{to} already holds a vault; keyward will not overwrite it: pass --force to replace it \
         (everything in it is lost), or copy somewhere empty"
    ))
}

/// A sled vault is copied only when no keyward process has it open.
fn sled_lock(home: &Home) -> Result<std::fs::File> {
    store::take_owner_lock(home).map_err(|e| match e {
        Error::Busy(_) => Error::Busy(format!(
            "a keyward process has the vault in {} open; `keyward store copy` needs it to \
             itself: stop the keyward processes using it (keyward serve, …) and retry",
            home.dir.display()
        )),
        other => other,
    })
}

fn be_u64(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().unwrap_or([0; 8]))
}

fn read_sled(home: &Home) -> Result<Dump> {
    home.check_trusted()?;
    let keyring_path = Keyring::path(home);
    if !keyring_path.exists() && !home.vault_dir().exists() {
        return Err(Error::NotFound(format!(
            "there is no keyward vault in {}",
            home.dir.display()
        )));
    }
    let _lock = sled_lock(home)?;
    check_trusted(&home.vault_dir(), "the vault folder", Fix::Private)?;
    let keyring = match std::fs::read_to_string(&keyring_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(format!("reading {}", keyring_path.display()), e)),
    };
    let mut dump = Dump {
        keyring,
        ..Dump::default()
    };
    if !home.vault_dir().exists() {
        return Ok(dump);
    }
    let db = store::open_db(home)?;
    let (conns, versions, usage, exchanges) = (
        db.open_tree("connections")?,
        db.open_tree("versions")?,
        db.open_tree("usage")?,
        db.open_tree("exchanges")?,
    );
    for item in versions.iter() {
        let (k, latest) = item?;
        let Some(key) = ConnKey::from_storage_key(&k) else {
            continue;
        };
        let sealed = conns
            .get(&k)?
            .filter(|v| v.len() >= 8)
            .map(|v| (be_u64(&v[..8]), v[8..].to_vec()));
        let last_used = usage.get(&k)?.map(|v| be_u64(&v) as i64);
        let last_exchange = exchanges
            .get(&k)?
            .map(|v| String::from_utf8_lossy(&v).into_owned());
        dump.connections.push(RawConnection {
            key,
            latest: be_u64(&latest),
            sealed,
            last_used,
            last_exchange,
        });
    }
    for item in db.open_tree("users")?.iter() {
        let (k, v) = item?;
        dump.users.push((k.to_vec(), v.to_vec()));
    }
    for item in db.open_tree("audit")?.iter() {
        let (k, v) = item?;
        dump.audit
            .push((be_u64(&k), String::from_utf8_lossy(&v).into_owned()));
    }
    Ok(dump)
}

fn write_sled(home: &Home, dump: &Dump, force: bool) -> Result<()> {
    if !home.dir.exists() {
        home.create()?;
    }
    home.check_trusted()?;
    let _lock = sled_lock(home)?;
    let keyring_path = Keyring::path(home);
    let occupied = keyring_path.exists() || home.vault_dir().exists();
    if occupied && !force {
        return Err(not_empty(&Location::Sled(home.clone())));
    }
    if home.vault_dir().exists() {
        std::fs::remove_dir_all(home.vault_dir())
            .map_err(|e| Error::io(format!("removing {}", home.vault_dir().display()), e))?;
    }
    if let Some(text) = &dump.keyring {
        keys::write_private_atomically(&keyring_path, text.as_bytes(), true)?;
    }
    let db = store::open_db(home)?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(home.vault_dir(), std::fs::Permissions::from_mode(0o700));
    db.open_tree("meta")?
        .insert("format", &store::FORMAT_VERSION.to_be_bytes())?;
    let (conns, versions, usage, exchanges) = (
        db.open_tree("connections")?,
        db.open_tree("versions")?,
        db.open_tree("usage")?,
        db.open_tree("exchanges")?,
    );
    for c in &dump.connections {
        let k = c.key.storage_key();
        versions.insert(&k, &c.latest.to_be_bytes())?;
        if let Some((version, blob)) = &c.sealed {
            let mut value = version.to_be_bytes().to_vec();
            value.extend_from_slice(blob);
            conns.insert(&k, value)?;
        }
        if let Some(at) = c.last_used {
            usage.insert(&k, &at.to_be_bytes())?;
        }
        if let Some(note) = &c.last_exchange {
            exchanges.insert(&k, note.as_bytes())?;
        }
    }
    let users = db.open_tree("users")?;
    for (k, v) in &dump.users {
        users.insert(k.as_slice(), v.as_slice())?;
    }
    let audit = db.open_tree("audit")?;
    for (seq, entry) in &dump.audit {
        audit.insert(seq.to_be_bytes(), entry.as_bytes())?;
    }
    db.flush()?;
    Ok(())
}

/// [`StoreStatus`] of a sled vault, through the vault (so also while another process owns it).
pub async fn sled_status(vault: &super::Vault) -> Result<StoreStatus> {
    // Sequence numbers start at 1 and have no gaps: the newest one is the count.
    let audit = vault
        .audit_entries(0, Some(1))
        .await?
        .last()
        .map_or(0, |(seq, _)| *seq);
    Ok(StoreStatus {
        backend: "sled".into(),
        location: vault.home().vault_dir().display().to_string(),
        schema: store::FORMAT_VERSION,
        connections: vault.keys().await?.len() as u64,
        users: vault.users_scan(b"u/").await?.len() as u64,
        audit_entries: audit,
        server_version: None,
        round_trip_ms: None,
        master_key_id: Some(vault.master_key_id()),
    })
}
