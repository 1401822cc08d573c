//! The encrypted token vault: connections, their sealed token records, and the audit log.
//!
//! Layout of the home folder:
//! - `keyring.json` — the data keys, sealed under the master key ([`keys`]);
//! - `vault/` — the sled database ([`store`]) with the trees
//!   `connections` (user␀provider␀account → version ‖ sealed record),
//!   `versions` (same key → the latest version ever written, kept after a disconnect so a
//!   reconnect never reuses a version number), `usage` (same key → last use, unsealed),
//!   `audit` (sequence → entry), `users` (API key hash → user, and the token-exchange clients
//!   of [`clients`]) and `meta` (format version);
//! - `keyward.sock` — the socket through which other local keyward processes reach the
//!   process that has the database open ([`share`]);
//! - `keyward.lock` — held (flock) by that process for as long as it has the database open;
//!   taking it is also what serialises creating a fresh home across processes ([`store`]).
//!
//! [`Vault`] is the handle everything else uses. It hides *where* the database is: in this
//! process (we hold the owner lock and serve the others on the socket), or in another keyward
//! process (we relay every operation to it). Which one is decided at open and again whenever
//! the owner goes away, so a user with Claude Desktop, an IDE and a terminal never sees
//! "could not acquire lock" (invariant 10).
//!
//! With `[store] url` (or `KEYWARD_STORE_URL`) the vault is a PostgreSQL database instead
//! ([`postgres`]), chosen once at open (invariant 18): none of the above files exist, no process
//! owns the vault and none takes over, and every process — on this machine or another — is a
//! peer of the database.
//!
//! Every operation is async, whatever the backend ([`storage::Storage`]): a relayed one waits
//! for the owner's answer without holding a runtime worker, and the owner serves the others on
//! the runtime that opened the vault. What is written once, above the backends, lives here: the
//! takeover-and-retry rule (`Vault::run`), the per-process refresh locks, and the memory of
//! the last `touch` that saves a message per call.

pub mod audit;
pub mod clients;
pub mod crypto;
pub mod keys;
pub mod postgres;
pub mod record;
pub mod share;
pub mod storage;
pub mod store;
pub mod transfer;
pub mod users;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;

pub use audit::AuditEntry;
pub use record::{
    ConnKey, Connection, ConnectionStatus, TokenRecord, DEFAULT_ACCOUNT, DEFAULT_USER,
};
pub use share::{FailureReport, PeerRefresh, RefreshAnswer, RefreshFailure};
pub use storage::{RefreshTurn, Storage};
pub use store::{Listed, OpenMode, RotateReport, FORMAT_VERSION};

use crate::config::Home;
use crate::error::{Error, Result};
use postgres::PgStore;
use share::{RemoteClient, Request};
use store::Store;
use transfer::Location;

/// How long a process keeps trying to reach (or become) the owner before giving up. Generous:
/// an owner that is exiting flushes the database before it lets go, which can take seconds on a
/// busy disk, and waiting is always better than failing the command.
const TAKEOVER_DEADLINE: Duration = Duration::from_secs(15);

/// A handle on the vault. Cheap to clone; every method takes `&self`.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    home: Home,
    /// The runtime that opened the vault: the owner's listener, its peers and a relay's change
    /// subscription run on it.
    runtime: tokio::runtime::Handle,
    backend: RwLock<Backend>,
    /// Serializes takeovers so that one task recovers and the others reuse its result.
    recovering: tokio::sync::Mutex<()>,
    /// Connection changes, from this process and (relayed) from every other one.
    changes: tokio::sync::broadcast::Sender<ConnKey>,
    /// The users tree's generation: it moves whenever a user (API key) is added or removed, by
    /// this process or (relayed) any other, so caches of API keys know when to forget.
    users: tokio::sync::watch::Sender<u64>,
    /// Set once somebody subscribed to changes: a non-owner then keeps a relay open.
    want_changes: std::sync::atomic::AtomicBool,
    /// One async mutex per connection: holding it is the right to ask for a refresh turn of
    /// that connection in this process (see [`Vault::refresh_lock`]).
    refresh_locks: Mutex<HashMap<ConnKey, Arc<tokio::sync::Mutex<()>>>>,
    /// When this process last recorded each connection's use (unix seconds), see [`Vault::touch`].
    touched: Mutex<HashMap<ConnKey, i64>>,
    /// How this process refreshes for others while it owns the vault (see [`share::PeerRefresh`]).
    peer_refresh: Option<Arc<dyn share::PeerRefresh>>,
    /// The tasks serving this vault (the owner's listener, a relay's subscription), ended when
    /// it is dropped.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    master_key_id: String,
    created: Vec<String>,
}

#[derive(Clone)]
enum Backend {
    /// This process owns the sled database and serves it to the others.
    Local(Arc<Store>),
    /// Another process owns it: every operation is relayed to it.
    Remote(Arc<RemoteClient>),
    /// A PostgreSQL database (`[store] url`): every process, on this machine or another, is a
    /// peer of the database; nobody owns it, nobody takes over.
    Postgres(Arc<PgStore>),
}

impl Backend {
    fn storage(&self) -> &dyn Storage {
        match self {
            Backend::Local(store) => store,
            Backend::Remote(client) => &**client,
            Backend::Postgres(store) => store,
        }
    }
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("home", &self.inner.home.dir)
            .field("owner", &self.is_owner())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Open the vault in `home`: directly when no other keyward process has it, else through
    /// the process that does. The master key is checked against the keyring first either way,
    /// so a wrong key is the same clear error everywhere and changes no file. Must run on a
    /// tokio runtime, which serves the vault to the other processes while this one owns it.
    ///
    /// A vault opened this way refreshes for no other process while it owns the database; the
    /// composition roots use [`Vault::open_with`].
    pub async fn open(home: &Home, mode: OpenMode) -> Result<Vault> {
        Vault::open_with(home, mode, None).await
    }

    /// [`Vault::open`], with how this process refreshes connections for other processes while
    /// it owns the vault — in place before the first peer can ask.
    pub async fn open_with(
        home: &Home,
        mode: OpenMode,
        peer_refresh: Option<Arc<dyn PeerRefresh>>,
    ) -> Result<Vault> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::other(
                "the vault must be opened on a tokio runtime (it serves other processes on it)",
            )
        })?;
        let changes = tokio::sync::broadcast::channel(256).0;
        let users = tokio::sync::watch::channel(0).0;
        let backend = match Location::of(home)? {
            Location::Postgres(url) => Backend::Postgres(Arc::new(
                PgStore::open(home, &url, mode, changes.clone(), users.clone()).await?,
            )),
            Location::Sled(_) => acquire(home, mode, &changes, &users).await?,
        };
        let (master_key_id, created) = match &backend {
            Backend::Local(store) => (store.master_key_id(), store.created.clone()),
            Backend::Postgres(store) => (store.master_key_id(), store.created.clone()),
            // The owner created (or opened) the keyring before it started listening.
            Backend::Remote(_) => {
                let home = home.clone();
                let id = tokio::task::spawn_blocking(move || keys::verify_master_key(&home))
                    .await
                    .map_err(|e| Error::other(format!("checking the master key failed: {e}")))??;
                (id, Vec::new())
            }
        };
        let vault = Vault {
            inner: Arc::new(Inner {
                home: home.clone(),
                runtime,
                backend: RwLock::new(backend),
                recovering: tokio::sync::Mutex::new(()),
                changes,
                users,
                want_changes: Default::default(),
                refresh_locks: Mutex::new(HashMap::new()),
                touched: Mutex::new(HashMap::new()),
                peer_refresh,
                tasks: Mutex::new(Vec::new()),
                master_key_id,
                created,
            }),
        };
        if vault.is_owner() {
            vault.keep_task(share::serve(&vault)?);
        }
        Ok(vault)
    }

    pub fn home(&self) -> &Home {
        &self.inner.home
    }

    /// What `open` had to create, for the one-line notice the CLI prints.
    pub fn created(&self) -> &[String] {
        &self.inner.created
    }

    /// True when this process has the sled database open (and serves the others). A
    /// PostgreSQL store has no owner: this is false there.
    pub fn is_owner(&self) -> bool {
        matches!(self.backend(), Backend::Local(_))
    }

    /// Where the vault is, for people: the sled folder, or the PostgreSQL URL (no password).
    pub fn location(&self) -> String {
        match self.backend() {
            Backend::Postgres(store) => store.url().to_string(),
            _ => self.inner.home.vault_dir().display().to_string(),
        }
    }

    /// What `keyward store status` shows (backend, schema, counts; PostgreSQL: the server's
    /// version and round trip).
    pub async fn store_status(&self) -> Result<transfer::StoreStatus> {
        match self.backend() {
            Backend::Postgres(store) => store.status().await,
            _ => transfer::sled_status(self).await,
        }
    }

    fn backend(&self) -> Backend {
        crate::sync::read(&self.inner.backend).clone()
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.inner.runtime
    }

    /// End `task` when the vault is dropped.
    pub(crate) fn keep_task(&self, task: tokio::task::AbortHandle) {
        let mut tasks = crate::sync::lock(&self.inner.tasks);
        tasks.retain(|task| !task.is_finished());
        tasks.push(task);
    }

    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Vault {
        Vault { inner }
    }

    /// Run `op` on the backend. A relay whose owner went away answers [`Error::OwnerGone`]:
    /// take over (or find the new owner) and run it once more. This is the one place where
    /// that rule lives, for every operation and every backend.
    async fn run<T>(
        &self,
        op: impl for<'s> Fn(&'s dyn Storage) -> BoxFuture<'s, Result<T>>,
    ) -> Result<T> {
        let backend = self.backend();
        match op(backend.storage()).await {
            Err(Error::OwnerGone(e)) => {
                tracing::debug!("lost the vault owner ({e}); taking over or reconnecting");
                if let Backend::Remote(client) = &backend {
                    self.recover(client).await?;
                }
                let backend = self.backend();
                match op(backend.storage()).await {
                    Err(Error::OwnerGone(e)) => Err(Error::vault(format!(
                        "the keyward process that owns the vault went away during this call \
                         ({e}); retry"
                    ))),
                    other => other,
                }
            }
            other => other,
        }
    }

    /// After the owner went away: become the owner if its lock is free, else connect to the new
    /// owner. `lost` is the client that failed; another task may have recovered already.
    async fn recover(&self, lost: &Arc<RemoteClient>) -> Result<()> {
        let _one_at_a_time = self.inner.recovering.lock().await;
        match self.backend() {
            Backend::Remote(current) if Arc::ptr_eq(&current, lost) => {}
            _ => return Ok(()),
        }
        let backend = acquire(
            &self.inner.home,
            OpenMode::Existing,
            &self.inner.changes,
            &self.inner.users,
        )
        .await?;
        *crate::sync::write(&self.inner.backend) = backend.clone();
        match backend {
            Backend::Local(_) => {
                tracing::info!("this process now owns the vault");
                // Users may have changed while nobody relayed it to us.
                self.users_changed();
                self.keep_task(share::serve(self)?);
                Ok(())
            }
            // A new owner to relay through (`acquire` opens sled only, never PostgreSQL).
            Backend::Remote(_) | Backend::Postgres(_) => {
                if self
                    .inner
                    .want_changes
                    .load(std::sync::atomic::Ordering::SeqCst)
                {
                    share::relay_changes(self);
                }
                self.users_changed();
                Ok(())
            }
        }
    }

    // ---- connections -----------------------------------------------------------------

    /// Read and open one connection. `Ok(None)` when there is none.
    pub async fn get(&self, key: &ConnKey) -> Result<Option<Connection>> {
        self.run(|s| s.get(key.clone())).await
    }

    /// Write `record`, requiring the stored version to be `expected` (`None`: any version,
    /// including no record). Returns the new version. Flushed to disk before returning.
    pub async fn put(
        &self,
        key: &ConnKey,
        expected: Option<u64>,
        record: &TokenRecord,
    ) -> Result<u64> {
        self.run(|s| s.put(key.clone(), expected, record.clone()))
            .await
    }

    /// Remove a connection (its version counter stays, so versions never repeat).
    pub async fn remove(&self, key: &ConnKey) -> Result<bool> {
        self.run(|s| s.remove(key.clone())).await
    }

    /// Note that a connection was just used (a hint for `status`; not flushed). The time is
    /// stored in whole seconds, so a use in the same second as this process's last one for the
    /// connection writes nothing: through a relay, one message to the owner fewer per call.
    pub async fn touch(&self, key: &ConnKey) {
        if self.touched_now(key) {
            let _ = self.run(|s| s.touch(key.clone())).await;
        }
    }

    /// Note in memory that `key` was used now; false when that was already noted this second.
    fn touched_now(&self, key: &ConnKey) -> bool {
        let now = chrono::Utc::now().timestamp();
        let mut touched = crate::sync::lock(&self.inner.touched);
        if touched.get(key) == Some(&now) {
            return false;
        }
        touched.insert(key.clone(), now);
        true
    }

    /// Every connection (of `user`, if given) with its last use; a record that does not open
    /// is listed as an error naming it.
    pub async fn list(&self, user: Option<&str>) -> Result<Vec<Listed>> {
        self.run(|s| s.list(user.map(String::from))).await
    }

    /// The connections as `keyward status` shows them to a person: [`Vault::list`], with each
    /// `needs_reconnect` reason scrubbed of the record's own tokens (reasons are redacted
    /// before they are stored; this also covers one stored by an older keyward that did not,
    /// invariant 11), and each record that does not open audited as `open-failed`, so the log
    /// shows when the damage was first seen.
    pub async fn status(&self, user: Option<&str>) -> Result<Vec<Listed>> {
        let mut rows = self.list(user).await?;
        for row in &mut rows {
            match row {
                Ok((conn, _)) => {
                    if let ConnectionStatus::NeedsReconnect { reason } = &mut conn.record.status {
                        let own = crate::secret::Redactor::of(
                            std::iter::once(&conn.record.access_token)
                                .chain(&conn.record.refresh_token),
                        );
                        own.scrub(reason);
                    }
                }
                Err(Error::RecordCorrupt {
                    provider,
                    user,
                    account,
                    ..
                }) => {
                    self.audit(
                        &AuditEntry::new(user, "open-failed", "error: record does not open")
                            .connection(provider, account),
                    )
                    .await
                }
                Err(_) => {}
            }
        }
        Ok(rows)
    }

    /// The latest token exchange of every connection (of `user`, if given) that had one, for
    /// `keyward status`.
    pub async fn exchanges(
        &self,
        user: Option<&str>,
    ) -> Result<Vec<(ConnKey, clients::LastExchange)>> {
        self.run(|s| s.exchanges(user.map(String::from))).await
    }

    /// Keys of every stored connection, without opening them.
    pub async fn keys(&self) -> Result<Vec<ConnKey>> {
        self.run(|s| s.keys()).await
    }

    /// The providers `user` has a connection with.
    pub async fn providers_of(&self, user: &str) -> Result<Vec<String>> {
        let mut providers: Vec<String> = Vec::new();
        for key in self.keys().await? {
            if key.user == user && !providers.contains(&key.provider) {
                providers.push(key.provider);
            }
        }
        Ok(providers)
    }

    /// The accounts `user` has connected, per provider (the `account` argument of a provider's
    /// tools lists them when there are several).
    pub async fn accounts_of(&self, user: &str) -> Result<Vec<(String, Vec<String>)>> {
        let mut accounts: Vec<(String, Vec<String>)> = Vec::new();
        for key in self.keys().await? {
            if key.user != user {
                continue;
            }
            match accounts.iter_mut().find(|(p, _)| *p == key.provider) {
                Some((_, names)) => names.push(key.account),
                None => accounts.push((key.provider, vec![key.account])),
            }
        }
        Ok(accounts)
    }

    /// Connections added, changed or removed — by this process or any other — from now on.
    pub fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<ConnKey> {
        let rx = self.inner.changes.subscribe();
        self.want_changes();
        rx
    }

    /// The users tree's generation, which moves whenever a user is added or removed — by this
    /// process or any other — from now on.
    pub fn watch_users(&self) -> tokio::sync::watch::Receiver<u64> {
        let rx = self.inner.users.subscribe();
        self.want_changes();
        rx
    }

    /// A non-owner relays the owner's notifications once somebody listens for them.
    fn want_changes(&self) {
        let first = !self
            .inner
            .want_changes
            .swap(true, std::sync::atomic::Ordering::SeqCst);
        // The owner's writes and a PostgreSQL store's listener feed the channels themselves.
        if first && matches!(self.backend(), Backend::Remote(_)) {
            share::relay_changes(self);
        }
    }

    /// Note that the users tree changed (see [`Vault::watch_users`]). The owner calls this for
    /// every change, whoever asked for it, and relays it to the other processes.
    pub(crate) fn users_changed(&self) {
        bump(&self.inner.users);
    }

    pub(crate) fn users_sender(&self) -> &tokio::sync::watch::Sender<u64> {
        &self.inner.users
    }

    pub(crate) fn changes_sender(&self) -> &tokio::sync::broadcast::Sender<ConnKey> {
        &self.inner.changes
    }

    pub(crate) fn peer_refresh(&self) -> Option<Arc<dyn share::PeerRefresh>> {
        self.inner.peer_refresh.clone()
    }

    // ---- refreshes -----------------------------------------------------------------------
    //
    // Who refreshes is decided in two steps (invariant 5). In a process, one task at a time
    // per connection: the one holding `refresh_lock`, so this process's callers collapse into
    // one refresh (or one request to the owner) and the others take its result. Across
    // processes, the backend decides (`refresh_turn`): the sled owner refreshes itself, its
    // relays ask it (`refresh_by_owner`), a database shared by several machines gives the turn
    // to one of them under its own lock. Neither step asks whether this process is the owner.

    /// The lock whose holder may refresh `key` in this process.
    pub fn refresh_lock(&self, key: &ConnKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = crate::sync::lock(&self.inner.refresh_locks);
        map.entry(key.clone()).or_default().clone()
    }

    /// Who refreshes `key` now (see [`Storage::refresh_turn`]); the caller holds its
    /// [`Vault::refresh_lock`].
    pub async fn refresh_turn(&self, key: &ConnKey, budget: Duration) -> Result<RefreshTurn> {
        self.run(|s| s.refresh_turn(key.clone(), budget)).await
    }

    /// After [`RefreshTurn::Owner`]: ask the process that owns the vault to refresh `key` (it
    /// holds the single-flight lock for every local process). `None` when this process is the
    /// owner by now (the old one went away): take the turn again.
    pub async fn refresh_by_owner(
        &self,
        key: &ConnKey,
        seen_version: u64,
        force: bool,
        budget: Duration,
    ) -> Option<RefreshAnswer> {
        let Backend::Remote(client) = self.backend() else {
            return None;
        };
        let request = Request::Refresh {
            key: key.clone(),
            seen_version,
            force,
            budget_ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX),
        };
        Some(match client.call::<RefreshAnswer>(request).await {
            Ok(answer) => answer,
            Err(Error::OwnerGone(e)) => {
                let _ = self.recover(&client).await;
                Err(RefreshFailure::of_relay(
                    format!(
                        "the keyward process that owns the vault went away while refreshing ({e})"
                    ),
                    "retry the call",
                ))
            }
            // The vault failed, not the grant.
            Err(e) => Err(RefreshFailure::Alive(FailureReport {
                message: e.to_string(),
                hint: None,
                retryable: false,
                status: None,
                sign_in: None,
            })),
        })
    }

    // ---- audit, durability, keys -------------------------------------------------------

    /// Append an audit entry (not flushed one by one; see [`audit`]).
    pub async fn audit(&self, entry: &AuditEntry) {
        let _ = self.run(|s| s.audit(entry.clone())).await;
    }

    /// Audit entries after sequence `after`, oldest first; with `limit`, the newest `limit`.
    /// The log comes in pages, so that through another process a long log never makes an
    /// answer larger than the socket carries.
    pub async fn audit_entries(
        &self,
        after: u64,
        limit: Option<usize>,
    ) -> Result<Vec<(u64, AuditEntry)>> {
        let mut entries = Vec::new();
        let (mut after, mut limit, mut until) = (after, limit, None);
        loop {
            let page = self.run(|s| s.audit_page(after, limit, until)).await?;
            entries.extend(page.entries);
            if !page.more {
                return Ok(entries);
            }
            // The rest of the same selection: its start is behind us, its end fixed.
            (after, limit, until) = (page.next_after, None, Some(page.until));
        }
    }

    /// Flush every pending write to disk (in the owner).
    pub async fn flush(&self) -> Result<()> {
        self.run(|s| s.flush()).await
    }

    /// Note a connection's latest token exchange (a hint for `status`, like the last use).
    pub async fn note_exchange(&self, key: &ConnKey, note: clients::LastExchange) {
        let _ = self
            .run(|s| s.note_exchange(key.clone(), note.clone()))
            .await;
    }

    pub async fn current_key_id(&self) -> u32 {
        self.run(|s| s.current_key_id()).await.unwrap_or(0)
    }

    pub fn master_key_id(&self) -> String {
        match self.backend() {
            Backend::Local(store) => store.master_key_id(),
            Backend::Postgres(store) => store.master_key_id(),
            Backend::Remote(_) => self.inner.master_key_id.clone(),
        }
    }

    /// Add a data key and re-seal every record under it (see [`store::Store::rotate_key`]).
    /// The outcome is audited (a partial rotation as an error naming how many records did not
    /// open) and flushed.
    pub async fn rotate_key(
        &self,
        progress: impl FnMut(usize, usize) + Send + 'static,
    ) -> Result<RotateReport> {
        // Shared by the attempts of `run` (a takeover runs the operation again).
        let progress: Arc<Mutex<storage::Progress>> = Arc::new(Mutex::new(Box::new(progress)));
        let report = self
            .run(|s| {
                let progress = progress.clone();
                s.rotate_key_reporting(Box::new(move |done, total| {
                    (crate::sync::lock(&progress))(done, total)
                }))
            })
            .await?;
        let outcome = if report.failed.is_empty() {
            "ok".to_string()
        } else {
            format!("error: {} record(s) did not open", report.failed.len())
        };
        self.audit(&AuditEntry::new("-", "rotate-key", outcome))
            .await;
        self.flush().await?;
        Ok(report)
    }

    /// Re-wrap the keyring under a new master key; returns where the new key lives. Audited and
    /// flushed.
    pub async fn rekey(&self, new_key_file: Option<&std::path::Path>) -> Result<String> {
        let location = self
            .run(|s| s.rekey(new_key_file.map(|p| p.to_path_buf())))
            .await?;
        self.audit(&AuditEntry::new("-", "rekey", "ok")).await;
        self.flush().await?;
        Ok(location)
    }

    // ---- the users tree (API keys) -------------------------------------------------------

    pub async fn users_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.run(|s| s.users_get(key.to_vec())).await
    }

    pub async fn users_insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.run(|s| s.users_insert(key.to_vec(), value.to_vec()))
            .await
    }

    pub async fn users_remove(&self, key: &[u8]) -> Result<()> {
        self.run(|s| s.users_remove(key.to_vec())).await
    }

    pub async fn users_scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.run(|s| s.users_scan(prefix.to_vec())).await
    }

    // ---- test support --------------------------------------------------------------------

    /// The raw stored bytes of a record (tests use this to tamper with the vault).
    #[doc(hidden)]
    pub fn raw_record(&self, key: &ConnKey) -> Result<Option<Vec<u8>>> {
        match self.backend() {
            Backend::Local(s) => s.raw_record(key),
            _ => Err(Error::other(
                "raw access needs the process owning a sled vault",
            )),
        }
    }

    /// Overwrite the raw stored bytes of a record (tests use this to tamper with the vault).
    #[doc(hidden)]
    pub fn raw_put_record(&self, key: &ConnKey, bytes: &[u8]) -> Result<()> {
        match self.backend() {
            Backend::Local(s) => s.raw_put_record(key, bytes),
            _ => Err(Error::other(
                "raw access needs the process owning a sled vault",
            )),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The owner's listener and its peers, or a relay's subscription: peers see the
        // connection end at once and take over.
        for task in crate::sync::lock(&self.tasks).drain(..) {
            task.abort();
        }
        if let Ok(Backend::Local(_)) = self.backend.read().map(|b| b.clone()) {
            // Leave no socket behind on an orderly exit; a crashed owner's socket is replaced by
            // the next owner. We still hold the owner lock here, so the socket is ours.
            let _ = std::fs::remove_file(share::socket_path(&self.home));
        }
        // The store (and with it the database and the owner lock) is released when the fields
        // drop, right after this.
    }
}

/// Move a users generation on (see [`Vault::watch_users`]).
pub(crate) fn bump(users: &tokio::sync::watch::Sender<u64>) {
    users.send_modify(|g| *g = g.wrapping_add(1));
}

/// Become the owner when nobody holds the vault, else connect to the process that does.
///
/// Either can be briefly impossible: an owner that is starting holds the lock before it
/// listens, and an owner that is exiting removes its socket before it lets go of the lock. So
/// keep trying both, in that order, until [`TAKEOVER_DEADLINE`]; only an owner that holds the
/// lock and never answers is an error. A peer that answers and refuses us (another user's
/// process, another protocol version, too many peers) is an error at once.
async fn acquire(
    home: &Home,
    mode: OpenMode,
    changes: &tokio::sync::broadcast::Sender<ConnKey>,
    users: &tokio::sync::watch::Sender<u64>,
) -> Result<Backend> {
    let deadline = Instant::now() + TAKEOVER_DEADLINE;
    loop {
        let opening = {
            let (home, changes, users) = (home.clone(), changes.clone(), users.clone());
            // Files, a lock and sled's own start-up: off the runtime's workers.
            tokio::task::spawn_blocking(move || Store::open(&home, mode, changes, users))
        };
        match opening
            .await
            .map_err(|e| Error::other(format!("opening the vault failed: {e}")))?
        {
            Ok(store) => return Ok(Backend::Local(Arc::new(store))),
            Err(Error::Busy(_)) => {}
            Err(e) => return Err(e),
        }
        let unreachable = match RemoteClient::connect(home).await {
            Ok(client) => return Ok(Backend::Remote(Arc::new(client))),
            Err(share::ConnectError::Refused(e)) => return Err(e),
            Err(share::ConnectError::Unreachable(e)) => e,
        };
        if Instant::now() >= deadline {
            return Err(Error::vault(format!(
                "another keyward process has the vault open but does not answer on {} \
                 ({unreachable}); retry, or stop the keyward process that is hung",
                share::socket_path(home).display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
