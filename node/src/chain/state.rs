//! The state tree and records, read from the store.

use xirtam_proofs::header::Header;
use xirtam_proofs::state::{self, Node, NodeRef, NodeStore, StateProof};
use xirtam_proofs::{Hash, Name, Record, decode};

use crate::store::{Column, KvStore, StoreError};

/// The key of a state-tree node in [`Column::StateNodes`]: the version it
/// was written at (u64 big-endian), then its hash. Every block writes its
/// nodes at its own height, so a block's writes are one contiguous key
/// range after all earlier ones (ADR 0015).
pub fn node_key(at: &NodeRef) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&at.at.to_be_bytes());
    k[8..].copy_from_slice(&at.hash.0);
    k
}

/// Where the state root of the block with `header` is stored: every block
/// writes its root node at its own height (see
/// [`xirtam_proofs::state::update`]).
pub fn state_root(header: &Header) -> NodeRef {
    NodeRef::new(header.state_root, header.height)
}

/// Reads state-tree nodes from [`Column::StateNodes`], through an optional
/// cache.
#[derive(Debug)]
pub struct StateView<'a, S: KvStore>(pub &'a S, pub Option<&'a NodeCache>);

impl<S: KvStore> NodeStore for StateView<'_, S> {
    type Error = StoreError;
    fn get_node(&self, at: &NodeRef) -> Result<Option<Node>, StoreError> {
        let hash = &at.hash;
        if let Some(n) = self.1.and_then(|c| c.get(hash)) {
            return Ok(Some(n));
        }
        match self.0.get(Column::StateNodes, &node_key(at))? {
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

/// A bounded cache of state-tree nodes, by hash. Nodes are
/// content-addressed, so a cached node can never be stale. (A node written
/// again at a later version has the same content; only the versions of its
/// children may differ, and both sets of children are stored.)
///
/// A set-associative table of [`WAYS`]-entry sets, indexed by bits of the
/// node's hash: a lookup compares the tags in the set's first cache line and
/// reads one entry, a hit moves its entry to the front of the set, and an
/// insert evicts the set's last entry. (It replaced two hash-map
/// generations whose probes, and the promotion of every old-generation hit,
/// were the top of a 1M-name block connect profile.) The table is allocated
/// zeroed, so the OS maps its pages only as they are first written.
#[derive(Debug)]
pub struct NodeCache {
    sets: parking_lot::Mutex<Vec<Set>>,
    mask: usize,
}

/// Entries per set.
const WAYS: usize = 4;
/// Words per entry: the node's hash, then its two hashes (key and value, or
/// left and right), then (inner nodes) the versions of left and right.
const ENTRY: usize = 14;
/// A set: one tag word per way, then the entries. A tag is the first word
/// of the node's hash with bit 0 set (occupied) and bit 1 the node's kind
/// (set for an inner node); 0 is an empty way.
type Set = [u64; WAYS + WAYS * ENTRY];

fn words(h: &Hash) -> [u64; 4] {
    let mut w = [0u64; 4];
    for (w, c) in w.iter_mut().zip(h.0.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        *w = u64::from_le_bytes(b);
    }
    w
}

fn from_words(w: &[u64]) -> Hash {
    let mut h = [0u8; 32];
    for (c, w) in h.chunks_exact_mut(8).zip(w) {
        c.copy_from_slice(&w.to_le_bytes());
    }
    Hash(h)
}

const OCCUPIED: u64 = 1;
const INNER: u64 = 2;

impl NodeCache {
    /// A cache holding up to about `2 * cap` nodes (~120 bytes each).
    pub fn new(cap: usize) -> Self {
        let sets = (cap.max(1) * 2).div_ceil(WAYS).next_power_of_two();
        NodeCache {
            sets: parking_lot::Mutex::new(vec![[0u64; WAYS + WAYS * ENTRY]; sets]),
            mask: sets - 1,
        }
    }

    /// The set index and tag prefix of `hash` (different words, so the
    /// tag still tells apart the hashes of one set).
    fn slot(&self, w: &[u64; 4]) -> (usize, u64) {
        // Truncating to usize keeps the low bits, which the mask selects.
        ((w[1] as usize) & self.mask, w[0] & !(OCCUPIED | INNER))
    }

    fn find(set: &Set, tag: u64, w: &[u64; 4]) -> Option<usize> {
        (0..WAYS).find(|&i| {
            (set[i] & !INNER) == (tag | OCCUPIED) && set[WAYS + i * ENTRY..][..4] == w[..]
        })
    }

    /// Move entry `way` to the front of its set.
    fn to_front(set: &mut Set, way: usize) {
        if way > 0 {
            set[..=way].rotate_right(1);
            set[WAYS..WAYS + (way + 1) * ENTRY].rotate_right(ENTRY);
        }
    }

    /// A cached node.
    pub fn get(&self, hash: &Hash) -> Option<Node> {
        let w = words(hash);
        let (index, tag) = self.slot(&w);
        let mut sets = self.sets.lock();
        let set = sets.get_mut(index)?;
        let way = Self::find(set, tag, &w)?;
        let e = &set[WAYS + way * ENTRY..][..ENTRY];
        let (a, b) = (from_words(&e[4..8]), from_words(&e[8..12]));
        let node = if set[way] & INNER == 0 {
            Node::Leaf { key: a, value: b }
        } else {
            Node::Inner {
                left: NodeRef::new(a, e[12]),
                right: NodeRef::new(b, e[13]),
            }
        };
        Self::to_front(set, way);
        Some(node)
    }

    /// Remember a node.
    pub fn insert(&self, hash: Hash, node: Node) {
        let w = words(&hash);
        let (index, tag) = self.slot(&w);
        let mut sets = self.sets.lock();
        let Some(set) = sets.get_mut(index) else {
            return;
        };
        if let Some(way) = Self::find(set, tag, &w) {
            Self::to_front(set, way);
            return;
        }
        // Evict the last entry: rotate it to the front and overwrite it.
        Self::to_front(set, WAYS - 1);
        let (kind, a, b, versions) = match node {
            Node::Leaf { key, value } => (0, key, value, [0, 0]),
            Node::Inner { left, right } => (INNER, left.hash, right.hash, [left.at, right.at]),
        };
        set[0] = tag | OCCUPIED | kind;
        let e = &mut set[WAYS..WAYS + ENTRY];
        e[..4].copy_from_slice(&w);
        e[4..8].copy_from_slice(&words(&a));
        e[8..12].copy_from_slice(&words(&b));
        e[12..14].copy_from_slice(&versions);
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
    root: NodeRef,
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
    root: NodeRef,
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

    fn leaf(i: u8) -> (Hash, Node) {
        let n = Node::Leaf {
            key: Hash([i; 32]),
            value: Hash([i ^ 0xff; 32]),
        };
        (n.hash(), n)
    }

    /// Nodes of both kinds come back as inserted; a hash that was never
    /// inserted, or that shares a stored node's tag word only, misses.
    #[test]
    fn the_node_cache_returns_what_was_inserted() {
        let cache = NodeCache::new(1_000);
        let (lh, l) = leaf(1);
        let inner = Node::Inner {
            left: NodeRef::new(lh, 3),
            right: NodeRef::new(Hash([7; 32]), u64::MAX),
        };
        let ih = inner.hash();
        cache.insert(lh, l);
        cache.insert(ih, inner);
        assert_eq!(cache.get(&lh), Some(l));
        assert_eq!(cache.get(&ih), Some(inner));
        assert_eq!(cache.get(&leaf(2).0), None);
        // Same first and second words (same set, same tag), different rest.
        let mut twin = lh;
        twin.0[31] ^= 1;
        assert_eq!(cache.get(&twin), None);
        // Inserting again does not duplicate or change an entry.
        cache.insert(lh, l);
        assert_eq!(cache.get(&lh), Some(l));
    }

    /// A cache of one set (`cap` 2 gives 4 ways): the least recently used
    /// entry is evicted, and a hit protects an entry.
    #[test]
    fn the_node_cache_evicts_the_least_recently_used_entry_of_a_set() {
        let cache = NodeCache::new(2);
        let nodes: Vec<(Hash, Node)> = (0..6).map(leaf).collect();
        for (h, n) in &nodes[..4] {
            cache.insert(*h, *n);
        }
        // Touch the oldest, then insert a fifth: the second-oldest goes.
        assert_eq!(cache.get(&nodes[0].0), Some(nodes[0].1));
        cache.insert(nodes[4].0, nodes[4].1);
        assert_eq!(cache.get(&nodes[1].0), None);
        for i in [0, 2, 3, 4] {
            assert_eq!(cache.get(&nodes[i].0), Some(nodes[i].1), "node {i}");
        }
        cache.insert(nodes[5].0, nodes[5].1);
        // Node 0 was the least recently used of the four after the loop.
        assert_eq!(cache.get(&nodes[0].0), None);
        assert_eq!(cache.get(&nodes[5].0), Some(nodes[5].1));
    }

    /// A stored node or record whose bytes were swapped for another valid
    /// one is reported as corruption, not served.
    #[test]
    fn stored_nodes_and_records_are_re_hashed_on_load() {
        let store = Arc::new(MemoryStore::new());
        let items: Vec<(Hash, Hash)> = (0..4u8).map(|i| (Hash([i; 32]), Hash([9; 32]))).collect();
        let (root, nodes) =
            state::update(&StateView(&*store, None), NodeRef::EMPTY, 5, &items).expect("update");
        let mut b = Batch::new();
        for (h, n) in &nodes {
            b.put(
                Column::StateNodes,
                node_key(&NodeRef::new(*h, 5)),
                encode(n),
            );
        }
        store.write(b).expect("write");
        assert!(
            StateView(&*store, None)
                .get_node(&root)
                .expect("ok")
                .is_some()
        );
        // Swap the root's bytes for another node's.
        let other = nodes
            .iter()
            .find(|(h, _)| *h != root.hash)
            .expect("more nodes");
        let mut b = Batch::new();
        b.put(Column::StateNodes, node_key(&root), encode(&other.1));
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
