//! The state tree and records, read from the store.

use xirtam_proofs::state::{self, Node, NodeStore, StateProof};
use xirtam_proofs::{Hash, Name, Record, decode};

use crate::store::{Column, KvStore, StoreError};

/// Reads state-tree nodes from [`Column::StateNodes`].
#[derive(Debug)]
pub struct StateView<'a, S: KvStore>(pub &'a S);

impl<S: KvStore> NodeStore for StateView<'_, S> {
    type Error = StoreError;
    fn get_node(&self, hash: &Hash) -> Result<Option<Node>, StoreError> {
        match self.0.get(Column::StateNodes, &hash.0)? {
            None => Ok(None),
            Some(bytes) => decode::<Node>(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt {
                    what: "state node",
                    reason: e.to_string(),
                }),
        }
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
    decode::<Record>(&bytes).map_err(|e| {
        StoreError::Corrupt {
            what: "record",
            reason: e.to_string(),
        }
        .into()
    })
}

/// The record of `name` under state root `root`, if any.
pub fn record_at<S: KvStore>(
    store: &S,
    root: Hash,
    name: &Name,
) -> Result<Option<Record>, super::ChainError> {
    match state::get(&StateView(store), root, &name.key_hash())? {
        None => Ok(None),
        Some(h) => load_record(store, &h).map(Some),
    }
}

/// The record of `name` under `root` and its proof.
pub fn prove_at<S: KvStore>(
    store: &S,
    root: Hash,
    name: &Name,
) -> Result<(Option<Record>, StateProof), super::ChainError> {
    let (value, proof) = state::prove(&StateView(store), root, &name.key_hash())?;
    let record = match value {
        None => None,
        Some(h) => Some(load_record(store, &h)?),
    };
    Ok((record, proof))
}
