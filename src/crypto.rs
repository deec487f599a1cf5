//! Keys and chunk sealing. Pure: no I/O.
//!
//! Every key derives from the cluster secret by HKDF-SHA256 with a distinct label, so the
//! secret itself never encrypts anything and nodes sharing a secret read each other's chunks.

use aes_gcm_siv::aead::{AeadInOut, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use crate::content::ChunkId;

pub const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("chunk failed authentication")]
    Unauthentic,
    #[error("chunk plaintext does not hash to its id")]
    HashMismatch,
}

/// The cluster secret as given by the user or generated on first start.
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        Hkdf::<Sha256>::new(Some(b"diststore v1"), &self.0)
            .expand(label, &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    pub fn keys(&self) -> Keys {
        Keys {
            data: Aes256GcmSiv::new(&self.derive(b"chunk data key").into()),
            peer: self.derive(b"peer authentication key"),
        }
    }
}

/// Keys derived from the secret.
#[derive(Clone)]
pub struct Keys {
    data: Aes256GcmSiv,
    /// Proves knowledge of the secret to peers; never sent.
    pub peer: [u8; 32],
}

/// The nonce for a chunk: deterministic, so equal chunks seal to equal bytes everywhere.
/// GCM-SIV stays safe when a nonce repeats with the same plaintext.
fn chunk_nonce(id: &ChunkId) -> Nonce {
    let digest = Sha256::new_with_prefix(b"diststore chunk nonce")
        .chain_update(id.as_bytes())
        .finalize();
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&digest[..12]);
    nonce.into()
}

impl Keys {
    /// Encrypts a chunk; the id is bound in as associated data.
    pub fn seal_chunk(&self, id: &ChunkId, plaintext: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.data
            .encrypt_in_place(&chunk_nonce(id), id.as_bytes(), &mut buf)
            .expect("a chunk is far below the AEAD length limit");
        buf
    }

    /// Decrypts, authenticates and re-hashes a chunk. Bytes from disk or a peer are
    /// untrusted: any mismatch is an error, never wrong plaintext.
    pub fn open_chunk(&self, id: &ChunkId, ciphertext: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
        let mut buf = ciphertext;
        self.data
            .decrypt_in_place(&chunk_nonce(id), id.as_bytes(), &mut buf)
            .map_err(|_| CryptoError::Unauthentic)?;
        if ChunkId::of(&buf) != *id {
            return Err(CryptoError::HashMismatch);
        }
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let keys = Secret::new(b"s3cret".to_vec()).keys();
        let data = b"hello chunk".to_vec();
        let id = ChunkId::of(&data);
        let sealed = keys.seal_chunk(&id, &data);
        assert_eq!(sealed.len(), data.len() + TAG_LEN);
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        // Deterministic: equal chunks give equal ciphertext.
        assert_eq!(sealed, keys.seal_chunk(&id, &data));
        assert_eq!(keys.open_chunk(&id, sealed.clone()).unwrap(), data);

        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert_eq!(
            keys.open_chunk(&id, tampered),
            Err(CryptoError::Unauthentic)
        );
        let other = ChunkId::of(b"other");
        assert_eq!(
            keys.open_chunk(&other, sealed.clone()),
            Err(CryptoError::Unauthentic)
        );
        let wrong = Secret::new(b"other".to_vec()).keys();
        assert_eq!(wrong.open_chunk(&id, sealed), Err(CryptoError::Unauthentic));
        assert_eq!(
            keys.open_chunk(&id, vec![1, 2]),
            Err(CryptoError::Unauthentic)
        );
    }
}
