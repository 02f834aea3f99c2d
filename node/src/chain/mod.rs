//! The chain: block validation, storage, fork choice and reorgs.
//!
//! Every valid block, on the main chain or a side branch, is stored with
//! its [`BlockMeta`] (its header and the [`ChainState`] after it) and its
//! state: the state tree is content-addressed, so each block's `state_root`
//! stays readable and a reorg only rewrites the main-chain height index and
//! the tip (one batch). Fork choice: most cumulative work; ties keep the
//! block seen first. Invalid blocks are remembered (their descendants too);
//! blocks whose parent is unknown wait in a bounded orphan pool.

mod state;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bincode::{Decode, Encode};
use xirtam_proofs::block::{Block, BlockError};
use xirtam_proofs::header::{ChainState, Header, HeaderError};
use xirtam_proofs::op::{Op, OpError, apply};
use xirtam_proofs::params::Params;
use xirtam_proofs::state::{StateProof, TreeError};
use xirtam_proofs::{Hash, Name, Record, U256, decode, encode};

pub use state::{NodeCache, StateView, load_record, prove_at, record_at};

use crate::store::{Batch, Column, KvStore, SCHEMA_VERSION, StoreError};

/// Most blocks kept while waiting for their parent.
pub const MAX_ORPHANS: usize = 256;

/// State-tree nodes kept in memory per generation (two generations, ~100
/// bytes per node: ~100 MB at most).
pub const NODE_CACHE: usize = 500_000;

/// What the node keeps per valid block.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct BlockMeta {
    /// The header.
    pub header: Header,
    /// Validation context after this block (tip = this block).
    pub state: ChainState,
}

impl BlockMeta {
    /// Cumulative work up to and including this block.
    pub fn work(&self) -> U256 {
        self.state.total_work()
    }
}

/// What became of a submitted block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStatus {
    /// Now the tip (extending the chain or by a reorg).
    Tip,
    /// Valid, stored on a side branch with less work.
    SideBranch,
    /// Already stored.
    AlreadyKnown,
    /// Parent unknown: kept in the orphan pool.
    Orphan,
}

/// Blocks that left and joined the main chain, oldest first.
#[derive(Debug, Clone, Default)]
pub struct TipChange {
    /// Blocks no longer on the main chain.
    pub disconnected: Vec<Block>,
    /// Blocks newly on the main chain.
    pub connected: Vec<Block>,
}

/// The outcome of [`Chain::submit_block`].
#[derive(Debug, Clone)]
pub struct Submitted {
    /// Status of the submitted block.
    pub status: BlockStatus,
    /// How the main chain changed (also through orphans it adopted).
    pub change: TipChange,
}

/// Why a block or op was not accepted, or the store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A header rule failed.
    #[error("invalid header: {0}")]
    Header(#[from] HeaderError),
    /// A body rule failed.
    #[error("invalid block: {0}")]
    Block(#[from] BlockError),
    /// An op failed its stamp-age or state rule.
    #[error("invalid block: op {index} ({name}): {error}")]
    Op {
        /// Position.
        index: usize,
        /// Name.
        name: Name,
        /// Rule.
        error: OpError,
    },
    /// An op offered for the mempool breaks a rule against the tip.
    #[error("invalid op: {0}")]
    InvalidOp(#[from] OpError),
    /// The ops do not lead to the header's state root.
    #[error("invalid block: state root {got} in the header, the ops give {expected}")]
    StateRoot {
        /// Computed.
        expected: Hash,
        /// Header's.
        got: Hash,
    },
    /// The block was found invalid before.
    #[error("block {0} is known to be invalid: {1}")]
    KnownInvalid(Hash, String),
    /// The block's parent is invalid.
    #[error("invalid block: its parent {0} is invalid")]
    InvalidParent(Hash),
    /// The state tree could not be read.
    #[error("state tree: {0}")]
    Tree(#[from] TreeError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A block or height that is not stored.
    #[error("{0} not found")]
    NotFound(String),
    /// A bug or resource failure inside the node (not the block's fault).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ChainError {
    /// Does this error prove the block invalid for good (so it must be
    /// remembered by hash and its sender penalised)? Store errors,
    /// timestamps too far in the future, and a body that does not match the
    /// header's `ops_root` do not: the last only shows that someone paired
    /// the header with the wrong body, and remembering the header as invalid
    /// would let anyone poison a valid block that way.
    pub fn is_invalid_block(&self) -> bool {
        self.classify_invalid()
    }

    /// Did whoever sent this block break a rule (so a peer that sent it
    /// should be penalised)? Everything [`Self::is_invalid_block`] covers,
    /// plus a body that does not match its header.
    pub fn is_peer_fault(&self) -> bool {
        matches!(self, ChainError::Block(BlockError::OpsRoot)) || self.classify_invalid()
    }

    fn classify_invalid(&self) -> bool {
        match self {
            ChainError::Header(e) => !e.is_transient(),
            ChainError::Block(BlockError::OpsRoot) => false,
            ChainError::Block(_)
            | ChainError::Op { .. }
            | ChainError::StateRoot { .. }
            | ChainError::KnownInvalid(..)
            | ChainError::InvalidParent(_) => true,
            ChainError::InvalidOp(_)
            | ChainError::Tree(_)
            | ChainError::Store(_)
            | ChainError::NotFound(_)
            | ChainError::Internal(_) => false,
        }
    }
}

fn corrupt(what: &'static str, reason: impl ToString) -> ChainError {
    ChainError::Store(StoreError::Corrupt {
        what,
        reason: reason.to_string(),
    })
}

/// A block that passed every rule, with the writes that store it.
struct Validated {
    meta: BlockMeta,
    batch: Batch,
}

/// The chain over a store.
#[derive(Debug)]
pub struct Chain<S: KvStore> {
    params: &'static Params,
    store: Arc<S>,
    index: HashMap<Hash, BlockMeta>,
    main: Vec<Hash>,
    invalid: HashMap<Hash, String>,
    orphans: HashMap<Hash, Vec<Block>>,
    orphan_order: VecDeque<(Hash, Hash)>,
    cache: NodeCache,
}

const META_TIP: &[u8] = b"tip";
const META_NETWORK: &[u8] = b"network";
const META_SCHEMA: &[u8] = b"schema";

impl<S: KvStore> Chain<S> {
    /// Open the chain in `store`, creating genesis in an empty store.
    pub fn open(params: &'static Params, store: Arc<S>) -> Result<Self, ChainError> {
        match store.get(Column::Meta, META_NETWORK)? {
            None => Self::init_genesis(params, &*store)?,
            Some(n) if n == params.name.as_bytes() => {}
            Some(n) => {
                return Err(StoreError::Incompatible(format!(
                    "the data directory belongs to network {:?}, not {:?}",
                    String::from_utf8_lossy(&n),
                    params.name
                ))
                .into());
            }
        }
        let schema = store.get(Column::Meta, META_SCHEMA)?;
        if schema.as_deref() != Some(&SCHEMA_VERSION.to_le_bytes()[..]) {
            return Err(StoreError::Incompatible(format!(
                "unsupported database schema {schema:?} (this node writes {SCHEMA_VERSION})"
            ))
            .into());
        }
        let mut index = HashMap::new();
        for (k, v) in store.scan(Column::Index)? {
            let hash = hash_key(&k).ok_or_else(|| corrupt("index key", "not 32 bytes"))?;
            let meta: BlockMeta = decode(&v).map_err(|e| corrupt("block meta", e))?;
            index.insert(hash, meta);
        }
        let mut main = Vec::new();
        for (k, v) in store.scan(Column::MainChain)? {
            let height = height_key(&k).ok_or_else(|| corrupt("height key", "not 8 bytes"))?;
            if height != main.len() as u64 {
                return Err(corrupt("main chain", format!("gap at height {height}")));
            }
            let hash = hash_key(&v).ok_or_else(|| corrupt("main chain hash", "not 32 bytes"))?;
            if !index.contains_key(&hash) {
                return Err(corrupt(
                    "main chain",
                    format!("block {hash} has no index entry"),
                ));
            }
            main.push(hash);
        }
        let tip = store
            .get(Column::Meta, META_TIP)?
            .and_then(|v| hash_key(&v));
        if tip.is_none() || tip != main.last().copied() {
            return Err(corrupt("tip", "does not match the main chain"));
        }
        let mut invalid = HashMap::new();
        for (k, v) in store.scan(Column::Invalid)? {
            if let Some(h) = hash_key(&k) {
                invalid.insert(h, String::from_utf8_lossy(&v).into_owned());
            }
        }
        Ok(Chain {
            params,
            store,
            index,
            main,
            invalid,
            orphans: HashMap::new(),
            orphan_order: VecDeque::new(),
            cache: NodeCache::new(NODE_CACHE),
        })
    }

    fn init_genesis(params: &Params, store: &S) -> Result<(), ChainError> {
        let header = params.genesis_header();
        let hash = header.hash();
        let meta = BlockMeta {
            header,
            state: ChainState::genesis(params),
        };
        let mut b = Batch::new();
        b.put(
            Column::Blocks,
            hash.0,
            encode(&Block {
                header,
                ops: vec![],
            }),
        );
        b.put(Column::Index, hash.0, encode(&meta));
        b.put(Column::MainChain, 0u64.to_be_bytes(), hash.0);
        b.put(Column::Meta, META_TIP, hash.0);
        b.put(Column::Meta, META_NETWORK, params.name.as_bytes());
        b.put(Column::Meta, META_SCHEMA, SCHEMA_VERSION.to_le_bytes());
        store.write(b)?;
        Ok(())
    }

    /// Network parameters.
    pub fn params(&self) -> &'static Params {
        self.params
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Height of the tip.
    pub fn height(&self) -> u64 {
        self.main.len().saturating_sub(1) as u64
    }

    /// The tip's metadata.
    pub fn tip(&self) -> &BlockMeta {
        let hash = self
            .main
            .last()
            .expect("the main chain always holds genesis");
        self.index
            .get(hash)
            .expect("main-chain blocks are indexed (checked at open)")
    }

    /// Hash of the main-chain block at `height`.
    pub fn hash_at(&self, height: u64) -> Option<Hash> {
        usize::try_from(height)
            .ok()
            .and_then(|h| self.main.get(h))
            .copied()
    }

    /// Metadata of a stored valid block.
    pub fn meta(&self, hash: &Hash) -> Option<&BlockMeta> {
        self.index.get(hash)
    }

    /// Is `hash` on the main chain?
    pub fn is_main(&self, hash: &Hash) -> bool {
        self.index
            .get(hash)
            .is_some_and(|m| self.hash_at(m.header.height) == Some(*hash))
    }

    /// The reason a block was rejected, if it was.
    pub fn invalid_reason(&self, hash: &Hash) -> Option<&str> {
        self.invalid.get(hash).map(String::as_str)
    }

    /// A stored block (main chain or side branch).
    pub fn block(&self, hash: &Hash) -> Result<Option<Block>, ChainError> {
        match self.store.get(Column::Blocks, &hash.0)? {
            None => Ok(None),
            Some(b) => decode(&b).map(Some).map_err(|e| corrupt("block", e)),
        }
    }

    /// A block locator for sync: main-chain hashes from the tip back, the
    /// first ten one apart, then doubling the step, always ending with
    /// genesis (at most 64 hashes).
    pub fn locator(&self) -> Vec<Hash> {
        let mut out = Vec::new();
        let mut height = self.height();
        let mut step = 1u64;
        loop {
            if let Some(h) = self.hash_at(height) {
                out.push(h);
            }
            if height == 0 || out.len() >= 63 {
                break;
            }
            if out.len() >= 10 {
                step = step.saturating_mul(2);
            }
            height = height.saturating_sub(step);
        }
        if out.last() != Some(&self.params.genesis_hash) {
            out.push(self.params.genesis_hash);
        }
        out
    }

    /// Up to `max` main-chain headers after the first `locator` hash that is
    /// on the main chain (after genesis if none is).
    pub fn headers_after(&self, locator: &[Hash], max: usize) -> Vec<Header> {
        let start = locator
            .iter()
            .find(|h| self.is_main(h))
            .and_then(|h| self.index.get(h))
            .map_or(0, |m| m.header.height)
            + 1;
        (start..)
            .take(max)
            .map_while(|height| self.hash_at(height))
            .filter_map(|h| self.index.get(&h).map(|m| m.header))
            .collect()
    }

    /// Check a run of headers (each the parent of the next) against every
    /// header rule, starting from a stored parent, without bodies: what a
    /// syncing node does before it downloads blocks. A header that is known
    /// invalid fails.
    pub fn check_headers(&self, headers: &[Header], now: u64) -> Result<(), ChainError> {
        let Some(first) = headers.first() else {
            return Ok(());
        };
        let parent = self
            .index
            .get(&first.prev)
            .ok_or_else(|| ChainError::NotFound(format!("parent block {}", first.prev)))?;
        // `push` checks linkage (each `prev` is the previous hash) too.
        let mut state = parent.state.clone();
        for h in headers {
            let hash = h.hash();
            if let Some(reason) = self.invalid.get(&hash) {
                return Err(ChainError::KnownInvalid(hash, reason.clone()));
            }
            state.push(self.params, h, now)?;
        }
        Ok(())
    }

    /// Number of blocks waiting for their parent.
    pub fn orphan_count(&self) -> usize {
        self.orphan_order.len()
    }

    /// The record of `name` at the tip.
    pub fn record(&self, name: &Name) -> Result<Option<Record>, ChainError> {
        record_at(
            &*self.store,
            Some(&self.cache),
            self.tip().header.state_root,
            name,
        )
    }

    /// The record of `name` at main-chain `height`, with its proof and the
    /// header whose `state_root` it is proven against.
    pub fn prove(
        &self,
        name: &Name,
        height: u64,
    ) -> Result<(Header, Option<Record>, StateProof), ChainError> {
        let hash = self
            .hash_at(height)
            .ok_or_else(|| ChainError::NotFound(format!("height {height}")))?;
        let header = self
            .meta(&hash)
            .ok_or_else(|| corrupt("index", "main-chain block not indexed"))?
            .header;
        let (record, proof) = prove_at(&*self.store, Some(&self.cache), header.state_root, name)?;
        Ok((header, record, proof))
    }

    /// Validate a block and store it; switch the main chain when it (or an
    /// orphan it adopts) brings more work. `now` is the validator's clock
    /// (Unix seconds) for the future-drift rule.
    pub fn submit_block(&mut self, block: Block, now: u64) -> Result<Submitted, ChainError> {
        let hash = block.header.hash();
        let mut change = TipChange::default();
        let status = self.submit_one(block, hash, now, &mut change)?;
        if matches!(status, BlockStatus::Tip | BlockStatus::SideBranch) {
            self.adopt_orphans(hash, now, &mut change);
        }
        Ok(Submitted { status, change })
    }

    fn submit_one(
        &mut self,
        block: Block,
        hash: Hash,
        now: u64,
        change: &mut TipChange,
    ) -> Result<BlockStatus, ChainError> {
        if self.index.contains_key(&hash) {
            return Ok(BlockStatus::AlreadyKnown);
        }
        if let Some(reason) = self.invalid.get(&hash) {
            return Err(ChainError::KnownInvalid(hash, reason.clone()));
        }
        let prev = block.header.prev;
        let Some(parent) = self.index.get(&prev) else {
            if self.invalid.contains_key(&prev) {
                let e = ChainError::InvalidParent(prev);
                if self.has_work(&block.header) {
                    self.remember_invalid(hash, &e)?;
                }
                return Err(e);
            }
            // Cheap spam filter before holding it: the header must carry
            // real work (its own target, within the network's limit).
            if !self.has_work(&block.header) {
                return Err(HeaderError::Pow(hash).into());
            }
            self.add_orphan(block, hash);
            return Ok(BlockStatus::Orphan);
        };
        let validated = match self.validate(parent, &block, now) {
            Ok(v) => v,
            Err(e) => {
                // Remember only blocks that carry real work: remembering
                // costs disk, and a header without work is cheap to reject
                // again (otherwise junk headers would grow the database
                // for free).
                if e.is_invalid_block() && self.has_work(&block.header) {
                    self.remember_invalid(hash, &e)?;
                }
                return Err(e);
            }
        };
        self.store_block(hash, block, validated, change)
    }

    /// Does the header meet its own target, and is that target within the
    /// network's limit? (Proof that someone spent work on it.)
    fn has_work(&self, header: &Header) -> bool {
        header
            .target()
            .is_ok_and(|t| t <= self.params.pow_limit && header.check_pow().is_ok())
    }

    fn remember_invalid(&mut self, hash: Hash, e: &ChainError) -> Result<(), ChainError> {
        let reason = e.to_string();
        tracing::warn!(target: "chain", %hash, %reason, "rejected block");
        let mut b = Batch::new();
        b.put(Column::Invalid, hash.0, reason.as_bytes());
        self.store.write(b)?;
        self.invalid.insert(hash, reason);
        Ok(())
    }

    fn add_orphan(&mut self, block: Block, hash: Hash) {
        if self
            .orphans
            .values()
            .flatten()
            .any(|b| b.header.hash() == hash)
        {
            return;
        }
        while self.orphan_order.len() >= MAX_ORPHANS {
            if let Some((parent, old)) = self.orphan_order.pop_front()
                && let Some(v) = self.orphans.get_mut(&parent)
            {
                v.retain(|b| b.header.hash() != old);
                if v.is_empty() {
                    self.orphans.remove(&parent);
                }
            }
        }
        tracing::debug!(target: "chain", %hash, parent = %block.header.prev, "orphan block");
        self.orphan_order.push_back((block.header.prev, hash));
        self.orphans
            .entry(block.header.prev)
            .or_default()
            .push(block);
    }

    fn adopt_orphans(&mut self, parent: Hash, now: u64, change: &mut TipChange) {
        let mut queue = vec![parent];
        while let Some(p) = queue.pop() {
            let Some(children) = self.orphans.remove(&p) else {
                continue;
            };
            for child in children {
                let h = child.header.hash();
                self.orphan_order.retain(|(_, o)| *o != h);
                match self.submit_one(child, h, now, change) {
                    Ok(BlockStatus::Tip | BlockStatus::SideBranch) => queue.push(h),
                    Ok(_) => {}
                    Err(e) => tracing::debug!(target: "chain", %h, error = %e, "orphan rejected"),
                }
            }
        }
    }

    /// Hashes and heights of the `window` blocks ending at `from`.
    fn recent_ancestors(&self, from: Hash, window: u64) -> HashMap<Hash, u64> {
        let mut out = HashMap::with_capacity(window as usize + 1);
        let mut cur = from;
        for _ in 0..=window {
            let Some(m) = self.index.get(&cur) else { break };
            out.insert(cur, m.header.height);
            if m.header.height == 0 {
                break;
            }
            cur = m.header.prev;
        }
        out
    }

    /// Every rule, against `parent`'s state. Writes nothing.
    fn validate(
        &self,
        parent: &BlockMeta,
        block: &Block,
        now: u64,
    ) -> Result<Validated, ChainError> {
        let params = self.params;
        let header = &block.header;
        let mut state = parent.state.clone();
        state.push(params, header, now)?;
        block.check_body(params)?;
        // Signatures and stamp proofs of work on worker threads while this
        // thread does the stamp ages and the state transition.
        std::thread::scope(|s| {
            let sigs = spawn_op_checks(s, params, &block.ops);
            let state_result = self.validate_state(parent, block, state);
            let mut sig_result = Ok(());
            for h in sigs {
                let r = h.join().unwrap_or_else(|_| {
                    Err(ChainError::Internal("op-check thread panicked".into()))
                });
                if sig_result.is_ok() {
                    sig_result = r;
                }
            }
            // A signature failure is reported in preference to a state
            // failure (it is the earlier rule).
            sig_result?;
            state_result
        })
    }

    /// Stamp ages, the state rule for every op, and the state root.
    fn validate_state(
        &self,
        parent: &BlockMeta,
        block: &Block,
        state: ChainState,
    ) -> Result<Validated, ChainError> {
        let params = self.params;
        let header = &block.header;
        let height = header.height;
        let ancestors = self.recent_ancestors(header.prev, params.stamp_window);
        let view = StateView(&*self.store, Some(&self.cache));
        let mut batch = Batch::new();
        let mut items = Vec::with_capacity(block.ops.len());
        for (index, op) in block.ops.iter().enumerate() {
            let op_err = |error| ChainError::Op {
                index,
                name: op.key.clone(),
                error,
            };
            let stamp_height = ancestors
                .get(&op.stamp.block)
                .copied()
                .ok_or_else(|| op_err(OpError::StampBlockUnknown(op.stamp.block)))?;
            op.check_stamp_age(params, stamp_height, height)
                .map_err(op_err)?;
            let before = record_at(
                &*self.store,
                Some(&self.cache),
                parent.header.state_root,
                &op.key,
            )?;
            let after = apply(before.as_ref(), op).map_err(op_err)?;
            let rh = after.hash();
            batch.put(Column::Records, rh.0, encode(&after));
            items.push((op.key.key_hash(), rh));
        }
        let (root, nodes) = xirtam_proofs::state::update(&view, parent.header.state_root, &items)?;
        if root != header.state_root {
            return Err(ChainError::StateRoot {
                expected: root,
                got: header.state_root,
            });
        }
        for (h, n) in nodes {
            batch.put(Column::StateNodes, h.0, encode(&n));
            self.cache.insert(h, n);
        }
        Ok(Validated {
            meta: BlockMeta {
                header: *header,
                state,
            },
            batch,
        })
    }

    /// Store a validated block and apply fork choice, in one batch.
    fn store_block(
        &mut self,
        hash: Hash,
        block: Block,
        v: Validated,
        change: &mut TipChange,
    ) -> Result<BlockStatus, ChainError> {
        let Validated { meta, mut batch } = v;
        batch.put(Column::Blocks, hash.0, encode(&block));
        batch.put(Column::Index, hash.0, encode(&meta));
        let better = meta.work() > self.tip().work();
        if !better {
            self.store.write(batch)?;
            self.index.insert(hash, meta);
            tracing::info!(target: "chain", height = block.header.height, %hash, "side-branch block");
            return Ok(BlockStatus::SideBranch);
        }
        // Walk back to the main chain.
        let mut branch = vec![hash];
        let mut cur = block.header.prev;
        loop {
            let m = self
                .index
                .get(&cur)
                .ok_or_else(|| corrupt("index", "ancestor of a valid block is not indexed"))?;
            if self.hash_at(m.header.height) == Some(cur) {
                break;
            }
            branch.push(cur);
            cur = m.header.prev;
        }
        branch.reverse();
        let fork_height = self.index.get(&cur).map_or(0, |m| m.header.height);
        let old_tip = self.height();
        let new_tip = block.header.height;
        for h in (new_tip + 1)..=old_tip {
            batch.delete(Column::MainChain, h.to_be_bytes());
        }
        for (i, h) in branch.iter().enumerate() {
            batch.put(
                Column::MainChain,
                (fork_height + 1 + i as u64).to_be_bytes(),
                h.0,
            );
        }
        batch.put(Column::Meta, META_TIP, hash.0);
        self.store.write(batch)?;

        let keep = usize::try_from(fork_height + 1).unwrap_or(usize::MAX);
        let dropped: Vec<Hash> = self.main.split_off(keep.min(self.main.len()));
        self.index.insert(hash, meta);
        self.main.extend_from_slice(&branch);
        if !dropped.is_empty() {
            tracing::warn!(
                target: "chain",
                fork_height,
                disconnected = dropped.len(),
                connected = branch.len(),
                "reorganisation"
            );
        }
        // Report the change (a later reorg in the same call may undo part of
        // an earlier one; consumers re-check against the final tip).
        for h in &dropped {
            if let Some(b) = self.block(h)? {
                change.disconnected.push(b);
            }
        }
        for h in &branch[..branch.len() - 1] {
            if let Some(b) = self.block(h)? {
                change.connected.push(b);
            }
        }
        tracing::info!(
            target: "chain",
            height = block.header.height,
            %hash,
            ops = block.ops.len(),
            "new tip"
        );
        change.connected.push(block);
        Ok(BlockStatus::Tip)
    }

    /// Check an op for the mempool: every rule against the tip, as if it
    /// went into the next block. A broken rule is [`ChainError::InvalidOp`].
    pub fn check_op(&self, op: &Op) -> Result<(), ChainError> {
        op.check_stateless(self.params)?;
        self.check_op_stateful(op).map(|_| ())
    }

    /// The stamp and state rules of `op` against the tip (the stateless
    /// rules are assumed checked). Returns the record the op would write.
    pub fn check_op_stateful(&self, op: &Op) -> Result<Record, ChainError> {
        let next = self.height() + 1;
        let stamp_height = self
            .index
            .get(&op.stamp.block)
            .filter(|_| self.is_main(&op.stamp.block))
            .map(|m| m.header.height)
            .ok_or(OpError::StampBlockUnknown(op.stamp.block))?;
        op.check_stamp_age(self.params, stamp_height, next)?;
        let before = self.record(&op.key)?;
        Ok(apply(before.as_ref(), op)?)
    }

    /// Build the body of the next block on the tip from candidate ops (in
    /// order; invalid ones are skipped) and compute its state root.
    /// Returns the ops used and the state root.
    pub fn template_ops(&self, candidates: Vec<Op>) -> Result<(Vec<Op>, Hash), ChainError> {
        let tip = self.tip();
        let root = tip.header.state_root;
        let mut ops = Vec::new();
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut seen = HashSet::new();
        for op in candidates {
            if ops.len() >= self.params.max_ops_per_block {
                break;
            }
            let len = encode(&op).len();
            // Leave room for the header and the length prefix.
            if bytes + len + 256 > self.params.max_block_bytes || !seen.insert(op.key.clone()) {
                continue;
            }
            let after = match self.check_op_stateful(&op) {
                Ok(after) => after,
                Err(ChainError::InvalidOp(_)) => continue,
                Err(e) => return Err(e),
            };
            items.push((op.key.key_hash(), after.hash()));
            bytes += len;
            ops.push(op);
        }
        let view = StateView(&*self.store, Some(&self.cache));
        let (new_root, _) = xirtam_proofs::state::update(&view, root, &items)?;
        Ok((ops, new_root))
    }
}

type OpCheck<'s> = std::thread::ScopedJoinHandle<'s, Result<(), ChainError>>;

/// Start the stateless op checks (signatures dominate) on worker threads,
/// one per core.
fn spawn_op_checks<'s, 'e: 's>(
    s: &'s std::thread::Scope<'s, 'e>,
    params: &'e Params,
    ops: &'e [Op],
) -> Vec<OpCheck<'s>> {
    if ops.is_empty() {
        return Vec::new();
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    let chunk = ops.len().div_ceil(threads).max(32);
    ops.chunks(chunk)
        .enumerate()
        .map(|(i, c)| s.spawn(move || check_ops(params, c, i * chunk)))
        .collect()
}

fn check_ops(params: &Params, ops: &[Op], offset: usize) -> Result<(), ChainError> {
    Op::check_stateless_all(params, ops).map_err(|(i, name, error)| {
        ChainError::Block(BlockError::Op {
            index: offset + i,
            name,
            error,
        })
    })
}

fn hash_key(b: &[u8]) -> Option<Hash> {
    <[u8; 32]>::try_from(b).ok().map(Hash)
}

fn height_key(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}
