//! The name-state tree and its proofs.
//!
//! A compressed sparse Merkle tree over 256-bit keys (`key = H(STATE_KEY,
//! name)`, path = key bits, most significant first), content-addressed:
//! every node is identified by its own hash, nodes are never overwritten,
//! so every old root stays readable until its nodes are garbage-collected
//! and a reorg is just switching roots (see `docs/adr/0001-state-tree.md`
//! for why this tree).
//!
//! A stored node is found by a [`NodeRef`]: its hash and the *version* it
//! was written at (the height of the block whose [`update`] wrote it). An
//! inner node keeps the versions of its children beside their hashes, so a
//! store can key nodes by `(version, hash)` and every block's new nodes land
//! in one contiguous key range, after all earlier ones (ADR 0015). Versions
//! are storage addresses only: no hash covers them, and proofs do not carry
//! them.
//!
//! ```text
//! empty subtree = 0^32
//! leaf          = H(STATE_LEAF, key || value_hash)
//!     names:       key = H(STATE_KEY, name),        value_hash = H(RECORD, encode(record))
//!     commitments: key = H(COMMIT_KEY, commitment), value_hash = H(COMMIT_ENTRY, height_le8)
//! inner node    = H(STATE_NODE, left || right)
//! ```
//!
//! A subtree holding exactly one leaf is that leaf (placed as high as it can
//! be); an inner node therefore always has at least two leaves below it. A
//! proof lists the siblings on the path from the root down to where the
//! key's path ends: at the key's own leaf (inclusion), at an empty subtree,
//! or at another key's leaf that shares the path so far (both exclusion).
//!
//! Proof verification ([`verify_state`]) is pure and is what light clients
//! run; the tree itself ([`update`], [`prove`]) reads nodes through the
//! [`NodeStore`] trait, which the node implements on RocksDB and
//! [`MemoryNodeStore`] implements for tests and benchmarks.

use std::collections::HashMap;

use bincode::{Decode, Encode};

use crate::encoding::invalid;
use crate::hash::{Hash, hash_pair, hash_parts, tag};
use crate::name::Name;
use crate::op::Record;

/// Root of the empty tree.
pub const EMPTY_ROOT: Hash = Hash::ZERO;

/// Keys are 256 bits, so no path is longer.
pub const MAX_DEPTH: usize = 256;

/// Where a stored node is: its hash (what the tree commits to) and the
/// version it was written at (where a store keeps it).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Hash, Encode, Decode)]
pub struct NodeRef {
    /// The node's hash.
    pub hash: Hash,
    /// The version (block height) of the update that wrote it; 0 for the
    /// empty subtree.
    pub at: u64,
}

impl NodeRef {
    /// The empty subtree: stored nowhere.
    pub const EMPTY: NodeRef = NodeRef {
        hash: EMPTY_ROOT,
        at: 0,
    };

    /// A node written at version `at`.
    pub fn new(hash: Hash, at: u64) -> Self {
        NodeRef { hash, at }
    }

    /// The empty subtree?
    pub fn is_empty(&self) -> bool {
        self.hash == EMPTY_ROOT
    }
}

/// A stored tree node.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Encode, Decode)]
pub enum Node {
    /// A key and the hash of its record.
    Leaf {
        /// Key hash (the path).
        key: Hash,
        /// Record hash.
        value: Hash,
    },
    /// Two children (either may be [`NodeRef::EMPTY`], never both).
    Inner {
        /// Child on bit 0.
        left: NodeRef,
        /// Child on bit 1.
        right: NodeRef,
    },
}

/// Leaf hash.
#[inline]
pub fn leaf_hash(key: &Hash, value: &Hash) -> Hash {
    hash_parts(tag::STATE_LEAF, &[&key.0, &value.0])
}

/// The state-tree value of a commitment mined at `height`:
/// `H(COMMIT_ENTRY, height_le8)` (its key is [`crate::op::commit_key`]).
pub fn commit_entry_hash(height: u64) -> Hash {
    crate::hash::hash_tagged(tag::COMMIT_ENTRY, &height.to_le_bytes())
}

/// Inner-node hash.
#[inline]
pub fn inner_hash(left: &Hash, right: &Hash) -> Hash {
    hash_pair(tag::STATE_NODE, left, right)
}

impl Node {
    /// The node's hash (with its version, its address in a store).
    pub fn hash(&self) -> Hash {
        match self {
            Node::Leaf { key, value } => leaf_hash(key, value),
            Node::Inner { left, right } => inner_hash(&left.hash, &right.hash),
        }
    }
}

/// Read access to stored nodes.
pub trait NodeStore {
    /// The store's own error (I/O, corruption).
    type Error: std::error::Error + Send + Sync + 'static;
    /// The node `at` points to, if stored.
    fn get_node(&self, at: &NodeRef) -> Result<Option<Node>, Self::Error>;
}

/// Nodes in a `HashMap` by hash (versions are ignored: a hash names one
/// content): for tests, benchmarks, tools and the light client's mock
/// node.
#[derive(Debug, Default, Clone)]
pub struct MemoryNodeStore {
    nodes: HashMap<Hash, Node, BuildHashPrefix>,
}

/// Keys are BLAKE3 outputs, already uniform: fold their bytes into the
/// table hash instead of running SipHash over them. (This store is for
/// tests, benchmarks and tools; addresses are hashes of node contents, so
/// choosing colliding addresses means searching BLAKE3 preimages.)
#[derive(Debug, Default, Clone, Copy)]
pub struct BuildHashPrefix;

/// The hasher behind [`BuildHashPrefix`].
#[derive(Debug, Default, Clone, Copy)]
pub struct HashPrefixHasher(u64);

impl std::hash::BuildHasher for BuildHashPrefix {
    type Hasher = HashPrefixHasher;
    fn build_hasher(&self) -> HashPrefixHasher {
        HashPrefixHasher(0)
    }
}

impl std::hash::Hasher for HashPrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `Hash` derives `Hash` over `[u8; 32]`, which writes a length
        // prefix (8 bytes) then the 32 bytes; fold everything in cheaply.
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
}

impl MemoryNodeStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Store the nodes produced by [`update`].
    pub fn insert_batch(&mut self, batch: Vec<(Hash, Node)>) {
        self.nodes.extend(batch);
    }

    /// Number of stored nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// No nodes?
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl NodeStore for MemoryNodeStore {
    type Error = std::convert::Infallible;
    fn get_node(&self, at: &NodeRef) -> Result<Option<Node>, Self::Error> {
        Ok(self.nodes.get(&at.hash).copied())
    }
}

/// The tree could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError {
    /// A node the root refers to is not in the store (pruned or corrupt).
    #[error("state-tree node {0} is missing from the store")]
    MissingNode(Hash),
    /// A stored node does not hash to its address.
    #[error("state-tree node stored under {0} has a different hash")]
    CorruptNode(Hash),
    /// The path ran past 256 levels (corrupt store).
    #[error("state-tree path deeper than 256 levels")]
    TooDeep,
    /// The store failed.
    #[error("state-tree store: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
}

fn load<S: NodeStore>(store: &S, at: &NodeRef) -> Result<Node, TreeError> {
    match store.get_node(at) {
        Ok(Some(n)) => Ok(n),
        Ok(None) => Err(TreeError::MissingNode(at.hash)),
        Err(e) => Err(TreeError::Store(Box::new(e))),
    }
}

/// Insert or replace `(key, value_hash)` pairs under `root`, as version
/// `at`. Returns the new root and the nodes to store, all at version `at`
/// (nothing is removed: the old root stays valid). Later duplicates of a key
/// win.
///
/// The new root, unless empty, is always among the nodes returned (with no
/// updates, the old root node is returned again for version `at`), so the
/// root of version `at` is always found at version `at`.
pub fn update<S: NodeStore>(
    store: &S,
    root: NodeRef,
    at: u64,
    updates: &[(Hash, Hash)],
) -> Result<(NodeRef, Vec<(Hash, Node)>), TreeError> {
    if updates.is_empty() {
        if root.is_empty() {
            return Ok((NodeRef::EMPTY, Vec::new()));
        }
        let node = load(store, &root)?;
        return Ok((NodeRef::new(root.hash, at), vec![(root.hash, node)]));
    }
    let mut items: Vec<(Hash, Hash)> = updates.to_vec();
    // Stable sort keeps input order among equal keys; keep the last.
    items.sort_by_key(|it| it.0);
    let mut deduped: Vec<(Hash, Hash)> = Vec::with_capacity(items.len());
    for it in items {
        match deduped.last_mut() {
            Some(last) if last.0 == it.0 => *last = it,
            _ => deduped.push(it),
        }
    }
    let mut w = Writer {
        at,
        out: Vec::with_capacity(deduped.len() * 8),
    };
    let new_root = w.insert(store, root, 0, &deduped)?;
    Ok((new_root, w.out))
}

/// The nodes an [`update`] writes, all at one version.
struct Writer {
    at: u64,
    out: Vec<(Hash, Node)>,
}

impl Writer {
    fn put(&mut self, node: Node) -> NodeRef {
        let h = node.hash();
        self.out.push((h, node));
        NodeRef::new(h, self.at)
    }

    fn insert<S: NodeStore>(
        &mut self,
        store: &S,
        node: NodeRef,
        depth: usize,
        items: &[(Hash, Hash)],
    ) -> Result<NodeRef, TreeError> {
        if items.is_empty() {
            return Ok(node);
        }
        if node.is_empty() {
            if let [(key, value)] = items {
                return Ok(self.put(Node::Leaf {
                    key: *key,
                    value: *value,
                }));
            }
            return self.split(store, NodeRef::EMPTY, NodeRef::EMPTY, depth, items);
        }
        match load(store, &node)? {
            Node::Leaf { key, value } => {
                if let [(k, v)] = items
                    && *k == key
                {
                    return Ok(self.put(Node::Leaf { key, value: *v }));
                }
                match items.binary_search_by(|(k, _)| k.cmp(&key)) {
                    // The existing key is being replaced.
                    Ok(_) => self.insert(store, NodeRef::EMPTY, depth, items),
                    // Push the existing leaf down alongside the new ones.
                    Err(pos) => {
                        let mut merged = Vec::with_capacity(items.len() + 1);
                        merged.extend_from_slice(&items[..pos]);
                        merged.push((key, value));
                        merged.extend_from_slice(&items[pos..]);
                        self.insert(store, NodeRef::EMPTY, depth, &merged)
                    }
                }
            }
            Node::Inner { left, right } => self.split(store, left, right, depth, items),
        }
    }

    fn split<S: NodeStore>(
        &mut self,
        store: &S,
        left: NodeRef,
        right: NodeRef,
        depth: usize,
        items: &[(Hash, Hash)],
    ) -> Result<NodeRef, TreeError> {
        if depth >= MAX_DEPTH {
            return Err(TreeError::TooDeep);
        }
        // Items share their first `depth` bits and are sorted, so those with
        // bit `depth` = 0 come first.
        let mid = items.partition_point(|(k, _)| !k.bit(depth));
        let l = self.insert(store, left, depth + 1, &items[..mid])?;
        let r = self.insert(store, right, depth + 1, &items[mid..])?;
        Ok(self.put(Node::Inner { left: l, right: r }))
    }
}

/// Where a key's path ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Terminal {
    /// An empty subtree: the key is absent.
    Empty,
    /// The key's own leaf: the key is present (the verifier supplies the
    /// record).
    Leaf,
    /// Another key's leaf on the same path: the key is absent.
    Other {
        /// That leaf's key.
        key: Hash,
        /// That leaf's record hash.
        value: Hash,
    },
}

/// A state proof: siblings from the root down, and where the path ends.
///
/// Encoded compressed: `terminal: u8` (0 empty, 1 leaf, 2 other, then the
/// other leaf's key and value hash), `depth: u16`, a bitmap of
/// `ceil(depth / 8)` bytes (bit `i`, most significant first, set when
/// sibling `i` is non-empty; padding bits zero), then the non-empty siblings.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StateProof {
    /// Siblings from depth 0 (next to the root) down; [`EMPTY_ROOT`] for
    /// empty subtrees.
    pub siblings: Vec<Hash>,
    /// Where the path ends.
    pub terminal: Terminal,
}

impl Encode for StateProof {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        e: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        match self.terminal {
            Terminal::Empty => 0u8.encode(e)?,
            Terminal::Leaf => 1u8.encode(e)?,
            Terminal::Other { key, value } => {
                2u8.encode(e)?;
                key.encode(e)?;
                value.encode(e)?;
            }
        }
        let depth = u16::try_from(self.siblings.len())
            .map_err(|_| bincode::error::EncodeError::Other("state proof deeper than 256"))?;
        depth.encode(e)?;
        let mut bitmap = vec![0u8; self.siblings.len().div_ceil(8)];
        for (i, s) in self.siblings.iter().enumerate() {
            if *s != EMPTY_ROOT {
                bitmap[i / 8] |= 0x80 >> (i % 8);
            }
        }
        bincode::enc::write::Writer::write(e.writer(), &bitmap)?;
        for s in self.siblings.iter().filter(|s| **s != EMPTY_ROOT) {
            s.encode(e)?;
        }
        Ok(())
    }
}

impl<C> Decode<C> for StateProof {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        d: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let terminal = match <u8 as Decode<C>>::decode(d)? {
            0 => Terminal::Empty,
            1 => Terminal::Leaf,
            2 => Terminal::Other {
                key: Hash::decode(d)?,
                value: Hash::decode(d)?,
            },
            t => return Err(invalid(format!("unknown state-proof terminal {t}"))),
        };
        let depth = usize::from(<u16 as Decode<C>>::decode(d)?);
        if depth > MAX_DEPTH {
            return Err(invalid(format!("state proof depth {depth} exceeds 256")));
        }
        let bitmap = crate::encoding::decode_bytes(d, depth.div_ceil(8))?;
        if depth % 8 != 0 {
            let pad_mask = 0xffu8 >> (depth % 8);
            if bitmap.last().is_some_and(|b| b & pad_mask != 0) {
                return Err(invalid("state-proof bitmap padding is not zero".into()));
            }
        }
        let mut siblings = Vec::with_capacity(depth);
        for i in 0..depth {
            if bitmap[i / 8] & (0x80 >> (i % 8)) != 0 {
                let h = Hash::decode(d)?;
                if h == EMPTY_ROOT {
                    return Err(invalid(
                        "state proof lists an empty sibling as non-empty".into(),
                    ));
                }
                siblings.push(h);
            } else {
                siblings.push(EMPTY_ROOT);
            }
        }
        Ok(StateProof { siblings, terminal })
    }
}
bincode::impl_borrow_decode!(StateProof);

/// The value hash stored for `key` under `root`, if any.
pub fn get<S: NodeStore>(store: &S, root: NodeRef, key: &Hash) -> Result<Option<Hash>, TreeError> {
    prove(store, root, key).map(|(v, _)| v)
}

/// The value hashes of many keys under `root`, in the order of `keys`, read
/// in one descent: every node on the keys' paths is loaded once, where a
/// [`get`] per key would load the shared upper levels once per key.
/// Duplicate keys are allowed.
pub fn get_many<S: NodeStore>(
    store: &S,
    root: NodeRef,
    keys: &[Hash],
) -> Result<Vec<Option<Hash>>, TreeError> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_unstable_by_key(|&i| keys[i]);
    let mut out = vec![None; keys.len()];
    descend(store, root, 0, keys, &order, &mut out)?;
    Ok(out)
}

/// [`get_many`] below `node` at `depth`, for the keys at `order` (sorted by
/// key, all sharing their first `depth` bits).
fn descend<S: NodeStore>(
    store: &S,
    node: NodeRef,
    depth: usize,
    keys: &[Hash],
    order: &[usize],
    out: &mut [Option<Hash>],
) -> Result<(), TreeError> {
    if order.is_empty() || node.is_empty() {
        return Ok(());
    }
    match load(store, &node)? {
        Node::Leaf { key, value } => {
            for &i in order {
                if keys[i] == key {
                    out[i] = Some(value);
                }
            }
            Ok(())
        }
        Node::Inner { left, right } => {
            if depth >= MAX_DEPTH {
                return Err(TreeError::TooDeep);
            }
            let mid = order.partition_point(|&i| !keys[i].bit(depth));
            descend(store, left, depth + 1, keys, &order[..mid], out)?;
            descend(store, right, depth + 1, keys, &order[mid..], out)
        }
    }
}

/// The value hash for `key` under `root` (if present) and its proof.
pub fn prove<S: NodeStore>(
    store: &S,
    root: NodeRef,
    key: &Hash,
) -> Result<(Option<Hash>, StateProof), TreeError> {
    let mut siblings = Vec::new();
    let mut node = root;
    loop {
        if node.is_empty() {
            return Ok((
                None,
                StateProof {
                    siblings,
                    terminal: Terminal::Empty,
                },
            ));
        }
        match load(store, &node)? {
            Node::Leaf { key: k, value } => {
                let proof = if k == *key {
                    (
                        Some(value),
                        StateProof {
                            siblings,
                            terminal: Terminal::Leaf,
                        },
                    )
                } else {
                    (
                        None,
                        StateProof {
                            siblings,
                            terminal: Terminal::Other { key: k, value },
                        },
                    )
                };
                return Ok(proof);
            }
            Node::Inner { left, right } => {
                let depth = siblings.len();
                if depth >= MAX_DEPTH {
                    return Err(TreeError::TooDeep);
                }
                if key.bit(depth) {
                    siblings.push(left.hash);
                    node = right;
                } else {
                    siblings.push(right.hash);
                    node = left;
                }
            }
        }
    }
}

/// A state proof that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateProofError {
    /// A record was given but the proof shows absence.
    #[error("proof shows the name absent, but a record was claimed")]
    ExpectedInclusion,
    /// No record was given but the proof shows a leaf for the key.
    #[error("proof shows the name present, but absence was claimed")]
    ExpectedExclusion,
    /// The other leaf in an exclusion proof is not on the key's path.
    #[error("exclusion leaf is not on the key's path")]
    OtherLeafOffPath,
    /// More than 256 siblings.
    #[error("proof deeper than 256 levels")]
    TooDeep,
    /// The recomputed root differs from the header's `state_root`.
    #[error("proof does not lead to the state root")]
    RootMismatch,
}

/// Verify that under state root `root`, `name` maps to `record` (or, with
/// `None`, that `name` is absent).
pub fn verify_state(
    root: &Hash,
    name: &Name,
    record: Option<&Record>,
    proof: &StateProof,
) -> Result<(), StateProofError> {
    verify_state_hashed(
        root,
        &name.key_hash(),
        record.map(Record::hash).as_ref(),
        proof,
    )
}

/// [`verify_state`] on a key hash and record hash.
pub fn verify_state_hashed(
    root: &Hash,
    key: &Hash,
    value: Option<&Hash>,
    proof: &StateProof,
) -> Result<(), StateProofError> {
    let depth = proof.siblings.len();
    if depth > MAX_DEPTH {
        return Err(StateProofError::TooDeep);
    }
    let mut h = match (value, proof.terminal) {
        (Some(v), Terminal::Leaf) => leaf_hash(key, v),
        (Some(_), _) => return Err(StateProofError::ExpectedInclusion),
        (None, Terminal::Leaf) => return Err(StateProofError::ExpectedExclusion),
        (None, Terminal::Empty) => EMPTY_ROOT,
        (None, Terminal::Other { key: k, value: v }) => {
            if k == *key {
                return Err(StateProofError::ExpectedExclusion);
            }
            if (0..depth).any(|i| k.bit(i) != key.bit(i)) {
                return Err(StateProofError::OtherLeafOffPath);
            }
            leaf_hash(&k, &v)
        }
    };
    for i in (0..depth).rev() {
        let s = &proof.siblings[i];
        h = if key.bit(i) {
            inner_hash(s, &h)
        } else {
            inner_hash(&h, s)
        };
    }
    if h == *root {
        Ok(())
    } else {
        Err(StateProofError::RootMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::hash_tagged;

    fn k(i: u32) -> Hash {
        hash_tagged("k", &i.to_le_bytes())
    }
    fn v(i: u32) -> Hash {
        hash_tagged("v", &i.to_le_bytes())
    }

    fn build(n: u32) -> (MemoryNodeStore, NodeRef) {
        let mut s = MemoryNodeStore::new();
        let items: Vec<_> = (0..n).map(|i| (k(i), v(i))).collect();
        let (root, batch) = update(&s, NodeRef::EMPTY, 1, &items).expect("memory store");
        s.insert_batch(batch);
        (s, root)
    }

    #[test]
    fn empty_tree_proves_absence() {
        let s = MemoryNodeStore::new();
        let (val, p) = prove(&s, NodeRef::EMPTY, &k(1)).expect("ok");
        assert_eq!(val, None);
        assert_eq!(verify_state_hashed(&EMPTY_ROOT, &k(1), None, &p), Ok(()));
        assert_eq!(
            verify_state_hashed(&EMPTY_ROOT, &k(1), Some(&v(1)), &p),
            Err(StateProofError::ExpectedInclusion)
        );
    }

    #[test]
    fn single_leaf_is_the_root() {
        let (_, root) = build(1);
        assert_eq!(root.hash, leaf_hash(&k(0), &v(0)));
    }

    #[test]
    fn incremental_equals_batch_and_order_does_not_matter() {
        let (_, batch_root) = build(300);
        let mut s = MemoryNodeStore::new();
        let mut root = NodeRef::EMPTY;
        for i in (0..300).rev() {
            let (r, b) = update(&s, root, 300 - u64::from(i), &[(k(i), v(i))]).expect("ok");
            s.insert_batch(b);
            root = r;
        }
        assert_eq!(root.hash, batch_root.hash);
    }

    #[test]
    fn update_replaces_and_old_root_stays_readable() {
        let (mut s, root) = build(50);
        let (root2, b) = update(&s, root, 2, &[(k(7), v(1000))]).expect("ok");
        s.insert_batch(b);
        assert_ne!(root.hash, root2.hash);
        assert_eq!(get(&s, root, &k(7)).expect("ok"), Some(v(7)));
        assert_eq!(get(&s, root2, &k(7)).expect("ok"), Some(v(1000)));
        // last duplicate wins
        let (root3, _) = update(&s, root, 2, &[(k(7), v(1)), (k(7), v(1000))]).expect("ok");
        assert_eq!(root3, root2);
    }

    #[test]
    fn proofs_verify_and_reject() {
        let (s, root) = build(200);
        for i in 0..260 {
            let (val, p) = prove(&s, root, &k(i)).expect("ok");
            let bytes = crate::encoding::encode(&p);
            assert_eq!(
                crate::encoding::decode::<StateProof>(&bytes).as_ref(),
                Ok(&p)
            );
            if i < 200 {
                assert_eq!(val, Some(v(i)));
                assert_eq!(
                    verify_state_hashed(&root.hash, &k(i), Some(&v(i)), &p),
                    Ok(())
                );
                assert!(verify_state_hashed(&root.hash, &k(i), Some(&v(i + 1)), &p).is_err());
                assert!(verify_state_hashed(&root.hash, &k(i), None, &p).is_err());
            } else {
                assert_eq!(val, None);
                assert_eq!(verify_state_hashed(&root.hash, &k(i), None, &p), Ok(()));
                assert!(verify_state_hashed(&root.hash, &k(i), Some(&v(i)), &p).is_err());
            }
        }
    }

    #[test]
    fn missing_node_is_an_error_not_a_panic() {
        let (_, root) = build(10);
        let empty = MemoryNodeStore::new();
        assert!(matches!(
            prove(&empty, root, &k(1)),
            Err(TreeError::MissingNode(_))
        ));
        assert!(matches!(
            update(&empty, root, 2, &[(k(1), v(2))]),
            Err(TreeError::MissingNode(_))
        ));
    }

    /// Nodes keyed by `(version, hash)`, as the node stores them: a node
    /// looked up at the wrong version is missing.
    #[derive(Default)]
    struct Versioned(HashMap<(u64, Hash), Node>);

    impl NodeStore for Versioned {
        type Error = std::convert::Infallible;
        fn get_node(&self, at: &NodeRef) -> Result<Option<Node>, Self::Error> {
            Ok(self.0.get(&(at.at, at.hash)).copied())
        }
    }

    /// Every node an update writes is found at the update's version through
    /// the references of every later root, including a version with no
    /// changes (its root is written again at that version) and roots that
    /// share most of their nodes with older versions.
    #[test]
    fn versions_locate_every_node_of_every_root() {
        let mut s = Versioned::default();
        let mut roots = vec![NodeRef::EMPTY];
        for at in 1..=40u64 {
            let i = u32::try_from(at).expect("small");
            // Version 20 changes nothing; others add a key or replace one.
            let items: Vec<(Hash, Hash)> = match at {
                20 => vec![],
                a if a % 3 == 0 => vec![(k(i / 2), v(1000 + i))],
                _ => (0..i % 5 + 1)
                    .map(|j| (k(i * 10 + j), v(i * 10 + j)))
                    .collect(),
            };
            let prev = *roots.last().expect("non-empty");
            let (root, nodes) = update(&s, prev, at, &items).expect("readable");
            assert_eq!(root.at, at, "the root of version {at} is stored at {at}");
            assert!(nodes.iter().any(|(h, _)| *h == root.hash));
            for (h, n) in nodes {
                s.0.insert((at, h), n);
            }
            roots.push(root);
        }
        assert_eq!(roots[20].hash, roots[19].hash);
        // Every key of every version reads back through the versioned store.
        let mut expected: HashMap<Hash, Hash> = HashMap::new();
        for at in 1..=40u64 {
            let i = u32::try_from(at).expect("small");
            match at {
                20 => {}
                a if a % 3 == 0 => {
                    expected.insert(k(i / 2), v(1000 + i));
                }
                _ => {
                    for j in 0..i % 5 + 1 {
                        expected.insert(k(i * 10 + j), v(i * 10 + j));
                    }
                }
            }
            let root = roots[usize::try_from(at).expect("small")];
            for (key, val) in &expected {
                assert_eq!(get(&s, root, key).expect("every node found"), Some(*val));
            }
            let keys: Vec<Hash> = expected.keys().copied().collect();
            let many = get_many(&s, root, &keys).expect("every node found");
            assert!(many.iter().all(Option::is_some));
        }
        // A root looked up at another version is missing, not misread.
        let last = *roots.last().expect("non-empty");
        assert!(matches!(
            get(&s, NodeRef::new(last.hash, last.at - 1), &k(1)),
            Err(TreeError::MissingNode(_))
        ));
    }
}
