//! RocksDB [`KvStore`]: one column family per [`Column`], every batch one
//! `WriteBatch` through the write-ahead log.
//!
//! Durability: the WAL is written (not fsynced) before `write` returns, so a
//! killed process (`kill -9`) loses nothing that was acknowledged; only a
//! power failure can lose the last writes, and then RocksDB recovers to a
//! batch boundary.

use std::path::Path;

use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};

use super::{Batch, Column, Entries, KvStore, StoreError};

/// A RocksDB database with the node's column families.
pub struct RocksStore {
    db: DB,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RocksStore({})", self.db.path().display())
    }
}

impl RocksStore {
    /// Open (or create) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.increase_parallelism(2);
        let cfs = Column::ALL.iter().map(|c| {
            let mut o = Options::default();
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            match c {
                Column::StateNodes => {
                    // Tree nodes are hashes: incompressible, and read at
                    // random (written in key order: version, then hash).
                    // No compression (every block read would be
                    // decompressed for nothing), a bloom filter and a
                    // block cache of their own.
                    o.set_compression_type(rocksdb::DBCompressionType::None);
                    o.optimize_for_point_lookup(64);
                }
                Column::Records => {
                    // Point lookups by hash: a bloom filter saves disk reads.
                    let mut bo = rocksdb::BlockBasedOptions::default();
                    bo.set_bloom_filter(10.0, false);
                    o.set_block_based_table_factory(&bo);
                }
                _ => {}
            }
            ColumnFamilyDescriptor::new(c.name(), o)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(RocksStore { db })
    }

    fn cf(&self, col: Column) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(col.name()).ok_or_else(|| {
            StoreError::Incompatible(format!("column family {} missing", col.name()))
        })
    }
}

impl KvStore for RocksStore {
    fn get(&self, col: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(col)?, key)?)
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let mut ops = batch.into_ops();
        // Sorted keys let the memtable's skiplist reuse its insertion
        // point (random-order inserts dominated block connects). The sort is
        // stable, so writes to the same key keep their order.
        ops.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut wb = WriteBatch::default();
        for (col, key, value) in ops {
            let cf = self.cf(col)?;
            match value {
                Some(v) => wb.put_cf(cf, key, v),
                None => wb.delete_cf(cf, key),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        Ok(self.db.write_opt(wb, &wo)?)
    }

    fn scan(&self, col: Column) -> Result<Entries, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(col)?, IteratorMode::Start) {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }
}
