//! One vault, many processes.
//!
//! sled admits one process per database, yet a user typically runs two or three MCP clients
//! (each spawning its own `keyward serve`) plus the CLI. The shape chosen here is *first process
//! becomes the owner, the next one takes over when it exits*:
//!
//! - whoever takes the owner lock (`keyward.lock`, see [`super::store`]) opens the database and
//!   is the **owner**. It listens on `keyward.sock` in the home folder (the folder is 0700, the
//!   socket 0600, and every peer's uid is checked with `SO_PEERCRED`; clients check the owner's
//!   uid the same way before they send anything) and executes the other processes' operations;
//! - every other process finds the lock taken and relays each operation over the socket —
//!   connection reads and writes, audit appends, key rotation, and *refreshes*: only the owner
//!   refreshes, so the single-flight guarantee of the refresher spans processes. The vault
//!   cannot refresh by itself (that takes the provider's token endpoint and credentials): the
//!   owner runs the [`PeerRefresh`] hook its composition root handed in when it opened the
//!   vault;
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
//!
//! The owner bounds what a peer can cost it: at most [`MAX_PEERS`] peers, frames of at most
//! [`MAX_FRAME`] bytes read in chunks as they arrive (a peer announcing 16 MiB and stalling costs
//! what it sent, and is cut off), and an idle connection closed after a minute. Clients keep a
//! small pool of connections, reuse one only while the owner keeps it open (the hello says for
//! how long), and resend on a fresh connection when a reused one turns out closed: an idle
//! connection closed by the owner is never mistaken for a dead owner, nor is an answer too large
//! for a frame (the owner replaces it by an error; the audit log travels in pages).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::store::Store;
use super::{ConnKey, Vault};
use crate::config::{check_trusted, Fix, Home};
use crate::error::{Error, Result};
use crate::secret::SecretString;

/// Bumped whenever a request or answer changes shape (2: the audit log is read in pages;
/// 3: subscriptions carry users changes as well as connection changes).
pub const PROTOCOL_VERSION: u32 = 3;
/// The largest frame either side sends or accepts.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// Frames are read in pieces of at most this size, so that a peer announcing a large frame
/// costs only what it actually sends.
const READ_CHUNK: usize = 64 * 1024;
/// How many peers the owner serves at once; the next one is refused with a clear error.
pub const MAX_PEERS: usize = 128;
/// How many connections one process keeps to the owner; more concurrent calls wait for one.
const MAX_STREAMS: usize = 16;

/// The owner's limits on one peer. `idle`: how long a connection may wait between requests
/// before the owner closes it (clients reopen closed idle connections by themselves); `frame`:
/// how long a frame may take to arrive once it has started.
#[derive(Debug, Clone, Copy)]
struct PeerLimits {
    idle: Duration,
    frame: Duration,
}

impl PeerLimits {
    /// `KEYWARD_TEST_PEER_TIMEOUT_MS` shortens both, so tests see an idle or stalled peer cut
    /// off without waiting a minute. It only closes connections sooner; clients reconnect.
    /// Read only in debug builds, like the other fault injection.
    fn get() -> PeerLimits {
        let limits = PeerLimits {
            idle: Duration::from_secs(60),
            frame: Duration::from_secs(10),
        };
        let shorter = cfg!(debug_assertions)
            .then(|| std::env::var("KEYWARD_TEST_PEER_TIMEOUT_MS").ok())
            .flatten()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis);
        match shorter {
            Some(t) => PeerLimits {
                idle: limits.idle.min(t),
                frame: limits.frame.min(t),
            },
            None => limits,
        }
    }
}

pub fn socket_path(home: &Home) -> PathBuf {
    home.dir.join("keyward.sock")
}

use super::storage::dispatch;
pub use super::storage::Request;

/// The owner's answer to one request, as it travels.
pub(crate) type Answer = std::result::Result<Value, Error>;

/// One frame of a subscription stream (`Request::Subscribe`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Notice {
    /// This connection was added, changed or removed.
    Connection(ConnKey),
    /// A user (API key) was added or removed: forget cached keys.
    Users,
}

/// An [`Error`] on the wire: its serde mirror, variant for variant, so that an error the owner
/// hits is the same typed error in the process that asked, and nobody decides anything on its
/// text. Messages never hold secrets (see [`crate::error`]).
///
/// The JSON keeps the shape of protocol 3 (`{"kind", "message", "record"?}`): a peer of another
/// version can still read why it was refused.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireError {
    Usage {
        message: String,
    },
    Config {
        message: String,
    },
    /// An I/O error cannot travel; what it said and where does.
    Io {
        message: String,
        #[serde(default)]
        error: String,
    },
    MasterKey {
        message: String,
    },
    Vault {
        message: String,
    },
    #[serde(rename = "record")]
    RecordCorrupt {
        /// The error as text, for readers that only show it.
        message: String,
        record: WireRecordRef,
    },
    Conflict {
        message: String,
    },
    NotFound {
        message: String,
    },
    Busy {
        message: String,
    },
    OwnerGone {
        message: String,
    },
    Untrusted {
        message: String,
    },
    Unavailable {
        message: String,
    },
    Other {
        message: String,
    },
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
        match e {
            Error::Usage(m) => WireError::Usage { message: m.clone() },
            Error::Config(m) => WireError::Config { message: m.clone() },
            Error::Io { context, source } => WireError::Io {
                message: context.clone(),
                error: source.to_string(),
            },
            Error::MasterKey(m) => WireError::MasterKey { message: m.clone() },
            Error::Vault(m) => WireError::Vault { message: m.clone() },
            Error::RecordCorrupt {
                record,
                provider,
                user,
                account,
                reason,
            } => WireError::RecordCorrupt {
                message: e.to_string(),
                record: WireRecordRef {
                    record: record.clone(),
                    provider: provider.clone(),
                    user: user.clone(),
                    account: account.clone(),
                    reason: reason.clone(),
                },
            },
            Error::Conflict(m) => WireError::Conflict { message: m.clone() },
            Error::NotFound(m) => WireError::NotFound { message: m.clone() },
            Error::Busy(m) => WireError::Busy { message: m.clone() },
            Error::OwnerGone(m) => WireError::OwnerGone { message: m.clone() },
            Error::Untrusted(m) => WireError::Untrusted { message: m.clone() },
            Error::Unavailable(m) => WireError::Unavailable { message: m.clone() },
            Error::Other(m) => WireError::Other { message: m.clone() },
        }
    }
}

impl From<WireError> for Error {
    fn from(w: WireError) -> Error {
        match w {
            WireError::Usage { message } => Error::Usage(message),
            WireError::Config { message } => Error::Config(message),
            WireError::Io { message, error } => Error::io(message, std::io::Error::other(error)),
            WireError::MasterKey { message } => Error::MasterKey(message),
            WireError::Vault { message } => Error::Vault(message),
            WireError::RecordCorrupt {
                record:
                    WireRecordRef {
                        record,
                        provider,
                        user,
                        account,
                        reason,
                    },
                ..
            } => Error::RecordCorrupt {
                record,
                provider,
                user,
                account,
                reason,
            },
            WireError::Conflict { message } => Error::Conflict(message),
            WireError::NotFound { message } => Error::NotFound(message),
            WireError::Busy { message } => Error::Busy(message),
            WireError::OwnerGone { message } => Error::OwnerGone(message),
            WireError::Untrusted { message } => Error::Untrusted(message),
            WireError::Unavailable { message } => Error::Unavailable(message),
            WireError::Other { message } => Error::Other(message),
        }
    }
}

/// Errors travel as their wire mirror, so that results holding one (an answer, a `list` row)
/// travel as they are.
impl Serialize for Error {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        WireError::from(self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Error {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Error, D::Error> {
        /// A kind this build does not know (a newer peer's) still carries its message.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            Known(WireError),
            Unknown { message: String },
        }
        Ok(match Any::deserialize(d)? {
            Any::Known(w) => w.into(),
            Any::Unknown { message } => Error::Other(message),
        })
    }
}

/// The owner's answer to a refresh request: the token to use and its version, `None` when
/// there is nothing better than what the caller has, or why it failed.
pub type RefreshAnswer = std::result::Result<Option<(SecretString, u64)>, RefreshFailure>;

/// Why the owner could not refresh a connection for another process. The vault knows no tool
/// errors; the refresher turns this into one (same fields, so the wire form is the tool error's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshFailure {
    pub message: String,
    pub hint: Option<String>,
    /// The same call may succeed later (the grant is alive).
    pub retryable: bool,
    pub status: Option<u16>,
}

impl RefreshFailure {
    pub fn retryable(message: impl Into<String>, hint: impl Into<String>) -> RefreshFailure {
        RefreshFailure {
            message: message.into(),
            hint: Some(hint.into()),
            retryable: true,
            status: None,
        }
    }
}

/// How the owner refreshes a connection when another process asks it to.
///
/// The vault relays the request but cannot refresh: that needs the provider's token endpoint,
/// client credentials and the refresher's single-flight rule, which live above it. The
/// composition root (the server, the CLI) hands one in with [`Vault::open_with`]; it is
/// given the vault to refresh in on every call and must not hold one itself, so that dropping the
/// last handle still closes the database and lets go of the owner lock.
pub trait PeerRefresh: Send + Sync {
    /// Refresh `key` (whose caller last saw `seen_version`) within `budget`. Runs on an owner
    /// thread, not on a runtime.
    fn refresh(
        &self,
        vault: &Vault,
        key: &ConnKey,
        seen_version: u64,
        force: bool,
        budget: Duration,
    ) -> RefreshAnswer;
}

fn write_frame(stream: &mut UnixStream, value: &impl Serialize) -> std::io::Result<()> {
    let bytes = zeroize::Zeroizing::new(serde_json::to_vec(value).map_err(std::io::Error::other)?);
    if bytes.len() > MAX_FRAME {
        // Checked before sending: the other side would drop the connection, which would look
        // like a dead peer.
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a message of {} bytes is larger than the {MAX_FRAME} bytes the vault socket carries",
                bytes.len()
            ),
        ));
    }
    let mut frame = zeroize::Zeroizing::new(Vec::with_capacity(4 + bytes.len()));
    frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bytes);
    stream.write_all(&frame)
}

/// Why a frame could not be read.
#[derive(Debug)]
enum FrameError {
    /// The stream ended (or was reset) before the first byte: the peer closed it between frames.
    Closed,
    /// Reading failed, timed out, or the stream ended inside a frame.
    Io(std::io::Error),
    /// The peer announced more than [`MAX_FRAME`] bytes.
    TooLarge(usize),
    /// The frame is not the JSON expected.
    Malformed(serde_json::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => f.write_str("the connection was closed"),
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::TooLarge(len) => write!(
                f,
                "a message of {len} bytes is larger than the {MAX_FRAME} bytes the vault socket carries"
            ),
            FrameError::Malformed(e) => write!(f, "malformed message: {e}"),
        }
    }
}

/// Read one frame: wait up to `wait` (`None`: for ever) for its first byte, then let the rest take at most `body`.
/// The buffer grows with what arrives (never to the announced size up front), and every buffer
/// it outgrows is zeroized: frames carry tokens.
fn read_frame<T: DeserializeOwned>(
    stream: &mut UnixStream,
    wait: Option<Duration>,
    body: Duration,
) -> std::result::Result<T, FrameError> {
    let mut header = [0u8; 4];
    let _ = stream.set_read_timeout(wait);
    loop {
        match stream.read(&mut header[..1]) {
            Ok(0) => return Err(FrameError::Closed),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Err(FrameError::Closed)
            }
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    let deadline = std::time::Instant::now() + body;
    let _ = stream.set_read_timeout(Some(body));
    read_before(stream, &mut header[1..], deadline).map_err(FrameError::Io)?;
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    while buf.len() < len {
        let want = (len - buf.len()).min(READ_CHUNK);
        if buf.capacity() - buf.len() < want {
            let grown = (buf.capacity() * 2).clamp(buf.len() + want, len);
            let mut bigger = zeroize::Zeroizing::new(Vec::with_capacity(grown));
            bigger.extend_from_slice(&buf);
            buf = bigger; // the old buffer is zeroized as it drops
        }
        let start = buf.len();
        buf.resize(start + want, 0);
        let got = read_before(stream, &mut buf[start..], deadline);
        if let Err(e) = got {
            return Err(FrameError::Io(e));
        }
    }
    serde_json::from_slice(&buf).map_err(FrameError::Malformed)
}

/// Fill `buf` completely, failing once `deadline` has passed.
fn read_before(
    stream: &mut UnixStream,
    mut buf: &mut [u8],
    deadline: std::time::Instant,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the message took too long to arrive",
            ));
        }
        match stream.read(buf) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the connection was closed inside a message",
                ))
            }
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Send the owner's answer to one request. An answer too large for a frame (say, an enormous
/// `list`) is replaced by an error saying so: the peer must not take it for a dead owner.
fn write_answer(stream: &mut UnixStream, answer: &Answer) -> std::io::Result<()> {
    match write_frame(stream, answer) {
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => write_frame(
            stream,
            &Err::<Value, _>(Error::other(format!(
                "the vault owner's answer is too large for the vault socket ({e}); ask for \
                 less (e.g. `keyward status --user NAME`)"
            ))),
        ),
        other => other,
    }
}

// ---- the owner -------------------------------------------------------------------------------

/// Start serving `store` to the other local processes. Called by whoever just opened the
/// database; the listener lives as long as the vault.
pub(crate) fn serve(vault: &Vault, _store: Arc<Store>) -> Result<()> {
    let path = socket_path(vault.home());
    // We hold the owner lock, so any socket file here belongs to an owner that is gone.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| Error::io(format!("listening on {}", path.display()), e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("setting mode 0600 on {}", path.display()), e))?;
    let weak = vault.downgrade();
    let limits = PeerLimits::get();
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("keyward-owner".into())
        .spawn(move || {
            // Threads hold the vault weakly: dropping the last handle closes the database (and
            // releases the lock) even while peers are connected. Dropping it also connects
            // once to wake this loop, which then ends.
            for stream in listener.incoming() {
                if weak.strong_count() == 0 {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let weak = weak.clone();
                let served = served.clone();
                let _ = std::thread::Builder::new()
                    .name("keyward-peer".into())
                    .spawn(move || serve_peer(weak, stream, limits, &served));
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

/// Answer a peer with an error it can show, then close.
fn refuse(mut stream: UnixStream, message: String) {
    let _ = write_frame(&mut stream, &Err::<(), _>(Error::vault(message)));
    linger(stream);
}

/// The uid a peer runs as, from the kernel (`SO_PEERCRED`), not from anything it says.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    rustix::net::sockopt::socket_peercred(stream)
        .ok()
        .map(|cred| cred.uid.as_raw())
}

/// One slot of [`MAX_PEERS`], given back when the peer's thread ends.
struct PeerSlot<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> PeerSlot<'a> {
    fn take(served: &'a std::sync::atomic::AtomicUsize) -> Option<PeerSlot<'a>> {
        use std::sync::atomic::Ordering::SeqCst;
        served
            .fetch_update(SeqCst, SeqCst, |n| (n < MAX_PEERS).then_some(n + 1))
            .ok()
            .map(|_| PeerSlot(served))
    }
}

impl Drop for PeerSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

fn serve_peer(
    weak: std::sync::Weak<super::Inner>,
    mut stream: UnixStream,
    limits: PeerLimits,
    served: &std::sync::atomic::AtomicUsize,
) {
    let me = rustix::process::geteuid().as_raw();
    if peer_uid(&stream) != Some(me) {
        tracing::warn!("refused a vault connection from another user");
        refuse(
            stream,
            "this keyward vault belongs to another user".to_string(),
        );
        return;
    }
    let Some(_slot) = PeerSlot::take(served) else {
        tracing::warn!("refused a vault connection: {MAX_PEERS} peers are connected already");
        refuse(
            stream,
            format!(
                "the keyward process that owns this vault (pid {}) already serves {MAX_PEERS} \
                 connections; stop keyward processes you no longer need and retry",
                std::process::id()
            ),
        );
        return;
    };
    // A peer that stops reading must not block this thread for ever either.
    let _ = stream.set_write_timeout(Some(limits.idle));
    // The first frame must be a hello with our protocol version.
    match read_frame::<Request>(&mut stream, Some(limits.idle), limits.frame) {
        Ok(Request::Hello { protocol, .. }) if protocol == PROTOCOL_VERSION => {
            let hello = serde_json::json!({
                "protocol": PROTOCOL_VERSION,
                "pid": std::process::id(),
                "idle_ms": limits.idle.as_millis() as u64,
            });
            if write_frame(&mut stream, &Ok::<_, Error>(hello)).is_err() {
                return;
            }
        }
        Ok(Request::Hello { protocol, .. }) => {
            let _ = write_frame(&mut stream, &Err::<(), _>(Error::vault(format!(
                    "protocol mismatch: the keyward process that owns this vault (pid {}) speaks vault protocol v{PROTOCOL_VERSION}, this one v{protocol}; restart the older keyward (or its MCP client) so both run the same version",
                    std::process::id()
                ))));
            return;
        }
        _ => return,
    }
    loop {
        // Idle longer than `limits.idle`, stalled inside a frame, gone, or garbled: close. A
        // client reopens a pooled connection the owner closed (see `RemoteClient::call`).
        let Ok(request) = read_frame::<Request>(&mut stream, Some(limits.idle), limits.frame)
        else {
            return;
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
        if write_answer(&mut stream, &answer).is_err() {
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

pub(crate) fn to_answer<T: Serialize>(result: Result<T>) -> Answer {
    match result {
        Ok(v) => serde_json::to_value(v).map_err(|e| Error::other(e.to_string())),
        Err(e) => Err(e),
    }
}

/// Answer one request of a peer: a storage operation on our store, or a refresh by our hook.
fn execute(vault: &Vault, store: &Store, request: Request) -> Answer {
    dispatch(store, request, |request| match request {
        Request::Refresh {
            key,
            seen_version,
            force,
            budget_ms,
        } => {
            let answer: RefreshAnswer = match vault.peer_refresh() {
                Some(hook) => hook.refresh(
                    vault,
                    &key,
                    seen_version,
                    force,
                    Duration::from_millis(budget_ms),
                ),
                None => Err(RefreshFailure::retryable(
                    format!(
                        "the keyward process that owns the vault (pid {}) does not refresh tokens for other processes",
                        std::process::id()
                    ),
                    "retry in a moment; if it persists, let that process finish (or stop it) so that this one takes the vault over",
                )),
            };
            to_answer(Ok(answer))
        }
        // A hello after the first, or a subscription, are handled before; answered harmlessly.
        _ => to_answer(Ok(())),
    })
}

// ---- the other processes ----------------------------------------------------------------------

/// How long a client waits for the owner's hello.
const HELLO_WAIT: Duration = Duration::from_secs(5);
/// How long a client waits for an answer to start: refreshes may wait on the provider for the
/// whole call budget.
const ANSWER_WAIT: Duration = Duration::from_secs(180);
/// How long the rest of a frame may take once it has started, and a write to the owner.
const FRAME_WAIT: Duration = Duration::from_secs(30);

/// Why [`RemoteClient::connect`] failed.
#[derive(Debug)]
pub enum ConnectError {
    /// Nobody answers on the socket: no owner, or one that is starting or exiting. Worth trying
    /// again, or taking over.
    Unreachable(Error),
    /// The socket is not to be trusted, or the owner answered and refused us (another user's
    /// process, another protocol version, too many peers). Trying again does not help.
    Refused(Error),
}

/// A connection pool to the owner: at most `MAX_STREAMS` (16) connections, idle ones reused while
/// the owner still keeps them open.
pub struct RemoteClient {
    path: PathBuf,
    pool: Mutex<Pool>,
    freed: Condvar,
    /// Reuse an idle connection only while it is younger than this: half the idle time after
    /// which the owner closes it, so it is rarely closed under our feet (and if it is, `call`
    /// reopens it).
    reuse_for: Duration,
}

struct Pool {
    idle: Vec<(UnixStream, Instant)>,
    /// Connections in use or idle.
    open: usize,
}

/// A pooled connection in use. Dropped without [`Lease::give_back`] (an error, or an answer
/// that left it unusable), the connection is closed and its place freed.
struct Lease<'a> {
    client: &'a RemoteClient,
    stream: Option<UnixStream>,
}

impl Lease<'_> {
    fn stream(&mut self) -> &mut UnixStream {
        self.stream
            .as_mut()
            .expect("a lease holds its stream until dropped")
    }

    fn give_back(mut self) {
        let stream = self.stream.take().expect("a lease is given back once");
        let mut pool = self.client.pool.lock().expect("pool");
        pool.idle.push((stream, Instant::now()));
        self.client.freed.notify_one();
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.stream.take().is_some() {
            self.client.forget_one();
        }
    }
}

impl RemoteClient {
    /// Connect and say hello; fails fast when nobody listens ([`ConnectError::Unreachable`]),
    /// and for good when the socket or the process behind it is not ours, or the owner refuses
    /// us ([`ConnectError::Refused`]).
    pub fn connect(home: &Home) -> std::result::Result<RemoteClient, ConnectError> {
        let path = socket_path(home);
        let (stream, owner_idle) = open_stream(&path)?;
        Ok(RemoteClient {
            path,
            pool: Mutex::new(Pool {
                idle: vec![(stream, Instant::now())],
                open: 1,
            }),
            freed: Condvar::new(),
            reuse_for: owner_idle / 2,
        })
    }

    /// A connection for one request, and whether it was used before.
    fn lease(&self) -> std::result::Result<(Lease<'_>, bool), ConnectError> {
        let mut pool = self.pool.lock().expect("pool");
        loop {
            // The most recently used first; once one is too old, all below it are older.
            while let Some((stream, since)) = pool.idle.pop() {
                if since.elapsed() < self.reuse_for {
                    let lease = Lease {
                        client: self,
                        stream: Some(stream),
                    };
                    return Ok((lease, true));
                }
                pool.open -= 1;
            }
            if pool.open < MAX_STREAMS {
                pool.open += 1;
                break;
            }
            pool = self.freed.wait(pool).expect("pool");
        }
        drop(pool);
        match open_stream(&self.path) {
            Ok((stream, _)) => Ok((
                Lease {
                    client: self,
                    stream: Some(stream),
                },
                false,
            )),
            Err(e) => {
                self.forget_one();
                Err(e)
            }
        }
    }

    fn forget_one(&self) {
        self.pool.lock().expect("pool").open -= 1;
        self.freed.notify_one();
    }

    /// Send one request. The outer error means the owner could not be reached (take over or
    /// reconnect); the inner one is the operation's own result, including an owner that refuses
    /// us or an answer that cannot be read.
    pub fn call<T: DeserializeOwned>(&self, request: &Request) -> std::io::Result<Result<T>> {
        for attempt in 0..2 {
            let (mut lease, reused) = match self.lease() {
                Ok(lease) => lease,
                Err(ConnectError::Unreachable(e)) => {
                    return Err(std::io::Error::other(e.to_string()))
                }
                Err(ConnectError::Refused(e)) => return Ok(Err(e)),
            };
            let stream = lease.stream();
            if let Err(e) = write_frame(stream, request) {
                match e.kind() {
                    std::io::ErrorKind::InvalidInput => {
                        lease.give_back(); // nothing was sent
                        return Ok(Err(Error::vault(e.to_string())));
                    }
                    // An idle connection the owner has closed: the request never reached it.
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                        if reused && attempt == 0 =>
                    {
                        continue
                    }
                    _ => return Err(e),
                }
            }
            match read_frame::<Answer>(stream, Some(ANSWER_WAIT), FRAME_WAIT) {
                Ok(answer) => {
                    lease.give_back();
                    return Ok(match answer {
                        Ok(value) => serde_json::from_value(value).map_err(|e| {
                            Error::other(format!("unexpected answer from the vault owner: {e}"))
                        }),
                        Err(e) => Err(e),
                    });
                }
                // The owner closes idle connections without reading from them, so a reused one
                // that ends before any answer was closed while idle: send on a fresh one.
                Err(FrameError::Closed) if reused && attempt == 0 => continue,
                Err(FrameError::Closed) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the vault owner closed the connection",
                    ))
                }
                Err(FrameError::Io(e)) => return Err(e),
                // The owner is alive but said something this build cannot read: an error of
                // this call, not a reason to take over.
                Err(e @ (FrameError::TooLarge(_) | FrameError::Malformed(_))) => {
                    return Ok(Err(Error::vault(format!(
                        "the vault owner sent an answer this keyward cannot read ({e}); restart \
                         the keyward processes of this home so that all run the same version"
                    ))))
                }
            }
        }
        unreachable!("the second attempt uses a fresh connection")
    }

    fn subscribe(&self) -> std::result::Result<UnixStream, ConnectError> {
        let (mut stream, _) = open_stream(&self.path)?;
        write_frame(&mut stream, &Request::Subscribe)
            .map_err(|e| ConnectError::Unreachable(Error::io("subscribing to vault changes", e)))?;
        Ok(stream)
    }
}

/// Connect to the owner's socket, check that it is ours and the process behind it runs as us,
/// and say hello. Returns the stream and how long the owner keeps an idle connection open.
fn open_stream(path: &Path) -> std::result::Result<(UnixStream, Duration), ConnectError> {
    check_trusted(path, "the vault owner's socket", Fix::NoWrite).map_err(ConnectError::Refused)?;
    let mut stream = UnixStream::connect(path).map_err(|e| {
        ConnectError::Unreachable(Error::io(format!("connecting to {}", path.display()), e))
    })?;
    // What we send may be a token in plaintext: only to a process of our own user, as the
    // kernel reports it (the owner checks us the same way).
    let me = rustix::process::geteuid().as_raw();
    match peer_uid(&stream) {
        Some(uid) if uid == me => {}
        other => {
            let who = other.map_or("an unknown user".to_string(), |uid| format!("uid {uid}"));
            return Err(ConnectError::Refused(Error::Untrusted(format!(
                "the process listening on {} runs as {who}, not as you (uid {me}); keyward sends \
                 it nothing. Stop that process, remove the socket (`rm {}`) and retry",
                path.display(),
                path.display()
            ))));
        }
    }
    let _ = stream.set_write_timeout(Some(FRAME_WAIT));
    let sent = write_frame(
        &mut stream,
        &Request::Hello {
            protocol: PROTOCOL_VERSION,
            pid: std::process::id(),
        },
    );
    // Read even when the hello could not be sent: a refusing owner says why before closing.
    let hello = read_frame::<Answer>(&mut stream, Some(HELLO_WAIT), FRAME_WAIT).map_err(|e| {
        let why = match sent {
            Err(sent) => sent.to_string(),
            Ok(()) => e.to_string(),
        };
        ConnectError::Unreachable(Error::vault(format!("greeting the vault owner: {why}")))
    })?;
    match hello {
        Ok(hello) => {
            let idle = hello["idle_ms"]
                .as_u64()
                .map_or(Duration::from_secs(60), Duration::from_millis);
            Ok((stream, idle))
        }
        Err(refused) => Err(ConnectError::Refused(refused)),
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
                while let Ok(notice) = read_frame::<Notice>(&mut stream, None, FRAME_WAIT) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every error crosses the socket as itself: same variant, same text. (Before the mirror,
    /// `Vault`, `Busy` and `Io` arrived as `Other`, and a vault error lost its prefix.)
    #[test]
    fn every_error_crosses_the_socket_as_itself() {
        let errors = [
            Error::usage("u"),
            Error::config("c"),
            Error::io("reading x", std::io::Error::other("denied")),
            Error::MasterKey("m".into()),
            Error::vault("v"),
            Error::RecordCorrupt {
                record: "r".into(),
                provider: "github".into(),
                user: "default".into(),
                account: "a".into(),
                reason: "tampered".into(),
            },
            Error::Conflict("k".into()),
            Error::NotFound("n".into()),
            Error::Busy("b".into()),
            Error::OwnerGone("g".into()),
            Error::Untrusted("t".into()),
            Error::other("o"),
        ];
        for error in errors {
            let json = serde_json::to_string(&error).unwrap();
            let back: Error = serde_json::from_str(&json).unwrap();
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&error),
                "{json}"
            );
            assert_eq!(back.to_string(), error.to_string(), "{json}");
        }
        // A kind from a newer peer still says what happened.
        let newer: Error =
            serde_json::from_str(r#"{"kind": "from_the_future", "message": "why"}"#).unwrap();
        assert_eq!(newer.to_string(), "why");
    }
}
