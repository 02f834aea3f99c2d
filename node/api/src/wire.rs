//! Decoding what travels as hex, with limits, into typed values; and the
//! check that a proof holds against the header sent with it.
//!
//! Nothing here makes an answer trustworthy: a node can send a consistent
//! proof against a header of its own making. Checking the header against
//! the heaviest chain is the light client's job; these checks only turn a
//! malformed or self-contradictory answer into a typed error.

use bincode::Decode;
use xirtam_proofs::header::{HEADER_LEN, Header};
use xirtam_proofs::op::{Record, commit_key};
use xirtam_proofs::state::{StateProof, commit_entry_hash, verify_state, verify_state_hashed};
use xirtam_proofs::{Hash, Name, U256, decode};

use crate::types::{DirCommitmentView, DirGetView, ParamsView, TipView};

/// Largest record or proof accepted (bytes): a 4 KB value, 16 owners and a
/// proof of 256 siblings fit well inside.
pub const MAX_OBJECT_BYTES: usize = 16 * 1024;

/// An answer that does not decode, or contradicts itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct WireError {
    /// The field or check.
    pub what: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(what: &'static str, reason: impl std::fmt::Display) -> WireError {
    WireError {
        what,
        reason: reason.to_string(),
    }
}

/// Decode hex of canonical bytes, refusing more than `max` bytes before
/// decoding.
pub fn decode_hex_capped<T: Decode<()>>(
    what: &'static str,
    s: &str,
    max: usize,
) -> Result<T, WireError> {
    if s.len() > 2 * max {
        return Err(bad(what, format!("longer than {max} bytes")));
    }
    let bytes = hex::decode(s).map_err(|e| bad(what, e))?;
    decode(&bytes).map_err(|e| bad(what, e))
}

/// One header from hex.
pub fn header_from_hex(s: &str) -> Result<Header, WireError> {
    decode_hex_capped("header", s, HEADER_LEN)
}

/// A hash from 64 hex digits.
pub fn hash_from_hex(what: &'static str, s: &str) -> Result<Hash, WireError> {
    Hash::from_hex(s).map_err(|e| bad(what, e))
}

/// A value with the header it was proven against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven<T> {
    /// The proven value.
    pub value: T,
    /// The header whose state root the proof verifies against.
    pub header: Header,
    /// The node's tip height when it answered (unverified).
    pub tip_height: u64,
}

/// The header an answer names: it must be the block hash and height sent
/// beside it.
fn named_header(header: &str, block_hash: &str, height: u64) -> Result<Header, WireError> {
    let h = header_from_hex(header)?;
    if h.hash() != hash_from_hex("block hash", block_hash)? || h.height != height {
        return Err(bad(
            "header",
            "not the block the answer names (hash or height differ)",
        ));
    }
    Ok(h)
}

impl TipView {
    /// The tip header, checked against the hash and height sent beside it.
    pub fn decode_header(&self) -> Result<Header, WireError> {
        named_header(&self.header, &self.hash, self.height)
    }

    /// The claimed cumulative work (unverified).
    pub fn decode_work(&self) -> Result<U256, WireError> {
        let bytes = hex::decode(&self.work)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| bad("tip work", "not 32 bytes of hex"))?;
        Ok(U256::from_be_bytes(bytes))
    }
}

impl ParamsView {
    /// The genesis hash of the network the node runs.
    pub fn decode_genesis(&self) -> Result<Hash, WireError> {
        hash_from_hex("genesis hash", &self.genesis_hash)
    }
}

impl DirGetView {
    /// The hash of the block the proof is against.
    pub fn decode_block_hash(&self) -> Result<Hash, WireError> {
        hash_from_hex("block hash", &self.block_hash)
    }

    /// The record, or `None` for claimed absence.
    pub fn decode_record(&self) -> Result<Option<Record>, WireError> {
        self.record
            .as_ref()
            .map(|r| decode_hex_capped("record", &r.bytes, MAX_OBJECT_BYTES))
            .transpose()
    }

    /// The state proof.
    pub fn decode_proof(&self) -> Result<StateProof, WireError> {
        decode_hex_capped("proof", &self.proof, MAX_OBJECT_BYTES)
    }

    /// Decode the answer for `name` and check its proof against the header
    /// sent with it.
    pub fn verify(&self, name: &Name) -> Result<Proven<Option<Record>>, WireError> {
        if self.key != name.as_str() {
            return Err(bad("key", format!("answer for {}, asked {name}", self.key)));
        }
        let header = named_header(&self.header, &self.block_hash, self.height)?;
        let record = self.decode_record()?;
        verify_state(
            &header.state_root,
            name,
            record.as_ref(),
            &self.decode_proof()?,
        )
        .map_err(|e| bad("proof", e))?;
        Ok(Proven {
            value: record,
            header,
            tip_height: self.tip_height,
        })
    }
}

impl DirCommitmentView {
    /// The hash of the block the proof is against.
    pub fn decode_block_hash(&self) -> Result<Hash, WireError> {
        hash_from_hex("block hash", &self.block_hash)
    }

    /// The state proof.
    pub fn decode_proof(&self) -> Result<StateProof, WireError> {
        decode_hex_capped("proof", &self.proof, MAX_OBJECT_BYTES)
    }

    /// Decode the answer for `commitment` and check its proof against the
    /// header sent with it; the value is the height the commitment was
    /// mined at, or `None` when the proof shows it absent.
    pub fn verify(&self, commitment: &Hash) -> Result<Proven<Option<u64>>, WireError> {
        if hash_from_hex("commitment", &self.commitment)? != *commitment {
            return Err(bad("commitment", "answer for another commitment"));
        }
        let header = named_header(&self.header, &self.block_hash, self.height)?;
        verify_state_hashed(
            &header.state_root,
            &commit_key(commitment),
            self.mined_at.map(commit_entry_hash).as_ref(),
            &self.decode_proof()?,
        )
        .map_err(|e| bad("proof", e))?;
        Ok(Proven {
            value: self.mined_at,
            header,
            tip_height: self.tip_height,
        })
    }
}

/// Bytes a header takes in a compact batch after the first: its canonical
/// encoding without `version`, `height` and `prev` (the first 44 bytes),
/// which follow from the header before it.
pub const COMPACT_TAIL_LEN: usize = HEADER_LEN - COMPACT_IMPLIED_LEN;
/// `version` (4) + `height` (8) + `prev` (32): the leading bytes of a
/// header's canonical encoding that a compact batch leaves out.
const COMPACT_IMPLIED_LEN: usize = 44;

/// A run of consecutive headers as a compact batch
/// (`chain_headers_compact`, docs/protocol.md): the first header's 160
/// canonical bytes, then for each next header the last 116 bytes of its
/// canonical encoding. Its version is the first header's, its height one
/// more than the header before it, and its `prev` that header's hash.
///
/// The batch stops before the first header that does not follow that way
/// (another version, or a gap), so what is encoded always decodes back
/// to the same headers.
pub fn encode_compact_headers(headers: &[Header]) -> Vec<u8> {
    let Some(first) = headers.first() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(HEADER_LEN + COMPACT_TAIL_LEN * (headers.len() - 1));
    out.extend_from_slice(&first.to_bytes());
    for pair in headers.windows(2) {
        let (before, h) = (&pair[0], &pair[1]);
        if h.version != first.version
            || Some(h.height) != before.height.checked_add(1)
            || h.prev != before.hash()
        {
            break;
        }
        out.extend_from_slice(&h.to_bytes()[COMPACT_IMPLIED_LEN..]);
    }
    out
}

/// Most base64 characters a compact batch of `max` headers can take.
pub fn compact_headers_max_chars(max: usize) -> usize {
    let bytes = HEADER_LEN + COMPACT_TAIL_LEN * max.saturating_sub(1);
    bytes.div_ceil(3) * 4
}

/// Decode a compact batch (base64, standard alphabet, padded) of at most
/// `max` headers. The length is checked before anything is decoded.
/// Nothing is verified beyond the shape: the headers' linkage holds by
/// construction, their work and roots are the light client's to check.
pub fn decode_compact_headers(s: &str, max: usize) -> Result<Vec<Header>, WireError> {
    use base64::Engine as _;
    const WHAT: &str = "compact headers";
    if s.is_empty() {
        return Ok(Vec::new());
    }
    if max == 0 || s.len() > compact_headers_max_chars(max) {
        return Err(bad(WHAT, format!("more than {max} headers")));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| bad(WHAT, e))?;
    let Some(rest) = bytes.len().checked_sub(HEADER_LEN) else {
        return Err(bad(
            WHAT,
            format!("{} bytes: shorter than one header", bytes.len()),
        ));
    };
    if rest % COMPACT_TAIL_LEN != 0 {
        return Err(bad(
            WHAT,
            format!(
                "{} bytes: not 160 + a multiple of {COMPACT_TAIL_LEN}",
                bytes.len()
            ),
        ));
    }
    let n = 1 + rest / COMPACT_TAIL_LEN;
    if n > max {
        return Err(bad(WHAT, format!("{n} headers, more than {max}")));
    }
    let mut out: Vec<Header> = Vec::with_capacity(n);
    let first: Header = decode(&bytes[..HEADER_LEN]).map_err(|e| bad(WHAT, e))?;
    let mut full = first.to_bytes();
    out.push(first);
    for tail in bytes[HEADER_LEN..].chunks_exact(COMPACT_TAIL_LEN) {
        let before = out.last().expect("the first header was pushed above");
        // The implied fields are set below; what the leading bytes decode
        // to does not matter.
        full[COMPACT_IMPLIED_LEN..].copy_from_slice(tail);
        let mut h: Header = decode(&full).map_err(|e| bad(WHAT, e))?;
        h.version = first.version;
        h.height = before
            .height
            .checked_add(1)
            .ok_or_else(|| bad(WHAT, "height overflows"))?;
        h.prev = before.hash();
        out.push(h);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use xirtam_proofs::pow::CompactTarget;

    fn chain(seed: [u8; 32], n: usize) -> Vec<Header> {
        let mut out: Vec<Header> = Vec::new();
        for i in 0..n {
            let mut root = seed;
            root[0] ^= i as u8;
            out.push(Header {
                version: 1,
                height: 7 + i as u64,
                prev: out.last().map_or(Hash(seed), Header::hash),
                time: 1_767_225_600 + 3 * i as u64,
                bits: CompactTarget(0x207f_ffff),
                ops_root: Hash(root),
                state_root: Hash([i as u8; 32]),
                history_root: Hash([!(i as u8); 32]),
                nonce: (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            });
        }
        out
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    proptest! {
        #[test]
        fn compact_headers_round_trip(seed in any::<[u8; 32]>(), n in 0usize..40) {
            let hs = chain(seed, n);
            let s = b64(&encode_compact_headers(&hs));
            prop_assert_eq!(decode_compact_headers(&s, n.max(1)).unwrap(), hs);
        }

        #[test]
        fn compact_headers_never_panic_on_junk(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = decode_compact_headers(&b64(&bytes), 20);
        }
    }

    #[test]
    fn a_compact_batch_is_about_half_of_hex() {
        let hs = chain([3; 32], 2000);
        let compact = b64(&encode_compact_headers(&hs)).len() + 2;
        let hex_json = hs.len() * (2 * HEADER_LEN + 3);
        assert!(
            compact * 2 < hex_json + hex_json / 10,
            "{compact} vs {hex_json}"
        );
    }

    #[test]
    fn a_batch_stops_where_headers_do_not_follow() {
        let mut hs = chain([5; 32], 5);
        hs[3].prev = Hash([0; 32]);
        let s = b64(&encode_compact_headers(&hs));
        assert_eq!(decode_compact_headers(&s, 5).unwrap(), hs[..3].to_vec());
        let mut hs = chain([5; 32], 5);
        hs[2].version = 2;
        let s = b64(&encode_compact_headers(&hs));
        assert_eq!(decode_compact_headers(&s, 5).unwrap().len(), 2);
    }

    #[test]
    fn oversized_or_ragged_batches_are_refused() {
        let hs = chain([6; 32], 10);
        let s = b64(&encode_compact_headers(&hs));
        assert!(decode_compact_headers(&s, 9).is_err(), "more than asked");
        let mut bytes = encode_compact_headers(&hs);
        bytes.pop();
        assert!(decode_compact_headers(&b64(&bytes), 10).is_err(), "ragged");
        assert!(
            decode_compact_headers(&b64(&bytes[..100]), 10).is_err(),
            "short"
        );
        assert!(decode_compact_headers("not base64!", 10).is_err());
        assert_eq!(decode_compact_headers("", 10).unwrap(), vec![]);
    }
}
