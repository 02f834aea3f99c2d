//! The chain: block validation, storage, fork choice and reorgs.
//!
//! Every valid block, on the main chain or a side branch, is stored with
//! its [`BlockMeta`] (its header and the [`ChainState`] after it) and its
//! state: state-tree nodes are never overwritten (each block writes its new
//! nodes, root included, at its own height: ADR 0015), so each block's
//! `state_root` stays readable and a reorg only rewrites the main-chain
//! height index and the tip (one batch). Fork choice: most cumulative work; ties keep the
//! block seen first.
//!
//! **Branch admission** (as Bitcoin Core's): a block is fully validated and
//! stored only if its branch could be the best chain: its cumulative work
//! is at least the tip's and the network's minimum chain work
//! ([`Params::min_chain_work`]), or headers-first sync fetched it for a
//! header chain it checked to outweigh the tip and meet that minimum
//! ([`Origin::Synced`], [`Chain::outweighs`]); below the network's
//! assumed-valid block such a block's op signatures are not checked
//! ([`Params::assume_valid`]). Anything else (a cheap fork from deep history, say)
//! is held after the header checks alone ([`BlockStatus::Held`]): not
//! validated in full, not stored, not remembered, not relayed. Invalid blocks that passed
//! admission are remembered (bounded). Blocks whose parent is unknown, and
//! blocks of a branch lighter than the tip, are **held** in memory (bounded
//! by count and bytes, after their header's work and their body's match
//! with the header were checked) until their parent arrives or a
//! descendant brings their branch to the tip's work.

mod held;
mod state;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bincode::{Decode, Encode};
use xirtam_proofs::block::{Block, BlockError};
use xirtam_proofs::header::{ChainState, Header, HeaderError};
use xirtam_proofs::op::{Op, OpError, apply};
use xirtam_proofs::params::Params;
use xirtam_proofs::state::commit_entry_hash;
use xirtam_proofs::state::{NodeRef, StateProof, TreeError};
use xirtam_proofs::{Hash, Name, Record, U256, decode, encode};

pub use state::{NodeCache, StateView, load_record, node_key, prove_at, record_at, state_root};

use crate::store::{Batch, Column, KvStore, SCHEMA_VERSION, StoreError};

/// Most blocks kept while waiting for their parent.
pub const MAX_ORPHANS: usize = 256;

/// Most bytes of blocks kept while waiting for their parent.
pub const MAX_ORPHAN_BYTES: usize = 16 * 1024 * 1024;

/// Most invalid blocks remembered (the oldest are forgotten first; a
/// forgotten one is simply validated again if it comes back).
pub const MAX_INVALID: usize = 10_000;

/// Most block hashes marked wanted (blocks of held branches that reached
/// the tip's work).
pub const MAX_WANTED: usize = 10_000;

/// The node cache holds up to twice this many state-tree nodes (~120 bytes
/// each: ~126 MB at most, mapped as it fills).
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
    /// Parent unknown: held in memory (not stored) until it arrives.
    Orphan,
    /// Valid header and matching body, but its branch has less work than
    /// the tip: held in memory (not validated in full, not stored) until a
    /// descendant brings the branch to the tip's work.
    Held,
}

/// How a block reached the chain, which decides its admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// Gossip, RPC or a miner: admitted on its own branch's work.
    #[default]
    Unsolicited,
    /// Fetched by headers-first sync for a header chain that was checked
    /// to outweigh the tip and to meet the network's minimum chain work
    /// ([`Chain::outweighs`]): admitted even while its own branch is
    /// lighter. `assumed_valid`: the header chain passes through the
    /// network's assumed-valid block at or above this one, so its op
    /// signatures are not checked (every other rule is).
    Synced {
        /// Is it an ancestor (or itself) of the assumed-valid block?
        assumed_valid: bool,
    },
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
        /// Its subject (name or commitment).
        name: String,
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
    /// The state tree could not be read. (Transparent: the tree's and the
    /// store's messages say what failed, and a prefix here printed them
    /// twice in an error chain, once in ours and once as the source.)
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The store failed.
    #[error(transparent)]
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
    /// The block's new state-tree nodes (also in `batch`), for the node
    /// cache once the batch is written.
    nodes: Vec<(Hash, xirtam_proofs::state::Node)>,
}

/// The chain over a store.
#[derive(Debug)]
pub struct Chain<S: KvStore> {
    params: &'static Params,
    store: Arc<S>,
    index: HashMap<Hash, BlockMeta>,
    main: Vec<Hash>,
    invalid: HashMap<Hash, String>,
    invalid_order: VecDeque<Hash>,
    held: held::Held,
    wanted: HashSet<Hash>,
    wanted_order: VecDeque<Hash>,
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
            let found = match schema.as_deref().map(<[u8; 4]>::try_from) {
                Some(Ok(v)) => format!("schema {}", u32::from_le_bytes(v)),
                _ => "an unknown schema".to_string(),
            };
            return Err(StoreError::Incompatible(format!(
                "the database is {found}, and this node reads schema {SCHEMA_VERSION}: move the \
                 data directory aside (or delete it) and start again to sync from peers"
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
        let mut invalid_order = VecDeque::new();
        for (k, v) in store.scan(Column::Invalid)? {
            if let Some(h) = hash_key(&k) {
                invalid.insert(h, String::from_utf8_lossy(&v).into_owned());
                invalid_order.push_back(h);
            }
        }
        Ok(Chain {
            params,
            store,
            index,
            main,
            invalid,
            invalid_order,
            held: held::Held::new(MAX_ORPHANS, MAX_ORPHAN_BYTES),
            wanted: HashSet::new(),
            wanted_order: VecDeque::new(),
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
        read_block(&*self.store, hash)
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
    /// header rule, without bodies: what a syncing node does before it
    /// downloads blocks. The run starts from a stored block, or from `from`
    /// (the state after an earlier run that was checked but not connected
    /// yet) when the first header builds on it. A header that is known
    /// invalid fails. Returns the state after the last header (its
    /// `total_work` is the run's cumulative work).
    pub fn check_headers(
        &self,
        from: Option<&ChainState>,
        headers: &[Header],
        now: u64,
    ) -> Result<Option<ChainState>, ChainError> {
        let Some(first) = headers.first() else {
            return Ok(None);
        };
        let mut state = match from.filter(|s| s.tip_hash == first.prev) {
            Some(s) => s.clone(),
            None => self
                .index
                .get(&first.prev)
                .ok_or_else(|| ChainError::NotFound(format!("parent block {}", first.prev)))?
                .state
                .clone(),
        };
        // `push` checks linkage (each `prev` is the previous hash) too.
        for h in headers {
            let hash = h.hash();
            if let Some(reason) = self.invalid.get(&hash) {
                return Err(ChainError::KnownInvalid(hash, reason.clone()));
            }
            state.push(self.params, h, now)?;
        }
        Ok(Some(state))
    }

    /// Would a chain with cumulative work `work` replace the tip, and does
    /// it meet the network's minimum chain work? (What a header chain must
    /// show before a syncing node fetches its bodies.)
    pub fn outweighs(&self, work: U256) -> bool {
        work > self.tip().work() && work >= self.params.min_chain_work
    }

    /// Branch admission: may a block whose branch carries `work` be
    /// validated and stored? At least the tip's work (a tie is a side
    /// branch), and at least the network's minimum.
    fn admits(&self, work: U256) -> bool {
        work >= self.tip().work() && work >= self.params.min_chain_work
    }

    /// Mark blocks as wanted: their branch reached the tip's work, so their
    /// bodies pass branch admission even while their own branch is still
    /// lighter. Bounded: the oldest marks are dropped first.
    fn want(&mut self, hashes: impl IntoIterator<Item = Hash>) {
        for h in hashes {
            if self.index.contains_key(&h) || !self.wanted.insert(h) {
                continue;
            }
            self.wanted_order.push_back(h);
            while self.wanted_order.len() > MAX_WANTED {
                if let Some(old) = self.wanted_order.pop_front() {
                    self.wanted.remove(&old);
                }
            }
        }
    }

    /// Number of blocks held in memory (orphans and light branches).
    pub fn orphan_count(&self) -> usize {
        self.held.len()
    }

    /// Bytes of blocks held in memory.
    pub fn orphan_bytes(&self) -> usize {
        self.held.bytes()
    }

    /// Number of invalid blocks remembered.
    pub fn invalid_count(&self) -> usize {
        self.invalid.len()
    }

    /// The record of `name` at the tip.
    pub fn record(&self, name: &Name) -> Result<Option<Record>, ChainError> {
        record_at(
            &*self.store,
            Some(&self.cache),
            state_root(&self.tip().header),
            name,
        )
    }

    /// The header of the main-chain block at `height`.
    fn main_header(&self, height: u64) -> Result<Header, ChainError> {
        let hash = self
            .hash_at(height)
            .ok_or_else(|| ChainError::NotFound(format!("height {height}")))?;
        Ok(self
            .meta(&hash)
            .ok_or_else(|| corrupt("index", "main-chain block not indexed"))?
            .header)
    }

    /// The record of `name` at main-chain `height`, with its proof and the
    /// header whose `state_root` it is proven against.
    pub fn prove(
        &self,
        name: &Name,
        height: u64,
    ) -> Result<(Header, Option<Record>, StateProof), ChainError> {
        let header = self.main_header(height)?;
        let (record, proof) = prove_at(&*self.store, Some(&self.cache), state_root(&header), name)?;
        Ok((header, record, proof))
    }

    /// Whether `commitment` is in the state at main-chain `height` (and the
    /// height it was mined at), with its proof and the header whose
    /// `state_root` it is proven against.
    pub fn prove_commitment(
        &self,
        commitment: &Hash,
        height: u64,
    ) -> Result<(Header, Option<u64>, StateProof), ChainError> {
        let header = self.main_header(height)?;
        let view = StateView(&*self.store, Some(&self.cache));
        let key = xirtam_proofs::op::commit_key(commitment);
        let (value, proof) = xirtam_proofs::state::prove(&view, state_root(&header), &key)?;
        let at = match value {
            None => None,
            Some(v) => {
                let bytes = self.store.get(Column::Records, &v.0)?.ok_or_else(|| {
                    corrupt(
                        "commitment",
                        "entry referenced by the state tree is missing",
                    )
                })?;
                let at = <[u8; 8]>::try_from(&bytes[..])
                    .map(u64::from_le_bytes)
                    .map_err(|_| corrupt("commitment", "height is not 8 bytes"))?;
                if commit_entry_hash(at) != v {
                    return Err(corrupt(
                        "commitment",
                        "stored height does not match its hash",
                    ));
                }
                Some(at)
            }
        };
        Ok((header, at, proof))
    }

    /// Validate a block and store it; switch the main chain when it (or an
    /// orphan it adopts) brings more work. `now` is the validator's clock
    /// (Unix seconds) for the future-drift rule.
    pub fn submit_block(&mut self, block: Block, now: u64) -> Result<Submitted, ChainError> {
        self.submit(block, Origin::Unsolicited, now)
    }

    /// [`Chain::submit_block`] for a block of the given origin.
    pub fn submit(
        &mut self,
        block: Block,
        origin: Origin,
        now: u64,
    ) -> Result<Submitted, ChainError> {
        let hash = block.header.hash();
        let mut change = TipChange::default();
        let status = self.submit_one(block, hash, origin, now, &mut change)?;
        match status {
            BlockStatus::Tip | BlockStatus::SideBranch => {
                self.adopt_orphans(hash, now, &mut change);
            }
            BlockStatus::Orphan | BlockStatus::Held => self.complete_branch(hash, now, &mut change),
            BlockStatus::AlreadyKnown => {}
        }
        // A held block that completed its branch is connected now.
        let status = match status {
            BlockStatus::Orphan | BlockStatus::Held if self.index.contains_key(&hash) => {
                if self.is_main(&hash) {
                    BlockStatus::Tip
                } else {
                    BlockStatus::SideBranch
                }
            }
            s => s,
        };
        Ok(Submitted { status, change })
    }

    fn submit_one(
        &mut self,
        block: Block,
        hash: Hash,
        origin: Origin,
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
                // Not remembered itself: its parent is, and remembering
                // every child would let anyone grow the set cheaply.
                return Err(ChainError::InvalidParent(prev));
            }
            // Cheap spam filters before holding it: the header must carry
            // real work (its own target, within the network's limit), and
            // the body must be the header's (so that junk cannot shadow
            // the real block) and within the size limits.
            if !self.has_work(&block.header) {
                return Err(HeaderError::Pow(hash).into());
            }
            block.check_body(self.params)?;
            // A child of a held block is on a held branch; otherwise its
            // parent is unknown.
            let status = if self.held.get(&prev).is_some() {
                BlockStatus::Held
            } else {
                BlockStatus::Orphan
            };
            tracing::debug!(target: "chain", %hash, parent = %prev, ?status, "held block");
            self.held.insert(hash, block);
            return Ok(status);
        };
        // Branch admission: only a block that could be (or lead to) the
        // best chain is validated and stored.
        let work = block
            .header
            .work()
            .map_err(|_| ChainError::Header(HeaderError::Pow(hash)))?;
        let branch_work = parent.work().saturating_add(work);
        if !self.admits(branch_work)
            && origin == Origin::Unsolicited
            && !self.wanted.contains(&hash)
        {
            // The header rules and the body's match with its header still
            // run, so that junk is a fault and not merely "low work".
            parent.state.clone().push(self.params, &block.header, now)?;
            block.check_body(self.params)?;
            tracing::debug!(target: "chain", %hash, height = block.header.height, "light branch; held");
            self.held.insert(hash, block);
            return Ok(BlockStatus::Held);
        }
        // Signatures are skipped only below the network's assumed-valid
        // block, and only when sync saw a header chain through it.
        let check_signatures = match origin {
            Origin::Synced {
                assumed_valid: true,
            } => self
                .params
                .assume_valid
                .is_none_or(|cp| block.header.height > cp.height),
            _ => true,
        };
        let validated = match self.validate(parent, &block, now, check_signatures) {
            Ok(v) => v,
            Err(e) => {
                // Remember only blocks that carry real work: remembering
                // costs disk, and a header without work is cheap to reject
                // again.
                if e.is_invalid_block() && self.has_work(&block.header) {
                    self.remember_invalid(hash, &e)?;
                }
                return Err(e);
            }
        };
        // Its entry in `wanted_order` goes stale and is dropped with the
        // oldest marks (the order is bounded by MAX_WANTED either way).
        self.wanted.remove(&hash);
        self.store_block(hash, block, validated, change)
    }

    /// Does the header meet its own target, and is that target within the
    /// network's limit? (Proof that someone spent work on it.)
    fn has_work(&self, header: &Header) -> bool {
        header
            .target()
            .is_ok_and(|t| t <= self.params.pow_limit && header.check_pow().is_ok())
    }

    /// Remember an invalid block that passed branch admission (so it
    /// carried as much work as the tip: costly to make). Bounded by
    /// [`MAX_INVALID`], the oldest forgotten first.
    fn remember_invalid(&mut self, hash: Hash, e: &ChainError) -> Result<(), ChainError> {
        let reason = e.to_string();
        tracing::warn!(target: "chain", %hash, %reason, "rejected block");
        let mut b = Batch::new();
        b.put(Column::Invalid, hash.0, reason.as_bytes());
        let mut forget = Vec::new();
        while self.invalid_order.len() + 1 > MAX_INVALID {
            match self.invalid_order.pop_front() {
                Some(old) => {
                    b.delete(Column::Invalid, old.0);
                    forget.push(old);
                }
                None => break,
            }
        }
        self.store.write(b)?;
        for old in forget {
            self.invalid.remove(&old);
        }
        self.invalid.insert(hash, reason);
        self.invalid_order.push_back(hash);
        Ok(())
    }

    /// Connect the held children of `parent` (and theirs), as far as
    /// branch admission lets them in.
    fn adopt_orphans(&mut self, parent: Hash, now: u64, change: &mut TipChange) {
        let mut queue = vec![parent];
        while let Some(p) = queue.pop() {
            for child in self.held.take_children(&p) {
                let h = child.header.hash();
                match self.submit_one(child, h, Origin::Unsolicited, now, change) {
                    Ok(BlockStatus::Tip | BlockStatus::SideBranch) => queue.push(h),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(target: "chain", %h, error = %e, "held block rejected")
                    }
                }
            }
        }
    }

    /// `hash` was just held: if the held branch it ends (back to a stored
    /// block) now has at least the tip's work, mark the branch wanted and
    /// connect it.
    fn complete_branch(&mut self, hash: Hash, now: u64, change: &mut TipChange) {
        let mut branch = Vec::new();
        let mut work = U256::zero();
        let mut cur = hash;
        while let Some(b) = self.held.get(&cur) {
            let Ok(w) = b.header.work() else { return };
            work = work.saturating_add(w);
            branch.push(cur);
            cur = b.header.prev;
            if branch.len() > MAX_ORPHANS {
                return;
            }
        }
        let Some(base) = self.index.get(&cur) else {
            return;
        };
        if !self.admits(base.work().saturating_add(work)) {
            return;
        }
        tracing::info!(target: "chain", blocks = branch.len(), from = %cur, "a held branch reached the tip's work");
        self.want(branch);
        self.adopt_orphans(cur, now, change);
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
        check_signatures: bool,
    ) -> Result<Validated, ChainError> {
        let params = self.params;
        let header = &block.header;
        let mut state = parent.state.clone();
        state.push(params, header, now)?;
        block.check_body(params)?;
        // Signatures and stamp proofs of work on worker threads while this
        // thread does the stamp ages and the state transition.
        std::thread::scope(|s| {
            let sigs = spawn_op_checks(s, params, &block.ops, check_signatures);
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
        // Every op reads the parent's state: read all their keys in one
        // descent of the tree rather than one walk per key.
        let parent_root = state_root(&parent.header);
        let reads = Reads::prefetch(self.params, &view, parent_root, &block.ops)?;
        let mut batch = Batch::new();
        let mut items = Vec::with_capacity(block.ops.len());
        for (index, op) in block.ops.iter().enumerate() {
            let op_err = |error| ChainError::Op {
                index,
                name: op.subject(),
                error,
            };
            let stamp_height = ancestors
                .get(&op.stamp().block)
                .copied()
                .ok_or_else(|| op_err(OpError::StampBlockUnknown(op.stamp().block)))?;
            op.check_stamp_age(params, stamp_height, height)
                .map_err(op_err)?;
            let t = match self.transition(&reads, op, height) {
                Err(ChainError::InvalidOp(e)) => return Err(op_err(e)),
                other => other?,
            };
            batch.put(Column::Records, t.value.0, t.stored);
            items.push((t.key, t.value));
        }
        let (root, nodes) = xirtam_proofs::state::update(&view, parent_root, height, &items)?;
        if root.hash != header.state_root {
            return Err(ChainError::StateRoot {
                expected: root.hash,
                got: header.state_root,
            });
        }
        // Cached only once written (`store_block`): a cached inner node
        // names the versions of its children, which must then be stored. A
        // block rejected later (a bad signature, a failed write) leaves
        // nothing behind that a valid block at another height, building
        // the same node, would find.
        for (h, n) in &nodes {
            batch.put(
                Column::StateNodes,
                node_key(&NodeRef::new(*h, height)),
                encode(n),
            );
        }
        Ok(Validated {
            meta: BlockMeta {
                header: *header,
                state,
            },
            batch,
            nodes,
        })
    }

    /// Remember a stored block's new state-tree nodes.
    fn cache_nodes(&self, nodes: Vec<(Hash, xirtam_proofs::state::Node)>) {
        for (h, n) in nodes {
            self.cache.insert(h, n);
        }
    }

    /// Whether the state-node cache holds the node with this hash
    /// (diagnostics and tests: the cache must only hold stored nodes).
    pub fn node_cached(&self, hash: &Hash) -> bool {
        self.cache.get(hash).is_some()
    }

    /// Store a validated block and apply fork choice, in one batch.
    fn store_block(
        &mut self,
        hash: Hash,
        block: Block,
        v: Validated,
        change: &mut TipChange,
    ) -> Result<BlockStatus, ChainError> {
        let Validated {
            meta,
            mut batch,
            nodes,
        } = v;
        batch.put(Column::Blocks, hash.0, encode(&block));
        batch.put(Column::Index, hash.0, encode(&meta));
        let better = meta.work() > self.tip().work();
        if !better {
            self.store.write(batch)?;
            self.cache_nodes(nodes);
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
        self.cache_nodes(nodes);

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
    /// rules are assumed checked), as if it went into the next block.
    /// Returns what the op would write.
    pub fn check_op_stateful(&self, op: &Op) -> Result<Transition, ChainError> {
        let next = self.height() + 1;
        let stamp_height = self.stamp_height(op)?;
        op.check_stamp_age(self.params, stamp_height, next)?;
        self.transition(&Reads::Walk(state_root(&self.tip().header)), op, next)
    }

    /// Height of `op`'s stamp block, which must be on the main chain.
    pub fn stamp_height(&self, op: &Op) -> Result<u64, ChainError> {
        let block = op.stamp().block;
        Ok(self
            .index
            .get(&block)
            .filter(|_| self.is_main(&block))
            .map(|m| m.header.height)
            .ok_or(OpError::StampBlockUnknown(block))?)
    }

    /// The state rule for `op` included at `height` on top of state `root`
    /// (stamp rules are checked by the caller). A broken rule is
    /// [`ChainError::InvalidOp`].
    ///
    /// A commitment must be new to the state; it is stored with `height`.
    /// A write follows [`apply`], with the commitment a claim reveals looked
    /// up in the same state.
    fn transition(&self, reads: &Reads, op: &Op, height: u64) -> Result<Transition, ChainError> {
        let view = StateView(&*self.store, Some(&self.cache));
        match op {
            Op::Commit(c) => {
                let key = op.state_key();
                if reads.value(&view, &key)?.is_some() {
                    return Err(OpError::AlreadyCommitted(c.commitment).into());
                }
                Ok(Transition {
                    key,
                    value: commit_entry_hash(height),
                    stored: height.to_le_bytes().to_vec(),
                })
            }
            Op::Write(w) => {
                let committed = match w.claim_entry(self.params) {
                    Some((k, v)) => reads.value(&view, &k)? == Some(v),
                    None => false,
                };
                let before = match reads.value(&view, &op.state_key())? {
                    None => None,
                    Some(h) => Some(load_record(&*self.store, &h)?),
                };
                let after = apply(self.params, before.as_ref(), w, height, committed)?;
                Ok(Transition {
                    key: op.state_key(),
                    value: after.hash(),
                    stored: encode(&after),
                })
            }
        }
    }

    /// Build the body of the next block on the tip from candidate ops (in
    /// order; invalid ones are skipped) and compute its state root.
    /// Returns the ops used and the state root.
    pub fn template_ops(&self, candidates: Vec<Op>) -> Result<(Vec<Op>, Hash), ChainError> {
        let tip = self.tip();
        let root = state_root(&tip.header);
        let next = tip.header.height + 1;
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
            if bytes + len + 256 > self.params.max_block_bytes || !seen.insert(op.state_key()) {
                continue;
            }
            let t = match self.check_op_stateful(&op) {
                Ok(t) => t,
                Err(ChainError::InvalidOp(_)) => continue,
                Err(e) => return Err(e),
            };
            items.push((t.key, t.value));
            bytes += len;
            ops.push(op);
        }
        let view = StateView(&*self.store, Some(&self.cache));
        let (new_root, _) = xirtam_proofs::state::update(&view, root, next, &items)?;
        Ok((ops, new_root.hash))
    }
}

/// Where [`Chain::transition`] reads state values, all under one root.
enum Reads {
    /// A walk of the tree under this root per key.
    Walk(NodeRef),
    /// The values of every key a block reads, read in one descent.
    Prefetched(HashMap<Hash, Option<Hash>>),
}

impl Reads {
    /// Read every key `ops` look up (their own keys, and the commitment
    /// each claim reveals) under `root` in one descent.
    fn prefetch<S: KvStore>(
        params: &Params,
        view: &StateView<'_, S>,
        root: NodeRef,
        ops: &[Op],
    ) -> Result<Self, ChainError> {
        let mut keys = Vec::with_capacity(ops.len() * 2);
        for op in ops {
            keys.push(op.state_key());
            if let Some((k, _)) = op.as_write().and_then(|w| w.claim_entry(params)) {
                keys.push(k);
            }
        }
        let values = xirtam_proofs::state::get_many(view, root, &keys)?;
        Ok(Reads::Prefetched(keys.into_iter().zip(values).collect()))
    }

    fn value<S: KvStore>(
        &self,
        view: &StateView<'_, S>,
        key: &Hash,
    ) -> Result<Option<Hash>, ChainError> {
        match self {
            Reads::Walk(root) => Ok(xirtam_proofs::state::get(view, *root, key)?),
            Reads::Prefetched(values) => values
                .get(key)
                .copied()
                .ok_or_else(|| ChainError::Internal(format!("state key {key} was not prefetched"))),
        }
    }
}

/// What one op writes to the state tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// State-tree key.
    pub key: Hash,
    /// State-tree value.
    pub value: Hash,
    /// What [`Column::Records`] stores under `value`: the encoded record
    /// of a write, or a commitment's height (8 bytes, little-endian).
    pub stored: Vec<u8>,
}

type OpCheck<'s> = std::thread::ScopedJoinHandle<'s, Result<(), ChainError>>;

/// Start the stateless op checks (signatures dominate) on worker threads,
/// one per core.
fn spawn_op_checks<'s, 'e: 's>(
    s: &'s std::thread::Scope<'s, 'e>,
    params: &'e Params,
    ops: &'e [Op],
    check_signatures: bool,
) -> Vec<OpCheck<'s>> {
    if ops.is_empty() {
        return Vec::new();
    }
    if !check_signatures {
        return vec![s.spawn(move || check_unsigned(params, ops))];
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

fn check_unsigned(params: &Params, ops: &[Op]) -> Result<(), ChainError> {
    Op::check_unsigned_all(params, ops)
        .map_err(|(index, name, error)| ChainError::Block(BlockError::Op { index, name, error }))
}

/// A stored block, read straight from `store` (blocks are immutable once
/// stored, so no chain lock is needed).
pub fn read_block<S: KvStore>(store: &S, hash: &Hash) -> Result<Option<Block>, ChainError> {
    match store.get(Column::Blocks, &hash.0)? {
        None => Ok(None),
        Some(b) => {
            let block: Block = decode(&b).map_err(|e| corrupt("block", e))?;
            if block.header.hash() != *hash {
                return Err(corrupt(
                    "block",
                    format!("block stored under {hash} has another hash"),
                ));
            }
            Ok(Some(block))
        }
    }
}

fn hash_key(b: &[u8]) -> Option<Hash> {
    <[u8; 32]>::try_from(b).ok().map(Hash)
}

fn height_key(b: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(b).ok().map(u64::from_be_bytes)
}
