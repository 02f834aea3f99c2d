//! Blocks and `ops_root`.
//!
//! `ops_root = H(OPS_ROOT, count_le8 || merkle_root)` where `merkle_root` is
//! the rs_merkle binary tree over the op hashes (inner node
//! `H(OPS_NODE, left || right)`; an odd last node is promoted unchanged to
//! the next layer) and is 32 zero bytes for an empty block. Committing the
//! count fixes the tree shape, so a proof cannot claim another position.

use std::collections::BTreeSet;

use bincode::{Decode, Encode};
use rs_merkle::{MerkleProof, MerkleTree};

use crate::encoding::{decode_len, encoded_len};
use crate::hash::{Hash, hash_parts, hash_tagged, tag};
use crate::header::Header;
use crate::op::{Op, OpError};
use crate::params::Params;

/// Protocol-wide cap on ops in a decoded block (networks set a lower limit).
pub const MAX_OPS_CAP: usize = 65_536;

#[derive(Clone, Debug)]
struct OpsHasher;

impl rs_merkle::Hasher for OpsHasher {
    type Hash = [u8; 32];
    fn hash(data: &[u8]) -> [u8; 32] {
        hash_tagged(tag::OPS_NODE, data).0
    }
}

fn commit(count: usize, merkle_root: &Hash) -> Hash {
    hash_parts(
        tag::OPS_ROOT,
        &[&(count as u64).to_le_bytes(), &merkle_root.0],
    )
}

/// `ops_root` over op hashes, in block order.
pub fn ops_root(op_hashes: &[Hash]) -> Hash {
    let leaves: Vec<[u8; 32]> = op_hashes.iter().map(|h| h.0).collect();
    let root = MerkleTree::<OpsHasher>::from_leaves(&leaves)
        .root()
        .map_or(Hash::ZERO, Hash);
    commit(op_hashes.len(), &root)
}

/// Proof that an op hash is at `index` in a block of `count` ops.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub struct OpProof {
    /// Position of the op in the block.
    pub index: u64,
    /// Ops in the block.
    pub count: u64,
    /// Sibling hashes, leaf level first (rs_merkle order).
    pub siblings: Vec<Hash>,
}

/// An op-inclusion proof that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpProofError {
    /// Index outside the block.
    #[error("op index {index} is outside a block of {count} ops")]
    IndexOutOfRange {
        /// Index.
        index: u64,
        /// Count.
        count: u64,
    },
    /// Wrong number of siblings for the tree shape.
    #[error("{got} sibling hashes where the tree shape needs {expected}")]
    Shape {
        /// Needed.
        expected: usize,
        /// Given.
        got: usize,
    },
    /// Recomputed root differs.
    #[error("op proof does not lead to the block's ops_root")]
    RootMismatch,
}

/// Number of siblings on the path of leaf `index` in a tree of `count`.
fn siblings_needed(mut index: u64, mut count: u64) -> usize {
    let mut n = 0;
    while count > 1 {
        if (index ^ 1) < count {
            n += 1;
        }
        index >>= 1;
        count = count.div_ceil(2);
    }
    n
}

/// Prove that op `index` is in the block with these op hashes.
pub fn prove_op(op_hashes: &[Hash], index: usize) -> Option<OpProof> {
    if index >= op_hashes.len() {
        return None;
    }
    let leaves: Vec<[u8; 32]> = op_hashes.iter().map(|h| h.0).collect();
    let proof = MerkleTree::<OpsHasher>::from_leaves(&leaves).proof(&[index]);
    Some(OpProof {
        index: index as u64,
        count: op_hashes.len() as u64,
        siblings: proof.proof_hashes().iter().map(|h| Hash(*h)).collect(),
    })
}

/// Verify that `op_hash` is in the block whose header has `ops_root`.
pub fn verify_op(ops_root: &Hash, op_hash: &Hash, proof: &OpProof) -> Result<(), OpProofError> {
    let (index, count) = (proof.index, proof.count);
    if index >= count || count > MAX_OPS_CAP as u64 {
        return Err(OpProofError::IndexOutOfRange { index, count });
    }
    let expected = siblings_needed(index, count);
    if proof.siblings.len() != expected {
        return Err(OpProofError::Shape {
            expected,
            got: proof.siblings.len(),
        });
    }
    // Both fit in usize: count <= MAX_OPS_CAP.
    let (index, count) = (index as usize, count as usize);
    let hashes: Vec<[u8; 32]> = proof.siblings.iter().map(|h| h.0).collect();
    let root = MerkleProof::<OpsHasher>::new(hashes)
        .root(&[index], &[op_hash.0], count)
        .map_err(|_| OpProofError::RootMismatch)?;
    if commit(count, &Hash(root)) == *ops_root {
        Ok(())
    } else {
        Err(OpProofError::RootMismatch)
    }
}

/// A block: a header and its ops.
#[derive(Clone, PartialEq, Eq, Debug, Encode)]
pub struct Block {
    /// The header.
    pub header: Header,
    /// Ops, applied in order.
    pub ops: Vec<Op>,
}

impl<C> Decode<C> for Block {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        d: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let header = Header::decode(d)?;
        let n = decode_len(d, MAX_OPS_CAP, "ops")?;
        let mut ops = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            ops.push(Op::decode(d)?);
        }
        Ok(Block { header, ops })
    }
}
bincode::impl_borrow_decode!(Block);

/// Why a block's body is invalid (header rules are in [`crate::header`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// Too many ops.
    #[error("{count} ops; this network allows {max} per block")]
    TooManyOps {
        /// Count.
        count: usize,
        /// Limit.
        max: usize,
    },
    /// Encoded block too large.
    #[error("block is {len} bytes; this network allows {max}")]
    TooLarge {
        /// Size.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// `ops_root` does not match the ops: this body is not the header's
    /// (say nothing about the header).
    #[error("ops_root does not match the block's ops")]
    OpsRoot,
    /// Two ops for the same name or commitment.
    #[error("more than one op for {0} in one block")]
    DuplicateKey(String),
    /// An op failed a stateless check.
    #[error("op {index} ({name}) is invalid: {error}")]
    Op {
        /// Position.
        index: usize,
        /// Its subject (name or commitment).
        name: String,
        /// Rule that failed.
        #[source]
        error: OpError,
    },
}

impl Block {
    /// Op hashes in order.
    pub fn op_hashes(&self) -> Vec<Hash> {
        self.ops.iter().map(Op::hash).collect()
    }

    /// Checks on the body that need no chain state: limits, `ops_root`, at
    /// most one op per name or commitment, and every op's stateless rules. Stamp ages and
    /// the state rule are checked by the node when it connects the block.
    pub fn check_stateless(&self, params: &Params) -> Result<(), BlockError> {
        self.check_body(params)?;
        Op::check_stateless_all(params, &self.ops).map_err(|(index, name, error)| BlockError::Op {
            index,
            name,
            error,
        })
    }

    /// [`Block::check_stateless`] without the per-op checks (signatures and
    /// stamps), for callers that check ops in parallel.
    ///
    /// `ops_root` is checked first: once the body matches what the header
    /// commits to, any later failure makes the *header* invalid for good;
    /// an `ops_root` mismatch only shows that this body is not the block's
    /// (the header may still be valid with its real body).
    pub fn check_body(&self, params: &Params) -> Result<(), BlockError> {
        if ops_root(&self.op_hashes()) != self.header.ops_root {
            return Err(BlockError::OpsRoot);
        }
        if self.ops.len() > params.max_ops_per_block {
            return Err(BlockError::TooManyOps {
                count: self.ops.len(),
                max: params.max_ops_per_block,
            });
        }
        let len = encoded_len(self);
        if len > params.max_block_bytes {
            return Err(BlockError::TooLarge {
                len,
                max: params.max_block_bytes,
            });
        }
        let mut keys = BTreeSet::new();
        for op in &self.ops {
            if !keys.insert(op.state_key()) {
                return Err(BlockError::DuplicateKey(op.subject()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| hash_tagged(tag::OP, &(i as u64).to_le_bytes()))
            .collect()
    }

    #[test]
    fn every_op_proves_for_many_sizes() {
        for n in 1..34 {
            let hs = hashes(n);
            let root = ops_root(&hs);
            for i in 0..n {
                let p = prove_op(&hs, i).expect("in range");
                assert_eq!(p.siblings.len(), siblings_needed(i as u64, n as u64));
                assert_eq!(verify_op(&root, &hs[i], &p), Ok(()));
                let other = hs[(i + 1) % n];
                if n > 1 {
                    assert!(verify_op(&root, &other, &p).is_err());
                }
                let mut longer = p.clone();
                longer.siblings.push(Hash::ZERO);
                assert!(verify_op(&root, &hs[i], &longer).is_err());
                let mut moved = p.clone();
                moved.count += 1;
                assert!(verify_op(&root, &hs[i], &moved).is_err());
            }
        }
    }

    #[test]
    fn empty_and_count_committed() {
        assert_ne!(ops_root(&[]), ops_root(&hashes(1)));
        // A single op's root is not the op hash itself.
        assert_ne!(ops_root(&hashes(1)), hashes(1)[0]);
        assert!(
            verify_op(
                &ops_root(&[]),
                &Hash::ZERO,
                &OpProof {
                    index: 0,
                    count: 0,
                    siblings: vec![]
                }
            )
            .is_err()
        );
    }
}
