//! Ops waiting for a block.
//!
//! Every op is validated against the tip before it is admitted (every rule:
//! signature, stamp, nonce, owner). At most one pending op per name: a
//! higher nonce replaces the pending one. The pool is bounded by count and
//! bytes; when full, the op whose stamp expires first is evicted if the
//! newcomer's stamp is younger, otherwise the newcomer is refused. After each
//! tip change, pending ops are re-checked and ops from disconnected blocks
//! come back when still valid.

use std::collections::{HashMap, HashSet};

use xirtam_proofs::op::{Op, OpError};
use xirtam_proofs::{Hash, Name, encode};

use crate::chain::{Chain, ChainError, TipChange};
use crate::store::KvStore;

/// Default bound on pending ops.
pub const DEFAULT_MAX_OPS: usize = 20_000;
/// Default bound on pending bytes.
pub const DEFAULT_MAX_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Entry {
    op: Op,
    hash: Hash,
    len: usize,
    seq: u64,
    stamp_height: u64,
}

/// Why an op was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MempoolError {
    /// The op breaks a rule.
    #[error("invalid op: {0}")]
    Invalid(#[from] OpError),
    /// The same op is already pending.
    #[error("op already pending")]
    Duplicate,
    /// A pending op for the name has the same or a higher nonce.
    #[error(
        "an op for {name} with nonce {pending} is already pending; use a higher nonce to replace it"
    )]
    NonceNotHigher {
        /// Name.
        name: Name,
        /// Pending op's nonce.
        pending: u64,
    },
    /// The node could not check the op (storage failure).
    #[error("cannot check the op: {0}")]
    Internal(String),
    /// The pool is full of ops with younger stamps.
    #[error("mempool full ({count} ops, {bytes} bytes); retry later with a fresh stamp")]
    Full {
        /// Pending ops.
        count: usize,
        /// Pending bytes.
        bytes: usize,
    },
}

/// How an op was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// New name in the pool.
    New,
    /// Replaced a pending op with a lower nonce.
    Replaced,
}

/// The pending ops.
#[derive(Debug)]
pub struct Mempool {
    entries: HashMap<Name, Entry>,
    bytes: usize,
    seq: u64,
    max_ops: usize,
    max_bytes: usize,
}

impl Default for Mempool {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_OPS, DEFAULT_MAX_BYTES)
    }
}

impl Mempool {
    /// An empty pool with these bounds.
    pub fn new(max_ops: usize, max_bytes: usize) -> Self {
        Mempool {
            entries: HashMap::new(),
            bytes: 0,
            seq: 0,
            max_ops: max_ops.max(1),
            max_bytes,
        }
    }

    /// Pending ops.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No pending ops?
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pending bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Is this op (by hash) pending?
    pub fn contains(&self, op: &Op) -> bool {
        self.entries
            .get(&op.key)
            .is_some_and(|e| e.hash == op.hash())
    }

    /// Validate `op` against the tip of `chain` and admit it.
    pub fn add<S: KvStore>(&mut self, chain: &Chain<S>, op: Op) -> Result<Admitted, MempoolError> {
        let hash = op.hash();
        if let Some(e) = self.entries.get(&op.key) {
            if e.hash == hash {
                return Err(MempoolError::Duplicate);
            }
            if e.op.nonce >= op.nonce {
                return Err(MempoolError::NonceNotHigher {
                    name: op.key.clone(),
                    pending: e.op.nonce,
                });
            }
        }
        chain.check_op(&op).map_err(|e| match e {
            ChainError::InvalidOp(e) => MempoolError::Invalid(e),
            e => MempoolError::Internal(e.to_string()),
        })?;
        let stamp_height = chain.meta(&op.stamp.block).map_or(0, |m| m.header.height);
        let len = encode(&op).len();
        let replaced = self.remove(&op.key).is_some();
        while self.entries.len() >= self.max_ops || self.bytes + len > self.max_bytes {
            let Some(oldest) = self
                .entries
                .values()
                .min_by_key(|e| (e.stamp_height, e.seq))
                .filter(|e| e.stamp_height < stamp_height)
                .map(|e| e.op.key.clone())
            else {
                return Err(MempoolError::Full {
                    count: self.entries.len(),
                    bytes: self.bytes,
                });
            };
            tracing::debug!(target: "mempool", name = %oldest, "evicted (oldest stamp)");
            self.remove(&oldest);
        }
        self.seq += 1;
        self.bytes += len;
        self.entries.insert(
            op.key.clone(),
            Entry {
                op,
                hash,
                len,
                seq: self.seq,
                stamp_height,
            },
        );
        Ok(if replaced {
            Admitted::Replaced
        } else {
            Admitted::New
        })
    }

    fn remove(&mut self, name: &Name) -> Option<Entry> {
        let e = self.entries.remove(name)?;
        self.bytes -= e.len;
        Some(e)
    }

    /// Pending ops, oldest first (block templates take them in this order).
    pub fn ops(&self) -> Vec<Op> {
        let mut v: Vec<&Entry> = self.entries.values().collect();
        v.sort_by_key(|e| e.seq);
        v.into_iter().map(|e| e.op.clone()).collect()
    }

    /// Bring the pool up to date after the main chain changed: drop ops
    /// that are now included or invalid (stale stamps, nonces overtaken),
    /// and return still-valid ops from disconnected blocks.
    pub fn on_tip_change<S: KvStore>(&mut self, chain: &Chain<S>, change: &TipChange) {
        let touched: HashSet<&Name> = change
            .connected
            .iter()
            .chain(&change.disconnected)
            .flat_map(|b| b.ops.iter().map(|o| &o.key))
            .collect();
        let stale: Vec<Name> = self
            .entries
            .values()
            .filter(|e| {
                // Cheap checks for all; the state rule only where it can
                // have changed.
                let stamp_ok = chain.is_main(&e.op.stamp.block)
                    && e.op
                        .check_stamp_age(chain.params(), e.stamp_height, chain.height() + 1)
                        .is_ok();
                !stamp_ok
                    || (touched.contains(&e.op.key) && chain.check_op_stateful(&e.op).is_err())
            })
            .map(|e| e.op.key.clone())
            .collect();
        for n in &stale {
            self.remove(n);
        }
        let mut returned = 0;
        for b in &change.disconnected {
            for op in &b.ops {
                if self.add(chain, op.clone()).is_ok() {
                    returned += 1;
                }
            }
        }
        if !stale.is_empty() || returned > 0 {
            tracing::debug!(
                target: "mempool",
                removed = stale.len(),
                returned,
                pending = self.entries.len(),
                "re-checked after tip change"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use xirtam_proofs::op::{Owners, Value};
    use xirtam_proofs::params::REGTEST;
    use xirtam_proofs::{Hash, SecretKey};

    use super::*;
    use crate::store::MemoryStore;

    fn op(n: &str, nonce: u64, k: &SecretKey, recent: Hash) -> Op {
        let mut o = Op::sign(
            &REGTEST,
            Name::new(n).expect("valid"),
            nonce,
            Owners::single(k.public()),
            Value::new(b"v".to_vec()).expect("small"),
            k,
        );
        assert!(o.solve_stamp(&REGTEST, recent, 0, 1 << 20));
        o
    }

    fn chain() -> Chain<MemoryStore> {
        Chain::open(&REGTEST, Arc::new(MemoryStore::new())).expect("open")
    }

    #[test]
    fn replace_duplicate_and_invalid() {
        let c = chain();
        let g = c.tip().header.hash();
        let k = SecretKey::from_seed([1; 32]);
        let mut m = Mempool::default();
        assert_eq!(m.add(&c, op("@a", 1, &k, g)), Ok(Admitted::New));
        assert_eq!(m.add(&c, op("@a", 1, &k, g)), Err(MempoolError::Duplicate));
        let other = SecretKey::from_seed([2; 32]);
        assert!(matches!(
            m.add(&c, op("@a", 1, &other, g)),
            Err(MempoolError::NonceNotHigher { pending: 1, .. })
        ));
        assert_eq!(m.add(&c, op("@a", 2, &k, g)), Ok(Admitted::Replaced));
        assert_eq!(m.len(), 1);
        let mut bad = op("@b", 1, &k, g);
        bad.signature.0[0] ^= 1;
        assert!(matches!(
            m.add(&c, bad),
            Err(MempoolError::Invalid(OpError::Signature(_)))
        ));
        let mut unknown = op("@c", 1, &k, Hash([7; 32]));
        unknown.stamp.block = Hash([7; 32]);
        assert!(matches!(m.add(&c, unknown), Err(MempoolError::Invalid(_))));
        assert_eq!(m.bytes(), encode(&m.ops()[0]).len());
    }

    #[test]
    fn bounded_with_eviction_of_the_oldest_stamp() {
        let mut c = chain();
        let k = SecretKey::from_seed([1; 32]);
        let g = c.tip().header.hash();
        let mut m = Mempool::new(2, usize::MAX);
        m.add(&c, op("@a", 1, &k, g)).expect("admitted");
        m.add(&c, op("@b", 1, &k, g)).expect("admitted");
        // Same stamp age: the newcomer is refused.
        assert!(matches!(
            m.add(&c, op("@c", 1, &k, g)),
            Err(MempoolError::Full { .. })
        ));
        // Mine a block so a younger stamp exists: it evicts the oldest.
        let tip = c.tip().clone();
        let mut h =
            xirtam_proofs::header::header_template(&REGTEST, &tip.state, tip.header.time + 1);
        h.state_root = tip.header.state_root;
        assert!(xirtam_proofs::header::mine(&mut h, 0, u64::MAX));
        c.submit_block(
            xirtam_proofs::Block {
                header: h,
                ops: vec![],
            },
            u64::MAX / 2,
        )
        .expect("valid");
        let young = c.tip().header.hash();
        assert_eq!(m.add(&c, op("@c", 1, &k, young)), Ok(Admitted::New));
        assert_eq!(m.len(), 2);
        assert!(m.ops().iter().any(|o| o.key.as_str() == "@c"));
    }
}
