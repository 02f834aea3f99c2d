//! Headers-first sync from one peer at a time.
//!
//! 1. Ask the peer for headers after our locator (at most
//!    [`MAX_HEADERS`](super::protocol::MAX_HEADERS)).
//! 2. Check them all (linkage, PoW, difficulty, timestamps) against the
//!    parent we hold, before fetching any body.
//! 3. Fetch the bodies we lack in batches of [`BODY_BATCH`], connecting each
//!    batch through the chain (every rule).
//! 4. If the header batch was full, continue after its last header;
//!    otherwise the session ends and the peer's status is asked again.
//!
//! The state here is plain data; the network task drives it.

use std::collections::VecDeque;
use std::time::Instant;

use libp2p::PeerId;
use xirtam_proofs::Hash;

/// Block bodies asked per request.
pub(super) const BODY_BATCH: usize = 64;

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
}

impl Session {
    /// A new session with `peer`, which claims a tip at `target_height`.
    pub(super) fn new(peer: PeerId, target_height: u64) -> Self {
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
