//! One vault, many processes.
//!
//! sled admits one process per database, yet a user typically runs two or three MCP clients
//! (each spawning its own `keyward serve`) plus the CLI. The shape chosen here is *first process
//! becomes the owner, the next one takes over when it exits*:
//!
//! - whoever opens the database (and so holds sled's file lock) is the **owner**. It listens on
//!   `keyward.sock` in the home folder (the folder is 0700, the socket 0600, and every peer's
//!   uid is checked with `SO_PEERCRED`) and executes the other processes' vault operations;
//! - every other process finds the lock taken and relays each operation over the socket —
//!   connection reads and writes, audit appends, key rotation, and *refreshes*: only the owner
//!   refreshes, so the single-flight guarantee of [`crate::oauth::refresh`] spans processes;
//! - when the owner exits or is killed, its socket stops answering and its lock is released by
//!   the kernel; the next operation of any other process takes the lock and becomes the owner
//!   (or connects to whoever did), then retries the operation once. A stale socket file left by
//!   a killed owner is simply replaced by the new owner, which holds the lock.
//!
//! There is no daemon to install or to forget running, and a lone CLI command works exactly as
//! before. The protocol is length-prefixed JSON frames, versioned by a `hello` exchange: a peer
//! speaking another version gets a clear error instead of a hang. Changes to connections are
//! pushed to every process that subscribed, so each running server can tell its client that the
//! tool list changed.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::store::Store;
use super::{AuditEntry, ConnKey, Connection, Listed, TokenRecord, Vault};
use crate::config::Home;
use crate::error::{Error, Result};
use crate::exec::ToolError;
use crate::secret::SecretString;

/// Bumped whenever a request or answer changes shape.
pub const PROTOCOL_VERSION: u32 = 2;
const MAX_FRAME: usize = 16 * 1024 * 1024;

pub fn socket_path(home: &Home) -> PathBuf {
    home.dir.join("keyward.sock")
}

/// What a non-owner asks the owner to do.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Hello {
        protocol: u32,
        pid: u32,
    },
    Get {
        key: ConnKey,
    },
    Put {
        key: ConnKey,
        expected: Option<u64>,
        record: TokenRecord,
    },
    Remove {
        key: ConnKey,
    },
    Touch {
        key: ConnKey,
    },
    List {
        user: Option<String>,
    },
    Keys,
    Audit {
        entry: AuditEntry,
    },
    AuditEntries {
        after: u64,
        limit: Option<usize>,
    },
    Flush,
    CurrentKeyId,
    RotateKey,
    Rekey {
        new_key_file: Option<PathBuf>,
    },
    UsersGet {
        key: Vec<u8>,
    },
    UsersInsert {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    UsersRemove {
        key: Vec<u8>,
    },
    UsersScan {
        prefix: Vec<u8>,
    },
    Refresh {
        key: ConnKey,
        seen_version: u64,
        force: bool,
        budget_ms: u64,
    },
    /// Turn this connection into a stream of changed connection keys.
    Subscribe,
}

/// One frame of a subscription stream (`Request::Subscribe`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Notice {
    /// This connection was added, changed or removed.
    Connection(ConnKey),
    /// A user (API key) was added or removed: forget cached keys.
    Users,
}

/// An [`Error`] on the wire. Messages never hold secrets (see [`crate::error`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct WireError {
    kind: String,
    message: String,
    #[serde(default)]
    // Boxed: the error travels inside every `Result` the relay returns; keep that small.
    record: Option<Box<WireRecordRef>>,
}

/// Which record failed to open, for [`Error::RecordCorrupt`] across the socket.
#[derive(Debug, Serialize, Deserialize)]
struct WireRecordRef {
    record: String,
    provider: String,
    user: String,
    account: String,
    reason: String,
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> WireError {
        let (kind, record) = match e {
            Error::Usage(_) => ("usage", None),
            Error::Config(_) => ("config", None),
            Error::MasterKey(_) => ("master_key", None),
            Error::Conflict(_) => ("conflict", None),
            Error::NotFound(_) => ("not_found", None),
            Error::RecordCorrupt {
                record,
                provider,
                user,
                account,
                reason,
            } => (
                "record",
                Some(Box::new(WireRecordRef {
                    record: record.clone(),
                    provider: provider.clone(),
                    user: user.clone(),
                    account: account.clone(),
                    reason: reason.clone(),
                })),
            ),
            _ => ("other", None),
        };
        let message = match e {
            Error::Usage(m)
            | Error::MasterKey(m)
            | Error::Conflict(m)
            | Error::NotFound(m)
            | Error::Vault(m)
            | Error::Other(m)
            | Error::Busy(m) => m.clone(),
            Error::Config(m) => m.clone(),
            other => other.to_string(),
        };
        WireError {
            kind: kind.into(),
            message,
            record,
        }
    }
}

impl From<WireError> for Error {
    fn from(w: WireError) -> Error {
        match (w.kind.as_str(), w.record.map(|r| *r)) {
            (
                "record",
                Some(WireRecordRef {
                    record,
                    provider,
                    user,
                    account,
                    reason,
                }),
            ) => Error::RecordCorrupt {
                record,
                provider,
                user,
                account,
                reason,
            },
            ("usage", _) => Error::Usage(w.message),
            ("config", _) => Error::Config(w.message),
            ("master_key", _) => Error::MasterKey(w.message),
            ("conflict", _) => Error::Conflict(w.message),
            ("not_found", _) => Error::NotFound(w.message),
            _ => Error::Other(w.message),
        }
    }
}

/// One row of `list` on the wire.
#[derive(Serialize, Deserialize)]
pub enum WireListed {
    Ok(Connection, Option<i64>),
    Err(WireError),
}

impl From<Listed> for WireListed {
    fn from(row: Listed) -> WireListed {
        match row {
            Ok((c, last)) => WireListed::Ok(c, last),
            Err(e) => WireListed::Err(WireError::from(&e)),
        }
    }
}

impl WireListed {
    pub fn into_listed(self) -> Listed {
        match self {
            WireListed::Ok(c, last) => Ok((c, last)),
            WireListed::Err(e) => Err(e.into()),
        }
    }
}

/// The owner's answer to a refresh request: the token to use and its version, `None` when
/// there is nothing better than what the caller has, or the tool error.
pub type RefreshAnswer = std::result::Result<Option<(SecretString, u64)>, ToolError>;

fn write_frame(stream: &mut UnixStream, value: &impl Serialize) -> std::io::Result<()> {
    let bytes = zeroize::Zeroizing::new(serde_json::to_vec(value).map_err(std::io::Error::other)?);
    let mut frame = zeroize::Zeroizing::new(Vec::with_capacity(4 + bytes.len()));
    frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bytes);
    stream.write_all(&frame)
}

fn read_frame<T: DeserializeOwned>(stream: &mut UnixStream) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes is too large"
        )));
    }
    let mut buf = zeroize::Zeroizing::new(vec![0u8; len]);
    stream.read_exact(&mut buf)?;
    serde_json::from_slice(&buf).map_err(std::io::Error::other)
}

// ---- the owner -------------------------------------------------------------------------------

/// Start serving `store` to the other local processes. Called by whoever just opened the
/// database; the listener lives as long as the process.
pub(crate) fn serve(vault: &Vault, _store: Arc<Store>) -> Result<()> {
    let path = socket_path(vault.home());
    // We hold sled's lock, so any socket file here belongs to an owner that is gone.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| Error::io(format!("listening on {}", path.display()), e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("setting mode 0600 on {}", path.display()), e))?;
    let weak = vault.downgrade();
    std::thread::Builder::new()
        .name("keyward-owner".into())
        .spawn(move || {
            // Threads hold the vault weakly: dropping the last handle closes the database (and
            // releases the lock) even while peers are connected.
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if weak.strong_count() == 0 {
                    break;
                }
                let weak = weak.clone();
                let _ = std::thread::Builder::new()
                    .name("keyward-peer".into())
                    .spawn(move || serve_peer(weak, stream));
            }
        })
        .map_err(|e| Error::io("starting the owner thread", e))?;
    Ok(())
}

/// Close a refused peer's connection only once it has read our answer: closing at once would
/// fail the hello it is about to send (EPIPE) and it would never see why it was refused. Whatever
/// it sends is discarded unread; the wait is bounded.
fn linger(mut stream: UnixStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut sink = [0u8; 4096];
    let mut budget: usize = 64 * 1024;
    while budget > 0 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => budget = budget.saturating_sub(n),
        }
    }
}

/// The uid a peer runs as, from the kernel (`SO_PEERCRED`), not from anything it says.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    rustix::net::sockopt::socket_peercred(stream)
        .ok()
        .map(|cred| cred.uid.as_raw())
}

fn serve_peer(weak: std::sync::Weak<super::Inner>, mut stream: UnixStream) {
    let me = rustix::process::getuid().as_raw();
    if peer_uid(&stream) != Some(me) {
        tracing::warn!("refused a vault connection from another user");
        let _ = write_frame(
            &mut stream,
            &Err::<(), _>(WireError {
                kind: "other".into(),
                message: "this keyward vault belongs to another user".into(),
                record: None,
            }),
        );
        linger(stream);
        return;
    }
    // The first frame must be a hello with our protocol version.
    match read_frame::<Request>(&mut stream) {
        Ok(Request::Hello { protocol, .. }) if protocol == PROTOCOL_VERSION => {
            let hello =
                serde_json::json!({ "protocol": PROTOCOL_VERSION, "pid": std::process::id() });
            if write_frame(&mut stream, &Ok::<_, WireError>(hello)).is_err() {
                return;
            }
        }
        Ok(Request::Hello { protocol, .. }) => {
            let _ = write_frame(&mut stream, &Err::<(), _>(WireError {
                kind: "other".into(),
                message: format!(
                    "protocol mismatch: the keyward process that owns this vault (pid {}) speaks vault protocol v{PROTOCOL_VERSION}, this one v{protocol}; restart the older keyward (or its MCP client) so both run the same version",
                    std::process::id()
                ),
                record: None,
            }));
            return;
        }
        _ => return,
    }
    loop {
        let request = match read_frame::<Request>(&mut stream) {
            Ok(request) => request,
            Err(_) => return, // the peer went away
        };
        let Some(inner) = weak.upgrade() else { return };
        let vault = Vault::from_inner(inner);
        let super::Backend::Local(store) = vault.backend() else {
            return;
        };
        if let Request::Subscribe = request {
            let rx = vault.changes_sender().subscribe();
            let users = vault.users_sender().subscribe();
            drop((vault, store));
            stream_changes(rx, users, stream);
            return;
        }
        let answer = execute(&vault, &store, request);
        drop((vault, store));
        if write_frame(&mut stream, &answer).is_err() {
            return;
        }
    }
}

/// Push connection and users changes to a subscribed peer, in the order they happen. The
/// channels need no runtime, so a plain executor on this peer's thread waits on both.
fn stream_changes(
    mut rx: tokio::sync::broadcast::Receiver<ConnKey>,
    mut users: tokio::sync::watch::Receiver<u64>,
    mut stream: UnixStream,
) {
    use tokio::sync::broadcast::error::RecvError;
    // First, a users notice: the peer may have missed changes before it subscribed, and once it
    // reads this one it knows every later change reaches it.
    if write_frame(&mut stream, &Notice::Users).is_err() {
        return;
    }
    futures::executor::block_on(async move {
        loop {
            let notice = tokio::select! {
                biased;
                changed = users.changed() => match changed {
                    Ok(()) => Notice::Users,
                    Err(_) => return,
                },
                key = rx.recv() => match key {
                    Ok(key) => Notice::Connection(key),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                },
            };
            if write_frame(&mut stream, &notice).is_err() {
                return;
            }
        }
    })
}

fn to_answer<T: Serialize>(result: Result<T>) -> std::result::Result<Value, WireError> {
    match result {
        Ok(v) => serde_json::to_value(v).map_err(|e| WireError {
            kind: "other".into(),
            message: e.to_string(),
            record: None,
        }),
        Err(e) => Err(WireError::from(&e)),
    }
}

fn execute(
    vault: &Vault,
    store: &Store,
    request: Request,
) -> std::result::Result<Value, WireError> {
    match request {
        Request::Hello { .. } | Request::Subscribe => to_answer(Ok(())),
        Request::Get { key } => to_answer(store.get(&key)),
        Request::Put {
            key,
            expected,
            record,
        } => to_answer(store.put(&key, expected, &record)),
        Request::Remove { key } => to_answer(store.remove(&key)),
        Request::Touch { key } => {
            store.touch(&key);
            to_answer(Ok(()))
        }
        Request::List { user } => to_answer(
            store
                .list(user.as_deref())
                .map(|rows| rows.into_iter().map(WireListed::from).collect::<Vec<_>>()),
        ),
        Request::Keys => to_answer(store.keys()),
        Request::Audit { entry } => {
            store.audit(&entry);
            to_answer(Ok(()))
        }
        Request::AuditEntries { after, limit } => to_answer(store.audit_entries(after, limit)),
        Request::Flush => to_answer(store.flush()),
        Request::CurrentKeyId => to_answer(Ok(store.current_key_id())),
        Request::RotateKey => to_answer(store.rotate_key(|_, _| {})),
        Request::Rekey { new_key_file } => to_answer(store.rekey(new_key_file.as_deref())),
        Request::UsersGet { key } => to_answer(store.users_get(&key)),
        Request::UsersInsert { key, value } => {
            let result = store.users_insert(&key, &value);
            vault.users_changed();
            to_answer(result)
        }
        Request::UsersRemove { key } => {
            let result = store.users_remove(&key);
            vault.users_changed();
            to_answer(result)
        }
        Request::UsersScan { prefix } => to_answer(store.users_scan(&prefix)),
        Request::Refresh {
            key,
            seen_version,
            force,
            budget_ms,
        } => {
            let answer: RefreshAnswer = owner_refresh(
                vault,
                &key,
                seen_version,
                force,
                Duration::from_millis(budget_ms),
            );
            to_answer(Ok(answer))
        }
    }
}

/// The owner's refresher for other processes' requests: built on first use from the home's
/// config and catalog, with a small runtime of its own (peer threads are plain threads).
fn owner_refresh(
    vault: &Vault,
    key: &ConnKey,
    seen_version: u64,
    force: bool,
    budget: Duration,
) -> RefreshAnswer {
    static OWNER: OnceLock<
        std::result::Result<(tokio::runtime::Runtime, crate::oauth::refresh::Refresher), String>,
    > = OnceLock::new();
    let owner = OWNER.get_or_init(|| {
        let build = || -> Result<_> {
            let config = crate::config::Config::load(vault.home())?;
            let catalog = crate::catalog::Catalog::load(&config.tools_dirs, &config.providers)?;
            let upstream = crate::exec::client::Upstream::new(&config.executor)?;
            let refresher = crate::oauth::refresh::Refresher::new(
                Arc::new(catalog),
                Arc::new(vault.clone()),
                &config,
                upstream.http().clone(),
            );
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("keyward-refresh")
                .enable_all()
                .build()
                .map_err(|e| Error::io("starting the refresh runtime", e))?;
            Ok((runtime, refresher))
        };
        build().map_err(|e| e.to_string())
    });
    match owner {
        Ok((runtime, refresher)) => {
            let deadline = std::time::Instant::now() + budget;
            runtime.block_on(refresher.refresh_here(key, seen_version, force, deadline))
        }
        Err(e) => Err(ToolError::new(format!(
            "the vault owner cannot refresh tokens: {e}"
        ))),
    }
}

// ---- the other processes ----------------------------------------------------------------------

/// A connection pool to the owner.
pub struct RemoteClient {
    path: PathBuf,
    idle: Mutex<Vec<UnixStream>>,
}

impl RemoteClient {
    /// Connect and say hello; fails fast when nobody listens or the owner speaks another
    /// protocol version.
    pub fn connect(home: &Home) -> Result<RemoteClient> {
        let path = socket_path(home);
        let client = RemoteClient {
            path,
            idle: Mutex::new(Vec::new()),
        };
        let stream = client.open_stream()?;
        crate::sync::lock(&client.idle).push(stream);
        Ok(client)
    }

    fn open_stream(&self) -> Result<UnixStream> {
        let mut stream = UnixStream::connect(&self.path)
            .map_err(|e| Error::io(format!("connecting to {}", self.path.display()), e))?;
        // Bounded waits: a hung or mismatched owner is an error, not a hang.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        write_frame(
            &mut stream,
            &Request::Hello {
                protocol: PROTOCOL_VERSION,
                pid: std::process::id(),
            },
        )
        .map_err(|e| Error::io("greeting the vault owner", e))?;
        let hello: std::result::Result<Value, WireError> =
            read_frame(&mut stream).map_err(|e| Error::io("greeting the vault owner", e))?;
        if let Err(e) = hello {
            return Err(Error::Vault(e.message));
        }
        // Refreshes may wait on the provider for the whole call budget.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(180)));
        Ok(stream)
    }

    /// Send one request. The outer error means the owner could not be reached (take over or
    /// reconnect); the inner one is the operation's own result.
    pub fn call<T: DeserializeOwned>(&self, request: &Request) -> std::io::Result<Result<T>> {
        let stream = crate::sync::lock(&self.idle).pop();
        let mut stream = match stream {
            Some(s) => s,
            None => self
                .open_stream()
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        };
        write_frame(&mut stream, request)?;
        let answer: std::result::Result<Value, WireError> = read_frame(&mut stream)?;
        crate::sync::lock(&self.idle).push(stream);
        Ok(match answer {
            Ok(value) => serde_json::from_value(value)
                .map_err(|e| Error::other(format!("unexpected answer from the vault owner: {e}"))),
            Err(e) => Err(e.into()),
        })
    }

    fn subscribe(&self) -> Result<UnixStream> {
        let mut stream = self.open_stream()?;
        let _ = stream.set_read_timeout(None);
        write_frame(&mut stream, &Request::Subscribe)
            .map_err(|e| Error::io("subscribing to vault changes", e))?;
        Ok(stream)
    }
}

/// In a non-owner: forward the owner's change notifications into this process's channel. When
/// the owner goes away, recover (take over or reconnect). A recovery that reconnects to a new
/// owner starts a fresh relay itself (see [`Vault::recover`]), so this thread then ends: there is
/// never more than one relay per process.
pub(crate) fn relay_changes(vault: &Vault) {
    let weak = vault.downgrade();
    let _ = std::thread::Builder::new()
        .name("keyward-changes".into())
        .spawn(move || loop {
            let Some(inner) = weak.upgrade() else { return };
            let vault = Vault::from_inner(inner);
            let super::Backend::Remote(client) = vault.backend() else {
                return;
            };
            if let Ok(mut stream) = client.subscribe() {
                let sender = vault.changes_sender().clone();
                let users = vault.users_sender().clone();
                // Do not keep the vault alive while waiting: the process may be done with it.
                drop(vault);
                while let Ok(notice) = read_frame::<Notice>(&mut stream) {
                    match notice {
                        Notice::Connection(key) => {
                            let _ = sender.send(key);
                        }
                        Notice::Users => super::bump(&users),
                    }
                }
            } else {
                drop(vault);
            }
            // The owner is gone.
            let Some(inner) = weak.upgrade() else { return };
            let vault = Vault::from_inner(inner);
            match vault.recover(&client) {
                Ok(()) if vault.is_owner() => {
                    // Now the owner: local writes reach the channel directly. Tell subscribers
                    // that the world may have changed while nobody owned it.
                    if let Ok(keys) = vault.keys() {
                        for key in keys {
                            let _ = vault.changes_sender().send(key);
                        }
                    }
                    return;
                }
                Ok(()) => return,
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        });
}
