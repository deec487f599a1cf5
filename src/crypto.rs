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

/// The plaintext of [`Keys::key_check`].
const KEY_CHECK: &[u8] = b"diststore data key check v1";

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
            share: self.derive(b"share link key"),
            spool: self.derive(b"upload spool key"),
        }
    }
}

/// Keys derived from the secret.
#[derive(Clone)]
pub struct Keys {
    data: Aes256GcmSiv,
    /// Proves knowledge of the secret to peers; never sent.
    pub peer: [u8; 32],
    /// Signs share links: every node of a cluster derives the same one, so a link made on one
    /// node opens on all.
    pub share: [u8; 32],
    /// Derives the keys of resumable uploads' spool files.
    spool: [u8; 32],
}

/// Encrypts the bytes of one resumable upload as they are spooled to disk, so unfinished
/// uploads are not plaintext at rest either. AES-256-CTR under a key of that upload alone,
/// positioned by byte offset: a PATCH may start and a resume may cut anywhere. Not
/// authenticated: the spool is the node's own, and the finished file is verified by its id.
pub struct SpoolCipher(ctr::Ctr128BE<aes::Aes256>);

impl SpoolCipher {
    /// XORs the keystream at byte `offset` of the upload into `buf` (encrypts and decrypts).
    pub fn apply(&mut self, offset: u64, buf: &mut [u8]) {
        use ctr::cipher::{StreamCipher, StreamCipherSeek};
        self.0.seek(offset);
        self.0.apply_keystream(buf);
    }
}

/// The nonce for a chunk: deterministic, so equal chunks seal to equal bytes everywhere.
/// GCM-SIV stays safe when a nonce repeats with the same plaintext.
fn chunk_nonce(id: &ChunkId) -> Nonce {
    let digest = Sha256::new_with_prefix(b"diststore chunk nonce").chain_update(id.as_bytes()).finalize();
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&digest[..12]);
    nonce.into()
}

impl Keys {
    /// The cipher of the resumable upload `upload` (its unique id).
    pub fn spool_cipher(&self, upload: &str) -> SpoolCipher {
        use ctr::cipher::KeyIvInit;
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(b"diststore spool v1"), &self.spool)
            .expand(upload.as_bytes(), &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SpoolCipher(ctr::Ctr128BE::<aes::Aes256>::new(&key.into(), &[0u8; 16].into()))
    }

    /// Encrypts a chunk; the id is bound in as associated data.
    pub fn seal_chunk(&self, id: &ChunkId, plaintext: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.seal_chunk_in_place(id, &mut buf);
        buf
    }

    /// Encrypts a chunk where it lies and appends the tag: no copy when `buf` has room for it.
    pub fn seal_chunk_in_place(&self, id: &ChunkId, buf: &mut Vec<u8>) {
        self.data
            .encrypt_in_place(&chunk_nonce(id), id.as_bytes(), buf)
            .expect("a chunk is far below the AEAD length limit");
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

    /// A value sealed under the data key, kept with the data from the first start: a node
    /// started later with another secret finds it does not open ([`Keys::opens_key_check`]).
    pub fn key_check(&self) -> Vec<u8> {
        self.seal_chunk(&ChunkId::of(KEY_CHECK), KEY_CHECK)
    }

    pub fn opens_key_check(&self, check: &[u8]) -> bool {
        self.open_chunk(&ChunkId::of(KEY_CHECK), check.to_vec()).is_ok_and(|plain| plain == KEY_CHECK)
    }

    /// Checks a sealed chunk as [`Keys::open_chunk`] does, leaving the bytes as they are: they
    /// are what gets stored. Decrypts into a buffer kept per thread, so checking a stream of
    /// chunks neither copies nor allocates per chunk.
    pub fn verify_chunk(&self, id: &ChunkId, sealed: &[u8]) -> Result<(), CryptoError> {
        thread_local! {
            static PLAIN: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let body_len = sealed.len().checked_sub(TAG_LEN).ok_or(CryptoError::Unauthentic)?;
        let (body, tag) = sealed.split_at(body_len);
        PLAIN.with_borrow_mut(|plain| {
            // Grown once, never cleared: the decryption overwrites what it uses.
            if plain.len() < body.len() {
                plain.resize(body.len(), 0);
            }
            let plain = &mut plain[..body.len()];
            let buf =
                aes_gcm_siv::aead::inout::InOutBuf::new(body, plain).map_err(|_| CryptoError::Unauthentic)?;
            let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| CryptoError::Unauthentic)?;
            self.data
                .decrypt_inout_detached(&chunk_nonce(id), id.as_bytes(), buf, tag.into())
                .map_err(|_| CryptoError::Unauthentic)?;
            if ChunkId::of(plain) != *id {
                return Err(CryptoError::HashMismatch);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn spool_cipher_works_at_any_offset_and_differs_per_upload() {
        let keys = Secret::new(b"s".to_vec()).keys();
        let plain: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut whole = plain.clone();
        keys.spool_cipher("a").apply(0, &mut whole);
        assert_ne!(whole, plain);
        // In pieces cut anywhere, by another instance: the same bytes.
        let mut pieces = plain.clone();
        let mut c = keys.spool_cipher("a");
        c.apply(0, &mut pieces[..7]);
        c.apply(500, &mut pieces[500..]);
        c.apply(7, &mut pieces[7..500]);
        assert_eq!(pieces, whole);
        keys.spool_cipher("a").apply(0, &mut pieces);
        assert_eq!(pieces, plain);
        let mut other = plain.clone();
        keys.spool_cipher("b").apply(0, &mut other);
        assert_ne!(other, whole);
    }

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
        assert_eq!(keys.open_chunk(&id, tampered), Err(CryptoError::Unauthentic));
        let other = ChunkId::of(b"other");
        assert_eq!(keys.open_chunk(&other, sealed.clone()), Err(CryptoError::Unauthentic));
        let wrong = Secret::new(b"other".to_vec()).keys();
        assert_eq!(wrong.open_chunk(&id, sealed.clone()), Err(CryptoError::Unauthentic));
        assert_eq!(keys.open_chunk(&id, vec![1, 2]), Err(CryptoError::Unauthentic));
    }

    #[test]
    fn a_key_check_opens_under_its_own_key_only() {
        let keys = Secret::new(b"s3cret".to_vec()).keys();
        let check = keys.key_check();
        assert!(keys.opens_key_check(&check));
        assert!(!Secret::new(b"other".to_vec()).keys().opens_key_check(&check));
        assert!(!keys.opens_key_check(&check[1..]));
        assert!(!keys.opens_key_check(&[]));
    }

    #[test]
    fn verify_agrees_with_open() {
        let keys = Secret::new(b"s3cret".to_vec()).keys();
        let data = vec![42u8; 70_000];
        let id = ChunkId::of(&data);
        let sealed = keys.seal_chunk(&id, &data);
        assert_eq!(keys.verify_chunk(&id, &sealed), Ok(()));
        // A second, smaller chunk on the same thread reuses the buffer.
        let small = keys.seal_chunk(&ChunkId::of(b"x"), b"x");
        assert_eq!(keys.verify_chunk(&ChunkId::of(b"x"), &small), Ok(()));
        let mut tampered = sealed.clone();
        tampered[100] ^= 1;
        assert_eq!(keys.verify_chunk(&id, &tampered), Err(CryptoError::Unauthentic));
        assert_eq!(keys.verify_chunk(&ChunkId::of(b"y"), &sealed), Err(CryptoError::Unauthentic));
        for short in [&[][..], &[1, 2][..], &sealed[..TAG_LEN]] {
            assert_eq!(keys.verify_chunk(&id, short), Err(CryptoError::Unauthentic));
        }
        // Sealed under its id by a key holder, but not the id's bytes: refused all the same.
        let lie = keys.seal_chunk(&id, b"not the chunk");
        assert_eq!(keys.verify_chunk(&id, &lie), Err(CryptoError::HashMismatch));
        assert_eq!(keys.open_chunk(&id, lie), Err(CryptoError::HashMismatch));
    }
}

/// Message authentication for the peer handshake: HMAC-SHA256 under the peer key over the
/// length-prefixed parts, so no two part lists give the same input.
pub fn peer_mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{KeyInit as _, Mac};
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(&(part.len() as u64).to_le_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison of two MACs.
pub fn macs_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame too short")]
    Short,
    #[error("frame out of sequence (replayed, reordered or dropped)")]
    Sequence,
    #[error("frame failed authentication")]
    Unauthentic,
}

/// Seals the frames of one direction of a peer link. Each frame carries its sequence number,
/// which is also the nonce: unique per key, and checked on receipt so a replayed, dropped or
/// reordered frame is refused.
pub struct FrameCipher {
    cipher: Aes256GcmSiv,
    next: u64,
}

impl FrameCipher {
    pub fn new(key: [u8; 32]) -> Self {
        Self { cipher: Aes256GcmSiv::new(&key.into()), next: 0 }
    }

    fn nonce(seq: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&seq.to_le_bytes());
        n.into()
    }

    /// Room to leave at the front of a frame buffer for [`FrameCipher::seal_in_place`].
    pub const HEADER: usize = 8;

    /// `seq ‖ ciphertext ‖ tag`.
    pub fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let mut frame = Vec::with_capacity(Self::HEADER + plaintext.len() + TAG_LEN);
        frame.extend_from_slice(&[0; Self::HEADER]);
        frame.extend_from_slice(plaintext);
        self.seal_in_place(&mut frame);
        frame
    }

    /// Seals `frame[HEADER..]` in place: writes the sequence number over the first
    /// [`Self::HEADER`] bytes and appends the tag. No copy of the payload.
    pub fn seal_in_place(&mut self, frame: &mut Vec<u8>) {
        let seq = self.next;
        self.next += 1;
        frame[..Self::HEADER].copy_from_slice(&seq.to_le_bytes());
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &Self::nonce(seq),
                &seq.to_le_bytes(),
                (&mut frame[Self::HEADER..]).into(),
            )
            .expect("a frame is far below the AEAD length limit");
        frame.extend_from_slice(&tag);
    }

    /// Checks and decrypts a frame in place; returns the plaintext's range within it.
    pub fn open(&mut self, frame: &mut [u8]) -> Result<std::ops::Range<usize>, FrameError> {
        if frame.len() < Self::HEADER + TAG_LEN {
            return Err(FrameError::Short);
        }
        let (head, rest) = frame.split_at_mut(Self::HEADER);
        let seq = u64::from_le_bytes(head.try_into().map_err(|_| FrameError::Short)?);
        if seq != self.next {
            return Err(FrameError::Sequence);
        }
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| FrameError::Short)?;
        self.cipher
            .decrypt_inout_detached(&Self::nonce(seq), &seq.to_le_bytes(), body.into(), tag.into())
            .map_err(|_| FrameError::Unauthentic)?;
        self.next += 1;
        Ok(Self::HEADER..Self::HEADER + body.len())
    }
}

#[cfg(test)]
mod frame_tests {
    use super::*;

    #[test]
    fn frames_refuse_replay_reorder_and_tampering() {
        let key = [7u8; 32];
        let (mut tx, mut rx) = (FrameCipher::new(key), FrameCipher::new(key));
        let a = tx.seal(b"first");
        let b = tx.seal(b"second");
        let open = |rx: &mut FrameCipher, mut f: Vec<u8>| rx.open(&mut f).map(|r| f[r].to_vec());
        assert_eq!(open(&mut rx, a.clone()).unwrap(), b"first");
        assert_eq!(open(&mut rx, a), Err(FrameError::Sequence));
        let mut bad = b.clone();
        bad[9] ^= 1;
        assert_eq!(open(&mut rx, bad), Err(FrameError::Unauthentic));
        assert_eq!(open(&mut rx, b).unwrap(), b"second");
        assert_eq!(open(&mut rx, vec![1, 2, 3]), Err(FrameError::Short));
        let mut other = FrameCipher::new([8u8; 32]);
        let mut rx2 = FrameCipher::new(key);
        assert_eq!(open(&mut rx2, other.seal(b"x")), Err(FrameError::Unauthentic));
    }
}
