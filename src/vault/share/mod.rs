//! One vault, many processes.
//!
//! sled admits one process per database, yet a user typically runs two or three MCP clients
//! (each spawning its own `keyward serve`) plus the CLI. The shape chosen here is *first process
//! becomes the owner, the next one takes over when it exits*:
//!
//! - whoever takes the owner lock (`keyward.lock`, see [`super::store`]) opens the database and
//!   is the **owner**. It listens on `keyward.sock` in the home folder (the folder is 0700, the
//!   socket 0600, and every peer's uid is checked with `SO_PEERCRED`; clients check the owner's
//!   uid the same way before they send anything) and executes the other processes' operations
//!   ([`owner`]);
//! - every other process finds the lock taken and relays each operation over the socket
//!   ([`client`]) — connection reads and writes, audit appends, key rotation, and *refreshes*:
//!   only the owner refreshes, so the single-flight guarantee of the refresher spans processes.
//!   The vault cannot refresh by itself (that takes the provider's token endpoint and
//!   credentials): the owner runs the [`PeerRefresh`] hook its composition root handed in when
//!   it opened the vault;
//! - when the owner exits or is killed, its socket stops answering and its lock is released by
//!   the kernel; the next operation of any other process takes the lock and becomes the owner
//!   (or connects to whoever did), then retries the operation once. A stale socket file left by
//!   a killed owner is simply replaced by the new owner, which holds the lock.
//!
//! There is no daemon to install or to forget running, and a lone CLI command works exactly as
//! before. Both ends are tasks on the tokio runtime that opened the vault, so a relayed call
//! waits for the owner without holding a worker. The protocol is length-prefixed JSON frames
//! ([`frames`]), versioned by a `hello` exchange: a peer speaking another version gets a clear
//! error instead of a hang. After the hello, every frame carries a request id: a process keeps
//! one connection to the owner and its concurrent calls share it. Changes to connections are
//! pushed to every process that subscribed, so each running server can tell its client that the
//! tool list changed. What crosses the socket besides requests — the greeting, answers,
//! notices, and the serde mirrors of the errors — is in [`wire`].

mod client;
mod frames;
mod owner;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{ConnKey, Vault};
use crate::config::Home;

pub use super::storage::Request;
pub(crate) use client::relay_changes;
pub use client::{ConnectError, RemoteClient};
pub use frames::MAX_FRAME;
pub(crate) use owner::serve;
pub use owner::MAX_IN_FLIGHT;
pub(crate) use wire::Answer;
pub use wire::{FailureReport, RefreshAnswer, RefreshFailure};

/// Bumped whenever a request or answer changes shape (2: the audit log is read in pages;
/// 3: subscriptions carry users changes as well as connection changes; 4: frames after the
/// hello carry request ids, `touch` and `audit` are not answered, a refresh failure says whether
/// the grant is alive).
pub const PROTOCOL_VERSION: u32 = 4;
/// How many peers the owner serves at once; the next one is refused with a clear error.
pub const MAX_PEERS: usize = 128;

pub fn socket_path(home: &Home) -> PathBuf {
    home.dir.join("keyward.sock")
}

/// How the owner refreshes a connection when another process asks it to.
///
/// The vault relays the request but cannot refresh: that needs the provider's token endpoint,
/// client credentials and the refresher's single-flight rule, which live above it. The
/// composition root (the server, the CLI) hands one in with [`Vault::open_with`]; it is given
/// the vault to refresh in on every call and must not hold one itself, so that dropping the last
/// handle still closes the database and lets go of the owner lock. It runs on the owner's
/// runtime, as a task of the peer that asked.
pub trait PeerRefresh: Send + Sync {
    /// Refresh `key` (whose caller last saw `seen_version`) within `budget`.
    fn refresh<'a>(
        &'a self,
        vault: &'a Vault,
        key: &'a ConnKey,
        seen_version: u64,
        force: bool,
        budget: Duration,
    ) -> BoxFuture<'a, RefreshAnswer>;
}
