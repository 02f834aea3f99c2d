//! The node: chain and mempool behind one lock, with change notification.
//!
//! Lock order is fixed: the chain, then the mempool. Chain work (block
//! validation, RocksDB reads and writes) is blocking: async callers run it on
//! `spawn_blocking` (the RPC layer does).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use xirtam_proofs::block::{Block, ops_root};
use xirtam_proofs::header::{Header, header_template};
use xirtam_proofs::op::Op;
use xirtam_proofs::params::Params;

use crate::chain::{BlockStatus, Chain, ChainError, Origin, Submitted};
use crate::mempool::{Admitted, Mempool, MempoolError};
use crate::store::KvStore;

/// Unix time in seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A block or op that entered this node locally (mined, or submitted over
/// RPC), for the peer-to-peer layer to publish. What arrives from peers is
/// not announced again: gossip forwards it once validated.
#[derive(Debug, Clone)]
pub enum Announce {
    /// A block that became the tip or a side branch.
    Block(Block),
    /// An op admitted to the mempool.
    Op(Op),
}

/// How many announcements may wait for the network layer before new ones
/// are dropped (they are also reachable by sync).
pub const ANNOUNCE_QUEUE: usize = 1024;

/// Chain and mempool together.
#[derive(Debug)]
pub struct Core<S: KvStore> {
    /// The chain.
    pub chain: Chain<S>,
    /// Pending ops.
    pub mempool: Mempool,
}

/// Shared node state.
#[derive(Debug)]
pub struct Node<S: KvStore> {
    core: Mutex<Core<S>>,
    params: &'static Params,
    /// Bumped whenever the tip changes (miners restart on it).
    tip_seq: AtomicU64,
    /// Bumped whenever the mempool gains an op (miners refresh on it).
    pool_seq: AtomicU64,
    shutdown: AtomicBool,
    tip_tx: tokio::sync::watch::Sender<u64>,
    announce_tx: Mutex<Option<tokio::sync::mpsc::Sender<Announce>>>,
    tip_summary: Mutex<TipSummary>,
}

/// The tip in brief, readable without the chain lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TipSummary {
    /// Height.
    pub height: u64,
    /// Hash.
    pub hash: xirtam_proofs::Hash,
    /// Cumulative work.
    pub work: xirtam_proofs::pow::U256,
}

impl TipSummary {
    fn of<S: KvStore>(chain: &Chain<S>) -> Self {
        let tip = chain.tip();
        TipSummary {
            height: tip.header.height,
            hash: tip.header.hash(),
            work: tip.work(),
        }
    }
}

/// A block to mine: header without a valid nonce, and its ops.
#[derive(Debug, Clone)]
pub struct Template {
    /// Header (set the nonce).
    pub header: Header,
    /// Ops.
    pub ops: Vec<Op>,
    /// `tip_seq` when built: stale once it changes.
    pub tip_seq: u64,
}

impl<S: KvStore> Node<S> {
    /// Open the chain in `store`.
    pub fn open(
        params: &'static Params,
        store: Arc<S>,
        mut mempool: Mempool,
    ) -> Result<Arc<Self>, ChainError> {
        let chain = Chain::open(params, store)?;
        mempool.restore(&chain)?;
        let (tip_tx, _) = tokio::sync::watch::channel(chain.height());
        let tip_summary = Mutex::new(TipSummary::of(&chain));
        Ok(Arc::new(Node {
            core: Mutex::new(Core { chain, mempool }),
            params,
            tip_seq: AtomicU64::new(0),
            pool_seq: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            tip_tx,
            announce_tx: Mutex::new(None),
            tip_summary,
        }))
    }

    /// Network parameters.
    pub fn params(&self) -> &'static Params {
        self.params
    }

    /// Lock chain and mempool (blocking).
    pub fn lock(&self) -> parking_lot::MutexGuard<'_, Core<S>> {
        self.core.lock()
    }

    /// Watch the tip height.
    pub fn subscribe_tip(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tip_tx.subscribe()
    }

    /// Current `tip_seq`.
    pub fn tip_seq(&self) -> u64 {
        self.tip_seq.load(Ordering::Acquire)
    }

    /// Current `pool_seq`.
    pub fn pool_seq(&self) -> u64 {
        self.pool_seq.load(Ordering::Acquire)
    }

    /// Ask background work (miners) to stop.
    pub fn shut_down(&self) {
        self.shutdown.store(true, Ordering::Release);
    }

    /// Has shutdown been requested?
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Validate and store a block (blocking). Ops that a reorg returned to
    /// the mempool are announced to peers again (theirs were dropped too).
    pub fn submit_block(&self, block: Block) -> Result<Submitted, ChainError> {
        self.submit_block_from(block, Origin::Unsolicited)
    }

    /// [`Node::submit_block`] for a block of the given origin (sync passes
    /// [`Origin::Synced`]).
    pub fn submit_block_from(&self, block: Block, origin: Origin) -> Result<Submitted, ChainError> {
        let mut returned = Vec::new();
        let out = {
            let mut core = self.core.lock();
            let Core { chain, mempool } = &mut *core;
            let out = chain.submit(block, origin, unix_now())?;
            if !out.change.connected.is_empty() {
                returned = mempool.on_tip_change(chain, &out.change);
                *self.tip_summary.lock() = TipSummary::of(chain);
                self.tip_seq.fetch_add(1, Ordering::AcqRel);
                self.tip_tx.send_replace(chain.height());
            }
            out
        };
        if !returned.is_empty() {
            tracing::info!(target: "mempool", ops = returned.len(), "re-announcing ops of disconnected blocks");
            self.pool_seq.fetch_add(1, Ordering::AcqRel);
            for op in returned {
                self.announce(Announce::Op(op));
            }
        }
        Ok(out)
    }

    /// The tip, without taking the chain lock.
    pub fn tip_summary(&self) -> TipSummary {
        *self.tip_summary.lock()
    }

    /// Send local blocks and ops to `tx` from now on (the p2p layer).
    pub fn set_announcer(&self, tx: tokio::sync::mpsc::Sender<Announce>) {
        *self.announce_tx.lock() = Some(tx);
    }

    fn announce(&self, a: Announce) {
        if let Some(tx) = &*self.announce_tx.lock()
            && tx.try_send(a).is_err()
        {
            tracing::warn!(target: "node", "announcement queue full or closed; one announcement dropped");
        }
    }

    /// [`Node::submit_block`] for a block made or received locally (miner,
    /// RPC): announced to peers when it is stored as valid.
    pub fn submit_local_block(&self, block: Block) -> Result<Submitted, ChainError> {
        let out = self.submit_block(block.clone())?;
        if matches!(out.status, BlockStatus::Tip | BlockStatus::SideBranch) {
            self.announce(Announce::Block(block));
        }
        Ok(out)
    }

    /// [`Node::submit_op`] for an op submitted locally (RPC): announced to
    /// peers once admitted.
    pub fn submit_local_op(&self, op: Op) -> Result<Admitted, MempoolError> {
        let r = self.submit_op(op.clone())?;
        self.announce(Announce::Op(op));
        Ok(r)
    }

    /// Validate an op against the tip and add it to the mempool (blocking).
    pub fn submit_op(&self, op: Op) -> Result<Admitted, MempoolError> {
        let mut core = self.core.lock();
        let Core { chain, mempool } = &mut *core;
        let r = mempool.add(chain, op)?;
        self.pool_seq.fetch_add(1, Ordering::AcqRel);
        Ok(r)
    }

    /// A block template on the tip with ops from the mempool, or `None` if
    /// its timestamp would run further ahead of the clock than half the
    /// allowed drift (the caller should wait).
    pub fn template(&self) -> Result<Option<Template>, ChainError> {
        let core = self.core.lock();
        let tip_seq = self.tip_seq();
        let chain = &core.chain;
        let state = &chain.tip().state;
        let now = unix_now();
        let time = now.max(state.median_time_past() + 1);
        if time > now + self.params.max_future_drift / 2 {
            return Ok(None);
        }
        let (ops, state_root) = chain.template_ops(core.mempool.ops())?;
        let mut header = header_template(self.params, state, time);
        header.ops_root = ops_root(&ops.iter().map(Op::hash).collect::<Vec<_>>());
        header.state_root = state_root;
        Ok(Some(Template {
            header,
            ops,
            tip_seq,
        }))
    }

    /// Mine one block synchronously on this thread and submit it (tests and
    /// `regtest` tooling). Returns the block.
    pub fn mine_block(&self) -> Result<Block, ChainError> {
        loop {
            if let Some(b) = self.mine_block_within(std::time::Duration::from_secs(3600))? {
                return Ok(b);
            }
        }
    }

    /// [`Node::mine_block`], giving up (`None`) when no block can be mined
    /// within `wait`: the chain's recent timestamps are so far ahead of
    /// this node's clock that a new one would break the drift rule.
    pub fn mine_block_within(
        &self,
        wait: std::time::Duration,
    ) -> Result<Option<Block>, ChainError> {
        let give_up = std::time::Instant::now() + wait;
        loop {
            let Some(mut t) = self.template()? else {
                if std::time::Instant::now() >= give_up {
                    return Ok(None);
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
                continue;
            };
            let mut start = 0u64;
            while !xirtam_proofs::header::mine(&mut t.header, start, 1 << 20) {
                start += 1 << 20;
            }
            let block = Block {
                header: t.header,
                ops: t.ops,
            };
            self.submit_local_block(block.clone())?;
            return Ok(Some(block));
        }
    }
}
