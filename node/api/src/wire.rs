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
