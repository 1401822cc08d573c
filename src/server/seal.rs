//! The web key: what `keyward serve --http` seals the state of browser flows with — `/connect`
//! tickets, the session and sign-in cookies, and the `requestState` of a remote sign-in — so
//! that any process sharing the home folder can open what another one issued (a load balancer
//! may send each step of a browser flow to a different process).
//!
//! `web.key` in the home folder holds 64 random bytes (mode 0600, created once, atomically and
//! never overwritten): the first 32 are an XChaCha20-Poly1305 key, sealed values use the vault's
//! own construction ([`crate::vault::crypto`]) with the purpose as associated data, so a session
//! cookie never opens as a ticket; the last 32 key rmcp's HMAC `RequestStateCodec`. Deleting the
//! file invalidates every open link, cookie and sign-in, and nothing else.

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use rmcp::model::RequestStateCodec;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::Home;
use crate::error::{Error, Result};
use crate::secret::SecretKey;
use crate::vault::crypto;

const KEY_LEN: usize = 64;

/// The key of every sealed value of the web flows.
pub struct WebKey {
    aead: SecretKey,
    hmac: SecretKey,
}

impl std::fmt::Debug for WebKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebKey([redacted])")
    }
}

fn path(home: &Home) -> PathBuf {
    home.dir.join("web.key")
}

impl WebKey {
    /// Read `web.key`, creating it on first use (two processes racing both end up with the
    /// same file).
    pub fn load_or_create(home: &Home) -> Result<WebKey> {
        let path = path(home);
        if let Some(key) = read(&path)? {
            return Ok(key);
        }
        let mut bytes = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, bytes.as_mut());
        match crate::vault::keys::write_private_atomically(&path, bytes.as_ref(), false) {
            Ok(()) => {}
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            }
            Err(e) => return Err(e),
        }
        read(&path)?.ok_or_else(|| Error::other(format!("{} vanished", path.display())))
    }

    /// `value`, sealed for `purpose`, as URL-safe text.
    pub fn seal(&self, purpose: &str, value: &impl Serialize) -> String {
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(value).expect("sealed values serialize"));
        B64.encode(crypto::seal(
            &self.aead,
            0,
            &[b"keyward-web", purpose.as_bytes()],
            &plain,
        ))
    }

    /// What [`WebKey::seal`] sealed for `purpose`; `None` for anything else (tampered, another
    /// purpose, another key, not ours at all).
    pub fn open<T: DeserializeOwned>(&self, purpose: &str, text: &str) -> Option<T> {
        let blob = B64.decode(text.trim()).ok()?;
        let plain = crypto::open(&blob, &[b"keyward-web", purpose.as_bytes()], |id| {
            (id == 0).then_some(&self.aead)
        })
        .ok()?;
        serde_json::from_slice(&plain).ok()
    }

    /// The codec of `requestState` values a remote sign-in issues.
    pub fn request_state_codec(&self) -> RequestStateCodec {
        RequestStateCodec::try_new(self.hmac.expose().to_vec())
            .expect("32 bytes are a long enough key")
    }
}

fn read(path: &std::path::Path) -> Result<Option<WebKey>> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::Untrusted(format!(
            "{} has mode {mode:04o}, so other users may read it; keyward refuses to use it. Run \
             `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?,
    );
    if bytes.len() != KEY_LEN {
        return Err(Error::other(format!(
            "{} is damaged (not {KEY_LEN} bytes): delete it and restart keyward (open connect \
             links and browser sign-ins stop working; nothing else is lost)",
            path.display()
        )));
    }
    let half = |range: std::ops::Range<usize>| {
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[range]);
        SecretKey::from_bytes(key)
    };
    Ok(Some(WebKey {
        aead: half(0..32),
        hmac: half(32..64),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_for_their_purpose_only_and_the_key_is_shared() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home {
            dir: dir.path().to_path_buf(),
        };
        let key = WebKey::load_or_create(&home).unwrap();
        let sealed = key.seal("ticket", &("alice", 7));
        assert_eq!(
            key.open::<(String, u32)>("ticket", &sealed),
            Some(("alice".into(), 7))
        );
        assert_eq!(key.open::<(String, u32)>("session", &sealed), None);
        let mut tampered = sealed.clone().into_bytes();
        tampered[20] ^= 1;
        assert_eq!(
            key.open::<(String, u32)>("ticket", std::str::from_utf8(&tampered).unwrap()),
            None
        );
        // Another process of the same home reads the same key.
        let again = WebKey::load_or_create(&home).unwrap();
        assert!(again.open::<(String, u32)>("ticket", &sealed).is_some());
    }
}
