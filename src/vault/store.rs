//! The vault's storage in this process: the sled database and the keyring, opened directly.
//! Exactly one process holds it at a time (sled's file lock); see [`super::share`] for how the
//! others reach it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::audit::AuditEntry;
use super::clients::LastExchange;
use super::crypto;
use super::keys::{self, Keyring, MasterKey};
use super::record::{self, ConnKey, Connection, TokenRecord};
use super::storage::{Progress, RefreshTurn, Storage};
use crate::config::{check_trusted, Fix, Home};
use crate::error::{Error, Result};

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u64 = 1;

/// How to open a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Fail when there is no vault yet.
    Existing,
    /// Create the home folder, key file, keyring and database when missing.
    Create,
}

/// An open vault. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Store {
    home: Home,
    master: RwLock<MasterKey>,
    keyring: RwLock<Keyring>,
    db: sled::Db,
    connections: sled::Tree,
    versions: sled::Tree,
    usage: sled::Tree,
    /// Connection → its latest token exchange ([`LastExchange`], JSON, unsealed: no secret).
    exchanges: sled::Tree,
    audit: sled::Tree,
    users: sled::Tree,
    audit_seq: AtomicU64,
    /// Every put or remove of a connection, for servers that tell their clients the tool list
    /// changed.
    changes: tokio::sync::broadcast::Sender<ConnKey>,
    /// The users tree's generation, moved on every change to it (see
    /// [`super::Vault::watch_users`]).
    users_generation: tokio::sync::watch::Sender<u64>,
    /// What `open` had to create, for the one-line notice the CLI prints.
    pub created: Vec<String>,
    /// The owner lock, held as long as the store is open. Declared last so that it is released
    /// only after the database handles above are closed.
    _owner_lock: std::fs::File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("home", &self.home.dir)
            .finish_non_exhaustive()
    }
}

/// One row of `list`: a connection, or the reason its record did not open.
pub type Listed = std::result::Result<(Connection, Option<i64>), Error>;

impl Store {
    /// Open the vault in `home`. The master key is checked against the keyring before the
    /// database is touched, so a wrong key changes no file.
    ///
    /// Only the process holding the owner lock ([`OWNER_LOCK`]) gets this far; every other one
    /// gets [`Error::Busy`] at once and reaches the vault through the owner. Creating a home
    /// (master key, keyring, database) happens under that lock, after everything is read again,
    /// so two processes starting on a fresh home never both create a key (invariant 12).
    pub fn open(
        home: &Home,
        mode: OpenMode,
        changes: tokio::sync::broadcast::Sender<ConnKey>,
        users_generation: tokio::sync::watch::Sender<u64>,
    ) -> Result<Store> {
        home.check_trusted()?;
        let mut created = Vec::new();
        let keyring_path = Keyring::path(home);
        let exists = || keyring_path.exists() || home.vault_dir().exists();
        if !exists() && mode == OpenMode::Existing {
            return Err(Error::NotFound(format!(
                "there is no keyward vault in {}: run `keyward init` (or import a token with \
                 `keyward import PROVIDER`)",
                home.dir.display()
            )));
        }
        if mode == OpenMode::Create && !home.dir.exists() {
            home.create()?;
            created.push(format!("home folder {}", home.dir.display()));
        }
        let owner_lock = take_owner_lock(home)?;

        // From here on nobody else creates or rewrites anything: read it all again.
        let exists = exists();
        check_trusted(&home.vault_dir(), "the vault folder", Fix::Private)?;
        keys::finish_pending_rekey(home)?;
        let master = match MasterKey::load(home)? {
            Some(master) => master,
            None if !exists => {
                let master = MasterKey::create_file(home)?;
                created.push(format!("master key {}", home.key_file().display()));
                master
            }
            None => {
                return Err(Error::MasterKey(format!(
                    "the vault in {} exists but there is no master key: set KEYWARD_MASTER_KEY or \
                     restore {} from your backup",
                    home.dir.display(),
                    home.key_file().display()
                )))
            }
        };
        let keyring = match Keyring::load(home, &master)? {
            Some(keyring) => keyring,
            None if !home.vault_dir().exists() => {
                let keyring = Keyring::generate();
                keyring.create(home, &master)?;
                created.push(format!("keyring {}", keyring_path.display()));
                keyring
            }
            None => {
                return Err(Error::vault(format!(
                    "{} is missing, so the records in {} cannot be opened: restore it from your \
                     backup",
                    keyring_path.display(),
                    home.vault_dir().display()
                )))
            }
        };

        if !home.vault_dir().exists() {
            created.push(format!("database {}", home.vault_dir().display()));
        }
        let db = open_db(home)?;
        // sled creates its folder with the process umask; the tokens in it are sealed, but the
        // folder stays as private as the home folder around it.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(home.vault_dir(), std::fs::Permissions::from_mode(0o700));
        let meta = db.open_tree("meta")?;
        match meta.get("format")? {
            None => {
                meta.insert("format", &FORMAT_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            Some(v) => {
                let found = u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0xff; 8]));
                if found != FORMAT_VERSION {
                    return Err(Error::vault(format!(
                        "the vault in {} has format {found}, this keyward reads format \
                         {FORMAT_VERSION}: upgrade keyward",
                        home.dir.display()
                    )));
                }
            }
        }
        let audit = db.open_tree("audit")?;
        let next_seq = match audit.last()? {
            Some((k, _)) => u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8])) + 1,
            None => 1,
        };
        Ok(Store {
            home: home.clone(),
            master: RwLock::new(master),
            keyring: RwLock::new(keyring),
            connections: db.open_tree("connections")?,
            versions: db.open_tree("versions")?,
            usage: db.open_tree("usage")?,
            exchanges: db.open_tree("exchanges")?,
            users: db.open_tree("users")?,
            audit,
            db,
            audit_seq: AtomicU64::new(next_seq),
            changes,
            users_generation,
            created,
            _owner_lock: owner_lock,
        })
    }

    pub fn home(&self) -> &Home {
        &self.home
    }

    fn seal_record(&self, key: &ConnKey, version: u64, record: &TokenRecord) -> Vec<u8> {
        let keyring = self.keyring.read().expect("keyring lock");
        let blob = record::seal_record(&keyring, key, version, record);
        let mut value = Vec::with_capacity(8 + blob.len());
        value.extend_from_slice(&version.to_be_bytes());
        value.extend_from_slice(&blob);
        value
    }

    fn open_value(&self, key: &ConnKey, value: &[u8]) -> Result<Connection> {
        if value.len() < 8 {
            return Err(key.corrupt("truncated".into()));
        }
        let version = u64::from_be_bytes(value[..8].try_into().expect("8 bytes"));
        let keyring = self.keyring.read().expect("keyring lock");
        let record = record::open_record(&keyring, key, version, &value[8..])
            .map_err(|e| key.corrupt(e.to_string()))?;
        Ok(Connection {
            key: key.clone(),
            version,
            record,
        })
    }

    fn latest_version(&self, storage_key: &[u8]) -> Result<u64> {
        Ok(self
            .versions
            .get(storage_key)?
            .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
            .unwrap_or(0))
    }

    /// Read and open one connection. `Ok(None)` when there is none.
    pub fn get(&self, key: &ConnKey) -> Result<Option<Connection>> {
        let storage_key = key.storage_key();
        // Fast path: two plain reads. They can interleave with a concurrent write, so a version
        // mismatch is settled by a transactional (consistent) read before calling it a rollback.
        let Some(value) = self.connections.get(&storage_key)? else {
            return Ok(None);
        };
        let conn = self.open_value(key, &value)?;
        if conn.version == self.latest_version(&storage_key)? {
            return Ok(Some(conn));
        }
        let snapshot = (&self.connections, &self.versions).transaction(|(conns, versions)| {
            Ok::<_, ConflictableTransactionError<()>>((
                conns.get(&storage_key)?,
                versions.get(&storage_key)?,
            ))
        });
        let (value, latest) = match snapshot {
            Ok(pair) => pair,
            Err(TransactionError::Storage(e)) => return Err(e.into()),
            Err(TransactionError::Abort(())) => unreachable!("the read transaction never aborts"),
        };
        let Some(value) = value else { return Ok(None) };
        let conn = self.open_value(key, &value)?;
        let latest = latest
            .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
            .unwrap_or(0);
        if conn.version == latest {
            return Ok(Some(conn));
        }
        Err(key.rolled_back(conn.version, latest))
    }

    /// Write `record`, requiring the stored version to be `expected` (`None`: any version,
    /// including no record). Returns the new version. The write is flushed before returning.
    pub fn put(&self, key: &ConnKey, expected: Option<u64>, record: &TokenRecord) -> Result<u64> {
        let version = self.put_unflushed(key, expected, record)?;
        self.flush()?;
        let _ = self.changes.send(key.clone());
        Ok(version)
    }

    fn put_unflushed(
        &self,
        key: &ConnKey,
        expected: Option<u64>,
        record: &TokenRecord,
    ) -> Result<u64> {
        let storage_key = key.storage_key();
        let result = (&self.connections, &self.versions).transaction(|(conns, versions)| {
            let latest = versions
                .get(&storage_key)?
                .map(|v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
                .unwrap_or(0);
            if let Some(expected) = expected {
                let present = conns.get(&storage_key)?.is_some();
                if !present || latest != expected {
                    return Err(ConflictableTransactionError::Abort(()));
                }
            }
            let next = latest + 1;
            conns.insert(storage_key.as_slice(), self.seal_record(key, next, record))?;
            versions.insert(storage_key.as_slice(), &next.to_be_bytes())?;
            Ok(next)
        });
        match result {
            Ok(version) => Ok(version),
            Err(TransactionError::Abort(())) => Err(Error::Conflict(key.to_string())),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    /// Remove a connection. Its version counter stays, so versions never repeat.
    pub fn remove(&self, key: &ConnKey) -> Result<bool> {
        let storage_key = key.storage_key();
        let existed = self.connections.remove(&storage_key)?.is_some();
        self.usage.remove(&storage_key)?;
        self.exchanges.remove(&storage_key)?;
        self.flush()?;
        let _ = self.changes.send(key.clone());
        Ok(existed)
    }

    /// Note that a connection was just used (unsealed, unflushed: it is a hint for `status`).
    pub fn touch(&self, key: &ConnKey) {
        let now = chrono::Utc::now().timestamp();
        let _ = self.usage.insert(key.storage_key(), &now.to_be_bytes());
    }

    /// Note a connection's latest token exchange (unflushed, like [`Store::touch`]).
    pub fn note_exchange(&self, key: &ConnKey, note: &LastExchange) {
        if let Ok(json) = serde_json::to_vec(note) {
            let _ = self.exchanges.insert(key.storage_key(), json);
        }
    }

    /// The latest token exchange of every connection (of `user`, if given) that had one.
    pub fn exchanges(&self, user: Option<&str>) -> Result<Vec<(ConnKey, LastExchange)>> {
        let iter = match user {
            Some(user) => self.exchanges.scan_prefix(ConnKey::user_prefix(user)),
            None => self.exchanges.iter(),
        };
        let mut notes = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if let (Some(key), Ok(note)) = (
                ConnKey::from_storage_key(&k),
                serde_json::from_slice::<LastExchange>(&v),
            ) {
                notes.push((key, note));
            }
        }
        Ok(notes)
    }

    fn last_used(&self, storage_key: &[u8]) -> Option<i64> {
        self.usage
            .get(storage_key)
            .ok()
            .flatten()
            .map(|v| i64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
    }

    /// Every connection (of `user`, if given), in key order, with its last use. A record that
    /// does not open is listed as an error naming it; the others are unaffected.
    pub fn list(&self, user: Option<&str>) -> Result<Vec<Listed>> {
        let iter = match user {
            Some(user) => self.connections.scan_prefix(ConnKey::user_prefix(user)),
            None => self.connections.iter(),
        };
        let mut rows = Vec::new();
        for item in iter {
            let (k, _) = item?;
            let Some(key) = ConnKey::from_storage_key(&k) else {
                continue;
            };
            rows.push(match self.get(&key) {
                Ok(Some(conn)) => Ok((conn, self.last_used(&k))),
                Ok(None) => continue,
                Err(e) => Err(e),
            });
        }
        Ok(rows)
    }

    /// Keys of every stored connection, without opening them.
    pub fn keys(&self) -> Result<Vec<ConnKey>> {
        let mut keys = Vec::new();
        for item in self.connections.iter() {
            let (k, _) = item?;
            if let Some(key) = ConnKey::from_storage_key(&k) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Flush every pending write (records, audit lines) to disk.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    // ---- audit -------------------------------------------------------------------------

    /// Append an audit entry (not flushed: see [`super::audit`]).
    pub fn audit(&self, entry: &AuditEntry) {
        let seq = self.audit_seq.fetch_add(1, Ordering::Relaxed);
        if let Ok(json) = serde_json::to_vec(entry) {
            if let Err(e) = self.audit.insert(seq.to_be_bytes(), json) {
                tracing::warn!("could not append to the audit log: {e}");
            }
        }
    }

    /// One page of the audit log, for readers in other processes whose answers are bounded in
    /// size: the entries after `after`, up to sequence `until` (`None`: the newest now), only the
    /// newest `limit` of those if given, oldest first, stopping once `max_bytes` are reached
    /// (always at least one entry). `until` in the answer pins the end for the next pages, so
    /// `audit --limit N` pages through the same N entries while the log grows.
    pub fn audit_page(
        &self,
        after: u64,
        limit: Option<usize>,
        until: Option<u64>,
        max_bytes: usize,
    ) -> Result<AuditPage> {
        let seq_of = |k: &[u8]| u64::from_be_bytes(k.try_into().unwrap_or([0; 8]));
        let until = match until {
            Some(until) => until,
            None => match self.audit.last()? {
                Some((k, _)) => seq_of(&k),
                None => 0,
            },
        };
        if let Some(empty) = AuditPage::nothing_in(after, limit, until) {
            return Ok(empty);
        }
        let mut start = after + 1;
        if let Some(limit) = limit {
            let range = self.audit.range(start.to_be_bytes()..=until.to_be_bytes());
            if let Some(item) = range.rev().nth(limit - 1) {
                start = seq_of(&item?.0);
            }
        }
        let mut page = PageFill::new(after, start, until, max_bytes);
        for item in self.audit.range(start.to_be_bytes()..=until.to_be_bytes()) {
            let (k, v) = item?;
            if !page.push(seq_of(&k), &v) {
                break;
            }
        }
        Ok(page.finish())
    }

    // ---- keys --------------------------------------------------------------------------

    /// The id of the data key that seals new records.
    pub fn current_key_id(&self) -> u32 {
        self.keyring.read().expect("keyring lock").current
    }

    /// Add a data key and re-seal every record under it. Safe to interrupt: old keys stay in
    /// the keyring until every record has moved, and a second run resumes the same rotation.
    /// `progress(done, total)` is called after each record.
    pub fn rotate_key(&self, mut progress: impl FnMut(usize, usize)) -> Result<RotateReport> {
        let target = {
            let mut keyring = self.keyring.write().expect("keyring lock");
            if !keyring.rotating {
                keyring.add_key();
                keyring.rotating = true;
                keyring.store(&self.home, &self.master.read().expect("master lock"))?;
            }
            keyring.current
        };
        let keys = self.keys()?;
        let total = keys.len();
        let mut resealed = 0;
        let mut failed = Vec::new();
        let pause = test_hook_rotate_pause();
        for (done, key) in keys.iter().enumerate() {
            let storage_key = key.storage_key();
            let Some(value) = self.connections.get(&storage_key)? else {
                continue;
            };
            if value.len() > 8 && crypto::blob_key_id(&value[8..]) == Ok(target) {
                progress(done + 1, total);
                continue;
            }
            match self.get(key) {
                Ok(Some(conn)) => {
                    self.put(key, Some(conn.version), &conn.record)?;
                    resealed += 1;
                }
                Ok(None) => {}
                Err(e) => failed.push(e.to_string()),
            }
            progress(done + 1, total);
            if let Some(pause) = pause {
                std::thread::sleep(pause);
            }
        }
        if failed.is_empty() {
            let mut keyring = self.keyring.write().expect("keyring lock");
            keyring.rotating = false;
            keyring.retire_old_keys();
            keyring.store(&self.home, &self.master.read().expect("master lock"))?;
        }
        Ok(RotateReport {
            key_id: target,
            resealed,
            total,
            failed,
        })
    }

    /// Re-wrap the keyring under a new master key. `new_key_file`: take the key from there;
    /// otherwise generate one into `master.key`. Returns where the new key lives.
    pub fn rekey(&self, new_key_file: Option<&std::path::Path>) -> Result<String> {
        let mut master = self.master.write().expect("master lock");
        let pending = keys::PendingRekey::prepare(&self.home, &master, new_key_file)?;
        self.keyring
            .read()
            .expect("keyring lock")
            .store(&self.home, &pending.master)?;
        let (new_master, location) = pending.finish()?;
        *master = new_master;
        Ok(location)
    }

    pub fn master_key_id(&self) -> String {
        self.master.read().expect("master lock").id()
    }

    // ---- the users tree -----------------------------------------------------------------

    pub fn users_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.users.get(key)?.map(|v| v.to_vec()))
    }

    /// Add a users entry, flushed. Caches of API keys are told to forget, whatever the outcome.
    pub fn users_insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let result = self.users.insert(key, value).map_err(Error::from);
        super::bump(&self.users_generation);
        result?;
        self.flush()
    }

    /// Remove a users entry, flushed. Caches of API keys are told to forget, whatever the
    /// outcome.
    pub fn users_remove(&self, key: &[u8]) -> Result<()> {
        let result = self.users.remove(key).map_err(Error::from);
        super::bump(&self.users_generation);
        result?;
        self.flush()
    }

    pub fn users_scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for item in self.users.scan_prefix(prefix) {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    // ---- test support ------------------------------------------------------------------

    /// The raw stored bytes of a record (tests use this to tamper with the vault).
    #[doc(hidden)]
    pub fn raw_record(&self, key: &ConnKey) -> Result<Option<Vec<u8>>> {
        Ok(self.connections.get(key.storage_key())?.map(|v| v.to_vec()))
    }

    /// Overwrite the raw stored bytes of a record (tests use this to tamper with the vault).
    #[doc(hidden)]
    pub fn raw_put_record(&self, key: &ConnKey, bytes: &[u8]) -> Result<()> {
        self.connections.insert(key.storage_key(), bytes)?;
        self.flush()
    }
}

/// The embedded backend: each operation is the method of the same name above. The store is
/// shared behind an `Arc` so that an operation can take a handle of it to the blocking pool.
///
/// What runs where: the point operations of the call path — a read (`get`, a users lookup, the
/// connections of one user), `touch`, an audit append, the current key id — are sled operations
/// on memory (sled writes to disk in the background; only a flush waits for it), and run in
/// place, on the caller's task. A trip to the blocking pool costs a thread hand-off each way,
/// which measured +0.1 ms per tool call on two cores, more than the operations themselves.
/// Everything that waits for the disk (a write, which flushes; `flush`; key rotation and
/// rekeying) or scans a whole tree (`keys`, `list` of every user, the users scan, an audit page)
/// runs on the blocking pool, so that it never holds a runtime worker.
impl Storage for Arc<Store> {
    fn get(&self, key: ConnKey) -> BoxFuture<'_, Result<Option<Connection>>> {
        in_place(Store::get(self, &key))
    }
    fn put(
        &self,
        key: ConnKey,
        expected: Option<u64>,
        record: TokenRecord,
    ) -> BoxFuture<'_, Result<u64>> {
        blocking(self, move |s| s.put(&key, expected, &record))
    }
    fn remove(&self, key: ConnKey) -> BoxFuture<'_, Result<bool>> {
        blocking(self, move |s| s.remove(&key))
    }
    fn touch(&self, key: ConnKey) -> BoxFuture<'_, Result<()>> {
        Store::touch(self, &key);
        in_place(Ok(()))
    }
    fn list(&self, user: Option<String>) -> BoxFuture<'_, Result<Vec<Listed>>> {
        match user {
            Some(user) => in_place(Store::list(self, Some(&user))),
            None => blocking(self, |s| s.list(None)),
        }
    }
    fn keys(&self) -> BoxFuture<'_, Result<Vec<ConnKey>>> {
        blocking(self, |s| s.keys())
    }
    fn note_exchange(&self, key: ConnKey, note: LastExchange) -> BoxFuture<'_, Result<()>> {
        Store::note_exchange(self, &key, &note);
        in_place(Ok(()))
    }
    fn exchanges(
        &self,
        user: Option<String>,
    ) -> BoxFuture<'_, Result<Vec<(ConnKey, LastExchange)>>> {
        blocking(self, move |s| s.exchanges(user.as_deref()))
    }
    fn audit(&self, entry: AuditEntry) -> BoxFuture<'_, Result<()>> {
        Store::audit(self, &entry);
        in_place(Ok(()))
    }
    fn audit_page(
        &self,
        after: u64,
        limit: Option<usize>,
        until: Option<u64>,
    ) -> BoxFuture<'_, Result<AuditPage>> {
        blocking(self, move |s| {
            s.audit_page(after, limit, until, AUDIT_PAGE_BYTES)
        })
    }
    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        blocking(self, |s| s.flush())
    }
    fn current_key_id(&self) -> BoxFuture<'_, Result<u32>> {
        in_place(Ok(Store::current_key_id(self)))
    }
    fn rotate_key(&self) -> BoxFuture<'_, Result<RotateReport>> {
        blocking(self, |s| s.rotate_key(|_, _| {}))
    }
    fn rotate_key_reporting(&self, progress: Progress) -> BoxFuture<'_, Result<RotateReport>> {
        blocking(self, move |s| s.rotate_key(progress))
    }
    fn rekey(&self, new_key_file: Option<std::path::PathBuf>) -> BoxFuture<'_, Result<String>> {
        blocking(self, move |s| s.rekey(new_key_file.as_deref()))
    }
    fn users_get(&self, key: Vec<u8>) -> BoxFuture<'_, Result<Option<Vec<u8>>>> {
        in_place(Store::users_get(self, &key))
    }
    fn users_insert(&self, key: Vec<u8>, value: Vec<u8>) -> BoxFuture<'_, Result<()>> {
        blocking(self, move |s| s.users_insert(&key, &value))
    }
    fn users_remove(&self, key: Vec<u8>) -> BoxFuture<'_, Result<()>> {
        blocking(self, move |s| s.users_remove(&key))
    }
    fn users_scan(&self, prefix: Vec<u8>) -> BoxFuture<'_, Result<Vec<(Vec<u8>, Vec<u8>)>>> {
        blocking(self, move |s| s.users_scan(&prefix))
    }
    /// Only the owner opens sled, and it refreshes for every local process; its per-process
    /// lock (taken by the caller before the turn) is the whole of single-flight here.
    fn refresh_turn(&self, _key: ConnKey, _budget: Duration) -> BoxFuture<'_, Result<RefreshTurn>> {
        in_place(Ok(RefreshTurn::Here(Box::new(()))))
    }
}

/// An operation that ran in place, as the future the trait returns.
fn in_place<T: Send + 'static>(result: Result<T>) -> BoxFuture<'static, Result<T>> {
    Box::pin(std::future::ready(result))
}

/// Run `op` on the store on the blocking pool. The pool cancels what has not started yet when
/// the runtime shuts down, that is when this process is exiting: to a peer that asked for it,
/// that is an owner going away, so it takes over and asks again (the operation did not run).
fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    op: impl FnOnce(&Store) -> Result<T> + Send + 'static,
) -> BoxFuture<'static, Result<T>> {
    let store = store.clone();
    Box::pin(async move {
        tokio::task::spawn_blocking(move || op(&store))
            .await
            .map_err(|e| {
                if e.is_cancelled() {
                    Error::OwnerGone("the keyward process that owns the vault is exiting".into())
                } else {
                    Error::other(format!("a vault task failed: {e}"))
                }
            })?
    })
}

/// How much of the audit log one answer of the relay carries (JSON may grow when re-encoded:
/// stay well below the socket's frame cap). The embedded store pages the same way, so every
/// backend answers [`Storage::audit_page`] alike.
pub const AUDIT_PAGE_BYTES: usize = super::share::MAX_FRAME / 8;

impl Drop for Store {
    fn drop(&mut self) {
        // An orderly shutdown keeps the audit lines that were appended without a flush.
        let _ = self.db.flush();
    }
}

/// The lock file whose holder owns the vault: it alone opens the database and creates what a
/// fresh home lacks; the others talk to it over the socket. A lock of our own rather than
/// sled's: taking it is a typed yes/no (`EWOULDBLOCK`), and it can be taken before anything in
/// the home is read, which serialises first-run creation across processes.
pub const OWNER_LOCK: &str = "keyward.lock";

/// Take the owner lock without waiting: [`Error::Busy`] when another open store holds it. The
/// kernel releases it when the file is closed, so a killed owner never leaves it behind (and the
/// file itself stays: removing a lock file would let two processes lock two different files).
pub(crate) fn take_owner_lock(home: &Home) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = home.dir.join(OWNER_LOCK);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Busy(format!(
            "another keyward process has the vault in {} open",
            home.dir.display()
        ))),
        Err(e) => Err(Error::io(
            format!("locking {}", path.display()),
            std::io::Error::from(e),
        )),
    }
}

/// How long the new owner waits for sled to let go of a database the previous owner closed.
const DB_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Open sled's database. We hold the owner lock, so sled's own file lock can only still be held
/// by the previous owner's database while it closes: sled finishes queued writes on its own
/// threads after the last handle is dropped (in this process, or in an owner process that is
/// exiting). Wait for it rather than failing. sled reports its lock as `ErrorKind::Other`; other
/// I/O failures (permissions, a full disk) have their own kinds and fail at once.
pub(crate) fn open_db(home: &Home) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + DB_RELEASE_WAIT;
    loop {
        match sled::Config::new().path(home.vault_dir()).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::Other
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                return Err(Error::vault(format!(
                    "opening {}: {e}; if another keyward process is stuck closing it, stop that \
                     process and retry",
                    home.vault_dir().display()
                )))
            }
        }
    }
}

/// One page of the audit log (see [`Store::audit_page`]): read on after `next_after`, up to
/// `until`, while `more`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct AuditPage {
    pub entries: Vec<(u64, AuditEntry)>,
    pub next_after: u64,
    pub until: u64,
    pub more: bool,
}

impl AuditPage {
    /// The answer when the selection — after `after` up to `until`, the newest `limit` — holds
    /// nothing; `None` when there is something to read.
    pub(crate) fn nothing_in(after: u64, limit: Option<usize>, until: u64) -> Option<AuditPage> {
        (until <= after || limit == Some(0)).then(|| AuditPage {
            entries: Vec::new(),
            next_after: after,
            until,
            more: false,
        })
    }
}

/// One [`AuditPage`] filled from entries read in order from sequence `start` on, the same way
/// in every backend: it ends before the entry that would take it past `max_bytes` (it always
/// holds the first one, however large).
pub(crate) struct PageFill {
    page: AuditPage,
    start: u64,
    bytes: usize,
    max_bytes: usize,
}

impl PageFill {
    pub(crate) fn new(after: u64, start: u64, until: u64, max_bytes: usize) -> PageFill {
        PageFill {
            page: AuditPage {
                entries: Vec::new(),
                next_after: after,
                until,
                more: false,
            },
            start,
            bytes: 0,
            max_bytes,
        }
    }

    /// Add entry `seq` (its JSON; one that does not parse is skipped, not refused). False when
    /// the page is full: the entry is left for the next page, which the page now says exists.
    pub(crate) fn push(&mut self, seq: u64, json: &[u8]) -> bool {
        if self.page.next_after >= self.start && self.bytes + json.len() > self.max_bytes {
            self.page.more = true;
            return false;
        }
        self.bytes += json.len();
        self.page.next_after = seq;
        if let Ok(entry) = serde_json::from_slice(json) {
            self.page.entries.push((seq, entry));
        }
        true
    }

    /// The last sequence number taken.
    pub(crate) fn next_after(&self) -> u64 {
        self.page.next_after
    }

    pub(crate) fn finish(self) -> AuditPage {
        self.page
    }
}

/// What `rotate_key` did.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RotateReport {
    pub key_id: u32,
    pub resealed: usize,
    pub total: usize,
    pub failed: Vec<String>,
}

/// `KEYWARD_TEST_ROTATE_PAUSE_MS`: sleep after each re-sealed record, so a test can kill a
/// rotation in the middle. Debug builds only, like the other fault injection; at most a second.
fn test_hook_rotate_pause() -> Option<std::time::Duration> {
    cfg!(debug_assertions)
        .then(|| std::env::var("KEYWARD_TEST_ROTATE_PAUSE_MS").ok())
        .flatten()
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| std::time::Duration::from_millis(ms.min(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a runtime that is shutting down no longer runs — the process is exiting — is an
    /// owner going away for whoever asked (a peer then takes over and asks again), not an error
    /// of the operation.
    #[test]
    fn an_operation_an_exiting_runtime_never_ran_is_an_owner_gone() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home {
            dir: dir.path().join("home"),
        };
        let (changes, users) = (
            tokio::sync::broadcast::channel(1).0,
            tokio::sync::watch::channel(0).0,
        );
        let store = Arc::new(Store::open(&home, OpenMode::Create, changes, users).unwrap());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let handle = runtime.handle().clone();
        runtime.shutdown_background();
        let _exiting = handle.enter();
        let flushed = futures::executor::block_on(Storage::flush(&store));
        assert!(matches!(flushed, Err(Error::OwnerGone(_))), "{flushed:?}");
    }
}
