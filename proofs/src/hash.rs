//! BLAKE3 hashes with domain separation.
//!
//! Every hash in the protocol is `BLAKE3(len(tag) || tag || data)` where `tag`
//! is one of the ASCII strings in [`tag`] and `len(tag)` is one byte. The
//! length prefix makes the tags prefix-free, so no two domains can produce the
//! same hash input. `docs/protocol.md` lists every tag and what it covers.

use core::fmt;

use bincode::{Decode, Encode};

/// Domain tags: one per kind of hashed or signed object. Never reuse a tag
/// for a different structure; bump the `/vN` suffix when a layout changes.
pub mod tag {
    /// Header hash (also the proof-of-work hash).
    pub const HEADER: &str = "xirtam/header/v1";
    /// Write id: hash of the signed part of a write (what its stamp is
    /// bound to).
    pub const OP_ID: &str = "xirtam/op-id/v2";
    /// Commit id: hash of a claim commitment op's content (what its stamp
    /// is bound to).
    pub const COMMIT_ID: &str = "xirtam/commit-id/v1";
    /// Full op hash (signature and stamp included): the `ops_root` leaf.
    pub const OP: &str = "xirtam/op/v2";
    /// Op stamp proof of work.
    pub const STAMP: &str = "xirtam/stamp/v1";
    /// Ed25519 message prefix for op signatures.
    pub const SIG_OP: &str = "xirtam/sig/op/v2";
    /// Seed of the random-looking coefficients of a batch signature check
    /// (never part of consensus data; see `keys::verify_batch`).
    pub const SIG_BATCH: &str = "xirtam/sig-batch/v1";
    /// Inner node of the `ops_root` binary Merkle tree.
    pub const OPS_NODE: &str = "xirtam/ops-node/v1";
    /// `ops_root` itself: op count plus the Merkle root.
    pub const OPS_ROOT: &str = "xirtam/ops-root/v1";
    /// Key of a name in the state tree: `H(name)`.
    pub const STATE_KEY: &str = "xirtam/state-key/v1";
    /// Hash of a record stored in the state tree.
    pub const RECORD: &str = "xirtam/record/v2";
    /// A hiding commitment to a future claim: `H(genesis, name, key, salt)`.
    pub const CLAIM_COMMITMENT: &str = "xirtam/claim-commitment/v1";
    /// Key of a commitment in the state tree: `H(commitment)`.
    pub const COMMIT_KEY: &str = "xirtam/commit-key/v1";
    /// Value of a commitment in the state tree: `H(height it was mined at)`.
    pub const COMMIT_ENTRY: &str = "xirtam/commit-entry/v1";
    /// State-tree leaf.
    pub const STATE_LEAF: &str = "xirtam/state-leaf/v1";
    /// State-tree inner node.
    pub const STATE_NODE: &str = "xirtam/state-node/v1";
    /// History MMR inner node.
    pub const HISTORY_NODE: &str = "xirtam/history-node/v1";
    /// History MMR root (leaf count plus bagged peaks).
    pub const HISTORY_ROOT: &str = "xirtam/history-root/v1";

    /// Every tag, for the uniqueness test and the docs.
    pub const ALL: &[&str] = &[
        HEADER,
        OP_ID,
        COMMIT_ID,
        OP,
        STAMP,
        SIG_OP,
        SIG_BATCH,
        OPS_NODE,
        OPS_ROOT,
        STATE_KEY,
        RECORD,
        CLAIM_COMMITMENT,
        COMMIT_KEY,
        COMMIT_ENTRY,
        STATE_LEAF,
        STATE_NODE,
        HISTORY_NODE,
        HISTORY_ROOT,
    ];
}

/// A 32-byte BLAKE3 digest.
///
/// Read as a number (for proof of work) it is **big-endian**: byte 0 is the
/// most significant, so a hash that meets a hard target starts with zeros in
/// hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The all-zero hash. Used as "empty" (no parent, empty subtree).
    pub const ZERO: Hash = Hash([0; 32]);

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, HexError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| HexError(e.to_string()))?;
        Ok(Hash(out))
    }

    /// Bit `i` of the hash, most significant bit of byte 0 first. Used as the
    /// path of a key in the state tree. `i` must be below 256.
    #[inline]
    pub fn bit(&self, i: usize) -> bool {
        (self.0[i / 8] >> (7 - (i % 8))) & 1 == 1
    }
}

/// A hex string that is not 32 bytes of hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid 32-byte hex: {0}")]
pub struct HexError(String);

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl From<[u8; 32]> for Hash {
    fn from(b: [u8; 32]) -> Self {
        Hash(b)
    }
}

/// An incremental hasher already primed with a domain tag.
#[derive(Clone)]
pub struct Hasher(blake3::Hasher);

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher")
    }
}

impl Hasher {
    /// Start a hash in domain `tag` (one of [`tag`]).
    #[inline]
    pub fn new(tag: &str) -> Self {
        debug_assert!(tag.len() < 256, "domain tags are shorter than 256 bytes");
        let mut h = blake3::Hasher::new();
        h.update(&[tag.len() as u8]);
        h.update(tag.as_bytes());
        Hasher(h)
    }

    /// Feed bytes.
    #[inline]
    pub fn update(&mut self, data: &[u8]) -> &mut Self {
        self.0.update(data);
        self
    }

    /// Extendable output (for deriving many values from one hash).
    pub(crate) fn finalize_xof(&self) -> blake3::OutputReader {
        self.0.finalize_xof()
    }

    /// Finish.
    #[inline]
    pub fn finalize(&self) -> Hash {
        Hash(*self.0.finalize().as_bytes())
    }
}

/// Inputs up to this size are hashed from a stack buffer in one call (the
/// incremental hasher is ~2 KB, and moving it around dominated small hashes).
const STACK_INPUT: usize = 256;

/// `BLAKE3(len(tag) || tag || data)`.
#[inline]
pub fn hash_tagged(tag: &str, data: &[u8]) -> Hash {
    hash_parts(tag, &[data])
}

/// `BLAKE3(len(tag) || tag || parts[0] || parts[1] || ...)`.
#[inline]
pub fn hash_parts(tag: &str, parts: &[&[u8]]) -> Hash {
    let len = 1 + tag.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    if len > STACK_INPUT || tag.len() > 255 {
        let mut h = Hasher::new(tag);
        for p in parts {
            h.update(p);
        }
        return h.finalize();
    }
    let mut buf = [0u8; STACK_INPUT];
    buf[0] = tag.len() as u8; // checked above: at most 255
    let mut at = 1 + tag.len();
    buf[1..at].copy_from_slice(tag.as_bytes());
    for p in parts {
        buf[at..at + p.len()].copy_from_slice(p);
        at += p.len();
    }
    Hash(*blake3::hash(&buf[..at]).as_bytes())
}

/// `BLAKE3(len(tag) || tag || a || b)`: the two-child node hash used by all
/// Merkle structures here.
#[inline]
pub fn hash_pair(tag: &str, a: &Hash, b: &Hash) -> Hash {
    hash_parts(tag, &[&a.0, &b.0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_unique_and_short() {
        let mut seen = std::collections::BTreeSet::new();
        for t in tag::ALL {
            assert!(t.len() < 256 && t.is_ascii());
            assert!(seen.insert(*t), "duplicate tag {t}");
        }
    }

    #[test]
    fn domain_separation_changes_the_hash() {
        assert_ne!(hash_tagged(tag::OP, b"x"), hash_tagged(tag::OP_ID, b"x"));
        // The length prefix keeps tags prefix-free: moving a byte between the
        // tag and the data must change the hash.
        let a = Hasher::new("ab").update(b"c").finalize();
        let b = Hasher::new("a").update(b"bc").finalize();
        assert_ne!(a, b);
    }

    #[test]
    fn stack_and_incremental_paths_agree() {
        for n in [0usize, 1, 100, 229, 230, 231, 300, 5000] {
            let data = vec![7u8; n];
            let a = hash_parts(tag::OP, &[&data[..n / 2], &data[n / 2..]]);
            let b = Hasher::new(tag::OP).update(&data).finalize();
            assert_eq!(a, b, "length {n}");
        }
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let h = hash_tagged(tag::HEADER, b"");
        assert_eq!(Hash::from_hex(&h.to_hex()), Ok(h));
        assert!(Hash::from_hex("zz").is_err());
        assert!(Hash::from_hex(&"00".repeat(31)).is_err());
    }

    #[test]
    fn bits_are_msb_first() {
        let mut b = [0u8; 32];
        b[0] = 0b1000_0001;
        let h = Hash(b);
        assert!(h.bit(0));
        assert!(!h.bit(1));
        assert!(h.bit(7));
        assert!(!h.bit(8));
    }
}
