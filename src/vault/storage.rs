//! The vault's operations, declared once.
//!
//! [`Storage`] is what a backend does: connections (read, compare-and-swap write, remove, list),
//! the users tree (API keys), the audit log (append and page), durability, the data keys, and
//! who refreshes a connection ([`Storage::refresh_turn`]). It is implemented by the embedded sled
//! store ([`super::store::Store`]), by the relay to the process that owns it
//! ([`super::share::RemoteClient`]) and by the PostgreSQL store ([`super::postgres::PgStore`]);
//! [`super::Vault`] holds one of them and wraps every call
//! once, above all of them, in the takeover-and-retry rule (a relay whose owner went away
//! answers [`crate::error::Error::OwnerGone`]; the vault takes over or reconnects and calls
//! again).
//!
//! Every method returns a future: a backend waits for a disk, a socket or a database server
//! without holding a runtime worker. Whether a backend runs an operation in place or elsewhere
//! is its own business (the sled store runs its memory-speed operations in place and sends what
//! waits for the disk to the blocking pool, see [`super::store`]).
//!
//! Each relayed operation is one line of the `storage_ops!` list below, which generates the
//! trait method, the relay's wire request ([`Request`]), the owner's dispatch of that request to
//! its own storage, and the relay client's implementation — so adding an operation is one line
//! here plus the backends' methods, and adding a backend is one module implementing [`Storage`].
//! Arguments are owned: each call is one value that may travel over the socket.
//!
//! An operation marked `as notice` returns nothing its caller waits for (`touch`, `audit`): the
//! relay sends it without waiting for an answer, so that a tool call through a relay costs one
//! round trip to the owner instead of two. The owner applies a notice before it reads the next
//! request of the same connection, so a `flush` sent after an `audit` covers it, and an audit
//! page read after it contains it.

use std::any::Any;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::clients::LastExchange;
use super::record::{ConnKey, Connection, TokenRecord};
use super::share::{Answer, RemoteClient};
use super::store::{AuditPage, Listed, RotateReport};
use super::AuditEntry;
use crate::error::Result;

/// Who refreshes a connection now (see [`Storage::refresh_turn`]).
pub enum RefreshTurn {
    /// This process: refresh while holding the guard, which keeps every other process sharing
    /// the backend — on this machine or another — from refreshing the same connection
    /// meanwhile (a row or advisory lock of a database server, say). The sled owner's guard
    /// holds nothing: only the owner refreshes, and in it the vault's per-process lock, taken
    /// before the turn, already admits one refresh at a time.
    Here(Box<dyn Any + Send>),
    /// The process that owns the vault refreshes for every local process: ask it
    /// ([`super::Vault::refresh_by_owner`]).
    Owner,
}

impl std::fmt::Debug for RefreshTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RefreshTurn::Here(_) => "Here",
            RefreshTurn::Owner => "Owner",
        })
    }
}

/// How [`Storage::rotate_key_reporting`] reports progress: `(done, total)` records.
pub type Progress = Box<dyn FnMut(usize, usize) + Send>;

macro_rules! storage_ops {
    (@is_notice) => { false };
    (@is_notice notice) => { true };
    (@relay $client:ident, $request:expr) => { $client.call($request) };
    (@relay $client:ident, $request:expr, notice) => { $client.notify($request) };
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident => fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty $(as $notice:ident)?;
    )*) => {
        /// What a vault backend does (see the module docs).
        pub trait Storage: Send + Sync {
            $( $(#[doc = $doc])* fn $name(&self, $($arg: $ty),*) -> BoxFuture<'_, Result<$out>>; )*

            /// [`Storage::rotate_key`], reporting `progress(done, total)` after each record where
            /// the backend can (a relay cannot: the owner does the work).
            fn rotate_key_reporting(&self, progress: Progress) -> BoxFuture<'_, Result<RotateReport>> {
                drop(progress);
                self.rotate_key()
            }

            /// Who may refresh `key` now: this process, holding the guard of
            /// [`RefreshTurn::Here`] while it does, or the process that owns the vault. Waits
            /// for the turn no longer than `budget`. The decision is the backend's: the sled
            /// owner refreshes itself, its relays ask it, a database shared by several machines
            /// lets any of them refresh under its lock. Callers hold the vault's per-process
            /// lock of `key` ([`super::Vault::refresh_lock`]) first, so that one task of a
            /// process asks at a time.
            fn refresh_turn(
                &self,
                key: ConnKey,
                budget: Duration,
            ) -> BoxFuture<'_, Result<RefreshTurn>>;
        }

        /// What a non-owner asks the owner to do: the storage operations, plus the relay's own
        /// requests (hello, subscription to changes, a refresh by the owner).
        #[derive(Debug, Serialize, Deserialize)]
        #[serde(tag = "op", rename_all = "snake_case")]
        pub enum Request {
            Hello {
                protocol: u32,
                pid: u32,
            },
            /// Turn this connection into a stream of change notices.
            Subscribe,
            /// Refresh a connection (only the owner refreshes: single-flight across processes).
            Refresh {
                key: ConnKey,
                seen_version: u64,
                force: bool,
                budget_ms: u64,
            },
            $( $(#[doc = $doc])* $variant { $($arg: $ty),* }, )*
        }

        impl Request {
            /// True for a request whose sender does not wait for an answer (see the module
            /// docs): the owner sends none.
            pub fn is_notice(&self) -> bool {
                match self {
                    $( Request::$variant { .. } => storage_ops!(@is_notice $($notice)?), )*
                    _ => false,
                }
            }
        }

        /// In the owner: a relayed storage operation on `storage`, as a future of its encoded
        /// answer; a request that is not a storage operation goes to `other`.
        pub(crate) fn dispatch<S: Storage + 'static>(
            storage: S,
            request: Request,
            other: impl FnOnce(Request) -> BoxFuture<'static, Answer>,
        ) -> BoxFuture<'static, Answer> {
            match request {
                $( Request::$variant { $($arg),* } => Box::pin(async move {
                    Answer::of(&storage.$name($($arg),*).await)
                }), )*
                request => other(request),
            }
        }

        impl Storage for RemoteClient {
            $(
                fn $name(&self, $($arg: $ty),*) -> BoxFuture<'_, Result<$out>> {
                    Box::pin(storage_ops!(@relay self, Request::$variant { $($arg),* } $(, $notice)?))
                }
            )*

            /// A relay never refreshes: the owner does, for every local process.
            fn refresh_turn(
                &self,
                _key: ConnKey,
                _budget: Duration,
            ) -> BoxFuture<'_, Result<RefreshTurn>> {
                Box::pin(std::future::ready(Ok(RefreshTurn::Owner)))
            }
        }
    };
}

storage_ops! {
    /// Read and open one connection. `Ok(None)` when there is none.
    Get => fn get(key: ConnKey) -> Option<Connection>;
    /// Write `record`, requiring the stored version to be `expected` (`None`: any version,
    /// including no record). Returns the new version. Flushed to disk before returning.
    Put => fn put(key: ConnKey, expected: Option<u64>, record: TokenRecord) -> u64;
    /// Remove a connection (its version counter stays, so versions never repeat).
    Remove => fn remove(key: ConnKey) -> bool;
    /// Note that a connection was just used (not flushed).
    Touch => fn touch(key: ConnKey) -> () as notice;
    /// Every connection (of `user`, if given) with its last use; a record that does not open
    /// is listed as the error naming it.
    List => fn list(user: Option<String>) -> Vec<Listed>;
    /// Keys of every stored connection, without opening them.
    Keys => fn keys() -> Vec<ConnKey>;
    /// Note a connection's latest token exchange (not flushed; a hint for `status`).
    NoteExchange => fn note_exchange(key: ConnKey, note: LastExchange) -> () as notice;
    /// The latest token exchange of every connection (of `user`, if given) that had one.
    Exchanges => fn exchanges(user: Option<String>) -> Vec<(ConnKey, LastExchange)>;
    /// Append an audit entry (not flushed one by one).
    Audit => fn audit(entry: AuditEntry) -> () as notice;
    /// The audit entries after `after` up to sequence `until` (`None`: the newest), the newest
    /// `limit` of them if given, oldest first, as many as fit one answer of the relay.
    AuditPage => fn audit_page(after: u64, limit: Option<usize>, until: Option<u64>) -> AuditPage;
    /// Flush every pending write to disk.
    Flush => fn flush() -> ();
    /// The id of the data key that seals new records.
    CurrentKeyId => fn current_key_id() -> u32;
    /// Add a data key and re-seal every record under it.
    RotateKey => fn rotate_key() -> RotateReport;
    /// Re-wrap the keyring under a new master key; returns where the new key lives.
    Rekey => fn rekey(new_key_file: Option<PathBuf>) -> String;
    /// One value of the users tree (API key hash → user).
    UsersGet => fn users_get(key: Vec<u8>) -> Option<Vec<u8>>;
    /// Add a user entry, flushed; moves the users generation.
    UsersInsert => fn users_insert(key: Vec<u8>, value: Vec<u8>) -> ();
    /// Remove a user entry, flushed; moves the users generation.
    UsersRemove => fn users_remove(key: Vec<u8>) -> ();
    /// Every users entry whose key starts with `prefix`.
    UsersScan => fn users_scan(prefix: Vec<u8>) -> Vec<(Vec<u8>, Vec<u8>)>;
}
