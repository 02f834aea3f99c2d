//! An in-memory chain with a real state tree, and an honest [`Source`]
//! over it: for testing what is built on the light client (the chat
//! client) in one process, with lookups that are verified for real.
//! Enabled by the `memory` feature; no I/O.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use xirtam_proofs::header::{ChainState, Header, header_template, mine};
use xirtam_proofs::op::{Op, Record, apply};
use xirtam_proofs::params::Params;
use xirtam_proofs::state::{MemoryNodeStore, NodeRef, prove, update};
use xirtam_proofs::{Hash, Name};

use crate::{DirAnswer, Source, SourceError, TipClaim};

/// Why a block could not be added.
#[derive(Debug, thiserror::Error)]
#[error("memory chain: {0}")]
pub struct MemoryError(String);

/// A chain of `params`, its blocks stamped with the wall clock.
#[derive(Clone)]
pub struct MemoryChain {
    headers: Vec<Header>,
    states: Vec<ChainState>,
    store: MemoryNodeStore,
    records: HashMap<Hash, Record>,
    latest: HashMap<Name, Record>,
    params: &'static Params,
}

impl std::fmt::Debug for MemoryChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MemoryChain({}, {} blocks)",
            self.params.name,
            self.height()
        )
    }
}

impl MemoryChain {
    /// Genesis of `params` (a network with an easy proof of work: every
    /// block is mined here).
    pub fn new(params: &'static Params) -> Self {
        MemoryChain {
            headers: vec![params.genesis_header()],
            states: vec![ChainState::genesis(params)],
            store: MemoryNodeStore::new(),
            records: HashMap::new(),
            latest: HashMap::new(),
            params,
        }
    }

    /// Height of the tip.
    pub fn height(&self) -> u64 {
        self.headers.len() as u64 - 1
    }

    /// The record `name` has at the tip.
    pub fn record(&self, name: &Name) -> Option<&Record> {
        self.latest.get(name)
    }

    /// Mine one block writing `writes` (no rule is checked: the test
    /// decides what the chain holds).
    pub fn block(&mut self, writes: &[(Name, Record)]) -> Result<(), MemoryError> {
        let state = self
            .states
            .last()
            .cloned()
            .ok_or_else(|| MemoryError("no genesis".into()))?;
        let root = self
            .headers
            .last()
            .ok_or_else(|| MemoryError("no genesis".into()))?
            .state_root;
        let updates: Vec<(Hash, Hash)> = writes
            .iter()
            .map(|(n, r)| (n.key_hash(), r.hash()))
            .collect();
        // The memory store finds nodes by hash alone: versions are 0.
        let (root, nodes) = update(&self.store, NodeRef::new(root, 0), 0, &updates)
            .map_err(|e| MemoryError(e.to_string()))?;
        let root = root.hash;
        self.store.insert_batch(nodes);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut h = header_template(self.params, &state, now.max(state.median_time_past() + 1));
        h.state_root = root;
        if !mine(&mut h, 0, 1 << 24) {
            return Err(MemoryError(
                "no nonce found: the network is too hard".into(),
            ));
        }
        let mut next = state;
        next.push(self.params, &h, u64::MAX)
            .map_err(|e| MemoryError(e.to_string()))?;
        for (n, r) in writes {
            self.records.insert(r.hash(), r.clone());
            self.latest.insert(n.clone(), r.clone());
        }
        self.headers.push(h);
        self.states.push(next);
        Ok(())
    }

    fn dir_get(&self, name: &Name, at: u64) -> Result<DirAnswer, SourceError> {
        let h = self.headers.get(at as usize).ok_or(SourceError::Rpc {
            code: xirtam_node_api::code::NOT_FOUND,
            message: "height above the tip".into(),
        })?;
        let (value, proof) = prove(&self.store, NodeRef::new(h.state_root, 0), &name.key_hash())
            .map_err(|e| SourceError::Malformed(e.to_string()))?;
        let record = match value {
            Some(v) => Some(
                self.records
                    .get(&v)
                    .cloned()
                    .ok_or_else(|| SourceError::Malformed("record not kept".into()))?,
            ),
            None => None,
        };
        Ok(DirAnswer {
            height: at,
            block_hash: h.hash(),
            record,
            proof,
        })
    }
}

/// An honest source serving a shared [`MemoryChain`].
#[derive(Debug, Clone)]
pub struct MemorySource {
    label: String,
    chain: Arc<Mutex<MemoryChain>>,
}

impl MemorySource {
    /// A source named `label` over `chain`.
    pub fn new(label: &str, chain: Arc<Mutex<MemoryChain>>) -> Self {
        MemorySource {
            label: label.into(),
            chain,
        }
    }
}

impl Source for MemorySource {
    fn label(&self) -> &str {
        &self.label
    }

    async fn genesis(&self) -> Result<Hash, SourceError> {
        Ok(self.chain.lock().params.genesis_hash)
    }

    async fn tip(&self) -> Result<TipClaim, SourceError> {
        let c = self.chain.lock();
        let (Some(header), Some(state)) = (c.headers.last(), c.states.last()) else {
            return Err(SourceError::Malformed("empty chain".into()));
        };
        Ok(TipClaim {
            height: header.height,
            hash: header.hash(),
            work: state.total_work(),
            header: *header,
        })
    }

    async fn headers(&self, from: u64, count: u32) -> Result<Vec<Header>, SourceError> {
        let c = self.chain.lock();
        let from = (from as usize).min(c.headers.len());
        let to = (from + count as usize).min(c.headers.len());
        Ok(c.headers[from..to].to_vec())
    }

    async fn dir_get(&self, name: &Name, at: u64) -> Result<DirAnswer, SourceError> {
        self.chain.lock().dir_get(name, at)
    }

    /// An update (not a claim: tests write first records with
    /// [`MemoryChain::block`]) that passes the stateless checks and the
    /// state rule is mined into a block of its own at once.
    async fn submit(&self, op: &Op) -> Result<(), SourceError> {
        let refused = |e: String| SourceError::Rpc {
            code: xirtam_node_api::code::INVALID_PARAMS,
            message: e,
        };
        let mut c = self.chain.lock();
        op.check_stateless(c.params)
            .map_err(|e| refused(e.to_string()))?;
        let Op::Write(w) = op else {
            return Err(refused("the memory chain takes updates only".into()));
        };
        if w.claim.is_some() {
            return Err(refused("the memory chain takes updates only".into()));
        }
        let height = c.height() + 1;
        let record = apply(c.params, c.record(&w.key), w, height, false)
            .map_err(|e| refused(e.to_string()))?;
        c.block(&[(w.key.clone(), record)])
            .map_err(|e| refused(e.to_string()))
    }

    fn bytes_received(&self) -> u64 {
        0
    }
}
