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
//!
//! Replicas on a PostgreSQL store run on many machines, each with a home of its own: a file
//! created by each would make a link open only on the replica that issued it, and copying one
//! more secret file to every machine is a step people miss. What they already share is the
//! master key, so without a `web.key` file they derive the 64 bytes from it with HKDF-SHA256
//! under a label of their own (one-way: the web key never reveals the master key). A `web.key`
//! file still wins where there is one (to invalidate every sign-in, put a new one on every
//! replica); `keyward rekey` changes the derived key with the master key.

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
use crate::vault::keys::MasterKey;

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
    /// The web key of a deployment: `web.key` when the home folder has one; else, for replicas
    /// sharing a PostgreSQL store (`shared_store`), derived from the master key; else a new
    /// `web.key` (see the module docs).
    pub fn for_deployment(home: &Home, shared_store: bool) -> Result<WebKey> {
        if let Some(key) = read(&path(home))? {
            return Ok(key);
        }
        if !shared_store {
            return WebKey::load_or_create(home);
        }
        let master = MasterKey::load(home)?.ok_or_else(|| {
            Error::MasterKey(
                "no master key: set KEYWARD_MASTER_KEY to the vault's master key (the same on \
                 every replica) or put it in master.key"
                    .into(),
            )
        })?;
        Ok(WebKey::derived_from(&master.key))
    }

    /// HKDF-SHA256 of the master key: the same 64 bytes on every replica with that key.
    fn derived_from(master: &SecretKey) -> WebKey {
        use ring::hkdf;
        struct Len;
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                KEY_LEN
            }
        }
        let mut bytes = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        hkdf::Salt::new(hkdf::HKDF_SHA256, b"keyward")
            .extract(master.expose())
            .expand(&[b"keyward web key v1"], Len)
            .and_then(|okm| okm.fill(bytes.as_mut()))
            .expect("64 bytes are within HKDF-SHA256's output limit");
        WebKey::from_bytes(bytes.as_ref())
    }

    fn from_bytes(bytes: &[u8]) -> WebKey {
        let half = |range: std::ops::Range<usize>| {
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes[range]);
            SecretKey::from_bytes(key)
        };
        WebKey {
            aead: half(0..32),
            hmac: half(32..64),
        }
    }

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
    Ok(Some(WebKey::from_bytes(&bytes)))
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

    /// A home folder of a replica: its own `master.key` file holding `master`.
    fn replica(master: &SecretKey) -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home {
            dir: dir.path().to_path_buf(),
        };
        crate::vault::keys::write_key_file(&home.key_file(), master, false).unwrap();
        (dir, home)
    }

    #[test]
    fn replicas_of_a_shared_store_derive_one_web_key_from_the_master_key() {
        let master = SecretKey::from_bytes([7; 32]);
        let (_a_dir, a) = replica(&master);
        let (_b_dir, b) = replica(&master);
        let (_c_dir, c) = replica(&SecretKey::from_bytes([8; 32]));
        let on_a = WebKey::for_deployment(&a, true).unwrap();
        let sealed = on_a.seal("ticket", &"alice");
        // Another machine with the same master key opens what this one sealed; no file is
        // written, and another master key opens nothing.
        let on_b = WebKey::for_deployment(&b, true).unwrap();
        assert_eq!(
            on_b.open::<String>("ticket", &sealed).as_deref(),
            Some("alice")
        );
        assert!(!path(&a).exists() && !path(&b).exists());
        let on_c = WebKey::for_deployment(&c, true).unwrap();
        assert_eq!(on_c.open::<String>("ticket", &sealed), None);
        // Neither half is the master key itself.
        assert_ne!(on_a.aead.expose(), master.expose());
        assert_ne!(on_a.hmac.expose(), master.expose());

        // A web.key file wins (put the same new one on every replica to sign everyone out).
        let file = WebKey::load_or_create(&b).unwrap();
        let from_file = WebKey::for_deployment(&b, true).unwrap();
        let resealed = file.seal("ticket", &"bob");
        assert_eq!(
            from_file.open::<String>("ticket", &resealed).as_deref(),
            Some("bob")
        );
        assert_eq!(from_file.open::<String>("ticket", &sealed), None);

        // Without a shared store a home makes its own file, as before.
        let (_d_dir, d) = replica(&master);
        WebKey::for_deployment(&d, false).unwrap();
        assert!(path(&d).exists());
    }

    #[test]
    fn a_replica_without_the_master_key_says_where_to_put_it() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home {
            dir: dir.path().to_path_buf(),
        };
        if std::env::var_os("KEYWARD_MASTER_KEY").is_some() {
            eprintln!("KEYWARD_MASTER_KEY is set here: the missing-key message is not checked");
            return;
        }
        let error = WebKey::for_deployment(&home, true).expect_err("no key");
        assert!(error.to_string().contains("KEYWARD_MASTER_KEY"), "{error}");
    }
}
