//! What travels on the vault socket, besides the requests ([`super::Request`]): the owner's
//! greeting, its answers, change notices, and the serde mirrors of the errors that cross it —
//! the vault's [`Error`] and the refresher's error ([`RefreshFailure`]) — so that an error the
//! owner hits is the same typed error in the process that asked, and nobody decides anything on
//! its text. Messages never hold secrets (see [`crate::error`]).

use serde::{Deserialize, Serialize};

use super::frames::OutFrame;
use crate::error::{Error, Result};
use crate::secret::SecretString;
use crate::vault::ConnKey;

/// The owner's answer to a hello it accepts.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Greeting {
    pub protocol: u32,
    pub pid: u32,
    /// How long the owner keeps a connection open with nothing to do.
    #[serde(default = "Greeting::default_idle_ms")]
    pub idle_ms: u64,
}

impl Greeting {
    fn default_idle_ms() -> u64 {
        60_000
    }
}

/// One frame of a subscription stream (`Request::Subscribe`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Notice {
    /// This connection was added, changed or removed.
    Connection(ConnKey),
    /// A user (API key) was added or removed: forget cached keys.
    Users,
}

/// The owner's answer to one request, encoded: the JSON of the operation's `Result`, in a frame
/// whose request id is set when it is sent. An answer too large for a frame (say, an enormous
/// `list`) is replaced by an error saying so: the peer must not take it for a dead owner.
pub(crate) struct Answer(OutFrame);

impl Answer {
    pub(crate) fn of<T: Serialize>(result: &Result<T>) -> Answer {
        match OutFrame::with_id(0, result) {
            Ok(frame) => Answer(frame),
            Err(e) => {
                let message = if e.kind() == std::io::ErrorKind::InvalidInput {
                    format!(
                        "the vault owner's answer is too large for the vault socket ({e}); ask \
                         for less (e.g. `keyward status --user NAME`)"
                    )
                } else {
                    format!("the vault owner could not encode its answer: {e}")
                };
                let error: Result<()> = Err(Error::other(message));
                Answer(OutFrame::with_id(0, &error).expect("a short error fits a frame"))
            }
        }
    }

    /// The frame answering request `id`.
    pub(super) fn into_frame(mut self, id: u64) -> OutFrame {
        self.0.set_id(id);
        self.0
    }
}

/// The owner's answer to a refresh request: the token to use and its version, `None` when
/// there is nothing better than what the caller has, or why there is no token.
pub type RefreshAnswer = std::result::Result<Option<(SecretString, u64)>, RefreshFailure>;

/// Why the owner could not refresh a connection for another process: the serde mirror of the
/// refresher's error (`oauth::refresh::RefreshError`), variant for variant. The vault knows no
/// tool errors, so the error's fields travel as they are and the refresher turns them back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "grant", rename_all = "snake_case")]
pub enum RefreshFailure {
    /// The grant is gone: the current access token is no use either, even if it has not
    /// expired.
    Gone(FailureReport),
    /// The grant lives: a current access token that has not expired may still be used.
    Alive(FailureReport),
}

/// What a failed refresh tells the caller (a tool error's fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReport {
    pub message: String,
    pub hint: Option<String>,
    /// The same call may succeed later.
    pub retryable: bool,
    pub status: Option<u16>,
    /// Only the user can fix this, by signing in with the provider (again) for this connection,
    /// with exactly these scopes if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_in: Option<(ConnKey, Option<Vec<String>>)>,
}

impl RefreshFailure {
    /// A failure of the relay itself (the owner went away, or cannot refresh): the grant is
    /// untouched, and trying again will reach an owner that can.
    pub(crate) fn of_relay(message: String, hint: &str) -> RefreshFailure {
        RefreshFailure::Alive(FailureReport {
            message,
            hint: Some(hint.to_string()),
            retryable: true,
            status: None,
            sign_in: None,
        })
    }
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
            Error::Unavailable("a".into()),
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
