//! In-memory [`KvStore`] for tests.

use std::collections::BTreeMap;

use parking_lot::RwLock;

use super::{Batch, Column, Entries, KvStore, StoreError};

type Table = BTreeMap<Vec<u8>, Vec<u8>>;

/// A `BTreeMap` per column behind one lock (so batches are atomic).
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: RwLock<BTreeMap<Column, Table>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl KvStore for MemoryStore {
    fn get(&self, col: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tables
            .read()
            .get(&col)
            .and_then(|t| t.get(key).cloned()))
    }

    fn write(&self, batch: Batch) -> Result<(), StoreError> {
        let mut tables = self.tables.write();
        for (col, key, value) in batch.into_ops() {
            let t = tables.entry(col).or_default();
            match value {
                Some(v) => {
                    t.insert(key, v);
                }
                None => {
                    t.remove(&key);
                }
            }
        }
        Ok(())
    }

    fn scan(&self, col: Column) -> Result<Entries, StoreError> {
        Ok(self
            .tables
            .read()
            .get(&col)
            .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }
}
