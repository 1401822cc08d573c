//! The vault in PostgreSQL, for keyward processes on several machines sharing one store
//! (`[store] url` in `config.toml`, or `KEYWARD_STORE_URL`).
//!
//! **What the database holds.** Exactly what the sled vault holds, in the same form: every
//! connection's record sealed with the same format and associated data ([`super::record`]: the
//! AAD names user, provider, account and version, never the backend, so `keyward store copy`
//! moves sealed records verbatim), the keyring as the text of `keyring.json` (sealed under the
//! master key), the SHA-256 of each API key and the audit log. The master key never enters the
//! database: each process reads it from `KEYWARD_MASTER_KEY` or its own `master.key`, and it is
//! checked against the keyring before anything is written. A `pg_dump` opens nothing.
//!
//! **Tables** (schema version [`SCHEMA_VERSION`], applied by [`migrate`]):
//! - `keyward_schema` — one row, the schema version;
//! - `keyward_keyring` — one row: the keyring text and a generation that moves with each change;
//! - `keyward_connections` — per (user, provider, account): `latest`, the highest version ever
//!   written (kept after a disconnect, so versions never repeat), and while connected the sealed
//!   record with its `version`, plus the unsealed `last_used` hint. `version` and `latest` are
//!   kept apart as in sled, so a record put back from an old backup is seen as a rollback;
//! - `keyward_users` — the users tree of [`super::users`] (key → value, bytes);
//! - `keyward_audit` — sequence → entry (JSON text).
//!
//! **Several processes at once.** Every write is one transaction: compare-and-swap on `latest`
//! under a row lock, and a `pg_notify` on the channel `keyward` that PostgreSQL delivers to every
//! listening process when it commits. Each process keeps one extra connection that listens and
//! feeds the vault's change broadcast and users generation (so `tools/list_changed` and the API
//! key cache work across machines) and reloads the keyring when another process rotated it. A
//! process that was cut off re-announces every connection and moves the users generation once it
//! listens again, so nothing missed stays missed. A `put` reads the keyring's generation under a
//! share lock in its transaction, so a record is never sealed under a data key a concurrent
//! `rotate-key` is retiring.
//!
//! **One refresh per connection across machines** ([`PgStore::refresh_turn`]): the refresher
//! holds a transaction-scoped advisory lock keyed by the connection on a pooled connection for
//! as long as it refreshes. Other processes wait on the lock (never longer than their call's
//! budget) and then re-read the record the holder wrote. A process that dies mid-refresh closes
//! its connection, which releases the lock; the server also ends a lock-holding session that
//! stays idle far past the budget, so a silently lost machine cannot hold it for ever.
//!
//! **Faults.** Connections come from a pool with bounded waits (connect, checkout, recycle) and
//! every operation has a deadline. When PostgreSQL is unreachable or restarting an operation
//! fails with [`Error::Unavailable`], a retryable error naming the store (never its password);
//! the pool replaces dead connections by itself, and a read that finds its pooled connection
//! closed by a restart is retried once on a fresh one. A write that fails is reported, never
//! retried blindly: what was acknowledged was committed.
//!
//! Schema migrations run in one transaction under an advisory lock, by whichever process first
//! finds the schema behind; two replicas starting on an empty database both succeed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures::future::BoxFuture;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_postgres::AsyncMessage;

use super::audit::AuditEntry;
use super::clients::LastExchange;
use super::crypto;
use super::keys::{self, Keyring, MasterKey, PendingRekey};
use super::record::{self, ConnKey, Connection, OpenFailure, TokenRecord};
use super::storage::{Progress, RefreshTurn, Storage};
use super::store::{AuditPage, Listed, OpenMode, PageFill, RotateReport, AUDIT_PAGE_BYTES};
use crate::config::Home;
use crate::error::{Error, Result};
use crate::secret::SecretString;

/// The schema this build reads and writes; [`MIGRATIONS`] brings any older one up to it.
pub const SCHEMA_VERSION: i32 = 2;

/// Migration `n` (1-based) takes the schema from version `n - 1` to `n`. Version 2 adds each
/// connection's latest token exchange (a hint for `status`, unsealed: it holds no secret).
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE keyward_keyring (
        id smallint PRIMARY KEY CHECK (id = 1),
        generation bigint NOT NULL,
        sealed text NOT NULL
    );
    CREATE TABLE keyward_connections (
        user_name text COLLATE "C" NOT NULL,
        provider text COLLATE "C" NOT NULL,
        account text COLLATE "C" NOT NULL,
        latest bigint NOT NULL,
        version bigint,
        sealed bytea,
        last_used bigint,
        PRIMARY KEY (user_name, provider, account),
        CHECK ((version IS NULL) = (sealed IS NULL))
    );
    CREATE TABLE keyward_users (
        key bytea PRIMARY KEY,
        value bytea NOT NULL
    );
    CREATE TABLE keyward_audit (
        seq bigserial PRIMARY KEY,
        entry text NOT NULL
    );
"#,
    "ALTER TABLE keyward_connections ADD COLUMN last_exchange text",
];

/// The stored keyring and its generation.
const SELECT_KEYRING: &str = "SELECT generation, sealed FROM keyward_keyring WHERE id = 1";

/// The channel every write notifies and every process listens on.
const CHANNEL: &str = "keyward";

/// The advisory lock (two-key form, its own key space) under which schema migrations and the
/// first keyring are written: "keyw", 1.
const MIGRATION_LOCK: (i32, i32) = (0x6b65_7977, 1);

/// How long one store operation may take before it fails as unavailable.
const OP_TIMEOUT: Duration = Duration::from_secs(15);
/// Bounded waits of the pool: connecting, waiting for a free connection, checking one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pooled connections per process: a server's concurrent calls share these.
const POOL_SIZE: usize = 16;
/// How long the listener waits before connecting again, at first and at most.
const LISTEN_RETRY_MIN: Duration = Duration::from_millis(50);
const LISTEN_RETRY_MAX: Duration = Duration::from_secs(2);
/// A refresh lock's session is ended by the server once idle in its transaction this much
/// longer than the refresh's budget (see the module docs).
const REFRESH_LOCK_GRACE: Duration = Duration::from_secs(30);

// ---- the URL ---------------------------------------------------------------------------------

/// Where the PostgreSQL store is: the URL as given (it may hold a password, so it is kept as a
/// secret) and the form shown in messages, without password or parameters.
#[derive(Clone)]
pub struct StoreUrl {
    url: SecretString,
    shown: String,
    config: tokio_postgres::Config,
    root_cert: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StoreUrl").field(&self.shown).finish()
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl StoreUrl {
    /// Whether `text` names a PostgreSQL store (rather than a sled home folder).
    pub fn is_postgres(text: &str) -> bool {
        let lower = text.trim_start().to_ascii_lowercase();
        lower.starts_with("postgres://") || lower.starts_with("postgresql://")
    }

    /// Parse a `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?PARAMS]` URL. `origin` names
    /// where it came from; errors name it and never quote the URL (it may hold a password).
    ///
    /// Besides what tokio-postgres reads, `sslrootcert=PATH` (PEM certificates to trust instead
    /// of the system's) is understood, and `sslmode=verify-ca|verify-full` mean `require`:
    /// keyward always verifies the server's certificate and name when it uses TLS.
    pub fn parse(text: &str, origin: &str) -> Result<StoreUrl> {
        let bad = |why: &str| {
            Error::config(format!(
                "{origin} is not a PostgreSQL URL keyward can use ({why}): write it as \
                 postgres://USER@HOST:PORT/DATABASE?sslmode=require"
            ))
        };
        if !Self::is_postgres(text) {
            return Err(bad("it must start with postgres:// or postgresql://"));
        }
        let mut url = url::Url::parse(text.trim()).map_err(|e| bad(&e.to_string()))?;
        let mut root_cert = None;
        let mut kept: Vec<(String, String)> = Vec::new();
        for (name, value) in url.query_pairs() {
            match name.as_ref() {
                "sslrootcert" => root_cert = Some(std::path::PathBuf::from(value.as_ref())),
                "sslmode" if value == "verify-ca" || value == "verify-full" => {
                    kept.push(("sslmode".into(), "require".into()))
                }
                _ => kept.push((name.into_owned(), value.into_owned())),
            }
        }
        let defaults = [
            ("application_name", "keyward".to_string()),
            ("connect_timeout", CONNECT_TIMEOUT.as_secs().to_string()),
            ("keepalives_idle", "30".to_string()),
        ];
        for (key, value) in defaults {
            if !kept.iter().any(|(k, _)| k == key) {
                kept.push((key.into(), value));
            }
        }
        url.query_pairs_mut().clear().extend_pairs(&kept);
        let config: tokio_postgres::Config = url
            .as_str()
            .parse()
            .map_err(|e: tokio_postgres::Error| bad(&e.to_string()))?;
        let mut shown = url.clone();
        let _ = shown.set_password(None);
        shown.set_query(None);
        Ok(StoreUrl {
            url: SecretString::new(text.trim().to_string()),
            shown: shown.to_string(),
            config,
            root_cert,
        })
    }

    /// The URL as given, password included (to hand to another process, never to print).
    pub fn expose(&self) -> &str {
        self.url.expose()
    }

    fn tls(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_error = |e: rustls::Error| {
            Error::config(format!("setting up TLS for the store at {self}: {e}"))
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?;
        let config = match &self.root_cert {
            Some(path) => {
                use rustls_pki_types::pem::PemObject;
                let unreadable = |e: rustls_pki_types::pem::Error| {
                    Error::config(format!(
                        "sslrootcert {} of the store URL does not hold PEM certificates ({e})",
                        path.display()
                    ))
                };
                let mut roots = rustls::RootCertStore::empty();
                for cert in
                    rustls_pki_types::CertificateDer::pem_file_iter(path).map_err(unreadable)?
                {
                    roots.add(cert.map_err(unreadable)?).map_err(tls_error)?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(
                    rustls_platform_verifier::Verifier::new(provider).map_err(tls_error)?,
                ))
                .with_no_client_auth(),
        };
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    fn pool(&self) -> Result<Pool> {
        let manager = Manager::from_config(
            self.config.clone(),
            self.tls()?,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(CHECKOUT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(RECYCLE_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| Error::other(format!("building the pool for the store at {self}: {e}")))
    }
}

// ---- errors ----------------------------------------------------------------------------------

/// What failed, for the messages: the store and what keyward was doing.
#[derive(Clone)]
struct Place {
    url: Arc<str>,
}

impl Place {
    fn of(url: &StoreUrl) -> Place {
        Place {
            url: url.shown.as_str().into(),
        }
    }

    /// A PostgreSQL error as keyward reports it. Connection failures, shutdowns and restarts
    /// are [`Error::Unavailable`] (retryable); anything the server refused is a vault error.
    fn error(&self, doing: &str, e: &tokio_postgres::Error) -> Error {
        use tokio_postgres::error::SqlState;
        let transient = match e.as_db_error() {
            None => true,
            Some(db) => {
                let code = db.code();
                code.code().starts_with("08")
                    || [
                        SqlState::ADMIN_SHUTDOWN,
                        SqlState::CRASH_SHUTDOWN,
                        SqlState::CANNOT_CONNECT_NOW,
                        SqlState::TOO_MANY_CONNECTIONS,
                        SqlState::T_R_SERIALIZATION_FAILURE,
                        SqlState::T_R_DEADLOCK_DETECTED,
                        SqlState::QUERY_CANCELED,
                    ]
                    .contains(code)
            }
        };
        let what = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => e.to_string(),
        };
        if transient {
            self.unavailable(doing, &what)
        } else {
            Error::vault(format!(
                "the PostgreSQL store at {} refused {doing} ({what})",
                self.url
            ))
        }
    }

    fn unavailable(&self, doing: &str, why: &str) -> Error {
        Error::Unavailable(format!(
            "the PostgreSQL store at {} is unavailable ({doing}: {why}); keyward reconnects by \
             itself: retry in a moment, and check that PostgreSQL is running if it persists",
            self.url
        ))
    }

    fn pool_error(&self, doing: &str, e: deadpool_postgres::PoolError) -> Error {
        match e {
            deadpool_postgres::PoolError::Backend(e) => self.error(doing, &e),
            other => self.unavailable(doing, &other.to_string()),
        }
    }

    /// Run `op` within [`OP_TIMEOUT`].
    async fn bounded<T>(
        &self,
        doing: &str,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(OP_TIMEOUT, op).await {
            Ok(result) => result,
            Err(_) => Err(self.unavailable(
                doing,
                &format!("no answer within {} s", OP_TIMEOUT.as_secs()),
            )),
        }
    }
}

/// Run a read on a pooled connection, once more on a fresh one when the first was closed under
/// it (a restarted server): nothing was changed, so trying again is safe.
macro_rules! read {
    ($store:expr, $doing:expr, |$client:ident| $body:expr) => {{
        let store = $store;
        let doing: &str = $doing;
        store
            .place()
            .bounded(doing, async {
                let mut retried = false;
                loop {
                    let $client = store.client(doing).await?;
                    match $body.await {
                        Err(e) if e.is_closed() && !retried => retried = true,
                        other => break other.map_err(|e| store.place().error(doing, &e)),
                    }
                }
            })
            .await
    }};
}

// ---- the store -------------------------------------------------------------------------------

/// The data keys in memory, and the keyring generation they were read at.
struct Held {
    keyring: Keyring,
    generation: i64,
}

struct Inner {
    home: Home,
    place: Place,
    url: StoreUrl,
    pool: Pool,
    master: RwLock<MasterKey>,
    held: RwLock<Held>,
    /// Tags this process's notifications, which it has already applied itself.
    origin: String,
    changes: tokio::sync::broadcast::Sender<ConnKey>,
    users_generation: tokio::sync::watch::Sender<u64>,
    /// Whether the listener is connected and listening now.
    listening: AtomicBool,
}

/// An open PostgreSQL store. Every method takes `&self`; the listener task ends with it.
pub struct PgStore {
    inner: Arc<Inner>,
    /// The listener task, ended with the store.
    _listener: AbortOnDrop,
    /// What `open` had to create, for the one-line notice the CLI prints.
    pub created: Vec<String>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.inner.place.url)
            .finish_non_exhaustive()
    }
}

/// The connection named by a row's first three columns (user, provider, account).
fn key_of(row: &tokio_postgres::Row) -> ConnKey {
    ConnKey {
        user: row.get(0),
        provider: row.get(1),
        account: row.get(2),
    }
}

/// A connection's key columns.
fn key_columns(key: &ConnKey) -> [&(dyn tokio_postgres::types::ToSql + Sync); 3] {
    [&key.user, &key.provider, &key.account]
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl PgStore {
    /// Open the store at `url`: apply pending schema migrations, then read the keyring and open
    /// it with this process's master key (from `home`'s `master.key` or `KEYWARD_MASTER_KEY`).
    /// With [`OpenMode::Create`] an empty store gets a keyring (and `home` a master key when it
    /// has none); with [`OpenMode::Existing`] it is [`Error::NotFound`]. A wrong master key is
    /// an error before anything is written (invariant 8).
    pub async fn open(
        home: &Home,
        url: &StoreUrl,
        mode: OpenMode,
        changes: tokio::sync::broadcast::Sender<ConnKey>,
        users_generation: tokio::sync::watch::Sender<u64>,
    ) -> Result<PgStore> {
        home.check_trusted()?;
        let pool = url.pool()?;
        let place = Place::of(url);
        let mut client = connect(&pool, &place).await?;
        let (master, keyring, generation, created) = place
            .bounded(
                "opening the vault",
                open_keyring(&mut client, &place, home, mode),
            )
            .await?;
        drop(client);
        let inner = Arc::new(Inner {
            home: home.clone(),
            place,
            url: url.clone(),
            pool,
            master: RwLock::new(master),
            held: RwLock::new(Held {
                keyring,
                generation,
            }),
            origin: format!("{:016x}", rand::random::<u64>()),
            changes,
            users_generation,
            listening: AtomicBool::new(false),
        });
        let listener = AbortOnDrop(tokio::spawn(listen(inner.clone())));
        Ok(PgStore {
            inner,
            _listener: listener,
            created,
        })
    }

    /// The store as shown in messages (no password).
    pub fn url(&self) -> &StoreUrl {
        &self.inner.url
    }

    /// Whether this process is listening for the other processes' changes right now.
    pub fn listening(&self) -> bool {
        self.inner.listening.load(Ordering::SeqCst)
    }

    pub fn master_key_id(&self) -> String {
        self.inner.master.read().expect("master lock").id()
    }

    fn place(&self) -> &Place {
        &self.inner.place
    }

    async fn client(&self, doing: &str) -> Result<Object> {
        self.inner
            .pool
            .get()
            .await
            .map_err(|e| self.inner.place.pool_error(doing, e))
    }

    // ---- connections -------------------------------------------------------------------

    /// Open a stored row. A record under a data key this process does not hold yet (another
    /// process rotated the keys) reloads the keyring once.
    async fn open_row(
        &self,
        key: &ConnKey,
        version: i64,
        latest: i64,
        blob: &[u8],
    ) -> Result<Connection> {
        let version = to_u64(version);
        let opened = self.open_with_held(key, version, blob);
        let record = match opened {
            Err(OpenFailure::Seal(crypto::OpenError::UnknownKey(_))) => {
                self.reload_keyring().await?;
                self.open_with_held(key, version, blob)
            }
            other => other,
        }
        .map_err(|e| key.corrupt(e.to_string()))?;
        if version != to_u64(latest) {
            return Err(key.rolled_back(version, to_u64(latest)));
        }
        Ok(Connection {
            key: key.clone(),
            version,
            record,
        })
    }

    fn open_with_held(
        &self,
        key: &ConnKey,
        version: u64,
        blob: &[u8],
    ) -> std::result::Result<TokenRecord, OpenFailure> {
        let held = self.inner.held.read().expect("keyring lock");
        record::open_record(&held.keyring, key, version, blob)
    }

    /// Read and open one connection. `Ok(None)` when there is none.
    pub async fn get(&self, key: &ConnKey) -> Result<Option<Connection>> {
        let row = read!(self, "reading a connection", |c| async {
            let stmt = c
                .prepare_cached(
                    "SELECT version, latest, sealed FROM keyward_connections \
                     WHERE user_name = $1 AND provider = $2 AND account = $3 \
                     AND sealed IS NOT NULL",
                )
                .await?;
            c.query_opt(&stmt, &key_columns(key)).await
        })?;
        match row {
            None => Ok(None),
            Some(row) => {
                let blob: Vec<u8> = row.get(2);
                self.open_row(key, row.get(0), row.get(1), &blob)
                    .await
                    .map(Some)
            }
        }
    }

    /// Write `record`, requiring the stored version to be `expected` (`None`: any version,
    /// including no record). Returns the new version, committed (durable) on return; every
    /// process hears of the change.
    pub async fn put(
        &self,
        key: &ConnKey,
        expected: Option<u64>,
        record: &TokenRecord,
    ) -> Result<u64> {
        let doing = "writing a connection";
        let version = self
            .place()
            .bounded(doing, async {
                let mut client = self.client(doing).await?;
                let err = |e: tokio_postgres::Error| self.place().error(doing, &e);
                let tx = client.transaction().await.map_err(err)?;
                // The data keys to seal under, as of this transaction (see the module docs).
                let ring = tx
                    .query_one(&format!("{SELECT_KEYRING} FOR SHARE"), &[])
                    .await
                    .map_err(err)?;
                self.adopt_keyring(ring.get(0), ring.get(1))?;
                tx.execute(
                    "INSERT INTO keyward_connections (user_name, provider, account, latest) \
                     VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
                    &key_columns(key),
                )
                .await
                .map_err(err)?;
                let row = tx
                    .query_one(
                        "SELECT latest, sealed IS NOT NULL FROM keyward_connections \
                         WHERE user_name = $1 AND provider = $2 AND account = $3 FOR UPDATE",
                        &key_columns(key),
                    )
                    .await
                    .map_err(err)?;
                let (latest, present): (i64, bool) = (row.get(0), row.get(1));
                if let Some(expected) = expected {
                    if !present || to_u64(latest) != expected {
                        return Err(Error::Conflict(key.to_string()));
                    }
                }
                let next = to_u64(latest) + 1;
                let blob = {
                    let held = self.inner.held.read().expect("keyring lock");
                    record::seal_record(&held.keyring, key, next, record)
                };
                let [user, provider, account] = key_columns(key);
                tx.execute(
                    "UPDATE keyward_connections SET latest = $4, version = $4, sealed = $5 \
                     WHERE user_name = $1 AND provider = $2 AND account = $3",
                    &[user, provider, account, &to_i64(next), &blob],
                )
                .await
                .map_err(err)?;
                self.notify(&tx, &format!("c {key}")).await.map_err(err)?;
                tx.commit().await.map_err(err)?;
                Ok(next)
            })
            .await?;
        let _ = self.inner.changes.send(key.clone());
        Ok(version)
    }

    /// Remove a connection. Its `latest` stays, so versions never repeat.
    pub async fn remove(&self, key: &ConnKey) -> Result<bool> {
        let doing = "removing a connection";
        let existed = self
            .place()
            .bounded(doing, async {
                let mut client = self.client(doing).await?;
                let err = |e: tokio_postgres::Error| self.place().error(doing, &e);
                let tx = client.transaction().await.map_err(err)?;
                let n = tx
                    .execute(
                        "UPDATE keyward_connections \
                         SET version = NULL, sealed = NULL, last_used = NULL, \
                         last_exchange = NULL \
                         WHERE user_name = $1 AND provider = $2 AND account = $3 \
                         AND sealed IS NOT NULL",
                        &key_columns(key),
                    )
                    .await
                    .map_err(err)?;
                self.notify(&tx, &format!("c {key}")).await.map_err(err)?;
                tx.commit().await.map_err(err)?;
                Ok(n > 0)
            })
            .await?;
        let _ = self.inner.changes.send(key.clone());
        Ok(existed)
    }

    /// Run one statement that changes what it changes alone (no transaction, no notification),
    /// prepared once per pooled connection.
    async fn execute(
        &self,
        doing: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64> {
        self.place()
            .bounded(doing, async {
                let client = self.client(doing).await?;
                let err = |e: tokio_postgres::Error| self.place().error(doing, &e);
                let stmt = client.prepare_cached(sql).await.map_err(err)?;
                client.execute(&stmt, params).await.map_err(err)
            })
            .await
    }

    /// Note that a connection was just used (a hint for `status`; no notification).
    pub async fn touch(&self, key: &ConnKey) -> Result<()> {
        let now = chrono::Utc::now().timestamp();
        let [user, provider, account] = key_columns(key);
        self.execute(
            "noting a connection's use",
            "UPDATE keyward_connections SET last_used = $4 \
             WHERE user_name = $1 AND provider = $2 AND account = $3",
            &[user, provider, account, &now],
        )
        .await
        .map(drop)
    }

    /// Note a connection's latest token exchange (a hint for `status`, like the last use).
    pub async fn note_exchange(&self, key: &ConnKey, note: &LastExchange) -> Result<()> {
        let json = serde_json::to_string(note).expect("an exchange note serializes");
        let [user, provider, account] = key_columns(key);
        self.execute(
            "noting a token exchange",
            "UPDATE keyward_connections SET last_exchange = $4 \
             WHERE user_name = $1 AND provider = $2 AND account = $3 AND sealed IS NOT NULL",
            &[user, provider, account, &json],
        )
        .await
        .map(drop)
    }

    /// The latest token exchange of every connection (of `user`, if given) that had one.
    pub async fn exchanges(&self, user: Option<&str>) -> Result<Vec<(ConnKey, LastExchange)>> {
        let rows = read!(self, "reading token exchanges", |c| c.query(
            "SELECT user_name, provider, account, last_exchange FROM keyward_connections \
             WHERE last_exchange IS NOT NULL AND sealed IS NOT NULL \
             AND ($1::text IS NULL OR user_name = $1) ORDER BY user_name, provider, account",
            &[&user],
        ))?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let note = serde_json::from_str(row.get::<_, &str>(3)).ok()?;
                Some((key_of(row), note))
            })
            .collect())
    }

    /// Every connection (of `user`, if given), in key order, with its last use. A record that
    /// does not open is listed as the error naming it; the others are unaffected.
    pub async fn list(&self, user: Option<&str>) -> Result<Vec<Listed>> {
        let rows = read!(self, "listing connections", |c| async {
            let stmt = c
                .prepare_cached(
                    "SELECT user_name, provider, account, version, latest, sealed, last_used \
                     FROM keyward_connections WHERE sealed IS NOT NULL \
                     AND ($1::text IS NULL OR user_name = $1) \
                     ORDER BY user_name, provider, account",
                )
                .await?;
            c.query(&stmt, &[&user]).await
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let key = key_of(&row);
            let blob: Vec<u8> = row.get(5);
            let last_used: Option<i64> = row.get(6);
            out.push(
                self.open_row(&key, row.get(3), row.get(4), &blob)
                    .await
                    .map(|conn| (conn, last_used)),
            );
        }
        Ok(out)
    }

    /// Keys of every stored connection, without opening them.
    pub async fn keys(&self) -> Result<Vec<ConnKey>> {
        let rows = read!(self, "listing connections", |c| c.query(
            "SELECT user_name, provider, account FROM keyward_connections \
             WHERE sealed IS NOT NULL ORDER BY user_name, provider, account",
            &[],
        ))?;
        Ok(rows.iter().map(key_of).collect())
    }

    /// Every write is committed when it returns: there is nothing to flush.
    pub async fn flush(&self) -> Result<()> {
        Ok(())
    }

    // ---- audit -------------------------------------------------------------------------

    /// Append an audit entry.
    pub async fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let json = serde_json::to_string(entry).expect("audit entries serialize");
        self.execute(
            "appending to the audit log",
            "INSERT INTO keyward_audit (entry) VALUES ($1)",
            &[&json],
        )
        .await
        .map(drop)
    }

    /// One page of the audit log, as [`super::store::Store::audit_page`] pages it.
    pub async fn audit_page(
        &self,
        after: u64,
        limit: Option<usize>,
        until: Option<u64>,
    ) -> Result<AuditPage> {
        let until = match until {
            Some(until) => until,
            None => {
                let row = read!(self, "reading the audit log", |c| c
                    .query_one("SELECT coalesce(max(seq), 0) FROM keyward_audit", &[]))?;
                to_u64(row.get(0))
            }
        };
        if let Some(empty) = AuditPage::nothing_in(after, limit, until) {
            return Ok(empty);
        }
        let mut start = after + 1;
        if let Some(limit) = limit {
            let offset = to_i64(limit as u64 - 1);
            let row = read!(self, "reading the audit log", |c| c.query_opt(
                "SELECT seq FROM keyward_audit WHERE seq > $1 AND seq <= $2 \
                 ORDER BY seq DESC OFFSET $3 LIMIT 1",
                &[&to_i64(after), &to_i64(until), &offset],
            ))?;
            if let Some(row) = row {
                start = to_u64(row.get(0));
            }
        }
        // Rows come in batches until the page is full or the selection ends.
        const BATCH: i64 = 1000;
        let mut page = PageFill::new(after, start, until, AUDIT_PAGE_BYTES);
        let mut from = start;
        loop {
            let rows = read!(self, "reading the audit log", |c| c.query(
                "SELECT seq, entry FROM keyward_audit WHERE seq >= $1 AND seq <= $2 \
                 ORDER BY seq LIMIT $3",
                &[&to_i64(from), &to_i64(until), &BATCH],
            ))?;
            for row in &rows {
                if !page.push(to_u64(row.get(0)), row.get::<_, &str>(1).as_bytes()) {
                    return Ok(page.finish());
                }
            }
            if (rows.len() as i64) < BATCH {
                return Ok(page.finish());
            }
            from = page.next_after() + 1;
        }
    }

    // ---- keys --------------------------------------------------------------------------

    /// The id of the data key that seals new records.
    pub fn current_key_id(&self) -> u32 {
        self.inner
            .held
            .read()
            .expect("keyring lock")
            .keyring
            .current
    }

    /// Take the keyring read at `generation` as this process's data keys (see [`adopt`]).
    fn adopt_keyring(&self, generation: i64, text: String) -> Result<()> {
        adopt(&self.inner, generation, text)
    }

    async fn reload_keyring(&self) -> Result<()> {
        let row = read!(self, "reading the keyring", |c| c
            .query_one(SELECT_KEYRING, &[]))?;
        self.adopt_keyring(row.get(0), row.get(1))
    }

    /// Store a changed keyring under `master` in `tx`, moving its generation on, and hold it.
    async fn replace_keyring(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        keyring: Keyring,
        master: &MasterKey,
        generation: i64,
    ) -> std::result::Result<i64, tokio_postgres::Error> {
        let next = generation + 1;
        tx.execute(
            "UPDATE keyward_keyring SET generation = $1, sealed = $2 WHERE id = 1",
            &[&next, &keyring.seal(master)],
        )
        .await?;
        self.notify(tx, "k").await?;
        let mut held = self.inner.held.write().expect("keyring lock");
        *held = Held {
            keyring,
            generation: next,
        };
        Ok(next)
    }

    /// The keyring as stored, locked for update in `tx`, opened with this process's master key.
    async fn lock_keyring(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        doing: &str,
    ) -> Result<(Keyring, i64)> {
        let row = tx
            .query_one(&format!("{SELECT_KEYRING} FOR UPDATE"), &[])
            .await
            .map_err(|e| self.place().error(doing, &e))?;
        let text: String = row.get(1);
        let master = self.inner.master.read().expect("master lock");
        let keyring = Keyring::unseal(
            &text,
            &master,
            &format!("the keyring in {}", self.inner.url),
        )?;
        Ok((keyring, row.get(0)))
    }

    /// Add a data key and re-seal every record under it; safe to interrupt and to run again,
    /// as with sled (old keys are retired only once no record uses them).
    pub async fn rotate_key(
        &self,
        progress: &mut (dyn FnMut(usize, usize) + Send),
    ) -> Result<RotateReport> {
        let doing = "rotating the data key";
        let target = {
            let mut client = self.client(doing).await?;
            let err = |e: tokio_postgres::Error| self.place().error(doing, &e);
            let tx = client.transaction().await.map_err(err)?;
            let (mut keyring, generation) = self.lock_keyring(&tx, doing).await?;
            if !keyring.rotating {
                keyring.add_key();
                keyring.rotating = true;
            }
            let target = keyring.current;
            let master = self.master_clone();
            self.replace_keyring(&tx, keyring, &master, generation)
                .await
                .map_err(err)?;
            tx.commit().await.map_err(err)?;
            target
        };
        let keys = self.keys().await?;
        let total = keys.len();
        let (mut resealed, mut failed) = (0, Vec::new());
        for (done, key) in keys.iter().enumerate() {
            match self.get(key).await {
                Ok(Some(conn)) => {
                    if self.sealed_key_id(key).await? != Some(target) {
                        match self.put(key, Some(conn.version), &conn.record).await {
                            Ok(_) => resealed += 1,
                            // Written meanwhile by someone else: under the new key already.
                            Err(Error::Conflict(_)) => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Ok(None) => {}
                Err(e @ Error::RecordCorrupt { .. }) => failed.push(e.to_string()),
                Err(e) => return Err(e),
            }
            progress(done + 1, total);
        }
        if failed.is_empty() {
            let mut client = self.client(doing).await?;
            let err = |e: tokio_postgres::Error| self.place().error(doing, &e);
            let tx = client.transaction().await.map_err(err)?;
            let (mut keyring, generation) = self.lock_keyring(&tx, doing).await?;
            let current = keyring.current.to_be_bytes().to_vec();
            let stale: i64 = tx
                .query_one(
                    "SELECT count(*) FROM keyward_connections \
                     WHERE sealed IS NOT NULL AND substring(sealed from 2 for 4) <> $1",
                    &[&current],
                )
                .await
                .map_err(err)?
                .get(0);
            if stale == 0 && keyring.rotating {
                keyring.rotating = false;
                keyring.retire_old_keys();
                let master = self.master_clone();
                self.replace_keyring(&tx, keyring, &master, generation)
                    .await
                    .map_err(err)?;
            }
            tx.commit().await.map_err(err)?;
        }
        Ok(RotateReport {
            key_id: target,
            resealed,
            total,
            failed,
        })
    }

    /// The data-key id a stored record's blob names, without opening it.
    async fn sealed_key_id(&self, key: &ConnKey) -> Result<Option<u32>> {
        let row = read!(self, "reading a connection", |c| c.query_opt(
            "SELECT sealed FROM keyward_connections \
             WHERE user_name = $1 AND provider = $2 AND account = $3 AND sealed IS NOT NULL",
            &key_columns(key),
        ))?;
        Ok(row.and_then(|row| crypto::blob_key_id(row.get::<_, &[u8]>(0)).ok()))
    }

    fn master_clone(&self) -> MasterKey {
        let master = self.inner.master.read().expect("master lock");
        MasterKey {
            key: master.key.clone(),
            source: master.source.clone(),
        }
    }

    /// Re-wrap the keyring under a new master key; returns where the new key lives. The other
    /// processes keep working with the data keys they hold; each needs the new key before it
    /// restarts.
    pub async fn rekey(&self, new_key_file: Option<&std::path::Path>) -> Result<String> {
        let doing = "re-wrapping the keyring";
        let pending = {
            let master = self.inner.master.read().expect("master lock");
            PendingRekey::prepare(&self.inner.home, &master, new_key_file)?
        };
        {
            let mut client = self.client(doing).await?;
            let err = |e: tokio_postgres::Error| self.place().error(doing, &e);
            let tx = client.transaction().await.map_err(err)?;
            let (keyring, generation) = self.lock_keyring(&tx, doing).await?;
            self.replace_keyring(&tx, keyring, &pending.master, generation)
                .await
                .map_err(err)?;
            tx.commit().await.map_err(err)?;
        }
        let (master, location) = pending.finish()?;
        *self.inner.master.write().expect("master lock") = master;
        Ok(location)
    }

    // ---- the users tree ------------------------------------------------------------------

    pub async fn users_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let row = read!(self, "reading the users", |c| async {
            let stmt = c
                .prepare_cached("SELECT value FROM keyward_users WHERE key = $1")
                .await?;
            c.query_opt(&stmt, &[&key]).await
        })?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Add a users entry, committed; every process's API-key cache forgets.
    pub async fn users_insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.users_write(
            "adding a user",
            "INSERT INTO keyward_users (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
        )
        .await
    }

    /// Remove a users entry, committed; every process's API-key cache forgets.
    pub async fn users_remove(&self, key: &[u8]) -> Result<()> {
        self.users_write(
            "removing a user",
            "DELETE FROM keyward_users WHERE key = $1",
            &[&key],
        )
        .await
    }

    async fn users_write(
        &self,
        doing: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<()> {
        let result = self
            .place()
            .bounded(doing, async {
                let mut client = self.client(doing).await?;
                let err = |e: tokio_postgres::Error| self.place().error(doing, &e);
                let tx = client.transaction().await.map_err(err)?;
                tx.execute(sql, params).await.map_err(err)?;
                self.notify(&tx, "u").await.map_err(err)?;
                tx.commit().await.map_err(err)
            })
            .await;
        // Whatever the outcome, caches forget (as with sled).
        super::bump(&self.inner.users_generation);
        result
    }

    /// Every users entry whose key starts with `prefix`, in key order.
    pub async fn users_scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let rows = read!(self, "reading the users", |c| c.query(
            "SELECT key, value FROM keyward_users \
             WHERE substring(key from 1 for $2) = $1 ORDER BY key",
            &[&prefix, &(prefix.len() as i32)],
        ))?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    // ---- single-flight refresh across processes -------------------------------------------

    /// The right to refresh `key` in this process, against every process on the store: a
    /// transaction-scoped advisory lock on a pooled connection, held until the guard drops.
    /// Waits no longer than `budget` ([`Error::Unavailable`] then: the holder is still at it).
    pub async fn refresh_turn(&self, key: &ConnKey, budget: Duration) -> Result<RefreshLock> {
        let doing = "waiting for the refresh lock";
        let started = Instant::now();
        let client = self.client(doing).await?;
        // From here the guard owns the connection: if this future is dropped while waiting,
        // the guard still ends the transaction before the connection goes back to the pool.
        let guard = RefreshLock {
            client: Some(client),
        };
        let conn = guard.client.as_ref().expect("set above");
        let err = |e: tokio_postgres::Error| self.place().error(doing, &e);
        let left = budget
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        let idle = budget + REFRESH_LOCK_GRACE;
        conn.batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = {}; SET LOCAL idle_in_transaction_session_timeout = {}",
            left.as_millis(),
            idle.as_millis()
        ))
        .await
        .map_err(err)?;
        match conn
            .execute("SELECT pg_advisory_xact_lock($1)", &[&refresh_lock_id(key)])
            .await
        {
            Ok(_) => Ok(guard),
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
                Err(Error::Unavailable(format!(
                    "the {} token of {key} is being refreshed by another keyward process, which \
                     did not finish within this call's time budget; retry in a moment",
                    key.provider
                )))
            }
            Err(e) => Err(err(e)),
        }
    }

    // ---- status and copying -------------------------------------------------------------

    /// What `keyward store status` shows: schema, counts, the server's version and the round
    /// trip of a trivial query (the best of a few).
    pub async fn status(&self) -> Result<super::transfer::StoreStatus> {
        let doing = "reading the store's status";
        let client = self.client(doing).await?;
        let err = |e: tokio_postgres::Error| self.place().error(doing, &e);
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            client.simple_query("SELECT 1").await.map_err(err)?;
            best = best.min(t.elapsed());
        }
        let row = client
            .query_one(
                "SELECT current_setting('server_version'), \
                 (SELECT version FROM keyward_schema), \
                 (SELECT count(*) FROM keyward_connections WHERE sealed IS NOT NULL), \
                 (SELECT count(*) FROM keyward_users WHERE substring(key from 1 for 2) = 'u/'), \
                 (SELECT count(*) FROM keyward_audit)",
                &[],
            )
            .await
            .map_err(err)?;
        Ok(super::transfer::StoreStatus {
            backend: "postgres".into(),
            location: self.inner.url.to_string(),
            schema: row.get::<_, i32>(1) as u64,
            connections: to_u64(row.get(2)),
            users: to_u64(row.get(3)),
            audit_entries: to_u64(row.get(4)),
            server_version: Some(row.get(0)),
            round_trip_ms: Some(best.as_secs_f64() * 1000.0),
            master_key_id: Some(self.master_key_id()),
        })
    }

    /// Tell every other process about a change, when `tx` commits.
    async fn notify(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        what: &str,
    ) -> std::result::Result<(), tokio_postgres::Error> {
        let payload = format!("{} {what}", self.inner.origin);
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await
            .map(|_| ())
    }

    // ---- test support ------------------------------------------------------------------

    /// The raw stored bytes of a record, as sled stores them (version ‖ sealed blob).
    #[doc(hidden)]
    pub async fn raw_record(&self, key: &ConnKey) -> Result<Option<Vec<u8>>> {
        let row = read!(self, "reading a connection", |c| c.query_opt(
            "SELECT version, sealed FROM keyward_connections \
             WHERE user_name = $1 AND provider = $2 AND account = $3 AND sealed IS NOT NULL",
            &key_columns(key),
        ))?;
        Ok(row.map(|row| {
            let mut value = to_u64(row.get(0)).to_be_bytes().to_vec();
            value.extend_from_slice(row.get::<_, &[u8]>(1));
            value
        }))
    }
}

/// The PostgreSQL backend of [`super::Vault`]: each operation is the method of the same name
/// above, on the runtime's workers (every one waits on the network, never on a thread).
impl Storage for Arc<PgStore> {
    fn get(&self, key: ConnKey) -> BoxFuture<'_, Result<Option<Connection>>> {
        Box::pin(async move { PgStore::get(self, &key).await })
    }
    fn put(
        &self,
        key: ConnKey,
        expected: Option<u64>,
        record: TokenRecord,
    ) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move { PgStore::put(self, &key, expected, &record).await })
    }
    fn remove(&self, key: ConnKey) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move { PgStore::remove(self, &key).await })
    }
    fn touch(&self, key: ConnKey) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { PgStore::touch(self, &key).await })
    }
    fn list(&self, user: Option<String>) -> BoxFuture<'_, Result<Vec<Listed>>> {
        Box::pin(async move { PgStore::list(self, user.as_deref()).await })
    }
    fn keys(&self) -> BoxFuture<'_, Result<Vec<ConnKey>>> {
        Box::pin(PgStore::keys(self))
    }
    fn note_exchange(&self, key: ConnKey, note: LastExchange) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { PgStore::note_exchange(self, &key, &note).await })
    }
    fn exchanges(
        &self,
        user: Option<String>,
    ) -> BoxFuture<'_, Result<Vec<(ConnKey, LastExchange)>>> {
        Box::pin(async move { PgStore::exchanges(self, user.as_deref()).await })
    }
    fn audit(&self, entry: AuditEntry) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { PgStore::audit(self, &entry).await })
    }
    fn audit_page(
        &self,
        after: u64,
        limit: Option<usize>,
        until: Option<u64>,
    ) -> BoxFuture<'_, Result<AuditPage>> {
        Box::pin(PgStore::audit_page(self, after, limit, until))
    }
    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(PgStore::flush(self))
    }
    fn current_key_id(&self) -> BoxFuture<'_, Result<u32>> {
        Box::pin(std::future::ready(Ok(PgStore::current_key_id(self))))
    }
    fn rotate_key(&self) -> BoxFuture<'_, Result<RotateReport>> {
        Box::pin(async move { PgStore::rotate_key(self, &mut |_, _| {}).await })
    }
    fn rotate_key_reporting(&self, mut progress: Progress) -> BoxFuture<'_, Result<RotateReport>> {
        Box::pin(async move { PgStore::rotate_key(self, &mut *progress).await })
    }
    fn rekey(&self, new_key_file: Option<std::path::PathBuf>) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move { PgStore::rekey(self, new_key_file.as_deref()).await })
    }
    fn users_get(&self, key: Vec<u8>) -> BoxFuture<'_, Result<Option<Vec<u8>>>> {
        Box::pin(async move { PgStore::users_get(self, &key).await })
    }
    fn users_insert(&self, key: Vec<u8>, value: Vec<u8>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { PgStore::users_insert(self, &key, &value).await })
    }
    fn users_remove(&self, key: Vec<u8>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { PgStore::users_remove(self, &key).await })
    }
    fn users_scan(&self, prefix: Vec<u8>) -> BoxFuture<'_, Result<Vec<(Vec<u8>, Vec<u8>)>>> {
        Box::pin(async move { PgStore::users_scan(self, &prefix).await })
    }
    /// Any process may refresh, under the connection's advisory lock: the guard holds it (with
    /// its pooled connection and transaction) until the refresh is written and dropped.
    fn refresh_turn(&self, key: ConnKey, budget: Duration) -> BoxFuture<'_, Result<RefreshTurn>> {
        Box::pin(async move {
            let lock = PgStore::refresh_turn(self, &key, budget).await?;
            Ok(RefreshTurn::Here(Box::new(lock)))
        })
    }
}

/// The advisory lock id of `key`'s refresh: 64 bits of a hash of the connection (a collision
/// would only make two connections' refreshes take turns).
fn refresh_lock_id(key: &ConnKey) -> i64 {
    let digest = Sha256::new()
        .chain_update(b"keyward-refresh\0")
        .chain_update(key.storage_key())
        .finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Held while this process refreshes a connection (see [`PgStore::refresh_turn`]). Dropping it
/// ends the transaction, which releases the lock, before the connection returns to the pool.
pub struct RefreshLock {
    client: Option<Object>,
}

impl Drop for RefreshLock {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        // Not cleanly ended: never hand this connection out again.
                        drop(Object::take(client));
                    }
                });
            }
            // No runtime to end it on: close the connection, which ends it too.
            Err(_) => drop(Object::take(client)),
        }
    }
}

// ---- opening -----------------------------------------------------------------------------

async fn connect(pool: &Pool, place: &Place) -> Result<Object> {
    pool.get()
        .await
        .map_err(|e| place.pool_error("connecting", e))
}

/// The schema version the store is at; `None` when keyward's tables are not there.
async fn schema_version(
    client: &impl deadpool_postgres::GenericClient,
) -> std::result::Result<Option<i32>, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('keyward_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt("SELECT version FROM keyward_schema", &[])
        .await?;
    Ok(Some(row.map_or(0, |r| r.get(0))))
}

/// Bring the schema up to [`SCHEMA_VERSION`] in `tx`, which holds the migration lock. With
/// [`OpenMode::Existing`] a database without keyward's tables is [`Error::NotFound`].
async fn migrate(
    tx: &deadpool_postgres::Transaction<'_>,
    place: &Place,
    mode: OpenMode,
) -> Result<Vec<String>> {
    let err = |e: tokio_postgres::Error| place.error("migrating the schema", &e);
    let mut created = Vec::new();
    let version = match schema_version(tx).await.map_err(err)? {
        Some(version) => version,
        None if mode == OpenMode::Existing => return Err(not_found(place)),
        None => {
            tx.batch_execute(
                "CREATE TABLE keyward_schema (version integer NOT NULL); \
                 INSERT INTO keyward_schema VALUES (0)",
            )
            .await
            .map_err(err)?;
            created.push(format!("tables in {}", place.url));
            0
        }
    };
    if version > SCHEMA_VERSION {
        return Err(Error::vault(format!(
            "the store at {} has schema version {version}, this keyward knows up to \
             {SCHEMA_VERSION}: upgrade keyward",
            place.url
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql).await.map_err(err)?;
        tx.execute("UPDATE keyward_schema SET version = $1", &[&(i as i32 + 1)])
            .await
            .map_err(err)?;
    }
    Ok(created)
}

fn not_found(place: &Place) -> Error {
    Error::NotFound(format!(
        "there is no keyward vault in the PostgreSQL store at {}: run `keyward init` (or \
         import a token with `keyward import PROVIDER`, or copy a vault there with `keyward \
         store copy --to URL`)",
        place.url
    ))
}

/// Take the migration lock in a transaction of `client`. Migrations and the first keyring are
/// written under it; anything else that must not race them (a copy into the store) too.
async fn locked<'c>(
    client: &'c mut Object,
    place: &Place,
) -> Result<deadpool_postgres::Transaction<'c>> {
    let err = |e: tokio_postgres::Error| place.error("taking the migration lock", &e);
    let tx = client.transaction().await.map_err(err)?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&MIGRATION_LOCK.0, &MIGRATION_LOCK.1],
    )
    .await
    .map_err(err)?;
    Ok(tx)
}

/// Migrate, then read (or, creating, make) the keyring and open it with the master key.
async fn open_keyring(
    client: &mut Object,
    place: &Place,
    home: &Home,
    mode: OpenMode,
) -> Result<(MasterKey, Keyring, i64, Vec<String>)> {
    let err = |e: tokio_postgres::Error| place.error("opening the vault", &e);
    let tx = locked(client, place).await?;
    let mut created = migrate(&tx, place, mode).await?;
    let row = tx.query_opt(SELECT_KEYRING, &[]).await.map_err(err)?;
    let stored: Option<(i64, String)> = row.map(|r| (r.get(0), r.get(1)));
    keys::finish_pending_rekey_of(home, stored.as_ref().map(|(_, text)| text.as_str()))?;
    let origin = format!("the keyring in {}", place.url);
    let result = match (stored, MasterKey::load(home)?) {
        (Some((generation, text)), Some(master)) => {
            let keyring = Keyring::unseal(&text, &master, &origin)?;
            (master, keyring, generation, created)
        }
        (Some(_), None) => {
            return Err(Error::MasterKey(format!(
                "the vault in the PostgreSQL store at {} exists but this machine has no master \
                 key: set KEYWARD_MASTER_KEY, or copy master.key from a machine that opens it \
                 into {}",
                place.url,
                home.dir.display()
            )))
        }
        (None, _) if mode == OpenMode::Existing => return Err(not_found(place)),
        (None, master) => {
            let master = match master {
                Some(master) => master,
                None => {
                    home.create()?;
                    let master = MasterKey::create_file(home)?;
                    created.push(format!("master key {}", home.key_file().display()));
                    master
                }
            };
            let keyring = Keyring::generate();
            tx.execute(
                "INSERT INTO keyward_keyring (id, generation, sealed) VALUES (1, 1, $1)",
                &[&keyring.seal(&master)],
            )
            .await
            .map_err(err)?;
            created.push(format!("keyring in {}", place.url));
            (master, keyring, 1, created)
        }
    };
    tx.commit().await.map_err(err)?;
    Ok(result)
}

// ---- listening for the other processes ----------------------------------------------------

/// Keep one connection listening on [`CHANNEL`] for as long as the store is open, connecting
/// again (with a growing pause) whenever it is lost. Each time it listens anew, everything it
/// might have missed is announced (see the module docs).
async fn listen(inner: Arc<Inner>) {
    let mut pause = LISTEN_RETRY_MIN;
    loop {
        match listen_once(&inner).await {
            Ok(()) => pause = LISTEN_RETRY_MIN,
            Err(e) => tracing::debug!("listening on the store: {e}"),
        }
        inner.listening.store(false, Ordering::SeqCst);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LISTEN_RETRY_MAX);
    }
}

/// One listening connection, until it is lost. `Ok` when it had been listening.
async fn listen_once(inner: &Arc<Inner>) -> std::result::Result<(), String> {
    let tls = inner.url.tls().map_err(|e| e.to_string())?;
    let (client, mut connection) = inner
        .url
        .config
        .connect(tls)
        .await
        .map_err(|e| e.to_string())?;
    // The connection is driven by a task of its own, so that the queries below (LISTEN, the
    // resync) get their answers while notifications queue up for this loop. It ends when the
    // connection does: lost, or closed because `client` is dropped with this function.
    let (heard, mut notifications) = tokio::sync::mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if heard.send(n.payload().to_string()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("the store's listening connection failed: {e}");
                    break;
                }
            }
        }
    });
    let _driver = AbortOnDrop(driver);
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| e.to_string())?;
    inner.listening.store(true, Ordering::SeqCst);
    resync(inner, &client).await;
    while let Some(payload) = notifications.recv().await {
        apply(inner, &payload).await;
    }
    Ok(())
}

/// Ends a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Announce everything a process that was not listening may have missed: every connection
/// ever stored (removed ones too: their rows stay), a users change, the keyring.
async fn resync(inner: &Arc<Inner>, client: &tokio_postgres::Client) {
    super::bump(&inner.users_generation);
    if let Ok(rows) = client
        .query(
            "SELECT user_name, provider, account FROM keyward_connections",
            &[],
        )
        .await
    {
        for row in rows {
            let _ = inner.changes.send(key_of(&row));
        }
    }
    if let Ok(row) = client.query_one(SELECT_KEYRING, &[]).await {
        adopt_in_listener(inner, row.get(0), row.get(1));
    }
}

/// One notification: `ORIGIN c USER/PROVIDER/ACCOUNT`, `ORIGIN u` or `ORIGIN k`. This process's
/// own were applied when it made them.
async fn apply(inner: &Arc<Inner>, payload: &str) {
    let mut parts = payload.splitn(3, ' ');
    let (Some(origin), Some(kind)) = (parts.next(), parts.next()) else {
        return;
    };
    if origin == inner.origin {
        return;
    }
    match (kind, parts.next()) {
        ("c", Some(key)) => {
            let mut names = key.split('/');
            if let (Some(user), Some(provider), Some(account), None) =
                (names.next(), names.next(), names.next(), names.next())
            {
                let _ = inner.changes.send(ConnKey {
                    user: user.into(),
                    provider: provider.into(),
                    account: account.into(),
                });
            }
        }
        ("u", _) => super::bump(&inner.users_generation),
        ("k", _) => {
            let Ok(client) = inner.pool.get().await else {
                return;
            };
            if let Ok(row) = client.query_one(SELECT_KEYRING, &[]).await {
                adopt_in_listener(inner, row.get(0), row.get(1));
            }
        }
        _ => {}
    }
}

/// Take the keyring text read at `generation` as this process's data keys, unless they are
/// those already or newer. A keyring this process's master key does not open (another process
/// re-wrapped it under a new master key) is an error naming both keys.
fn adopt(inner: &Inner, generation: i64, text: String) -> Result<()> {
    if inner.held.read().expect("keyring lock").generation >= generation {
        return Ok(());
    }
    let keyring = {
        let master = inner.master.read().expect("master lock");
        Keyring::unseal(&text, &master, &format!("the keyring in {}", inner.url))
    }
    .map_err(|e| match e {
        Error::MasterKey(why) => Error::MasterKey(format!(
            "{why}. Another keyward process re-wrapped the keyring of the store at {} under a \
             new master key: give this one the new key and restart it",
            inner.url
        )),
        other => other,
    })?;
    let mut held = inner.held.write().expect("keyring lock");
    if generation > held.generation {
        *held = Held {
            keyring,
            generation,
        };
    }
    Ok(())
}

/// The listener's keyring reload: a keyring this process cannot open is left for the next
/// write to report (it fails there, naming both master keys), and said in the log.
fn adopt_in_listener(inner: &Inner, generation: i64, text: String) {
    if let Err(e) = adopt(inner, generation, text) {
        tracing::warn!("the store's keyring changed and does not open here: {e}");
    }
}

// ---- copying (see `super::transfer`) --------------------------------------------------------

/// Read the whole store at `url` in one snapshot, without opening anything (no master key).
pub async fn export(url: &StoreUrl) -> Result<super::transfer::Dump> {
    use super::transfer::{Dump, RawConnection};
    let place = Place::of(url);
    let doing = "reading the store";
    let pool = url.pool()?;
    let mut client = connect(&pool, &place).await?;
    let err = |e: tokio_postgres::Error| place.error(doing, &e);
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(err)?;
    if schema_version(&tx).await.map_err(err)?.is_none() {
        return Err(not_found(&place));
    }
    let keyring = tx
        .query_opt("SELECT sealed FROM keyward_keyring WHERE id = 1", &[])
        .await
        .map_err(err)?
        .map(|row| row.get(0));
    let mut dump = Dump {
        keyring,
        ..Dump::default()
    };
    for row in tx
        .query(
            "SELECT user_name, provider, account, latest, version, sealed, last_used, \
             last_exchange FROM keyward_connections ORDER BY user_name, provider, account",
            &[],
        )
        .await
        .map_err(err)?
    {
        let version: Option<i64> = row.get(4);
        let sealed: Option<Vec<u8>> = row.get(5);
        dump.connections.push(RawConnection {
            key: key_of(&row),
            latest: to_u64(row.get(3)),
            sealed: version.zip(sealed).map(|(v, blob)| (to_u64(v), blob)),
            last_used: row.get(6),
            last_exchange: row.get(7),
        });
    }
    for row in tx
        .query("SELECT key, value FROM keyward_users ORDER BY key", &[])
        .await
        .map_err(err)?
    {
        dump.users.push((row.get(0), row.get(1)));
    }
    for row in tx
        .query("SELECT seq, entry FROM keyward_audit ORDER BY seq", &[])
        .await
        .map_err(err)?
    {
        dump.audit.push((to_u64(row.get(0)), row.get(1)));
    }
    tx.commit().await.map_err(err)?;
    Ok(dump)
}

/// Write a whole vault into the store at `url` in one transaction (creating the schema when
/// needed). A store that holds anything is refused unless `force`, which replaces it. Processes
/// listening on it hear of every connection, the users and the keyring.
pub async fn import(url: &StoreUrl, dump: &super::transfer::Dump, force: bool) -> Result<()> {
    let place = Place::of(url);
    let doing = "writing the store";
    let pool = url.pool()?;
    let mut client = connect(&pool, &place).await?;
    let err = |e: tokio_postgres::Error| place.error(doing, &e);
    let tx = locked(&mut client, &place).await?;
    migrate(&tx, &place, OpenMode::Create).await?;
    let occupied: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM keyward_keyring) \
             OR EXISTS (SELECT 1 FROM keyward_connections) \
             OR EXISTS (SELECT 1 FROM keyward_users) \
             OR EXISTS (SELECT 1 FROM keyward_audit)",
            &[],
        )
        .await
        .map_err(err)?
        .get(0);
    if occupied && !force {
        return Err(super::transfer::not_empty(&format!(
            "the PostgreSQL store at {url}"
        )));
    }
    // Processes still running on a replaced store must see the new keyring as newer.
    let generation: i64 = tx
        .query_one(
            "SELECT coalesce(max(generation), 0) + 1 FROM keyward_keyring",
            &[],
        )
        .await
        .map_err(err)?
        .get(0);
    tx.batch_execute(
        "DELETE FROM keyward_keyring; DELETE FROM keyward_connections; \
         DELETE FROM keyward_users; DELETE FROM keyward_audit",
    )
    .await
    .map_err(err)?;
    if let Some(text) = &dump.keyring {
        tx.execute(
            "INSERT INTO keyward_keyring (id, generation, sealed) VALUES (1, $1, $2)",
            &[&generation, text],
        )
        .await
        .map_err(err)?;
    }
    let insert = tx
        .prepare(
            "INSERT INTO keyward_connections \
             (user_name, provider, account, latest, version, sealed, last_used, \
             last_exchange) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await
        .map_err(err)?;
    for c in &dump.connections {
        let version = c.sealed.as_ref().map(|(v, _)| to_i64(*v));
        let blob = c.sealed.as_ref().map(|(_, b)| b.as_slice());
        tx.execute(
            &insert,
            &[
                &c.key.user,
                &c.key.provider,
                &c.key.account,
                &to_i64(c.latest),
                &version,
                &blob,
                &c.last_used,
                &c.last_exchange,
            ],
        )
        .await
        .map_err(err)?;
    }
    for (k, v) in &dump.users {
        tx.execute(
            "INSERT INTO keyward_users (key, value) VALUES ($1, $2)",
            &[k, v],
        )
        .await
        .map_err(err)?;
    }
    let insert = tx
        .prepare("INSERT INTO keyward_audit (seq, entry) VALUES ($1, $2)")
        .await
        .map_err(err)?;
    for (seq, entry) in &dump.audit {
        tx.execute(&insert, &[&to_i64(*seq), entry])
            .await
            .map_err(err)?;
    }
    // New entries continue after the copied ones.
    tx.execute(
        "SELECT setval(pg_get_serial_sequence('keyward_audit', 'seq'), \
         coalesce((SELECT max(seq) FROM keyward_audit), 0) + 1, false)",
        &[],
    )
    .await
    .map_err(err)?;
    for what in ["k".to_string(), "u".to_string()]
        .into_iter()
        .chain(dump.connections.iter().map(|c| format!("c {}", c.key)))
    {
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &format!("copy {what}")],
        )
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}
