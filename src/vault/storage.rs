//! The vault's operations, declared once.
//!
//! [`Storage`] is what a backend does: connections (read, compare-and-swap write, remove, list),
//! the users tree (API keys), the audit log (append and page), durability and the data keys. It
//! is implemented by the embedded sled store ([`super::store::Store`]) and by the relay to the
//! process that owns it ([`super::share::RemoteClient`]); [`super::Vault`] holds one of them and
//! wraps every call once, above both, in the takeover-and-retry rule (a relay whose owner went
//! away answers [`Error::OwnerGone`]; the vault takes over or reconnects and calls again).
//!
//! Each operation is one line of the `storage_ops!` list below, which generates the trait
//! method, the relay's wire request ([`Request`]), the owner's dispatch of that request to its
//! own storage, and the relay client's implementation — so adding an operation is one line here
//! plus the backends' methods, and adding a backend is one module implementing [`Storage`].
//! Arguments are owned: each call is one value that may travel over the socket.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::clients::LastExchange;
use super::record::{ConnKey, Connection, TokenRecord};
use super::share::{to_answer, Answer, RemoteClient};
use super::store::{AuditPage, Listed, RotateReport};
use super::AuditEntry;
use crate::error::{Error, Result};

macro_rules! storage_ops {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident => fn $name:ident($($arg:ident: $ty:ty),*) -> $out:ty;
    )*) => {
        /// What a vault backend does (see the module docs). Every method may block on I/O.
        pub trait Storage: Send + Sync {
            $( $(#[doc = $doc])* fn $name(&self, $($arg: $ty),*) -> Result<$out>; )*

            /// [`Storage::rotate_key`], reporting `progress(done, total)` after each record where
            /// the backend can (a relay cannot: the owner does the work).
            fn rotate_key_reporting(
                &self,
                progress: &mut dyn FnMut(usize, usize),
            ) -> Result<RotateReport> {
                let _ = progress;
                self.rotate_key()
            }
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

        /// In the owner: run a relayed storage operation on `storage`; a request that is not
        /// one goes to `relay_request`.
        pub(crate) fn dispatch(
            storage: &dyn Storage,
            request: Request,
            relay_request: impl FnOnce(Request) -> Answer,
        ) -> Answer {
            match request {
                $( Request::$variant { $($arg),* } => to_answer(storage.$name($($arg),*)), )*
                other => relay_request(other),
            }
        }

        impl Storage for RemoteClient {
            $(
                fn $name(&self, $($arg: $ty),*) -> Result<$out> {
                    self.relay(&Request::$variant { $($arg),* })
                }
            )*
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
    Touch => fn touch(key: ConnKey) -> ();
    /// Every connection (of `user`, if given) with its last use; a record that does not open
    /// is listed as the error naming it.
    List => fn list(user: Option<String>) -> Vec<Listed>;
    /// Keys of every stored connection, without opening them.
    Keys => fn keys() -> Vec<ConnKey>;
    /// Note a connection's latest token exchange (not flushed; a hint for `status`).
    NoteExchange => fn note_exchange(key: ConnKey, note: LastExchange) -> ();
    /// The latest token exchange of every connection (of `user`, if given) that had one.
    Exchanges => fn exchanges(user: Option<String>) -> Vec<(ConnKey, LastExchange)>;
    /// Append an audit entry (not flushed one by one).
    Audit => fn audit(entry: AuditEntry) -> ();
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

/// A lost owner is a typed error, so that the retry rule never looks at message text.
impl RemoteClient {
    fn relay<T: serde::de::DeserializeOwned>(&self, request: &Request) -> Result<T> {
        self.call(request)
            .unwrap_or_else(|lost| Err(Error::OwnerGone(lost.to_string())))
    }
}
