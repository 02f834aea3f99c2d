//! Ed25519 keys and signatures over domain-tagged messages.
//!
//! A signature in this protocol is always over `len(tag) || tag || payload`
//! with a tag from [`crate::hash::tag`] (e.g. `xirtam/sig/op/v1`), so a
//! signature made for one purpose can never be replayed as another.
//! Verification uses `verify_strict` (rejects small-order keys and
//! non-canonical signatures), so every node agrees on validity.

use core::fmt;

use bincode::{Decode, Encode};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// An Ed25519 public key (32 bytes, compressed Edwards point).
///
/// Stored raw: a key that is not a valid point is only caught when a
/// signature is checked against it (it can never verify anything).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct PublicKey(pub [u8; 32]);

/// An Ed25519 signature (64 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Signature(pub [u8; 64]);

/// A signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The public key bytes are not a valid Ed25519 point.
    #[error("public key is not a valid ed25519 point")]
    BadKey,
    /// The signature does not match the key and message.
    #[error("signature does not verify")]
    Invalid,
}

/// An Ed25519 secret key. Callers create it from 32 random bytes (this crate
/// does no I/O, so it never reads the OS random source itself).
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// The key with this 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// The seed (for storing the key).
    pub fn to_seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Sign `payload` in domain `tag`.
    pub fn sign(&self, tag: &str, payload: &[u8]) -> Signature {
        Signature(self.0.sign(&tagged_message(tag, payload)).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

impl PublicKey {
    /// Verify `sig` over `payload` in domain `tag`.
    ///
    /// Besides `verify_strict`'s checks, the key's encoding must be
    /// canonical (`y < 2^255 - 19`), so that implementations that differ in
    /// how leniently they decompress points cannot disagree.
    pub fn verify(&self, tag: &str, payload: &[u8], sig: &Signature) -> Result<(), SignatureError> {
        if !self.is_canonical() {
            return Err(SignatureError::BadKey);
        }
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::BadKey)?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        key.verify_strict(&tagged_message(tag, payload), &sig)
            .map_err(|_| SignatureError::Invalid)
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, crate::hash::HexError> {
        crate::hash::Hash::from_hex(s).map(|h| PublicKey(h.0))
    }

    /// Is the y coordinate (the low 255 bits, little-endian) below the field
    /// prime `2^255 - 19`? Non-canonical encodings are `y` in
    /// `[2^255 - 19, 2^255)`: top byte `0x7f` (sign bit masked), bytes 1..=30
    /// all `0xff`, byte 0 at least `0xed`.
    fn is_canonical(&self) -> bool {
        let b = &self.0;
        !(b[31] & 0x7f == 0x7f && b[1..31].iter().all(|&x| x == 0xff) && b[0] >= 0xed)
    }
}

/// The exact bytes an Ed25519 signature covers: `len(tag) || tag || payload`.
pub fn tagged_message(tag: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(1 + tag.len() + payload.len());
    // Tags are short constants (checked by a test in `hash`), so this fits.
    m.push(tag.len() as u8);
    m.extend_from_slice(tag.as_bytes());
    m.extend_from_slice(payload);
    m
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::tag;

    #[test]
    fn sign_verify_and_domain_separation() {
        let k = SecretKey::from_seed([7; 32]);
        let s = k.sign(tag::SIG_OP, b"hello");
        assert_eq!(k.public().verify(tag::SIG_OP, b"hello", &s), Ok(()));
        assert_eq!(
            k.public().verify(tag::SIG_OP, b"hellO", &s),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            k.public().verify(tag::OP, b"hello", &s),
            Err(SignatureError::Invalid)
        );
        let other = SecretKey::from_seed([8; 32]).public();
        assert_eq!(
            other.verify(tag::SIG_OP, b"hello", &s),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn non_canonical_key_encodings_are_rejected() {
        let s = SecretKey::from_seed([7; 32]).sign(tag::SIG_OP, b"x");
        // y = p (encodes y = 0) and y = p + 1 (encodes y = 1), both signs.
        for first in [0xedu8, 0xee] {
            for top in [0x7fu8, 0xff] {
                let mut k = [0xffu8; 32];
                k[0] = first;
                k[31] = top;
                assert_eq!(
                    PublicKey(k).verify(tag::SIG_OP, b"x", &s),
                    Err(SignatureError::BadKey)
                );
            }
        }
        let mut below = [0xffu8; 32];
        below[0] = 0xec;
        below[31] = 0x7f;
        assert!(PublicKey(below).is_canonical());
    }

    #[test]
    fn seed_round_trip() {
        let k = SecretKey::from_seed([3; 32]);
        assert_eq!(SecretKey::from_seed(k.to_seed()).public(), k.public());
    }
}
