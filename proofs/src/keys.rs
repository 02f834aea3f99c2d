//! Ed25519 keys and signatures over domain-tagged messages.
//!
//! A signature in this protocol is always over `len(tag) || tag || payload`
//! with a tag from [`crate::hash::tag`] (e.g. `xirtam/sig/op/v1`), so a
//! signature made for one purpose can never be replayed as another.
//!
//! # Verification rule (consensus)
//!
//! A signature `R || S` by key `A` over message `M` is valid iff
//! 1. `A` and `R` are canonical encodings (`y < 2^255 - 19`) of curve points
//!    that are not of small order,
//! 2. `S < l` (the group order), and
//! 3. the **cofactored** equation `[8]([S]B - R - [k]A) = 0` holds, with
//!    `k = SHA-512(R || A || M) mod l`.
//!
//! Signatures from any standard RFC 8032 signer satisfy it. The cofactored
//! form is chosen because it makes batch verification exact: a batch passes
//! if and only if every signature in it passes alone (up to a 2^-128
//! chance), so a node that checks a block in batches and one that checks
//! signature by signature can never disagree. (With the cofactorless
//! equation, a signature whose `R` carries a small torsion component fails
//! alone but passes a random batch with probability up to 1/8.)
//! ADR 0004 has the reasoning.

use core::fmt;

use bincode::{Decode, Encode};
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha512};

use crate::hash::{Hasher, tag};

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
    /// Verify `sig` over `payload` in domain `tag` (the rule in the module
    /// docs).
    pub fn verify(&self, tag: &str, payload: &[u8], sig: &Signature) -> Result<(), SignatureError> {
        let p = Prepared::new(self, tag, payload, sig)?;
        if p.holds() {
            Ok(())
        } else {
            Err(SignatureError::Invalid)
        }
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, crate::hash::HexError> {
        crate::hash::Hash::from_hex(s).map(|h| PublicKey(h.0))
    }
}

/// Is the y coordinate (the low 255 bits, little-endian) below the field
/// prime `2^255 - 19`? Non-canonical encodings are `y` in
/// `[2^255 - 19, 2^255)`: top byte `0x7f` (sign bit masked), bytes 1..=30
/// all `0xff`, byte 0 at least `0xed`. (The other non-canonical form, x = 0
/// with the sign bit set, only exists for the two small-order points
/// `y = ±1`, which are rejected anyway.)
fn is_canonical_y(b: &[u8; 32]) -> bool {
    !(b[31] & 0x7f == 0x7f && b[1..31].iter().all(|&x| x == 0xff) && b[0] >= 0xed)
}

/// A canonical, not-small-order point.
fn point(b: &[u8; 32]) -> Option<EdwardsPoint> {
    if !is_canonical_y(b) {
        return None;
    }
    CompressedEdwardsY(*b)
        .decompress()
        .filter(|p| !p.is_small_order())
}

/// One signature with its encodings checked and its challenge computed.
struct Prepared {
    a: EdwardsPoint,
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

impl Prepared {
    /// `sig` by `key` over `len(tag) || tag || payload`.
    fn new(
        key: &PublicKey,
        tag: &str,
        payload: &[u8],
        sig: &Signature,
    ) -> Result<Self, SignatureError> {
        debug_assert!(tag.len() < 256, "domain tags are shorter than 256 bytes");
        Self::raw(key, sig, &[&[tag.len() as u8], tag.as_bytes(), payload])
    }

    /// `sig` by `key` over the concatenation of `message`.
    fn raw(key: &PublicKey, sig: &Signature, message: &[&[u8]]) -> Result<Self, SignatureError> {
        let a = point(&key.0).ok_or(SignatureError::BadKey)?;
        let (r_bytes, s_bytes) = split_signature(&sig.0);
        let r = point(&r_bytes).ok_or(SignatureError::Invalid)?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes))
            .ok_or(SignatureError::Invalid)?;
        let mut h = Sha512::new();
        h.update(r_bytes);
        h.update(key.0);
        for part in message {
            h.update(part);
        }
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        Ok(Prepared { a, r, s, k })
    }

    /// `[8]([S]B - [k]A - R) == 0`.
    fn holds(&self) -> bool {
        let sb_minus_ka =
            EdwardsPoint::vartime_double_scalar_mul_basepoint(&self.k, &-self.a, &self.s);
        (sb_minus_ka - self.r).mul_by_cofactor().is_identity()
    }
}

fn split_signature(sig: &[u8; 64]) -> ([u8; 32], [u8; 32]) {
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&sig[..32]);
    s.copy_from_slice(&sig[32..]);
    (r, s)
}

/// One signature of a batch: `sig` by `key` over `payload` (in the batch's
/// domain tag).
#[derive(Debug, Clone, Copy)]
pub struct SignedPayload<'a> {
    /// The signer.
    pub key: PublicKey,
    /// What was signed (after the tag).
    pub payload: &'a [u8],
    /// The signature.
    pub sig: Signature,
}

/// Which signature of a batch failed, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature {index} of the batch: {error}")]
pub struct BatchError {
    /// Position in the batch (the first failing one).
    pub index: usize,
    /// Why it failed.
    pub error: SignatureError,
}

/// Verify many signatures in domain `tag` at once; the result is exactly
/// that of verifying each with [`PublicKey::verify`] in order (the first
/// failure is reported), but about twice as fast for large batches.
///
/// All valid means `sum z_i [8]([S_i]B - R_i - [k_i]A_i) = 0` for
/// coefficients `z_i` in `[2^127, 2^128)` read from a BLAKE3 XOF over the
/// whole batch (`SIG_BATCH` tag; every `R || A || S || k`). Since the
/// coefficients depend on every signature, a set with any invalid one
/// passes with probability about 2^-128; the derivation is deterministic,
/// so this crate still reads no randomness. On failure each signature is
/// checked alone to name the first bad one.
pub fn verify_batch(tag: &str, items: &[SignedPayload<'_>]) -> Result<(), BatchError> {
    let mut prepared = Vec::with_capacity(items.len());
    for (index, it) in items.iter().enumerate() {
        let p = Prepared::new(&it.key, tag, it.payload, &it.sig)
            .map_err(|error| BatchError { index, error })?;
        prepared.push(p);
    }
    if prepared.len() <= 1 || batch_holds(tag, items, &prepared) {
        return match prepared.first() {
            Some(p) if prepared.len() == 1 && !p.holds() => Err(BatchError {
                index: 0,
                error: SignatureError::Invalid,
            }),
            _ => Ok(()),
        };
    }
    let index = prepared.iter().position(|p| !p.holds());
    // A failing batch always has a failing member (the batch sum of valid
    // equations is zero); `unwrap_or(0)` only keeps this panic-free.
    Err(BatchError {
        index: index.unwrap_or(0),
        error: SignatureError::Invalid,
    })
}

fn batch_holds(tag: &str, items: &[SignedPayload<'_>], prepared: &[Prepared]) -> bool {
    let mut transcript = Hasher::new(tag::SIG_BATCH);
    transcript.update(&[tag.len() as u8]).update(tag.as_bytes());
    for (it, p) in items.iter().zip(prepared) {
        transcript
            .update(&it.sig.0)
            .update(&it.key.0)
            .update(p.k.as_bytes());
    }
    let mut xof = transcript.finalize_xof();
    let n = prepared.len();
    let mut scalars = Vec::with_capacity(2 * n + 1);
    let mut points = Vec::with_capacity(2 * n + 1);
    let mut s_sum = Scalar::ZERO;
    for p in prepared {
        let mut z = [0u8; 32];
        xof.fill(&mut z[..16]);
        z[15] |= 0x80;
        let z = Scalar::from_bytes_mod_order(z);
        s_sum += z * p.s;
        scalars.push(z);
        points.push(p.r);
        scalars.push(z * p.k);
        points.push(p.a);
    }
    scalars.push(-s_sum);
    points.push(ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(scalars, points)
        .mul_by_cofactor()
        .is_identity()
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
        assert!(is_canonical_y(&below));
    }

    /// RFC 8032 section 7.1, test 1 (empty message): the raw rule accepts
    /// the standard vector, and our signer is standard.
    #[test]
    fn rfc8032_test_1() {
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
        let k = SecretKey::from_seed(seed.try_into().unwrap());
        let pk = k.public();
        assert_eq!(
            pk.to_hex(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let sig: [u8; 64] = hex::decode(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        )
        .unwrap()
        .try_into()
        .unwrap();
        assert_eq!(k.0.sign(b"").to_bytes(), sig);
        let p = Prepared::raw(&pk, &Signature(sig), &[]).unwrap();
        assert!(p.holds());
        let mut bad = sig;
        bad[40] ^= 1;
        assert!(!Prepared::raw(&pk, &Signature(bad), &[]).unwrap().holds());
    }

    /// Test helpers: a hand-made signature with chosen nonce point offsets.
    struct Raw {
        a: Scalar,
        pk: PublicKey,
    }

    impl Raw {
        fn new(seed: u8) -> Self {
            let k = SecretKey::from_seed([seed; 32]);
            let h = Sha512::digest([seed; 32]);
            let mut b = [0u8; 32];
            b.copy_from_slice(&h[..32]);
            b[0] &= 248;
            b[31] &= 127;
            b[31] |= 64;
            let a = Scalar::from_bytes_mod_order(b);
            assert_eq!(
                (&a * curve25519_dalek::constants::ED25519_BASEPOINT_TABLE)
                    .compress()
                    .to_bytes(),
                k.public().0
            );
            Raw { a, pk: k.public() }
        }

        /// Sign with nonce point `r*B + extra` and key bytes `key`.
        fn sign(
            &self,
            key: [u8; 32],
            nonce: u64,
            extra: EdwardsPoint,
            payload: &[u8],
        ) -> Signature {
            let r = Scalar::from(nonce);
            let big_r = (&r * curve25519_dalek::constants::ED25519_BASEPOINT_TABLE + extra)
                .compress()
                .to_bytes();
            let mut h = Sha512::new();
            h.update(big_r);
            h.update(key);
            h.update([tag::SIG_OP.len() as u8]);
            h.update(tag::SIG_OP.as_bytes());
            h.update(payload);
            let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
            let s = r + k * self.a;
            let mut sig = [0u8; 64];
            sig[..32].copy_from_slice(&big_r);
            sig[32..].copy_from_slice(s.as_bytes());
            Signature(sig)
        }
    }

    fn torsion(i: usize) -> EdwardsPoint {
        curve25519_dalek::constants::EIGHT_TORSION[i]
    }

    fn one(pk: &PublicKey, payload: &[u8], sig: Signature) -> Result<(), BatchError> {
        verify_batch(
            tag::SIG_OP,
            &[SignedPayload {
                key: *pk,
                payload,
                sig,
            }],
        )
    }

    /// The rule is cofactored: a nonce point with a torsion component is
    /// accepted, alone and in a batch (where the cofactorless rule would be
    /// accepted or rejected at random).
    #[test]
    fn torsion_in_r_is_accepted_consistently() {
        let raw = Raw::new(9);
        let good = raw.sign(raw.pk.0, 77, EdwardsPoint::default(), b"m");
        assert_eq!(raw.pk.verify(tag::SIG_OP, b"m", &good), Ok(()));
        for t in 1..8 {
            let sig = raw.sign(raw.pk.0, 77 + t as u64, torsion(t), b"m");
            assert_eq!(
                raw.pk.verify(tag::SIG_OP, b"m", &sig),
                Ok(()),
                "torsion {t}"
            );
            // ed25519-dalek's cofactorless verify_strict rejects it.
            let vk = ed25519_dalek::VerifyingKey::from_bytes(&raw.pk.0).unwrap();
            assert!(
                vk.verify_strict(
                    &tagged_message(tag::SIG_OP, b"m"),
                    &ed25519_dalek::Signature::from_bytes(&sig.0)
                )
                .is_err()
            );
            let items: Vec<_> = (0..5)
                .map(|i| SignedPayload {
                    key: raw.pk,
                    payload: b"m",
                    sig: if i == 2 { sig } else { good },
                })
                .collect();
            assert_eq!(verify_batch(tag::SIG_OP, &items), Ok(()));
        }
    }

    #[test]
    fn small_order_and_non_canonical_parts_are_rejected() {
        let raw = Raw::new(4);
        let good = raw.sign(raw.pk.0, 5, EdwardsPoint::default(), b"m");
        assert_eq!(one(&raw.pk, b"m", good), Ok(()));
        // Small-order keys: every one of the 8 torsion points.
        for t in 0..8 {
            let key = PublicKey(torsion(t).compress().to_bytes());
            let s = Signature([0; 64]);
            assert_eq!(
                key.verify(tag::SIG_OP, b"m", &s),
                Err(SignatureError::BadKey)
            );
        }
        // Small-order R with S = k*a: the equation holds but R is refused.
        for t in 0..8 {
            let sig = raw.sign(raw.pk.0, 0, torsion(t), b"m");
            assert_eq!(&sig.0[..32], &torsion(t).compress().to_bytes());
            assert_eq!(
                raw.pk.verify(tag::SIG_OP, b"m", &sig),
                Err(SignatureError::Invalid)
            );
            assert_eq!(
                one(&raw.pk, b"m", sig).map_err(|e| e.error),
                Err(SignatureError::Invalid)
            );
        }
        // S + l: same value mod l, not canonical.
        let mut sig = good;
        let l = Scalar::ZERO - Scalar::ONE; // l - 1
        let s = Scalar::from_canonical_bytes(sig.0[32..].try_into().unwrap()).unwrap();
        // s + l as a 256-bit little-endian number: s + (l - 1) + 1.
        let mut carry = 1u16;
        for (out, (a, b)) in sig.0[32..]
            .iter_mut()
            .zip(s.as_bytes().iter().zip(l.as_bytes()))
        {
            let v = *a as u16 + *b as u16 + carry;
            *out = v as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0, "s + l fits in 256 bits");
        assert_eq!(
            raw.pk.verify(tag::SIG_OP, b"m", &sig),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn batch_reports_the_first_failure() {
        let keys: Vec<_> = (0..6).map(|i| SecretKey::from_seed([i; 32])).collect();
        let payloads: Vec<Vec<u8>> = (0..6).map(|i| vec![i; 10]).collect();
        let mut items: Vec<_> = keys
            .iter()
            .zip(&payloads)
            .map(|(k, p)| SignedPayload {
                key: k.public(),
                payload: p,
                sig: k.sign(tag::SIG_OP, p),
            })
            .collect();
        assert_eq!(verify_batch(tag::SIG_OP, &items), Ok(()));
        assert_eq!(verify_batch(tag::OP, &items).map_err(|e| e.index), Err(0));
        assert_eq!(verify_batch(tag::SIG_OP, &[]), Ok(()));
        items[4].sig.0[50] ^= 4;
        items[2].payload = b"other";
        assert_eq!(
            verify_batch(tag::SIG_OP, &items),
            Err(BatchError {
                index: 2,
                error: SignatureError::Invalid
            })
        );
        items[1].key.0[31] = 0xff;
        items[1].key.0[1..31].fill(0xff);
        items[1].key.0[0] = 0xee;
        assert_eq!(
            verify_batch(tag::SIG_OP, &items),
            Err(BatchError {
                index: 1,
                error: SignatureError::BadKey
            })
        );
    }

    proptest::proptest! {
        /// A batch accepts exactly when every member is valid alone, and
        /// names the first invalid one, whatever the mix of faults.
        #[test]
        fn batch_agrees_with_single(faults in proptest::collection::vec(0u8..6, 1..12)) {
            let raw = Raw::new(3);
            let other = SecretKey::from_seed([1; 32]);
            let items: Vec<_> = faults
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let n = i as u64 + 1;
                    let sig = match f {
                        // valid, plain
                        0 => raw.sign(raw.pk.0, n, EdwardsPoint::default(), b"p"),
                        // valid, torsion in R
                        1 => raw.sign(raw.pk.0, n, torsion(1 + i % 7), b"p"),
                        // signed by another key
                        2 => other.sign(tag::SIG_OP, b"p"),
                        // bit flip in S (low bits keep it canonical)
                        3 => {
                            let mut s = raw.sign(raw.pk.0, n, EdwardsPoint::default(), b"p");
                            s.0[33] ^= 1;
                            s
                        }
                        // k computed over the wrong key bytes
                        4 => raw.sign(other.public().0, n, EdwardsPoint::default(), b"p"),
                        // torsion in R and a wrong S
                        _ => {
                            let mut s = raw.sign(raw.pk.0, n, torsion(4), b"p");
                            s.0[32] ^= 2;
                            s
                        }
                    };
                    SignedPayload { key: raw.pk, payload: b"p", sig }
                })
                .collect();
            let single = items
                .iter()
                .position(|it| it.key.verify(tag::SIG_OP, it.payload, &it.sig).is_err());
            let batch = verify_batch(tag::SIG_OP, &items).err().map(|e| e.index);
            proptest::prop_assert_eq!(single, batch);
            let expect_first_bad = faults.iter().position(|f| *f >= 2);
            proptest::prop_assert_eq!(single, expect_first_bad);
        }
    }

    #[test]
    fn seed_round_trip() {
        let k = SecretKey::from_seed([3; 32]);
        assert_eq!(SecretKey::from_seed(k.to_seed()).public(), k.public());
    }
}
