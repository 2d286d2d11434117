//! Sealed records: the integrity (and secrecy) of a connection after its handshake, sans-IO.
//!
//! The byte stream of one direction of a connection is cut into records of at most
//! [`MAX_RECORD_BYTES`] of plaintext, each sealed with ChaCha20-Poly1305 under that direction's
//! key and a nonce that is the record's sequence number on the connection (0, 1, 2, ...):
//!
//! ```text
//! record: [u32 BE: plaintext length n] [n bytes of ciphertext] [16-byte tag]
//!         the length is authenticated too (it is the record's associated data)
//! ```
//!
//! So an attacker on the path cannot alter, drop, duplicate, reorder, replay or inject a byte
//! without the next record failing to open ([`RecordError`]), which closes the connection: a
//! record opens only under the next sequence number, and every byte of it is covered by its
//! tag. The keys, one per direction, come from the handshake; a key is used for one connection
//! direction only, so a nonce never repeats under a key. Frames (`crate::wire`) travel inside the
//! records unchanged; a record boundary need not fall between frames.
//!
//! With [`Protection::Authenticated`] the plaintext travels as it is and the tag covers the
//! length and the plaintext (ChaCha20-Poly1305 over an empty message with both as associated
//! data): the same integrity, without the cipher's keystream.
//!
//! The module does no I/O: [`Sealer::seal`] appends records to a buffer, and [`Opener::open`]
//! takes whole records off the front of what was read and appends their plaintext to the frame
//! decoder's buffer, decrypting in place there, so a payload is still never copied again on its
//! way to a process.

use bytes::{Buf, BytesMut};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};

use crate::handshake::Protection;

/// The most plaintext bytes in one record.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;

/// Bytes of the length in front of a record.
const LENGTH_BYTES: usize = 4;

/// Bytes of the tag behind a record.
pub const TAG_BYTES: usize = 16;

/// A record that did not open: the connection it came on must be closed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The length in front of a record is above [`MAX_RECORD_BYTES`].
    #[error("a record of {0} bytes exceeds the maximum of {MAX_RECORD_BYTES}")]
    Oversized(usize),
    /// The record was altered, replayed, reordered, or sealed under another key.
    #[error("record {0} failed authentication")]
    Forged(u64),
    /// Every sequence number of the connection has been used (after 2^64 records).
    #[error("the connection's record sequence is exhausted")]
    Exhausted,
}

/// Seals one direction of a connection.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    protection: Protection,
    next: u64,
}

impl Sealer {
    /// A sealer under `key`, which must never seal anything else.
    pub fn new(key: [u8; 32], protection: Protection) -> Self {
        Self { cipher: ChaCha20Poly1305::new(Key::from_slice(&key)), protection, next: 0 }
    }

    /// Whether this direction has records at all (not with `Protection::Unsealed`).
    pub fn sealed(&self) -> bool {
        sealed(self.protection)
    }

    /// Appends `plain` to `out` as sealed records.
    pub fn seal(&mut self, plain: &[u8], out: &mut BytesMut) -> Result<(), RecordError> {
        if !self.sealed() {
            out.extend_from_slice(plain);
            return Ok(());
        }
        for piece in plain.chunks(MAX_RECORD_BYTES) {
            let sequence = self.next;
            self.next = self.next.checked_add(1).ok_or(RecordError::Exhausted)?;
            let length = (piece.len() as u32).to_be_bytes();
            out.reserve(LENGTH_BYTES + piece.len() + TAG_BYTES);
            out.extend_from_slice(&length);
            let start = out.len();
            out.extend_from_slice(piece);
            let tag = if self.protection == Protection::Encrypted {
                self.cipher.encrypt_in_place_detached(&nonce(sequence), &length, &mut out[start..])
            } else {
                let covered = &out[start - LENGTH_BYTES..];
                self.cipher.encrypt_in_place_detached(&nonce(sequence), covered, &mut [])
            }
            // Only a buffer longer than the cipher's limit (256 GiB) fails.
            .map_err(|_| RecordError::Oversized(piece.len()))?;
            out.extend_from_slice(&tag);
        }
        Ok(())
    }
}

/// Opens one direction of a connection.
pub struct Opener {
    cipher: ChaCha20Poly1305,
    protection: Protection,
    next: u64,
}

impl Opener {
    /// An opener under `key` (the peer's sealer's).
    pub fn new(key: [u8; 32], protection: Protection) -> Self {
        Self { cipher: ChaCha20Poly1305::new(Key::from_slice(&key)), protection, next: 0 }
    }

    /// Whether this direction has records at all (not with `Protection::Unsealed`).
    pub fn sealed(&self) -> bool {
        sealed(self.protection)
    }

    /// Opens every whole record at the front of `sealed` (what was read), appending their
    /// plaintext to `plain`; a record not yet whole stays in `sealed`. After an error the
    /// connection must be closed: nothing of the failed record reaches `plain`.
    pub fn open(&mut self, sealed: &mut BytesMut, plain: &mut BytesMut) -> Result<(), RecordError> {
        if !self.sealed() {
            plain.extend_from_slice(sealed);
            sealed.clear();
            return Ok(());
        }
        loop {
            let Some(prefix) = sealed.get(..LENGTH_BYTES) else { return Ok(()) };
            let length: [u8; LENGTH_BYTES] = prefix.try_into().expect("four bytes");
            let len = u32::from_be_bytes(length) as usize;
            if len > MAX_RECORD_BYTES {
                return Err(RecordError::Oversized(len));
            }
            if sealed.len() < LENGTH_BYTES + len + TAG_BYTES {
                return Ok(());
            }
            let sequence = self.next;
            self.next = self.next.checked_add(1).ok_or(RecordError::Exhausted)?;
            let tag =
                Tag::clone_from_slice(&sealed[LENGTH_BYTES + len..LENGTH_BYTES + len + TAG_BYTES]);
            let start = plain.len();
            if self.protection == Protection::Encrypted {
                plain.extend_from_slice(&sealed[LENGTH_BYTES..LENGTH_BYTES + len]);
                let opened = self.cipher.decrypt_in_place_detached(
                    &nonce(sequence),
                    &length,
                    &mut plain[start..],
                    &tag,
                );
                if opened.is_err() {
                    plain.truncate(start);
                    return Err(RecordError::Forged(sequence));
                }
            } else {
                let covered = &sealed[..LENGTH_BYTES + len];
                self.cipher
                    .decrypt_in_place_detached(&nonce(sequence), covered, &mut [], &tag)
                    .map_err(|_| RecordError::Forged(sequence))?;
                plain.extend_from_slice(&sealed[LENGTH_BYTES..LENGTH_BYTES + len]);
            }
            sealed.advance(LENGTH_BYTES + len + TAG_BYTES);
        }
    }
}

fn sealed(protection: Protection) -> bool {
    #[cfg(feature = "unsealed")]
    if protection == Protection::Unsealed {
        return false;
    }
    let _ = protection;
    true
}

/// The nonce of record `sequence`: its number, little-endian, in the nonce's last eight bytes.
fn nonce(sequence: u64) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&sequence.to_le_bytes());
    Nonce::from(nonce)
}
