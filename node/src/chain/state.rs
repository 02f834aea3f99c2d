//! The state tree and records, read from the store.

use std::collections::HashMap;

use xirtam_proofs::state::{self, Node, NodeStore, StateProof};
use xirtam_proofs::{Hash, Name, Record, decode};

use crate::store::{Column, KvStore, StoreError};

/// Reads state-tree nodes from [`Column::StateNodes`], through an optional
/// cache.
#[derive(Debug)]
pub struct StateView<'a, S: KvStore>(pub &'a S, pub Option<&'a NodeCache>);

impl<S: KvStore> NodeStore for StateView<'_, S> {
    type Error = StoreError;
    fn get_node(&self, hash: &Hash) -> Result<Option<Node>, StoreError> {
        if let Some(n) = self.1.and_then(|c| c.get(hash)) {
            return Ok(Some(n));
        }
        match self.0.get(Column::StateNodes, &hash.0)? {
            None => Ok(None),
            Some(bytes) => {
                let n = decode::<Node>(&bytes).map_err(|e| StoreError::Corrupt {
                    what: "state node",
                    reason: e.to_string(),
                })?;
                // Nodes are content-addressed: one that does not hash to
                // its key is disk corruption, and must surface as a storage
                // error, never as a wrong state root (which would condemn a
                // valid block).
                if n.hash() != *hash {
                    return Err(StoreError::Corrupt {
                        what: "state node",
                        reason: format!("node stored under {hash} hashes to {}", n.hash()),
                    });
                }
                if let Some(c) = self.1 {
                    c.insert(*hash, n);
                }
                Ok(Some(n))
            }
        }
    }
}

/// A bounded cache of state-tree nodes. Nodes are content-addressed, so a
/// cached node can never be stale. Two generations approximate LRU in O(1):
/// when the young generation is full it becomes the old one, and entries
/// found in the old generation are promoted.
#[derive(Debug)]
pub struct NodeCache {
    gens: parking_lot::Mutex<Generations>,
    cap: usize,
}

// Keys are BLAKE3 hashes: no need to SipHash them again.
type Map = HashMap<Hash, Node, xirtam_proofs::state::BuildHashPrefix>;
type Generations = (Map, Map);

impl NodeCache {
    /// A cache holding up to about `2 * cap` nodes (~100 bytes each).
    pub fn new(cap: usize) -> Self {
        NodeCache {
            gens: parking_lot::Mutex::new((Map::default(), Map::default())),
            cap: cap.max(1),
        }
    }

    /// A cached node.
    pub fn get(&self, hash: &Hash) -> Option<Node> {
        let mut g = self.gens.lock();
        if let Some(n) = g.0.get(hash) {
            return Some(*n);
        }
        let n = g.1.remove(hash)?;
        Self::put(&mut g, self.cap, *hash, n);
        Some(n)
    }

    /// Remember a node.
    pub fn insert(&self, hash: Hash, node: Node) {
        let mut g = self.gens.lock();
        Self::put(&mut g, self.cap, hash, node);
    }

    fn put(g: &mut Generations, cap: usize, hash: Hash, node: Node) {
        if g.0.len() >= cap {
            // The young generation is allocated at full size once, rather
            // than rehashed through every doubling as it fills.
            let young = Map::with_capacity_and_hasher(cap, Default::default());
            g.1 = std::mem::replace(&mut g.0, young);
        }
        g.0.insert(hash, node);
    }
}

/// The record stored under `hash`.
pub fn load_record<S: KvStore>(store: &S, hash: &Hash) -> Result<Record, super::ChainError> {
    let bytes = store
        .get(Column::Records, &hash.0)?
        .ok_or(StoreError::Corrupt {
            what: "record",
            reason: format!("record {hash} referenced by the state tree is missing"),
        })?;
    let r = decode::<Record>(&bytes).map_err(|e| StoreError::Corrupt {
        what: "record",
        reason: e.to_string(),
    })?;
    if r.hash() != *hash {
        return Err(StoreError::Corrupt {
            what: "record",
            reason: format!("record stored under {hash} hashes to {}", r.hash()),
        }
        .into());
    }
    Ok(r)
}

/// The record of `name` under state root `root`, if any.
pub fn record_at<S: KvStore>(
    store: &S,
    cache: Option<&NodeCache>,
    root: Hash,
    name: &Name,
) -> Result<Option<Record>, super::ChainError> {
    match state::get(&StateView(store, cache), root, &name.key_hash())? {
        None => Ok(None),
        Some(h) => load_record(store, &h).map(Some),
    }
}

/// The record of `name` under `root` and its proof.
pub fn prove_at<S: KvStore>(
    store: &S,
    cache: Option<&NodeCache>,
    root: Hash,
    name: &Name,
) -> Result<(Option<Record>, StateProof), super::ChainError> {
    let (value, proof) = state::prove(&StateView(store, cache), root, &name.key_hash())?;
    let record = match value {
        None => None,
        Some(h) => Some(load_record(store, &h)?),
    };
    Ok((record, proof))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use xirtam_proofs::state::{self, NodeStore};
    use xirtam_proofs::{Hash, encode};

    use super::*;
    use crate::store::{Batch, MemoryStore};

    /// A stored node or record whose bytes were swapped for another valid
    /// one is reported as corruption, not served.
    #[test]
    fn stored_nodes_and_records_are_re_hashed_on_load() {
        let store = Arc::new(MemoryStore::new());
        let items: Vec<(Hash, Hash)> = (0..4u8).map(|i| (Hash([i; 32]), Hash([9; 32]))).collect();
        let (root, nodes) =
            state::update(&StateView(&*store, None), state::EMPTY_ROOT, &items).expect("update");
        let mut b = Batch::new();
        for (h, n) in &nodes {
            b.put(Column::StateNodes, h.0, encode(n));
        }
        store.write(b).expect("write");
        assert!(
            StateView(&*store, None)
                .get_node(&root)
                .expect("ok")
                .is_some()
        );
        // Swap the root's bytes for another node's.
        let other = nodes.iter().find(|(h, _)| *h != root).expect("more nodes");
        let mut b = Batch::new();
        b.put(Column::StateNodes, root.0, encode(&other.1));
        store.write(b).expect("write");
        assert!(matches!(
            StateView(&*store, None).get_node(&root),
            Err(StoreError::Corrupt { .. })
        ));
        // The same for a record.
        let r = xirtam_proofs::Record {
            nonce: 1,
            owners: xirtam_proofs::Owners::single(
                xirtam_proofs::SecretKey::from_seed([1; 32]).public(),
            ),
            value: xirtam_proofs::Value::default(),
            claimed_at: 1,
        };
        let mut other = r.clone();
        other.nonce = 2;
        let mut b = Batch::new();
        b.put(Column::Records, r.hash().0, encode(&other));
        store.write(b).expect("write");
        assert!(matches!(
            load_record(&*store, &r.hash()),
            Err(super::super::ChainError::Store(StoreError::Corrupt { .. }))
        ));
    }
}
