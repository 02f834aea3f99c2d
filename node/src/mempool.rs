//! Ops waiting for a block.
//!
//! Every op is validated against the tip before it is admitted (every rule:
//! signature, stamp, nonce, owner, commitment). At most one pending op per
//! state key (a name, or a commitment). A pending op is replaced only by
//! one that must win over it:
//! * a claim by a claim revealing an *earlier* commitment (the earliest
//!   commitment wins the name on chain too),
//! * an update by a claim (which is valid against the tip only if it takes
//!   the name),
//! * an update by an update from the same signer with a newer anchor (a
//!   re-stamped retry).
//!
//! Anything else is refused, whoever signed it. The pool is bounded by count
//! and bytes; when full, the op whose stamp expires first is evicted if the
//! newcomer's stamp is younger, otherwise the newcomer is refused and the
//! pool is unchanged. Every change is written to [`Column::Mempool`] in one
//! batch before it is acknowledged, so pending ops survive a restart. After
//! each tip change pending ops are re-checked, and ops from disconnected
//! blocks come back when still valid (the caller re-announces them).

use std::collections::{HashMap, HashSet};

use xirtam_proofs::op::{Op, OpError};
use xirtam_proofs::{Hash, decode, encode};

use crate::chain::{Chain, ChainError, TipChange};
use crate::store::{Batch, Column, KvStore};

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
    /// Another op for the same name or commitment is pending and this one
    /// does not replace it.
    #[error("an op for {subject} is already pending and this one does not replace it: {why}")]
    Conflict {
        /// Name or commitment.
        subject: String,
        /// Which replacement rule failed.
        why: &'static str,
    },
    /// The node could not check or store the op (storage failure).
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
    /// Replaced a pending op for the same name or commitment.
    Replaced,
}

/// The pending ops.
#[derive(Debug)]
pub struct Mempool {
    entries: HashMap<Hash, Entry>,
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

/// May `new` replace `old`, both for the same state key? `Err` says why not.
fn replaces(new: &Op, old: &Op) -> Result<(), &'static str> {
    let (Op::Write(n), Op::Write(o)) = (new, old) else {
        return Err("a commitment is pending already");
    };
    match (&n.claim, &o.claim) {
        (Some(nc), Some(oc)) if nc.commit_height < oc.commit_height => Ok(()),
        (Some(_), Some(_)) => Err("a claim with an earlier or equal commitment is pending"),
        (Some(_), None) => Ok(()),
        (None, Some(_)) => Err("a claim that takes the name is pending"),
        (None, None) if n.signer != o.signer => Err("an update by another owner is pending"),
        (None, None) => Ok(()),
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

    /// Take in the ops persisted in `chain`'s store that are still valid
    /// against its tip (the others are deleted from the store).
    pub fn restore<S: KvStore>(&mut self, chain: &Chain<S>) -> Result<(), ChainError> {
        let pool = self;
        let stored = chain.store().scan(Column::Mempool)?;
        let mut drop = Batch::new();
        let mut ops = Vec::with_capacity(stored.len());
        for (k, v) in stored {
            match decode::<Op>(&v) {
                Ok(op) if op.state_key().0[..] == k[..] => ops.push(op),
                _ => drop.delete(Column::Mempool, k),
            }
        }
        let total = ops.len();
        chain.store().write(drop)?;
        let mut kept = 0;
        for op in ops {
            let key = op.state_key();
            match pool.add(chain, op) {
                Ok(_) => kept += 1,
                Err(MempoolError::Internal(e)) => return Err(ChainError::Internal(e)),
                Err(e) => {
                    tracing::debug!(target: "mempool", error = %e, "stored op no longer valid");
                    let mut b = Batch::new();
                    b.delete(Column::Mempool, key.0);
                    chain.store().write(b)?;
                }
            }
        }
        if total > 0 {
            tracing::info!(target: "mempool", kept, dropped = total - kept, "pending ops restored");
        }
        Ok(())
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
            .get(&op.state_key())
            .is_some_and(|e| e.hash == op.hash())
    }

    /// Validate `op` against the tip of `chain` and admit it. The pool (and
    /// its stored copy) is unchanged unless the op is admitted.
    pub fn add<S: KvStore>(&mut self, chain: &Chain<S>, op: Op) -> Result<Admitted, MempoolError> {
        let hash = op.hash();
        let key = op.state_key();
        if let Some(e) = self.entries.get(&key) {
            if e.hash == hash {
                return Err(MempoolError::Duplicate);
            }
            replaces(&op, &e.op).map_err(|why| MempoolError::Conflict {
                subject: op.subject(),
                why,
            })?;
        }
        let internal = |e: ChainError| MempoolError::Internal(e.to_string());
        chain.check_op(&op).map_err(|e| match e {
            ChainError::InvalidOp(e) => MempoolError::Invalid(e),
            e => internal(e),
        })?;
        let stamp_height = chain.stamp_height(&op).map_err(internal)?;
        if let Some(e) = self.entries.get(&key)
            && let (Op::Write(n), Op::Write(o)) = (&op, &e.op)
            && n.claim.is_none()
            && o.claim.is_none()
            && stamp_height <= e.stamp_height
        {
            return Err(MempoolError::Conflict {
                subject: op.subject(),
                why: "a re-stamped update needs a newer anchor than the pending one",
            });
        }
        let len = encode(&op).len();
        // Choose evictions before changing anything, so that a refused
        // op leaves the pool as it was. Ages count from the anchor height
        // honest writers use (`confirmation_depth` under the tip) at most,
        // so a flood anchored at the very tip cannot evict them.
        let honest = chain.params().anchor_height(chain.height());
        let age = |h: u64| h.min(honest);
        let replaced = self.entries.get(&key).map(|e| e.len);
        let mut count = self.entries.len() - usize::from(replaced.is_some());
        let mut bytes = self.bytes - replaced.unwrap_or(0);
        let mut evict = Vec::new();
        if count >= self.max_ops || bytes + len > self.max_bytes {
            let mut victims: Vec<&Entry> = self
                .entries
                .values()
                .filter(|e| age(e.stamp_height) < age(stamp_height) && e.op.state_key() != key)
                .collect();
            victims.sort_by_key(|e| (e.stamp_height, e.seq));
            let mut victims = victims.into_iter();
            while count >= self.max_ops || bytes + len > self.max_bytes {
                let Some(v) = victims.next() else {
                    return Err(MempoolError::Full {
                        count: self.entries.len(),
                        bytes: self.bytes,
                    });
                };
                count -= 1;
                bytes -= v.len;
                evict.push(v.op.state_key());
            }
        }
        let mut batch = Batch::new();
        for k in &evict {
            batch.delete(Column::Mempool, k.0);
        }
        batch.put(Column::Mempool, key.0, encode(&op));
        chain.store().write(batch).map_err(|e| internal(e.into()))?;
        for k in &evict {
            tracing::debug!(target: "mempool", key = %k, "evicted (oldest stamp)");
            self.forget(k);
        }
        self.forget(&key);
        self.seq += 1;
        self.bytes += len;
        self.entries.insert(
            key,
            Entry {
                op,
                hash,
                len,
                seq: self.seq,
                stamp_height,
            },
        );
        Ok(if replaced.is_some() {
            Admitted::Replaced
        } else {
            Admitted::New
        })
    }

    fn forget(&mut self, key: &Hash) -> Option<Entry> {
        let e = self.entries.remove(key)?;
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
    /// that are now included or invalid (expired stamps, nonces used), and
    /// take back still-valid ops from disconnected blocks. Returns the ops
    /// taken back, for the caller to announce again.
    pub fn on_tip_change<S: KvStore>(&mut self, chain: &Chain<S>, change: &TipChange) -> Vec<Op> {
        let touched: HashSet<Hash> = change
            .connected
            .iter()
            .chain(&change.disconnected)
            .flat_map(|b| b.ops.iter().map(Op::state_key))
            .collect();
        let stale: Vec<Hash> = self
            .entries
            .iter()
            .filter(|(key, e)| {
                // Cheap checks for all; the state rule only where it can
                // have changed.
                let stamp_ok = chain.is_main(&e.op.stamp().block)
                    && e.op
                        .check_stamp_age(chain.params(), e.stamp_height, chain.height() + 1)
                        .is_ok();
                // A claim can also lapse through its commitment (expiry,
                // or a reorg of the commitment's block): always re-check
                // claims; they are few.
                let is_claim = e.op.as_write().is_some_and(|w| w.claim.is_some());
                !stamp_ok
                    || ((touched.contains(key) || is_claim)
                        && chain.check_op_stateful(&e.op).is_err())
            })
            .map(|(key, _)| *key)
            .collect();
        if !stale.is_empty() {
            let mut batch = Batch::new();
            for k in &stale {
                batch.delete(Column::Mempool, k.0);
            }
            if let Err(e) = chain.store().write(batch) {
                // The in-memory pool stays right; the stored copy is
                // re-validated on the next start anyway.
                tracing::warn!(target: "mempool", error = %e, "cannot delete stale ops from the store");
            }
            for k in &stale {
                self.forget(k);
            }
        }
        let mut returned = Vec::new();
        for b in &change.disconnected {
            for op in &b.ops {
                if self.add(chain, op.clone()).is_ok() {
                    returned.push(op.clone());
                }
            }
        }
        if !stale.is_empty() || !returned.is_empty() {
            tracing::debug!(
                target: "mempool",
                removed = stale.len(),
                returned = returned.len(),
                pending = self.entries.len(),
                "re-checked after tip change"
            );
        }
        returned
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use xirtam_proofs::op::{Claim, Commit, Draft, Owners, Value, claim_commitment};
    use xirtam_proofs::params::REGTEST;
    use xirtam_proofs::{Block, Name, SecretKey};

    use super::*;
    use crate::store::MemoryStore;

    fn write(n: &str, nonce: u64, k: &SecretKey, claim: Option<Claim>, anchor: Hash) -> Op {
        let mut w = Draft {
            key: Name::new(n).expect("valid"),
            nonce,
            owners: Owners::single(k.public()),
            value: Value::new(format!("{nonce} {n}").into_bytes()).expect("small"),
            claim,
            anchor,
        }
        .sign(&REGTEST, k);
        assert!(w.solve_stamp(&REGTEST, 0, 1 << 20));
        Op::Write(w)
    }

    fn commit(n: &str, k: &SecretKey, salt: [u8; 32], anchor: Hash) -> Op {
        let name = Name::new(n).expect("valid");
        let mut c = Commit::new(
            claim_commitment(&REGTEST, &name, &k.public(), &salt),
            anchor,
        );
        assert!(c.solve_stamp(&REGTEST, 0, 1 << 20));
        Op::Commit(c)
    }

    fn chain() -> Chain<MemoryStore> {
        Chain::open(&REGTEST, Arc::new(MemoryStore::new())).expect("open")
    }

    /// Mine a block on the tip with `ops` (all must be valid).
    fn mine(c: &mut Chain<MemoryStore>, ops: Vec<Op>) {
        let n = ops.len();
        let (ops, root) = c.template_ops(ops).expect("template");
        assert_eq!(ops.len(), n, "every op is valid");
        let tip = c.tip().clone();
        let mut h =
            xirtam_proofs::header::header_template(&REGTEST, &tip.state, tip.header.time + 1);
        h.ops_root = xirtam_proofs::ops_root(&ops.iter().map(Op::hash).collect::<Vec<_>>());
        h.state_root = root;
        assert!(xirtam_proofs::header::mine(&mut h, 0, u64::MAX));
        c.submit_block(Block { header: h, ops }, u64::MAX / 2)
            .expect("valid");
    }

    fn tip(c: &Chain<MemoryStore>) -> Hash {
        c.tip().header.hash()
    }

    /// `@a` claimed by `k` (commitment mined at height 1, reveal at 2).
    fn claimed(c: &mut Chain<MemoryStore>, k: &SecretKey) {
        let g = tip(c);
        mine(c, vec![commit("@a", k, [1; 32], g)]);
        let reveal = write(
            "@a",
            1,
            k,
            Some(Claim {
                salt: [1; 32],
                commit_height: 1,
            }),
            g,
        );
        mine(c, vec![reveal]);
    }

    #[test]
    fn replacement_rules_and_invalid_ops() {
        let mut c = chain();
        let (k, other) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
        claimed(&mut c, &k);
        let g = c.hash_at(0).expect("genesis");
        let mut m = Mempool::default();
        assert_eq!(m.add(&c, write("@a", 2, &k, None, g)), Ok(Admitted::New));
        assert_eq!(
            m.add(&c, write("@a", 2, &k, None, g)),
            Err(MempoolError::Duplicate)
        );
        // Nobody else can displace it, whatever the nonce.
        for n in [2, 3, u64::MAX] {
            assert!(matches!(
                m.add(&c, write("@a", n, &other, None, g)),
                Err(MempoolError::Conflict { .. })
            ));
        }
        // The same owner may re-stamp on a newer anchor; not on the same.
        let mut same = write("@a", 2, &k, None, g);
        if let Op::Write(w) = &mut same {
            w.value = Value::new(b"changed".to_vec()).expect("small");
            *w = Draft {
                key: w.key.clone(),
                nonce: 2,
                owners: w.owners.clone(),
                value: w.value.clone(),
                claim: None,
                anchor: g,
            }
            .sign(&REGTEST, &k);
            assert!(w.solve_stamp(&REGTEST, 0, 1 << 20));
        }
        assert!(matches!(
            m.add(&c, same),
            Err(MempoolError::Conflict { .. })
        ));
        assert_eq!(
            m.add(&c, write("@a", 2, &k, None, tip(&c))),
            Ok(Admitted::Replaced)
        );
        assert_eq!(m.len(), 1);
        // A nonce jump is invalid.
        let mut m2 = Mempool::default();
        assert_eq!(
            m2.add(&c, write("@a", 3, &k, None, g)),
            Err(MempoolError::Invalid(OpError::NonceNotNext {
                expected: 2,
                got: 3
            }))
        );
        let mut bad = write("@b", 1, &k, None, g);
        if let Op::Write(w) = &mut bad {
            w.signature.0[0] ^= 1;
        }
        assert!(matches!(
            m.add(&c, bad),
            Err(MempoolError::Invalid(OpError::Signature(_)))
        ));
        // A plain write cannot claim a name.
        assert_eq!(
            m.add(&c, write("@b", 1, &k, None, g)),
            Err(MempoolError::Invalid(OpError::Unclaimed(
                Name::new("@b").expect("valid")
            )))
        );
        let unknown = write("@a", 2, &k, None, Hash([7; 32]));
        assert!(matches!(m.add(&c, unknown), Err(MempoolError::Invalid(_))));
        assert_eq!(m.bytes(), encode(&m.ops()[0]).len());
    }

    /// An observer who sees a pending reveal cannot displace it with a
    /// claim of its own (its commitment is necessarily later); an earlier
    /// commitment displaces a later one.
    #[test]
    fn the_earliest_commitment_wins_in_the_pool() {
        let mut c = chain();
        let (alice, thief) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([6; 32]));
        let g = tip(&c);
        mine(&mut c, vec![commit("@alice", &alice, [1; 32], g)]);
        mine(&mut c, vec![commit("@alice", &thief, [2; 32], g)]);
        mine(&mut c, vec![]);
        let honest = write(
            "@alice",
            1,
            &alice,
            Some(Claim {
                salt: [1; 32],
                commit_height: 1,
            }),
            g,
        );
        let stolen = write(
            "@alice",
            1,
            &thief,
            Some(Claim {
                salt: [2; 32],
                commit_height: 2,
            }),
            g,
        );
        let mut m = Mempool::default();
        m.add(&c, honest.clone()).expect("admitted");
        assert!(matches!(
            m.add(&c, stolen.clone()),
            Err(MempoolError::Conflict { .. })
        ));
        let mut m = Mempool::default();
        m.add(&c, stolen).expect("admitted first");
        assert_eq!(m.add(&c, honest.clone()), Ok(Admitted::Replaced));
        assert_eq!(m.ops(), vec![honest]);
    }

    #[test]
    fn bounded_with_eviction_of_the_oldest_stamp() {
        let mut c = chain();
        let k = SecretKey::from_seed([1; 32]);
        let g = tip(&c);
        let mut m = Mempool::new(2, usize::MAX);
        m.add(&c, commit("@a", &k, [1; 32], g)).expect("admitted");
        m.add(&c, commit("@b", &k, [1; 32], g)).expect("admitted");
        // Same stamp age: the newcomer is refused.
        assert!(matches!(
            m.add(&c, commit("@c", &k, [1; 32], g)),
            Err(MempoolError::Full { .. })
        ));
        // Mine blocks so a younger anchor exists: it evicts the oldest.
        mine(&mut c, vec![]);
        mine(&mut c, vec![]);
        let honest = c
            .hash_at(REGTEST.anchor_height(c.height()))
            .expect("main chain");
        let newest = commit("@c", &k, [1; 32], honest);
        assert_eq!(m.add(&c, newest.clone()), Ok(Admitted::New));
        assert_eq!(m.len(), 2);
        assert!(m.contains(&newest));
        // The stored copy follows.
        assert_eq!(c.store().scan(Column::Mempool).expect("scan").len(), 2);
        // A flood anchored at the very tip counts as no younger than ops
        // anchored where honest writers anchor: it cannot evict them.
        let mut m2 = Mempool::new(1, usize::MAX);
        m2.add(&c, commit("@d", &k, [1; 32], honest))
            .expect("admitted");
        assert!(matches!(
            m2.add(&c, commit("@e", &k, [1; 32], tip(&c))),
            Err(MempoolError::Full { .. })
        ));
    }

    /// A replacement refused because the pool is full leaves the original
    /// pending (it used to be removed first, and lost).
    #[test]
    fn a_refused_replacement_keeps_the_original() {
        let mut c = chain();
        let k = SecretKey::from_seed([1; 32]);
        claimed(&mut c, &k);
        let g = c.hash_at(0).expect("genesis");
        let original = write("@a", 2, &k, None, g);
        let mut m = Mempool::new(10, encode(&original).len() + 10);
        m.add(&c, original.clone()).expect("admitted");
        let mut big = Draft {
            key: Name::new("@a").expect("valid"),
            nonce: 2,
            owners: Owners::single(k.public()),
            value: Value::new(vec![0; 200]).expect("small"),
            claim: None,
            anchor: tip(&c),
        }
        .sign(&REGTEST, &k);
        assert!(big.solve_stamp(&REGTEST, 0, 1 << 20));
        assert!(matches!(
            m.add(&c, Op::Write(big)),
            Err(MempoolError::Full { .. })
        ));
        assert_eq!(m.ops(), vec![original.clone()]);
        assert_eq!(
            c.store()
                .get(Column::Mempool, &original.state_key().0)
                .expect("get"),
            Some(encode(&original))
        );
    }

    /// A pending claim whose commitment lapses (here: expires) is dropped
    /// at the next tip change, although nothing touched its name, so it
    /// stops blocking the name's updates and claims.
    #[test]
    fn a_claim_that_lapsed_leaves_the_pool() {
        let mut c = chain();
        let k = SecretKey::from_seed([1; 32]);
        let g = tip(&c);
        mine(&mut c, vec![commit("@a", &k, [1; 32], g)]);
        let reveal = write(
            "@a",
            1,
            &k,
            Some(Claim {
                salt: [1; 32],
                commit_height: 1,
            }),
            g,
        );
        let mut m = Mempool::default();
        m.add(&c, reveal.clone()).expect("admitted");
        for _ in 0..REGTEST.claim_expiry {
            mine(&mut c, vec![]);
        }
        m.on_tip_change(&c, &TipChange::default());
        assert!(!m.contains(&reveal), "an expired claim is dropped");
        assert_eq!(c.store().scan(Column::Mempool).expect("scan").len(), 0);
    }

    /// What was acknowledged comes back after a restart; what became
    /// invalid meanwhile (included, or junk) does not.
    #[test]
    fn pending_ops_survive_a_restart() {
        let store = Arc::new(MemoryStore::new());
        let mut c = Chain::open(&REGTEST, store.clone()).expect("open");
        let k = SecretKey::from_seed([1; 32]);
        let g = tip(&c);
        let (a, b) = (commit("@a", &k, [1; 32], g), commit("@b", &k, [1; 32], g));
        let mut m = Mempool::default();
        m.add(&c, a.clone()).expect("admitted");
        m.add(&c, b.clone()).expect("admitted");
        let mut junk = Batch::new();
        junk.put(Column::Mempool, [9u8; 32], b"junk".to_vec());
        store.write(junk).expect("write");
        drop(m);
        let mut m = Mempool::default();
        m.restore(&c).expect("restore");
        assert!(m.contains(&a) && m.contains(&b));
        assert_eq!(m.len(), 2);
        // `a` is mined meanwhile (by another node): gone after a restart.
        mine(&mut c, vec![a.clone()]);
        drop(m);
        let mut m = Mempool::default();
        m.restore(&c).expect("restore");
        assert_eq!(m.ops(), vec![b]);
        assert_eq!(store.scan(Column::Mempool).expect("scan").len(), 1);
    }
}
