//! Sealing and opening records: XChaCha20-Poly1305 with associated data.
//!
//! Construction: XChaCha20-Poly1305 as specified in draft-irtf-cfrg-xchacha (the extended-nonce
//! variant of the ChaCha20-Poly1305 AEAD of RFC 8439). Its 24-byte nonce is large enough to be
//! drawn at random for every write without a practical risk of reuse, so we never keep nonce
//! counters on disk.
//!
//! A sealed blob is `format (1 byte) ‖ key id (4 bytes, BE) ‖ nonce (24 bytes) ‖ ciphertext+tag`.
//! The associated data binds the blob to where it belongs — format, key id, and the caller's
//! context (for a token record: user, provider, account and record version; for the keyring:
//! the master key id) — so a blob copied to another record, or an older blob put back in place,
//! fails authentication instead of opening as the wrong thing (invariant 7).

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::secret::SecretKey;

/// Version of the blob layout above; part of the associated data.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 4 + 24;

/// Why a blob did not open. Deliberately vague about which check failed: the caller names the
/// record, and an attacker learns nothing from the difference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the blob is too short or has an unknown format")]
    Malformed,
    #[error("the blob was sealed with data key {0}, which the keyring does not hold")]
    UnknownKey(u32),
    #[error("authentication failed (tampered, moved or rolled back)")]
    Authentication,
}

/// Builds the associated data: a domain label, the format, the key id and length-prefixed
/// context fields (length prefixes keep ("ab","c") and ("a","bc") apart).
pub fn associated_data(key_id: u32, context: &[&[u8]]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(32 + context.iter().map(|c| c.len() + 4).sum::<usize>());
    aad.extend_from_slice(b"keyward-seal");
    aad.push(FORMAT_VERSION);
    aad.extend_from_slice(&key_id.to_be_bytes());
    for field in context {
        aad.extend_from_slice(&(field.len() as u32).to_be_bytes());
        aad.extend_from_slice(field);
    }
    aad
}

/// Seal `plaintext` under `key` (whose id is `key_id`) with a fresh random nonce.
pub fn seal(key: &SecretKey, key_id: u32, context: &[&[u8]], plaintext: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let aad = associated_data(key_id, context);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    let mut blob = Vec::with_capacity(HEADER_LEN + ciphertext.len());
    blob.push(FORMAT_VERSION);
    blob.extend_from_slice(&key_id.to_be_bytes());
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&ciphertext);
    blob
}

/// The data-key id a blob names in its header.
pub fn blob_key_id(blob: &[u8]) -> Result<u32, OpenError> {
    if blob.len() < HEADER_LEN + 16 || blob[0] != FORMAT_VERSION {
        return Err(OpenError::Malformed);
    }
    Ok(u32::from_be_bytes([blob[1], blob[2], blob[3], blob[4]]))
}

/// Open a blob. `key_for` maps the header's key id to a data key.
pub fn open<'k>(
    blob: &[u8],
    context: &[&[u8]],
    key_for: impl FnOnce(u32) -> Option<&'k SecretKey>,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let key_id = blob_key_id(blob)?;
    let key = key_for(key_id).ok_or(OpenError::UnknownKey(key_id))?;
    let cipher = XChaCha20Poly1305::new(key.expose().into());
    let nonce = XNonce::from_slice(&blob[5..HEADER_LEN]);
    let aad = associated_data(key_id, context);
    cipher
        .decrypt(
            nonce,
            Payload {
                msg: &blob[HEADER_LEN..],
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| OpenError::Authentication)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_bytes([42; 32])
    }

    #[test]
    fn round_trip() {
        let k = key();
        let blob = seal(&k, 7, &[b"alice", b"github"], b"hello");
        assert_eq!(blob_key_id(&blob), Ok(7));
        let out = open(&blob, &[b"alice", b"github"], |id| (id == 7).then_some(&k)).unwrap();
        assert_eq!(&out[..], b"hello");
    }

    #[test]
    fn nonces_are_fresh() {
        let k = key();
        assert_ne!(seal(&k, 1, &[], b"x"), seal(&k, 1, &[], b"x"));
    }

    #[test]
    fn wrong_context_flipped_byte_and_unknown_key_fail() {
        let k = key();
        let blob = seal(&k, 1, &[b"alice", b"github"], b"secret");
        assert_eq!(
            open(&blob, &[b"bob", b"github"], |_| Some(&k)).unwrap_err(),
            OpenError::Authentication
        );
        // Length prefixes keep field boundaries apart.
        assert_eq!(
            open(&blob, &[b"alic", b"egithub"], |_| Some(&k)).unwrap_err(),
            OpenError::Authentication
        );
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(
                open(&bad, &[b"alice", b"github"], |_| Some(&k)).is_err(),
                "byte {i}"
            );
        }
        assert_eq!(
            open(&blob, &[b"alice", b"github"], |_| None).unwrap_err(),
            OpenError::UnknownKey(1)
        );
        assert_eq!(
            open(&blob[..10], &[], |_| Some(&k)).unwrap_err(),
            OpenError::Malformed
        );
    }
}
