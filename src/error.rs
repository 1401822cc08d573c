//! The crate's error type. Every message says what happened and what to do about it; none
//! carries a secret (the types that hold secrets print `[redacted]`).

use thiserror::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// The command line or the arguments were wrong: exit code 2.
    #[error("{0}")]
    Usage(String),
    /// `config.toml`, a manifest or the environment is wrong.
    #[error("configuration error: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The master key is missing, malformed, too permissive or does not open the vault.
    #[error("{0}")]
    MasterKey(String),
    /// The vault could not be read or written.
    #[error("vault error: {0}")]
    Vault(String),
    /// One sealed record did not open (tampered, copied, rolled back or under a lost key).
    #[error("the record {record} does not open ({reason}); the other records are unaffected. Remove it with `keyward disconnect {provider} --user {user} --account {account} --force` and connect again")]
    RecordCorrupt {
        record: String,
        provider: String,
        user: String,
        account: String,
        reason: String,
    },
    /// Somebody else wrote the record between our read and our write.
    #[error("the record {0} changed while it was being written; retry the command")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// The database is held by another local process (sled's lock); reach it through that
    /// process instead.
    #[error("{0}")]
    Busy(String),
    /// The keyward process that owned the vault went away (or stopped answering) during a
    /// relayed operation: take over or reconnect, then try again (see `vault::Vault`).
    #[error("the keyward process that owns the vault went away: {0}")]
    OwnerGone(String),
    /// A file, folder or socket keyward would trust belongs to another user or is writable by
    /// group/others (invariant 13); the message names the path and the chmod/chown that fixes it.
    #[error("{0}")]
    Untrusted(String),
    /// The store cannot answer now — PostgreSQL unreachable or restarting, or a refresh lock
    /// held elsewhere past the call's budget. Retryable: keyward reconnects by itself, and the
    /// message names the store (never its password).
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Self {
        Error::Usage(msg.into())
    }
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
    pub fn vault(msg: impl Into<String>) -> Self {
        Error::Vault(msg.into())
    }
    pub fn other(msg: impl Into<String>) -> Self {
        Error::Other(msg.into())
    }

    /// Whether trying the same thing again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::Conflict(_) | Error::OwnerGone(_)
        )
    }

    /// The process exit code for this error: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Vault(e.to_string())
    }
}
