//! Headers-first sync from one peer at a time.
//!
//! 1. Ask the peer for headers after our locator (at most
//!    [`MAX_HEADERS`](super::protocol::MAX_HEADERS)).
//! 2. Check them all (linkage, PoW, difficulty, timestamps) against the
//!    parent we hold (or the state after the previous batch), before
//!    fetching any body.
//! 3. Only once the checked header chain carries more work than our tip and
//!    the network's minimum chain work are its bodies fetched, in batches
//!    of [`BODY_BATCH`], and connected through the chain as synced blocks
//!    (admitted although their own branch may still be lighter; every rule
//!    runs, but below the network's assumed-valid block, when the header
//!    chain passes through it, op signatures are not checked). Until then,
//!    more headers (at most [`MAX_UNFETCHED`] ahead of the bodies). Each
//!    batch must continue the previous one: a session's headers are one
//!    chain.
//! 4. If the header batch was full, continue after its last header;
//!    otherwise the session ends and the peer's status is asked again.
//!
//! A peer that claimed more work than it then delivers (headers that do not
//! add up, an empty answer, a refusal, a timeout) gets a strike: a penalty,
//! and no new session with it until it reports another tip, so the next
//! candidate is tried.
//!
//! The state here is plain data; the network task drives it.

use std::collections::VecDeque;
use std::time::Instant;

use libp2p::PeerId;
use xirtam_proofs::{ChainState, Hash, U256};

/// Block bodies asked per request.
pub(super) const BODY_BATCH: usize = 64;

/// Most checked headers held before their chain outweighs ours and the
/// network's minimum chain work (32 bytes each: at most 32 MB, for the one
/// session at a time).
pub(super) const MAX_UNFETCHED: usize = 1_000_000;

/// One sync session.
#[derive(Debug)]
pub(super) struct Session {
    /// The peer synced from.
    pub peer: PeerId,
    /// Bodies still to fetch, in chain order.
    pub queue: VecDeque<Hash>,
    /// Last header received (next headers request continues after it).
    pub last_header: Option<Hash>,
    /// Was the last headers batch full (more may follow)?
    pub more_headers: bool,
    /// Headers received this session.
    pub headers: u64,
    /// Blocks connected this session.
    pub blocks: u64,
    /// Start time.
    pub started: Instant,
    /// Last progress log.
    pub last_log: Instant,
    /// Height the peer claimed when the session started.
    pub target_height: u64,
    /// Work the peer claimed when the session started: a session that
    /// ends with our tip below it did not deliver the claim.
    pub target_work: U256,
    /// State after the last checked header (the next batch continues it).
    pub checked: Option<ChainState>,
    /// Checked headers whose bodies we lack, held until the header chain
    /// carries more work than our tip.
    pub unfetched: Vec<Hash>,
    /// Did a checked batch hold the network's assumed-valid block? (The
    /// session's headers are one chain, so every block fetched at or below
    /// its height is its ancestor.)
    pub through_checkpoint: bool,
}

impl Session {
    /// A new session with `peer`, which claims a tip at `target_height`.
    pub(super) fn new(peer: PeerId, target_height: u64, target_work: U256) -> Self {
        let now = Instant::now();
        Session {
            peer,
            queue: VecDeque::new(),
            last_header: None,
            more_headers: false,
            headers: 0,
            blocks: 0,
            started: now,
            last_log: now,
            target_height,
            target_work,
            checked: None,
            unfetched: Vec::new(),
            through_checkpoint: false,
        }
    }

    /// The next body batch to ask for.
    pub(super) fn next_bodies(&mut self) -> Vec<Hash> {
        let n = self.queue.len().min(BODY_BATCH);
        self.queue.drain(..n).collect()
    }

    /// Blocks per second so far.
    pub(super) fn rate(&self) -> f64 {
        self.blocks as f64 / self.started.elapsed().as_secs_f64().max(1e-3)
    }
}
