//! The owner's side of the socket: accept the other local processes and answer them.
//!
//! A task on the runtime that opened the vault accepts peers; each peer is a task of its own,
//! reading its requests in order. A request that completes at once — the memory-speed
//! operations of the sled store, and every notice — is answered before the next one is read,
//! so a peer's notices (`audit`, `touch`) are applied in the order it sent them and before
//! anything it asks later. A request that has to wait (a write and its flush, a scan, a refresh
//! that talks to the provider) goes on as a task of its own and answers when done, while the
//! peer's later requests are served: a slow refresh does not hold up the calls behind it.
//!
//! What a peer can cost the owner is bounded: at most [`MAX_PEERS`] peers, at most
//! [`MAX_IN_FLIGHT`] unanswered requests each (past that, its requests are read only as answers
//! go out), frames of at most [`super::MAX_FRAME`] bytes that cost what actually arrived
//! ([`super::frames`]), a frame that has started must be complete within the frame timeout,
//! and a connection with nothing in flight is closed after the idle timeout. Every write to a
//! peer has the idle timeout to complete.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::frames::{OutFrame, Reader, Writer};
use super::wire::{Answer, Greeting, Notice, RefreshFailure};
use super::{socket_path, RefreshAnswer, MAX_PEERS, PROTOCOL_VERSION};
use crate::error::{Error, Result};
use crate::vault::storage::{dispatch, Request};
use crate::vault::{Backend, ConnKey, Inner, Vault};

/// How many requests of one peer may wait for their answers at once.
pub const MAX_IN_FLIGHT: usize = 64;

/// The owner's limits on one peer. `idle`: how long a connection with nothing in flight may
/// wait for its next request before the owner closes it (clients reopen closed idle
/// connections by themselves), and how long a write to the peer may take; `frame`: how long a
/// frame may take to arrive once it has started.
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

/// Start serving the vault to the other local processes: called by whoever just opened the
/// database, on its runtime. The listener and every peer are tasks that end when the returned
/// handle is aborted (the vault does that when it is dropped), so that every peer sees at once
/// that this owner is gone.
pub(crate) fn serve(vault: &Vault) -> Result<AbortHandle> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(vault.home());
    // We hold the owner lock, so any socket file here belongs to an owner that is gone.
    let _ = std::fs::remove_file(&path);
    let listener = {
        let _runtime = vault.runtime().enter();
        UnixListener::bind(&path)
            .map_err(|e| Error::io(format!("listening on {}", path.display()), e))?
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("setting mode 0600 on {}", path.display()), e))?;
    let task = vault
        .runtime()
        .spawn(listen(listener, vault.downgrade(), PeerLimits::get()));
    Ok(task.abort_handle())
}

async fn listen(listener: UnixListener, vault: Weak<Inner>, limits: PeerLimits) {
    let served = Arc::new(AtomicUsize::new(0));
    // Dropped (and with it every peer task) when this task is aborted.
    let mut peers = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    peers.spawn(serve_peer(vault.clone(), stream, limits, served.clone()));
                }
                // Out of file descriptors, say: try again shortly rather than spin.
                Err(e) => {
                    tracing::warn!("accepting a vault connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = peers.join_next(), if !peers.is_empty() => {}
        }
    }
}

/// One slot of [`MAX_PEERS`], given back when the peer's task ends.
struct PeerSlot(Arc<AtomicUsize>);

impl PeerSlot {
    fn take(served: &Arc<AtomicUsize>) -> Option<PeerSlot> {
        served
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_PEERS).then_some(n + 1)
            })
            .ok()
            .map(|_| PeerSlot(served.clone()))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answer a peer with an error it can show, then close — only once it has read the answer:
/// closing at once would fail the hello it is about to send (EPIPE) and it would never see why
/// it was refused. Whatever it sends meanwhile is discarded unread; the wait is bounded.
async fn refuse(mut stream: UnixStream, message: String) {
    use tokio::io::AsyncWriteExt;
    let Ok(frame) = OutFrame::hello(&Err::<(), _>(Error::vault(message))) else {
        return;
    };
    let linger = async {
        stream.write_all(frame.bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut budget: usize = 64 * 1024;
        while budget > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => budget = budget.saturating_sub(n),
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
}

async fn serve_peer(
    vault: Weak<Inner>,
    stream: UnixStream,
    limits: PeerLimits,
    served: Arc<AtomicUsize>,
) {
    // The uid the peer runs as, from the kernel (`SO_PEERCRED`), not from anything it says.
    let me = rustix::process::geteuid().as_raw();
    if stream.peer_cred().ok().map(|cred| cred.uid()) != Some(me) {
        tracing::warn!("refused a vault connection from another user");
        refuse(
            stream,
            "this keyward vault belongs to another user".to_string(),
        )
        .await;
        return;
    }
    let Some(_slot) = PeerSlot::take(&served) else {
        tracing::warn!("refused a vault connection: {MAX_PEERS} peers are connected already");
        refuse(
            stream,
            format!(
                "the keyward process that owns this vault (pid {}) already serves {MAX_PEERS} \
                 connections; stop keyward processes you no longer need and retry",
                std::process::id()
            ),
        )
        .await;
        return;
    };
    let (read, write) = stream.into_split();
    let mut reader = Reader::new(read);
    let writer = Arc::new(Writer::new(write, limits.idle));

    // The first frame must be a hello with our protocol version.
    let hello_by = Instant::now() + limits.idle;
    let hello = reader.next_frame(|| Some(hello_by), limits.frame).await;
    match hello.and_then(|frame| frame.json::<Request>()) {
        Ok(Request::Hello { protocol, .. }) if protocol == PROTOCOL_VERSION => {
            let greeting = Ok::<_, Error>(Greeting {
                protocol: PROTOCOL_VERSION,
                pid: std::process::id(),
                idle_ms: limits.idle.as_millis() as u64,
            });
            let Ok(frame) = OutFrame::hello(&greeting) else {
                return;
            };
            if writer.send(&frame).await.is_err() {
                return;
            }
        }
        Ok(Request::Hello { protocol, .. }) => {
            let refusal = Err::<(), _>(Error::vault(format!(
                "protocol mismatch: the keyward process that owns this vault (pid {}) speaks vault protocol v{PROTOCOL_VERSION}, this one v{protocol}; restart the older keyward (or its MCP client) so both run the same version",
                std::process::id()
            )));
            if let Ok(frame) = OutFrame::hello(&refusal) {
                let _ = writer.send(&frame).await;
            }
            return;
        }
        _ => return,
    }

    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let last_answer = Arc::new(std::sync::Mutex::new(Instant::now()));
    let mut last_request = Instant::now();
    loop {
        // Idle (nothing in flight) longer than `limits.idle`, stalled inside a frame, gone,
        // or garbled: close. A client reopens a connection the owner closed while it was idle.
        let idle_by = || {
            let busy = in_flight.available_permits() < MAX_IN_FLIGHT;
            let last = last_request.max(*crate::sync::lock(&last_answer));
            Some(if busy { Instant::now() } else { last } + limits.idle)
        };
        let Ok(frame) = reader.next_frame(idle_by, limits.frame).await else {
            return;
        };
        last_request = Instant::now();
        let Ok((id, request)) = frame.with_id::<Request>() else {
            return;
        };
        drop(frame);
        if writer.is_broken() {
            return;
        }
        let Some(inner) = vault.upgrade() else { return };
        let vault = Vault::from_inner(inner);
        if let Request::Subscribe = request {
            let changes = vault.changes_sender().subscribe();
            let users = vault.users_sender().subscribe();
            drop(vault);
            stream_changes(id, changes, users, reader, &writer, limits.frame).await;
            return;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut work = execute(vault, request);
        // Done at once (a memory-speed operation): answered before the next request is read.
        if let std::task::Poll::Ready(answer) = futures::poll!(work.as_mut()) {
            if id != 0 && !answered(&writer, answer, id, &last_answer).await {
                return;
            }
            continue;
        }
        let (writer, last_answer) = (writer.clone(), last_answer.clone());
        tokio::spawn(async move {
            let answer = work.await;
            if id != 0 {
                answered(&writer, answer, id, &last_answer).await;
            }
            drop(permit);
        });
    }
}

/// Send `answer` to request `id`; false when the connection is broken.
async fn answered(
    writer: &Writer,
    answer: Answer,
    id: u64,
    last_answer: &std::sync::Mutex<Instant>,
) -> bool {
    let sent = writer.send(&answer.into_frame(id)).await.is_ok();
    *crate::sync::lock(last_answer) = Instant::now();
    sent
}

/// Answer one request of a peer: a storage operation on our store, or a refresh by our hook.
/// The future owns what it needs, so that it can go on as a task of its own.
fn execute(vault: Vault, request: Request) -> BoxFuture<'static, Answer> {
    let Backend::Local(store) = vault.backend() else {
        // An owner never becomes a relay; should it ever, the peer takes over or reconnects.
        let gone: Result<()> = Err(Error::OwnerGone(
            "this process no longer owns the vault".into(),
        ));
        return Box::pin(std::future::ready(Answer::of(&gone)));
    };
    dispatch(store, request, |request| match request {
        Request::Refresh {
            key,
            seen_version,
            force,
            budget_ms,
        } => Box::pin(async move {
            let budget = Duration::from_millis(budget_ms);
            let answer: RefreshAnswer = match vault.peer_refresh() {
                Some(hook) => hook.refresh(&vault, &key, seen_version, force, budget).await,
                None => Err(RefreshFailure::of_relay(
                    format!(
                        "the keyward process that owns the vault (pid {}) does not refresh tokens for other processes",
                        std::process::id()
                    ),
                    "retry in a moment; if it persists, let that process finish (or stop it) so that this one takes the vault over",
                )),
            };
            Answer::of(&Ok::<_, Error>(answer))
        }),
        // A hello after the first, or a subscription, are handled before; answered harmlessly.
        _ => Box::pin(std::future::ready(Answer::of(&Ok::<_, Error>(())))),
    })
}

/// Push connection and users changes to a subscribed peer, in the order they happen, until it
/// goes away (it sends nothing more on this connection, so anything it does ends the stream).
async fn stream_changes(
    id: u64,
    mut changes: tokio::sync::broadcast::Receiver<ConnKey>,
    mut users: tokio::sync::watch::Receiver<u64>,
    mut reader: Reader<tokio::net::unix::OwnedReadHalf>,
    writer: &Writer,
    frame_limit: Duration,
) {
    use tokio::sync::broadcast::error::RecvError;
    // First, a users notice: the peer may have missed changes before it subscribed, and once it
    // reads this one it knows every later change reaches it.
    let mut notice = Notice::Users;
    loop {
        let Ok(frame) = OutFrame::with_id(id, &notice) else {
            return;
        };
        if writer.send(&frame).await.is_err() {
            return;
        }
        notice = loop {
            tokio::select! {
                biased;
                changed = users.changed() => match changed {
                    Ok(()) => break Notice::Users,
                    Err(_) => return,
                },
                key = changes.recv() => match key {
                    Ok(key) => break Notice::Connection(key),
                    // Missed some: the peer's subscribers re-read what they show anyway.
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                },
                _ = reader.next_frame(|| None, frame_limit) => return,
            }
        };
    }
}
