//! The other processes' side of the socket: one connection to the owner, shared by every call
//! of the process.
//!
//! Calls are multiplexed: each request carries an id, a task reads the answers as they come
//! and hands each to the call waiting for it, so that concurrent calls of one process never
//! queue behind a slow one (a refresh waiting on its provider). The connection is reused while
//! the owner keeps it open: the owner closes a connection that had nothing in flight for its
//! idle time (the hello says how long), so it is reused only while it was used within half of
//! that, and a request on a reused connection that ends before the answer is sent once more on
//! a fresh one — an idle connection closed by the owner is never taken for a dead owner.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::frames::{Frame, FrameError, OutFrame, Reader, Writer};
use super::wire::{Greeting, Notice};
use super::{socket_path, PROTOCOL_VERSION};
use crate::config::{check_trusted, Fix, Home};
use crate::error::{Error, Result};
use crate::vault::storage::Request;
use crate::vault::{Backend, Vault};

/// How long a client waits for the owner's hello.
const HELLO_WAIT: Duration = Duration::from_secs(5);
/// How long a client waits for an answer: refreshes may wait on the provider for the whole
/// call budget.
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

/// The relay to the process that owns the vault (see the module docs).
pub struct RemoteClient {
    path: PathBuf,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
}

/// One connection to the owner and the calls waiting on it.
struct Link {
    writer: Writer,
    waiting: Arc<std::sync::Mutex<Waiting>>,
    next_id: AtomicU64,
    /// Half the owner's idle time (see the module docs).
    reuse_for: Duration,
    last_sent: std::sync::Mutex<Instant>,
    /// The task that reads the answers.
    reader: AbortHandle,
}

#[derive(Default)]
struct Waiting {
    answers: HashMap<u64, oneshot::Sender<Frame>>,
    /// Set when the connection is gone, and why.
    lost: Option<Lost>,
}

/// Why a connection to the owner is gone.
#[derive(Debug, Clone)]
enum Lost {
    /// The owner closed it.
    Closed,
    /// Reading or writing failed or timed out.
    Broken(String),
    /// The owner sent something this build cannot read: it is alive, but runs another version.
    Unreadable(String),
}

impl Lost {
    /// The error of a call that lost its connection: a lost owner is [`Error::OwnerGone`], so
    /// that the vault takes over or reconnects; an owner we cannot understand is not.
    fn into_error(self) -> Error {
        match self {
            Lost::Closed => Error::OwnerGone("the vault owner closed the connection".into()),
            Lost::Broken(why) => Error::OwnerGone(why),
            Lost::Unreadable(why) => unreadable(why),
        }
    }
}

fn unreadable(why: impl std::fmt::Display) -> Error {
    Error::vault(format!(
        "the vault owner sent an answer this keyward cannot read ({why}); restart the keyward \
         processes of this home so that all run the same version"
    ))
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Link {
    async fn open(path: &Path) -> std::result::Result<Link, ConnectError> {
        let (reader, writer, greeting) = open_stream(path).await?;
        let waiting = Arc::new(std::sync::Mutex::new(Waiting::default()));
        let reader = tokio::spawn(read_answers(reader, waiting.clone())).abort_handle();
        Ok(Link {
            writer,
            waiting,
            next_id: AtomicU64::new(1),
            reuse_for: Duration::from_millis(greeting.idle_ms) / 2,
            last_sent: std::sync::Mutex::new(Instant::now()),
            reader,
        })
    }

    /// Open, and either busy or used recently enough that the owner keeps it open.
    fn usable(&self) -> bool {
        if self.writer.is_broken() {
            return false;
        }
        let waiting = crate::sync::lock(&self.waiting);
        waiting.lost.is_none()
            && (!waiting.answers.is_empty()
                || crate::sync::lock(&self.last_sent).elapsed() < self.reuse_for)
    }

    /// A new request id, and where its answer will arrive.
    fn expect_answer(&self) -> std::result::Result<(u64, oneshot::Receiver<Frame>), Lost> {
        let mut waiting = crate::sync::lock(&self.waiting);
        if let Some(lost) = &waiting.lost {
            return Err(lost.clone());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        waiting.answers.insert(id, tx);
        Ok((id, rx))
    }

    fn forget(&self, id: u64) {
        crate::sync::lock(&self.waiting).answers.remove(&id);
    }

    fn lost(&self) -> Lost {
        crate::sync::lock(&self.waiting)
            .lost
            .clone()
            .unwrap_or(Lost::Closed)
    }

    async fn send(&self, frame: &OutFrame) -> std::io::Result<()> {
        *crate::sync::lock(&self.last_sent) = Instant::now();
        self.writer.send(frame).await
    }
}

/// Hand each answer to the call waiting for it (an answer nobody waits for any more is dropped,
/// and zeroized); when the connection ends, tell every waiting call why.
async fn read_answers(mut reader: Reader<OwnedReadHalf>, waiting: Arc<std::sync::Mutex<Waiting>>) {
    let mut end = EndOfLink {
        waiting: waiting.clone(),
        why: Lost::Closed,
    };
    end.why = loop {
        match reader.next_frame(|| None, FRAME_WAIT).await {
            Ok(frame) => {
                let Ok(id) = frame.id() else {
                    break Lost::Unreadable(FrameError::NoId.to_string());
                };
                let waiter = crate::sync::lock(&waiting).answers.remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(frame);
                }
            }
            Err(FrameError::Closed) => break Lost::Closed,
            Err(FrameError::Io(e)) => break Lost::Broken(e.to_string()),
            Err(e) => break Lost::Unreadable(e.to_string()),
        }
    };
}

/// Marks the connection lost when its reader ends — also when the reader is dropped unfinished,
/// with the runtime it ran on: each waiting call wakes up to find its answer channel closed,
/// and asks why.
struct EndOfLink {
    waiting: Arc<std::sync::Mutex<Waiting>>,
    why: Lost,
}

impl Drop for EndOfLink {
    fn drop(&mut self) {
        let mut waiting = crate::sync::lock(&self.waiting);
        waiting.lost.get_or_insert_with(|| self.why.clone());
        waiting.answers.clear();
    }
}

impl RemoteClient {
    /// Connect and say hello; fails fast when nobody listens ([`ConnectError::Unreachable`]),
    /// and for good when the socket or the process behind it is not ours, or the owner refuses
    /// us ([`ConnectError::Refused`]).
    pub async fn connect(home: &Home) -> std::result::Result<RemoteClient, ConnectError> {
        let path = socket_path(home);
        let link = Link::open(&path).await?;
        Ok(RemoteClient {
            path,
            link: tokio::sync::Mutex::new(Some(Arc::new(link))),
        })
    }

    /// The connection to use, and whether it was opened for this call.
    async fn link(&self) -> Result<(Arc<Link>, bool)> {
        let mut current = self.link.lock().await;
        if let Some(link) = current.as_ref().filter(|link| link.usable()) {
            return Ok((link.clone(), false));
        }
        let link = Arc::new(Link::open(&self.path).await.map_err(|e| match e {
            ConnectError::Unreachable(e) => Error::OwnerGone(e.to_string()),
            ConnectError::Refused(e) => e,
        })?);
        *current = Some(link.clone());
        Ok((link, true))
    }

    /// Send one request and wait for its answer. [`Error::OwnerGone`] means the owner could not
    /// be reached (take over or reconnect); any other error is the operation's own, including
    /// an owner that refuses us or an answer that cannot be read.
    pub async fn call<T: DeserializeOwned>(&self, request: Request) -> Result<T> {
        let mut frame = OutFrame::with_id(0, &request).map_err(|e| Error::vault(e.to_string()))?;
        drop(request);
        // A second attempt only after a reused connection failed: it then uses a fresh one.
        for attempt in 0..2 {
            let (link, fresh) = self.link().await?;
            let again = attempt == 0 && !fresh;
            let (id, answer) = match link.expect_answer() {
                Ok(expected) => expected,
                Err(_) if again => continue,
                Err(lost) => return Err(lost.into_error()),
            };
            frame.set_id(id);
            if let Err(e) = link.send(&frame).await {
                link.forget(id);
                if again {
                    continue;
                }
                return Err(Error::OwnerGone(e.to_string()));
            }
            let answer = match tokio::time::timeout(ANSWER_WAIT, answer).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => match link.lost() {
                    // The owner closes idle connections without reading from them, so a reused
                    // one that ends before any answer was closed while idle: send on a fresh one.
                    Lost::Closed if again => continue,
                    lost => return Err(lost.into_error()),
                },
                Err(_) => {
                    link.forget(id);
                    return Err(Error::OwnerGone(format!(
                        "the vault owner did not answer within {} s",
                        ANSWER_WAIT.as_secs()
                    )));
                }
            };
            return match answer.with_id::<std::result::Result<T, Error>>() {
                Ok((_, result)) => result,
                Err(e) => Err(unreadable(e)),
            };
        }
        unreachable!("the second attempt uses a fresh connection, and returns")
    }

    /// Send a notice: a request the owner does not answer (see [`super::super::storage`]).
    /// Done once the owner's socket has it.
    pub async fn notify(&self, request: Request) -> Result<()> {
        let frame = OutFrame::with_id(0, &request).map_err(|e| Error::vault(e.to_string()))?;
        drop(request);
        for attempt in 0..2 {
            let (link, fresh) = self.link().await?;
            match link.send(&frame).await {
                Ok(()) => return Ok(()),
                Err(_) if attempt == 0 && !fresh => continue,
                Err(e) => return Err(Error::OwnerGone(e.to_string())),
            }
        }
        unreachable!("the second attempt uses a fresh connection, and returns")
    }

    /// A connection of its own that the owner turns into a stream of change notices.
    async fn subscribe(&self) -> std::result::Result<Subscription, ConnectError> {
        let (reader, writer, _) = open_stream(&self.path).await?;
        let frame = OutFrame::with_id(1, &Request::Subscribe)
            .map_err(|e| ConnectError::Unreachable(Error::io("subscribing to vault changes", e)))?;
        writer
            .send(&frame)
            .await
            .map_err(|e| ConnectError::Unreachable(Error::io("subscribing to vault changes", e)))?;
        Ok(Subscription {
            reader,
            _writer: writer,
        })
    }
}

/// A subscription to the owner's change notices.
struct Subscription {
    reader: Reader<OwnedReadHalf>,
    /// Kept open: the owner ends the stream when this side closes.
    _writer: Writer,
}

impl Subscription {
    async fn next(&mut self) -> std::result::Result<Notice, FrameError> {
        let frame = self.reader.next_frame(|| None, FRAME_WAIT).await?;
        Ok(frame.with_id::<Notice>()?.1)
    }
}

/// Connect to the owner's socket, check that it is ours and the process behind it runs as us,
/// and say hello.
async fn open_stream(
    path: &Path,
) -> std::result::Result<(Reader<OwnedReadHalf>, Writer, Greeting), ConnectError> {
    check_trusted(path, "the vault owner's socket", Fix::NoWrite).map_err(ConnectError::Refused)?;
    let stream = UnixStream::connect(path).await.map_err(|e| {
        ConnectError::Unreachable(Error::io(format!("connecting to {}", path.display()), e))
    })?;
    // What we send may be a token in plaintext: only to a process of our own user, as the
    // kernel reports it (the owner checks us the same way).
    let me = rustix::process::geteuid().as_raw();
    match stream.peer_cred().ok().map(|cred| cred.uid()) {
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
    let (read, write) = stream.into_split();
    let mut reader = Reader::new(read);
    let writer = Writer::new(write, FRAME_WAIT);
    let hello = OutFrame::hello(&Request::Hello {
        protocol: PROTOCOL_VERSION,
        pid: std::process::id(),
    })
    .map_err(|e| ConnectError::Unreachable(Error::io("greeting the vault owner", e)))?;
    let sent = writer.send(&hello).await;
    // Read even when the hello could not be sent: a refusing owner says why before closing.
    let hello_by = Instant::now() + HELLO_WAIT;
    let answer = reader
        .next_frame(|| Some(hello_by), FRAME_WAIT)
        .await
        .and_then(|frame| frame.json::<std::result::Result<Greeting, Error>>())
        .map_err(|e| {
            let why = match sent {
                Err(sent) => sent.to_string(),
                Ok(()) => e.to_string(),
            };
            ConnectError::Unreachable(Error::vault(format!("greeting the vault owner: {why}")))
        })?;
    match answer {
        Ok(greeting) => Ok((reader, writer, greeting)),
        Err(refused) => Err(ConnectError::Refused(refused)),
    }
}

/// In a non-owner: forward the owner's change notifications into this process's channels, on
/// the vault's runtime. When the owner goes away, recover (take over or reconnect). A recovery
/// that reconnects to a new owner starts a fresh relay itself (see [`Vault::recover`]), so this
/// one then ends: there is never more than one relay per process. The task holds the vault
/// only weakly, and the vault aborts it when dropped.
pub(crate) fn relay_changes(vault: &Vault) {
    let weak = vault.downgrade();
    let task = vault.runtime().spawn(async move {
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let vault = Vault::from_inner(inner);
            let Backend::Remote(client) = vault.backend() else {
                return;
            };
            let sender = vault.changes_sender().clone();
            let users = vault.users_sender().clone();
            // Do not keep the vault alive while waiting: the process may be done with it.
            drop(vault);
            if let Ok(mut subscription) = client.subscribe().await {
                while let Ok(notice) = subscription.next().await {
                    match notice {
                        Notice::Connection(key) => {
                            let _ = sender.send(key);
                        }
                        Notice::Users => crate::vault::bump(&users),
                    }
                }
            }
            // The owner is gone.
            let Some(inner) = weak.upgrade() else { return };
            let vault = Vault::from_inner(inner);
            match vault.recover(&client).await {
                Ok(()) if vault.is_owner() => {
                    // Now the owner: local writes reach the channel directly. Tell subscribers
                    // that the world may have changed while nobody owned it.
                    if let Ok(keys) = vault.keys().await {
                        for key in keys {
                            let _ = vault.changes_sender().send(key);
                        }
                    }
                    return;
                }
                Ok(()) => return,
                Err(_) => {
                    drop(vault);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    vault.keep_task(task.abort_handle());
}
