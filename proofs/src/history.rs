//! `history_root`: a Merkle Mountain Range over all previous headers.
//!
//! Leaf `i` is header `i` itself (its hash, which is already domain-tagged,
//! and its work); an inner node commits to both children and the sum of
//! their work, so every node's hash binds the work below it and the root
//! commits to the total work of the chain (what a FlyClient-style
//! super-light client samples against). The header at height `h` carries the
//! root of the MMR over headers `0..h`.
//!
//! ```text
//! leaf   = (hash: header_hash, work: block work)            no extra hashing
//! node   = H(HISTORY_NODE, l.hash || r.hash || (l.work + r.work)_be32)
//! peaks  = perfect subtrees, largest first (one per set bit of the leaf count)
//! bagged = node(...node(node(p0, p1), p2)..., p_{k-1})      (left to right)
//! root   = H(HISTORY_ROOT, leaf_count_le8 || bagged.hash || bagged.work_be32)
//! empty  = H(HISTORY_ROOT, 0u64_le8 || 0^32 || 0^32)
//! ```
//!
//! Bagging left to right lets [`HistoryPeaks`] cache the bag of every peak
//! prefix: an append changes only the last peaks, so it costs amortised two
//! node hashes plus the root, not a re-bag of all ~log2(n) peaks.

use bincode::{Decode, Encode};

use crate::hash::{Hash, hash_parts, tag};
use crate::pow::U256;

/// One MMR node: a hash and the total work below it.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Encode, Decode)]
pub struct HistoryNode {
    /// Node hash.
    pub hash: Hash,
    /// Sum of the work of the leaves below.
    pub work: U256,
}

impl HistoryNode {
    /// Leaf for a header with hash `header` and work `work`.
    pub fn leaf(header: &Hash, work: U256) -> Self {
        HistoryNode {
            hash: *header,
            work,
        }
    }

    /// Parent of two nodes.
    pub fn parent(l: &HistoryNode, r: &HistoryNode) -> Self {
        let work = l.work.saturating_add(r.work);
        let hash = hash_parts(
            tag::HISTORY_NODE,
            &[&l.hash.0, &r.hash.0, &work.to_be_bytes()],
        );
        HistoryNode { hash, work }
    }
}

/// The peaks of the MMR: enough to append and to compute the root.
/// Encoded as `leaves: u64` then the peaks (a `u64` count, which must equal
/// the number of set bits of `leaves`, then each node).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct HistoryPeaks {
    leaves: u64,
    peaks: Vec<HistoryNode>,
    /// `bags[i]` = peaks `0..=i` bagged left to right (derived, not encoded).
    bags: Vec<HistoryNode>,
}

impl Encode for HistoryPeaks {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        e: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.leaves.encode(e)?;
        self.peaks.encode(e)
    }
}

impl<C> Decode<C> for HistoryPeaks {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        d: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let leaves = <u64 as Decode<C>>::decode(d)?;
        let n = crate::encoding::decode_len(d, 64, "history peaks")?;
        if n != leaves.count_ones() as usize {
            return Err(crate::encoding::invalid(format!(
                "{n} history peaks for {leaves} leaves"
            )));
        }
        let mut m = HistoryPeaks {
            leaves,
            peaks: Vec::with_capacity(n),
            bags: Vec::with_capacity(n),
        };
        for _ in 0..n {
            m.push_peak(HistoryNode::decode(d)?);
        }
        Ok(m)
    }
}
bincode::impl_borrow_decode!(HistoryPeaks);

impl HistoryPeaks {
    /// The empty MMR.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub fn leaves(&self) -> u64 {
        self.leaves
    }

    /// The peaks, largest first.
    pub fn peaks(&self) -> &[HistoryNode] {
        &self.peaks
    }

    /// Append a leaf (amortised two hashes).
    pub fn append(&mut self, leaf: HistoryNode) {
        let mut node = leaf;
        let mut n = self.leaves;
        while n & 1 == 1 {
            let Some(left) = self.peaks.pop() else {
                break; // unreachable: one peak per set bit of `leaves`
            };
            node = HistoryNode::parent(&left, &node);
            n >>= 1;
        }
        self.bags.truncate(self.peaks.len());
        self.push_peak(node);
        self.leaves += 1;
    }

    fn push_peak(&mut self, node: HistoryNode) {
        let bag = match self.bags.last() {
            Some(prev) => HistoryNode::parent(prev, &node),
            None => node,
        };
        self.peaks.push(node);
        self.bags.push(bag);
    }

    /// The root.
    pub fn root(&self) -> Hash {
        root_hash(self.leaves, self.bags.last())
    }

    /// Total work of all leaves.
    pub fn total_work(&self) -> U256 {
        self.peaks
            .iter()
            .fold(U256::zero(), |a, p| a.saturating_add(p.work))
    }
}

fn root_of(leaves: u64, peaks: &[HistoryNode]) -> Hash {
    let bagged = peaks
        .iter()
        .copied()
        .reduce(|acc, p| HistoryNode::parent(&acc, &p));
    root_hash(leaves, bagged.as_ref())
}

fn root_hash(leaves: u64, bagged: Option<&HistoryNode>) -> Hash {
    let bagged = bagged.copied().unwrap_or(HistoryNode {
        hash: Hash::ZERO,
        work: U256::zero(),
    });
    hash_parts(
        tag::HISTORY_ROOT,
        &[
            &leaves.to_le_bytes(),
            &bagged.hash.0,
            &bagged.work.to_be_bytes(),
        ],
    )
}

/// Proof that a header (hash and work) is leaf `index` of an MMR with
/// `leaf_count` leaves.
#[derive(Clone, PartialEq, Eq, Debug, Encode, Decode)]
pub struct HistoryProof {
    /// Leaf position.
    pub index: u64,
    /// Leaves in the MMR (the height of the header whose root is used).
    pub leaf_count: u64,
    /// Siblings from the leaf up to its peak.
    pub path: Vec<HistoryNode>,
    /// The other peaks, largest first.
    pub other_peaks: Vec<HistoryNode>,
}

/// A history proof that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// Index outside the MMR.
    #[error("leaf index {index} is outside an MMR of {leaf_count} leaves")]
    IndexOutOfRange {
        /// Index.
        index: u64,
        /// Leaves.
        leaf_count: u64,
    },
    /// Path or peak count does not fit the MMR shape.
    #[error("proof shape does not match an MMR of {0} leaves")]
    Shape(u64),
    /// Recomputed root differs.
    #[error("history proof does not lead to the expected root")]
    RootMismatch,
}

/// Peak heights for `leaf_count` leaves, largest first, with their first leaf.
fn peak_ranges(leaf_count: u64) -> impl Iterator<Item = (u32, u64)> {
    let mut offset = 0u64;
    (0..64u32).rev().filter_map(move |h| {
        if leaf_count >> h & 1 == 1 {
            let start = offset;
            offset += 1u64 << h;
            Some((h, start))
        } else {
            None
        }
    })
}

/// Verify that (`header`, `work`) is in the MMR whose root is `root`.
pub fn verify_history(
    root: &Hash,
    header: &Hash,
    work: U256,
    proof: &HistoryProof,
) -> Result<(), HistoryError> {
    let (index, count) = (proof.index, proof.leaf_count);
    if index >= count {
        return Err(HistoryError::IndexOutOfRange {
            index,
            leaf_count: count,
        });
    }
    if proof.other_peaks.len() + 1 != count.count_ones() as usize {
        return Err(HistoryError::Shape(count));
    }
    let mut peaks = Vec::with_capacity(proof.other_peaks.len() + 1);
    let mut others = proof.other_peaks.iter();
    for (h, start) in peak_ranges(count) {
        if index >= start && index < start + (1u64 << h) {
            if proof.path.len() != h as usize {
                return Err(HistoryError::Shape(count));
            }
            let local = index - start;
            let mut node = HistoryNode::leaf(header, work);
            for (level, sib) in proof.path.iter().enumerate() {
                node = if local >> level & 1 == 0 {
                    HistoryNode::parent(&node, sib)
                } else {
                    HistoryNode::parent(sib, &node)
                };
            }
            peaks.push(node);
        } else {
            peaks.push(*others.next().ok_or(HistoryError::Shape(count))?);
        }
    }
    if root_of(count, &peaks) == *root {
        Ok(())
    } else {
        Err(HistoryError::RootMismatch)
    }
}

/// Build the proof for leaf `index` from all leaves (O(n); full nodes keep
/// the nodes on disk and will prove from there).
pub fn prove_history(leaves: &[HistoryNode], index: u64) -> Option<HistoryProof> {
    let count = leaves.len() as u64;
    if index >= count {
        return None;
    }
    let mut path = Vec::new();
    let mut other_peaks = Vec::new();
    for (h, start) in peak_ranges(count) {
        let size = 1usize << h;
        let lo = usize::try_from(start).ok()?;
        let sub = leaves.get(lo..lo + size)?;
        if index >= start && index < start + size as u64 {
            // Walk up the perfect subtree collecting siblings.
            let mut layer: Vec<HistoryNode> = sub.to_vec();
            let mut local = usize::try_from(index - start).ok()?;
            while layer.len() > 1 {
                path.push(layer[local ^ 1]);
                layer = layer
                    .chunks(2)
                    .map(|c| HistoryNode::parent(&c[0], &c[1]))
                    .collect();
                local /= 2;
            }
        } else {
            let mut layer: Vec<HistoryNode> = sub.to_vec();
            while layer.len() > 1 {
                layer = layer
                    .chunks(2)
                    .map(|c| HistoryNode::parent(&c[0], &c[1]))
                    .collect();
            }
            other_peaks.push(*layer.first()?);
        }
    }
    Some(HistoryProof {
        index,
        leaf_count: count,
        path,
        other_peaks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash_tagged;

    fn leaves(n: u64) -> Vec<HistoryNode> {
        (0..n)
            .map(|i| HistoryNode::leaf(&hash_tagged("t", &i.to_le_bytes()), U256::from(i + 1)))
            .collect()
    }

    #[test]
    fn every_leaf_proves_for_many_sizes() {
        for n in 1..40u64 {
            let ls = leaves(n);
            let mut mmr = HistoryPeaks::new();
            for l in &ls {
                mmr.append(*l);
            }
            assert_eq!(mmr.total_work(), U256::from(n * (n + 1) / 2));
            let root = mmr.root();
            // The cached bags give the same root as bagging from scratch,
            // and a decoded copy rebuilds them.
            assert_eq!(root, root_of(n, mmr.peaks()));
            let copy: HistoryPeaks =
                crate::encoding::decode(&crate::encoding::encode(&mmr)).expect("round trip");
            assert_eq!(copy.root(), root);
            for i in 0..n {
                let p = prove_history(&ls, i).expect("in range");
                let leaf_hash = hash_tagged("t", &i.to_le_bytes());
                assert_eq!(
                    verify_history(&root, &leaf_hash, U256::from(i + 1), &p),
                    Ok(())
                );
                // wrong work, wrong index, wrong root
                assert!(verify_history(&root, &leaf_hash, U256::from(i + 2), &p).is_err());
                let mut q = p.clone();
                q.index = (i + 1) % n;
                if n > 1 {
                    assert!(verify_history(&root, &leaf_hash, U256::from(i + 1), &q).is_err());
                }
                let mut r = root;
                r.0[0] ^= 1;
                assert!(verify_history(&r, &leaf_hash, U256::from(i + 1), &p).is_err());
            }
        }
    }

    #[test]
    fn empty_root_is_fixed_and_differs_from_one_leaf() {
        let e = HistoryPeaks::new();
        let mut one = HistoryPeaks::new();
        one.append(leaves(1)[0]);
        assert_ne!(e.root(), one.root());
    }

    #[test]
    fn peaks_decode_checks_shape() {
        let mut m = HistoryPeaks::new();
        for l in leaves(5) {
            m.append(l);
        }
        let mut b = crate::encoding::encode(&m);
        assert_eq!(crate::encoding::decode::<HistoryPeaks>(&b), Ok(m));
        b[0] = 4; // 4 leaves need 1 peak, not 2
        assert!(crate::encoding::decode::<HistoryPeaks>(&b).is_err());
    }
}
