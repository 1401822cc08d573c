//! Master key and keyring: the two layers of the envelope.
//!
//! As in Vault's barrier, the master key never seals a record. It seals only the *keyring* — the
//! list of data keys — and the data keys seal the records. That makes both operations cheap and
//! safe to interrupt:
//! - `rekey` (new master key) rewrites one small file, `keyring.json`, atomically (write to a
//!   temporary file, fsync, rename), and no record is touched;
//! - `rotate-key` (new data key) first adds the key to the keyring and marks a rotation in
//!   progress, then re-seals records one by one. Old keys stay in the keyring until no record
//!   uses them, so a rotation killed at any point leaves every record readable, and running it
//!   again picks up the same target key and finishes.
//!
//! The keyring lives outside the sled database on purpose: a wrong master key is detected
//! before sled is opened, so a failed open rewrites nothing (invariant 8).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::crypto;
use crate::config::Home;
use crate::error::{Error, Result};
use crate::secret::{SecretKey, SecretString};

/// Where the master key came from; decides what `rekey` may rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
}

/// The master key and where it came from.
#[derive(Debug)]
pub struct MasterKey {
    pub key: SecretKey,
    pub source: KeySource,
}

impl MasterKey {
    /// A short public fingerprint of the key, shown in errors so a user can tell two keys apart.
    /// It is a hash of the key under a domain label: it identifies the key without revealing it.
    pub fn id(&self) -> String {
        key_id(&self.key)
    }

    /// Load the key from `KEYWARD_MASTER_KEY`, else from `master.key` in the home folder.
    /// Returns `Ok(None)` when neither exists.
    pub fn load(home: &Home) -> Result<Option<MasterKey>> {
        if let Ok(value) = std::env::var("KEYWARD_MASTER_KEY") {
            if !value.trim().is_empty() {
                let key = decode_key(&SecretString::new(value)).map_err(|why| {
                    Error::MasterKey(format!(
                        "KEYWARD_MASTER_KEY is not a valid master key ({why}): it must be the \
                         base64 encoding of 32 random bytes, e.g. the output of \
                         `head -c 32 /dev/urandom | base64`"
                    ))
                })?;
                return Ok(Some(MasterKey {
                    key,
                    source: KeySource::Env,
                }));
            }
        }
        let path = home.key_file();
        match read_key_file(&path)? {
            Some(key) => Ok(Some(MasterKey {
                key,
                source: KeySource::File(path),
            })),
            None => Ok(None),
        }
    }

    /// Generate a key into `master.key` (mode 0600). Refuses to overwrite an existing file.
    pub fn create_file(home: &Home) -> Result<MasterKey> {
        let path = home.key_file();
        let key = SecretKey::generate();
        write_key_file(&path, &key, false)?;
        Ok(MasterKey {
            key,
            source: KeySource::File(path),
        })
    }
}

fn key_id(key: &SecretKey) -> String {
    let digest = Sha256::new()
        .chain_update(b"keyward-master-key-id\0")
        .chain_update(key.expose())
        .finalize();
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_key(text: &SecretString) -> std::result::Result<SecretKey, &'static str> {
    let bytes = zeroize::Zeroizing::new(
        B64.decode(text.expose().trim())
            .map_err(|_| "not valid base64")?,
    );
    let array: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| "not 32 bytes long")?;
    Ok(SecretKey::from_bytes(array))
}

/// Read a key file, refusing one that group or others can read (as ssh does with private keys).
pub fn read_key_file(path: &Path) -> Result<Option<SecretKey>> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::MasterKey(format!(
            "the key file {} has mode {mode:04o}, so other users may read it; keyward refuses to \
             use it. Run `chmod 600 {}` and try again",
            path.display(),
            path.display()
        )));
    }
    let text = SecretString::new(
        std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?,
    );
    let key = decode_key(&text).map_err(|why| {
        Error::MasterKey(format!(
            "the key file {} is not a valid master key ({why}); restore it from your backup",
            path.display()
        ))
    })?;
    Ok(Some(key))
}

/// Write a key file with mode 0600 via a temporary file and rename, so a crash leaves either the
/// old file or the new one. Without `replace`, an existing file is never overwritten, even by a
/// process racing this one: the new file is linked in place, which fails if the name exists.
pub fn write_key_file(path: &Path, key: &SecretKey, replace: bool) -> Result<()> {
    let text = zeroize::Zeroizing::new(format!("{}\n", B64.encode(key.expose())));
    match write_private_atomically(path, text.as_bytes(), replace) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(Error::MasterKey(format!(
                "{} already exists; keyward will not overwrite a master key",
                path.display()
            )))
        }
        other => other,
    }
}

/// Write `bytes` to `path` (mode 0600) atomically: a temporary file of a unique name, fsync, then
/// rename over `path` (`replace`) or hard-link to it (not `replace`: fails with `AlreadyExists`
/// when `path` exists, so two processes creating the same file never overwrite each other), and
/// fsync the folder. The unique name keeps concurrent writers from truncating or removing each
/// other's temporary file.
pub fn write_private_atomically(path: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = write_then_place(&tmp, path, bytes, replace);
    let _ = std::fs::remove_file(&tmp);
    result?;
    if let Some(dir) = path.parent() {
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

fn write_then_place(tmp: &Path, path: &Path, bytes: &[u8], replace: bool) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| Error::io(ctx("creating"), e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io(ctx("writing"), e))?;
    file.sync_all().map_err(|e| Error::io(ctx("syncing"), e))?;
    drop(file);
    if replace {
        std::fs::rename(tmp, path)
            .map_err(|e| Error::io(format!("replacing {}", path.display()), e))
    } else {
        std::fs::hard_link(tmp, path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))
    }
}

/// One data key.
#[derive(Serialize, Deserialize)]
struct StoredDataKey {
    id: u32,
    key: String,
    created_at: i64,
}

/// The keyring as it is sealed inside `keyring.json`.
#[derive(Serialize, Deserialize, Default)]
struct KeyringPlain {
    current: u32,
    keys: Vec<StoredDataKey>,
    /// Set while `rotate-key` re-seals records under `current`.
    #[serde(default)]
    rotating: bool,
}

impl Drop for KeyringPlain {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for k in &mut self.keys {
            k.key.zeroize();
        }
    }
}

/// `keyring.json` on disk.
#[derive(Serialize, Deserialize)]
struct KeyringFile {
    format: u8,
    master_key_id: String,
    sealed: String,
}

/// The unsealed keyring held in memory.
pub struct Keyring {
    pub current: u32,
    pub rotating: bool,
    keys: Vec<(u32, i64, SecretKey)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("rotating", &self.rotating)
            .field("key_ids", &self.key_ids())
            .finish()
    }
}

const KEYRING_CONTEXT: &[u8] = b"keyring";

impl Keyring {
    /// A new keyring with one fresh data key.
    pub fn generate() -> Keyring {
        Keyring {
            current: 1,
            rotating: false,
            keys: vec![(1, now(), SecretKey::generate())],
        }
    }

    pub fn key(&self, id: u32) -> Option<&SecretKey> {
        self.keys
            .iter()
            .find(|(kid, _, _)| *kid == id)
            .map(|(_, _, k)| k)
    }

    pub fn current_key(&self) -> &SecretKey {
        self.key(self.current)
            .expect("the current data key is always in the keyring")
    }

    pub fn key_ids(&self) -> Vec<u32> {
        self.keys.iter().map(|(id, _, _)| *id).collect()
    }

    /// Add a fresh data key and make it current.
    pub fn add_key(&mut self) -> u32 {
        let id = self.keys.iter().map(|(id, _, _)| *id).max().unwrap_or(0) + 1;
        self.keys.push((id, now(), SecretKey::generate()));
        self.current = id;
        id
    }

    /// Drop every key but the current one (after a rotation has re-sealed everything).
    pub fn retire_old_keys(&mut self) {
        let current = self.current;
        self.keys.retain(|(id, _, _)| *id == current);
    }

    pub fn path(home: &Home) -> PathBuf {
        home.dir.join("keyring.json")
    }

    /// Read and unseal `keyring.json`. A different master key is reported with both key ids.
    pub fn load(home: &Home, master: &MasterKey) -> Result<Option<Keyring>> {
        let path = Self::path(home);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        Keyring::unseal(&text, master, &path.display().to_string()).map(Some)
    }

    /// Unseal a keyring from the text of `keyring.json` (which the PostgreSQL store keeps as
    /// is in a row). `origin` names where the text came from, for the errors.
    pub fn unseal(text: &str, master: &MasterKey, origin: &str) -> Result<Keyring> {
        let file: KeyringFile = serde_json::from_str(text).map_err(|e| {
            Error::vault(format!(
                "{origin} is damaged ({e}); restore it from your backup"
            ))
        })?;
        let wrong_key = || {
            Error::MasterKey(format!(
                "the master key does not open this vault (key id {}; the key given has id {}): \
                 check KEYWARD_MASTER_KEY / master.key",
                file.master_key_id,
                master.id()
            ))
        };
        if file.master_key_id != master.id() {
            return Err(wrong_key());
        }
        let blob = B64.decode(&file.sealed).map_err(|_| wrong_key())?;
        let context: [&[u8]; 2] = [KEYRING_CONTEXT, file.master_key_id.as_bytes()];
        let plain =
            crypto::open(&blob, &context, |_| Some(&master.key)).map_err(|_| wrong_key())?;
        let plain: KeyringPlain = serde_json::from_slice(&plain)
            .map_err(|e| Error::vault(format!("{origin} holds an unreadable keyring ({e})")))?;
        let mut keys = Vec::with_capacity(plain.keys.len());
        for k in &plain.keys {
            let key = decode_key(&SecretString::new(k.key.clone()))
                .map_err(|why| Error::vault(format!("data key {} is malformed ({why})", k.id)))?;
            keys.push((k.id, k.created_at, key));
        }
        Ok(Keyring {
            current: plain.current,
            rotating: plain.rotating,
            keys,
        })
    }

    /// Seal the keyring under `master` and replace `keyring.json` atomically.
    pub fn store(&self, home: &Home, master: &MasterKey) -> Result<()> {
        self.write(home, master, true)
    }

    /// Seal a new keyring under `master` into `keyring.json`, which must not exist yet.
    pub fn create(&self, home: &Home, master: &MasterKey) -> Result<()> {
        self.write(home, master, false)
    }

    fn write(&self, home: &Home, master: &MasterKey, replace: bool) -> Result<()> {
        let text = self.seal(master);
        write_private_atomically(&Self::path(home), text.as_bytes(), replace)
    }

    /// The text of `keyring.json`: the keyring sealed under `master`, with the master key's
    /// public id. Nothing in it opens without the master key.
    pub fn seal(&self, master: &MasterKey) -> String {
        let plain = KeyringPlain {
            current: self.current,
            rotating: self.rotating,
            keys: self
                .keys
                .iter()
                .map(|(id, created_at, key)| StoredDataKey {
                    id: *id,
                    key: B64.encode(key.expose()),
                    created_at: *created_at,
                })
                .collect(),
        };
        let json = zeroize::Zeroizing::new(serde_json::to_vec(&plain).expect("keyring serializes"));
        let master_key_id = master.id();
        let context: [&[u8]; 2] = [KEYRING_CONTEXT, master_key_id.as_bytes()];
        let sealed = crypto::seal(&master.key, 0, &context, &json);
        let file = KeyringFile {
            format: 1,
            master_key_id,
            sealed: B64.encode(sealed),
        };
        serde_json::to_string_pretty(&file).expect("keyring file serializes")
    }
}

/// The public id of the master key a keyring text (`keyring.json`) is sealed under, read
/// without any key; `None` when the text is not a keyring.
pub fn sealed_under(text: &str) -> Option<String> {
    serde_json::from_str::<KeyringFile>(text)
        .ok()
        .map(|file| file.master_key_id)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Where `rekey` puts the new master key until the keyring is re-wrapped under it.
pub fn pending_key_path(home: &Home) -> PathBuf {
    home.dir.join("master.key.new")
}

/// Complete a `rekey` that was interrupted after the keyring was re-wrapped but before the new
/// key replaced `master.key`: if the pending key is the one the keyring names, move it in place;
/// otherwise the keyring still uses the old key and the pending file is dropped.
pub fn finish_pending_rekey(home: &Home) -> Result<()> {
    let text = std::fs::read_to_string(Keyring::path(home)).ok();
    finish_pending_rekey_of(home, text.as_deref())
}

/// [`finish_pending_rekey`] for a keyring kept elsewhere than `keyring.json` (the PostgreSQL
/// store): `keyring` is its text, `None` when there is none.
pub fn finish_pending_rekey_of(home: &Home, keyring: Option<&str>) -> Result<()> {
    let pending = pending_key_path(home);
    let Some(new_key) = read_key_file(&pending)? else {
        return Ok(());
    };
    let Some(sealed_under) = keyring.and_then(sealed_under) else {
        return Ok(());
    };
    if sealed_under == key_id(&new_key) {
        std::fs::rename(&pending, home.key_file())
            .map_err(|e| Error::io(format!("replacing {}", home.key_file().display()), e))?;
    } else {
        let _ = std::fs::remove_file(&pending);
    }
    Ok(())
}

/// Check the master key against `keyring.json` without opening the database, and return its
/// id. Used by processes that reach the vault through its owner: a wrong key must fail there
/// exactly as it fails in the owner.
pub fn verify_master_key(home: &Home) -> Result<String> {
    let master = MasterKey::load(home)?.ok_or_else(|| {
        Error::MasterKey(format!(
            "the vault in {} exists but there is no master key: set KEYWARD_MASTER_KEY or restore \
             {} from your backup",
            home.dir.display(),
            home.key_file().display()
        ))
    })?;
    Keyring::load(home, &master)?;
    Ok(master.id())
}

/// A new master key chosen by `rekey`, on its way in: the caller re-wraps the keyring under
/// [`PendingRekey::master`] (in `keyring.json`, or in the PostgreSQL store's row), then calls
/// [`PendingRekey::finish`]. Until then the new key waits in [`pending_key_path`], so a crash in
/// between is completed (or undone) by [`finish_pending_rekey`] on the next open.
pub struct PendingRekey {
    pub master: MasterKey,
    pending: Option<PathBuf>,
    location: String,
}

impl PendingRekey {
    /// Take the new key from `new_key_file`, or generate one to replace `master.key`. A master
    /// key from `KEYWARD_MASTER_KEY` cannot be replaced by keyward: that needs a file.
    pub fn prepare(
        home: &Home,
        current: &MasterKey,
        new_key_file: Option<&Path>,
    ) -> Result<PendingRekey> {
        let new_key = match new_key_file {
            Some(path) => read_key_file(path)?
                .ok_or_else(|| Error::usage(format!("{} does not exist", path.display())))?,
            None => {
                if current.source == KeySource::Env {
                    return Err(Error::usage(
                        "the master key comes from KEYWARD_MASTER_KEY, so keyward cannot write the \
                         new one for you: create it with `head -c 32 /dev/urandom | base64 > \
                         new.key && chmod 600 new.key`, run `keyward rekey --new-key-file \
                         new.key`, then put its contents in KEYWARD_MASTER_KEY",
                    ));
                }
                SecretKey::generate()
            }
        };
        match &current.source {
            KeySource::File(path) => {
                // The new key reaches the disk before the keyring depends on it, and the old
                // file is replaced only after; `finish_pending_rekey` completes a crash between.
                let pending = pending_key_path(home);
                write_key_file(&pending, &new_key, true)?;
                Ok(PendingRekey {
                    master: MasterKey {
                        key: new_key,
                        source: KeySource::File(path.clone()),
                    },
                    pending: Some(pending),
                    location: path.display().to_string(),
                })
            }
            KeySource::Env => {
                let from = new_key_file
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                Ok(PendingRekey {
                    master: MasterKey {
                        key: new_key,
                        source: KeySource::Env,
                    },
                    pending: None,
                    location: format!("{from} (set KEYWARD_MASTER_KEY to its contents)"),
                })
            }
        }
    }

    /// The keyring is re-wrapped: put the new key file in place. Returns the new master key and
    /// where it lives.
    pub fn finish(self) -> Result<(MasterKey, String)> {
        if let (Some(pending), KeySource::File(path)) = (&self.pending, &self.master.source) {
            std::fs::rename(pending, path)
                .map_err(|e| Error::io(format!("replacing {}", path.display()), e))?;
        }
        Ok((self.master, self.location))
    }
}
