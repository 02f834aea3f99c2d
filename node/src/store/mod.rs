//! Key-value storage: one trait, a RocksDB implementation for nodes and an
//! in-memory one for tests.
//!
//! Every state transition of the node (connecting a block, a reorg,
//! remembering an invalid block) is one [`Batch`], written atomically:
//! after a crash at any instant the store holds either all of a batch or
//! none of it.

mod memory;
mod rocks;

pub use memory::MemoryStore;
pub use rocks::RocksStore;

/// A table. Each is a RocksDB column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    /// Block hash -> encoded `Block` (header and ops).
    Blocks,
    /// Block hash -> encoded `BlockMeta` (header, chain state after it) for
    /// every valid block, main chain or side branch.
    Index,
    /// Height (u64 big-endian) -> block hash, for the main chain only.
    MainChain,
    /// Version (u64 big-endian) and hash of a state-tree node -> encoded
    /// node (see `chain::node_key`).
    StateNodes,
    /// Record hash -> encoded record (content-addressed).
    Records,
    /// Block hash -> reason, for blocks found invalid.
    Invalid,
    /// Singletons: the tip, the network name, the schema version.
    Meta,
    /// State key of a pending op -> encoded `Op`: the mempool, so that an
    /// acknowledged op survives a restart or `kill -9`.
    Mempool,
}

impl Column {
    /// Every column.
    pub const ALL: [Column; 8] = [
        Column::Blocks,
        Column::Index,
        Column::MainChain,
        Column::StateNodes,
        Column::Records,
        Column::Invalid,
        Column::Meta,
        Column::Mempool,
    ];

    /// Column family name.
    pub fn name(self) -> &'static str {
        match self {
            Column::Blocks => "blocks",
            Column::Index => "index",
            Column::MainChain => "main",
            Column::StateNodes => "state",
            Column::Records => "records",
            Column::Invalid => "invalid",
            Column::Meta => "meta",
            Column::Mempool => "mempool",
        }
    }
}

/// Writes applied together, atomically.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<(Column, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `key` to `value`.
    pub fn put(&mut self, col: Column, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((col, key.into(), Some(value.into())));
    }

    /// Remove `key`.
    pub fn delete(&mut self, col: Column, key: impl Into<Vec<u8>>) {
        self.ops.push((col, key.into(), None));
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// No writes?
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub(crate) fn into_ops(self) -> Vec<(Column, Vec<u8>, Option<Vec<u8>>)> {
        self.ops
    }
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// RocksDB reported an error.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// The database belongs to another network or schema.
    #[error("{0}")]
    Incompatible(String),
    /// Stored bytes do not decode: the database is corrupt.
    #[error("corrupt {what} in the store: {reason}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
}

/// Key-value pairs, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// An ordered key-value store with column families and atomic batches.
pub trait KvStore: Send + Sync + 'static {
    /// The value of `key`, if any.
    fn get(&self, col: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Apply `batch` atomically.
    fn write(&self, batch: Batch) -> Result<(), StoreError>;
    /// Every `(key, value)` in `col`, in key order (used at startup to load
    /// the block index).
    fn scan(&self, col: Column) -> Result<Entries, StoreError>;
}

/// Schema version written in [`Column::Meta`]; bump on incompatible changes.
/// (2: ops of two kinds, records with `claimed_at`, the mempool column;
/// 3: state nodes keyed by version and hash, inner nodes with the versions
/// of their children, ADR 0015.)
pub const SCHEMA_VERSION: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(s: &dyn KvStore) {
        let mut b = Batch::new();
        b.put(Column::Meta, b"a".to_vec(), b"1".to_vec());
        b.put(Column::Blocks, b"a".to_vec(), b"2".to_vec());
        s.write(b).expect("write");
        assert_eq!(s.get(Column::Meta, b"a").expect("get"), Some(b"1".to_vec()));
        assert_eq!(
            s.get(Column::Blocks, b"a").expect("get"),
            Some(b"2".to_vec())
        );
        assert_eq!(s.get(Column::Index, b"a").expect("get"), None);
        let mut b = Batch::new();
        b.delete(Column::Meta, b"a".to_vec());
        b.put(Column::Meta, b"c".to_vec(), b"3".to_vec());
        b.put(Column::Meta, b"b".to_vec(), b"4".to_vec());
        s.write(b).expect("write");
        assert_eq!(s.get(Column::Meta, b"a").expect("get"), None);
        let all = s.scan(Column::Meta).expect("scan");
        assert_eq!(
            all,
            vec![
                (b"b".to_vec(), b"4".to_vec()),
                (b"c".to_vec(), b"3".to_vec())
            ]
        );
    }

    #[test]
    fn memory_store_semantics() {
        exercise(&MemoryStore::new());
    }

    #[test]
    fn rocks_store_semantics_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = RocksStore::open(dir.path()).expect("open");
            exercise(&s);
        }
        let s = RocksStore::open(dir.path()).expect("reopen");
        assert_eq!(s.get(Column::Meta, b"c").expect("get"), Some(b"3".to_vec()));
    }
}
