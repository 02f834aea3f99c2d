//! The light client: follows the most-work header chain across several
//! untrusted sources and resolves names against it.
//!
//! * **Sync.** Ask every source for its tip; try each source claiming more
//!   work than ours once, heaviest claim first (ties: lowest tip hash, then
//!   configuration order); find where its chain leaves ours (probes carry
//!   proof of work and must agree with the headers sent next); download its
//!   headers in batches and verify each one (linkage, proof of work, ASERT
//!   difficulty, timestamps, history root). A branch becomes our chain once
//!   it outweighs ours and every claim still untried; otherwise the
//!   heaviest verified branch is adopted after all were tried. A source
//!   whose data fails verification is faulty (remembered in the data
//!   directory for [`FAULT_EXPIRY`]); one that advertises a tip and then
//!   withholds it gets strikes, and [`STRIKES_TO_FAULT`] make it faulty.
//! * **Resolve.** Take the header `depth` blocks under the verified tip, ask a
//!   source for `dir_get(name, that height)`, and verify the proof against
//!   that header's `state_root`. A bad answer marks its source faulty and the
//!   next source is asked; only a verified answer is returned.

use std::collections::HashMap;

use parking_lot::{Mutex, RwLock};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use xirtam_proofs::header::{ChainState, Header, HeaderError};
use xirtam_proofs::op::{
    Claim, Commit, Draft, Op, Owners, Record, Value, Write, claim_commitment, commit_key,
};
use xirtam_proofs::params::Params;
use xirtam_proofs::state::{StateProofError, commit_entry_hash, verify_state, verify_state_hashed};
use xirtam_proofs::{Hash, Name, PublicKey, SecretKey, U256};

use crate::faults;
use crate::source::{MAX_HEADERS_PER_CALL, Source, SourceError, TipClaim};
use crate::store::{Branch, HeaderChain, LoadReport, StoreError};
use crate::verified::{Lookup, Verified};

/// Light-client settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The network; its genesis is the root of trust.
    pub params: &'static Params,
    /// Where the header store lives (`None`: memory only).
    pub datadir: Option<PathBuf>,
    /// Start from this trusted state instead of genesis (see
    /// [`LightClient::checkpoint`]); it must be for `params`' network.
    pub checkpoint: Option<Checkpoint>,
    /// Blocks under the verified tip a lookup is proven at (default: the
    /// network's `confirmation_depth`).
    pub depth: u64,
    /// A tip older than this makes lookups fail with [`Error::StaleTip`]
    /// (default: ten block intervals, at least a minute).
    pub max_tip_age: Duration,
    /// A chain whose difficulty has fallen to less than 1 / this of the
    /// network's anchor (block 1) is stale whatever its tip's timestamp
    /// says (default 4): under the difficulty rule that means it was mined
    /// more than two half-lives behind schedule, which is what a fork
    /// with fresh timestamps made from old history looks like (an eclipse).
    /// [`Error::StaleWork`].
    pub max_difficulty_drop: u64,
    /// Return lookups on a stale tip anyway (the age is in the result).
    pub allow_stale: bool,
    /// A lookup syncs first when the last sync is older than this.
    pub refresh: Duration,
    /// Longest wait for one answer from a source; the client enforces it
    /// whatever the source's own timeout (default 10 s).
    pub timeout: Duration,
    /// How long [`LightClient::publish`] waits for a claim's commitment to
    /// be mined and mature (default: `claim_maturity + 10` block intervals,
    /// at least 30 s).
    pub claim_timeout: Duration,
}

/// A claim between its two phases ([`LightClient::commit_claim`], then
/// [`LightClient::reveal`]). The salt is secret until the reveal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingClaim {
    /// The name to claim.
    pub name: Name,
    /// The commitment's secret salt.
    pub salt: [u8; 32],
    /// The commitment submitted.
    pub commitment: Hash,
}

/// A trusted starting point for a client: a verified [`ChainState`] and the
/// genesis of the network it belongs to. Hex form: the canonical encoding of
/// `(genesis hash, state)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Genesis hash of its network.
    pub genesis: Hash,
    /// The chain state at the checkpoint.
    pub state: ChainState,
}

/// Largest checkpoint accepted (bytes, decoded).
pub const MAX_CHECKPOINT_BYTES: usize = 16 * 1024;

impl Checkpoint {
    /// The hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(xirtam_proofs::encode(&(self.genesis, self.state.clone())))
    }

    /// Parse the hex form (untrusted input: size-capped; which network it
    /// is for is checked by [`LightClient::new`]).
    pub fn from_hex(s: &str) -> Result<Self, Error> {
        let bad = |why: String| Error::BadCheckpoint(why);
        let s = s.trim();
        if s.len() > 2 * MAX_CHECKPOINT_BYTES {
            return Err(bad(format!("longer than {MAX_CHECKPOINT_BYTES} bytes")));
        }
        let bytes = hex::decode(s).map_err(|e| bad(format!("not hex: {e}")))?;
        let (genesis, state): (Hash, ChainState) =
            xirtam_proofs::decode(&bytes).map_err(|e| bad(e.to_string()))?;
        Ok(Checkpoint { genesis, state })
    }
}

/// What a proof-checked query asks for.
enum Query<'a> {
    /// A name's record.
    Name(&'a Name),
    /// A claim commitment (and the name it is for, for messages).
    Commitment(&'a Name, &'a Hash),
}

impl Query<'_> {
    fn name(&self) -> &Name {
        match self {
            Query::Name(n) | Query::Commitment(n, _) => n,
        }
    }

    fn subject(&self) -> String {
        match self {
            Query::Name(n) => n.to_string(),
            Query::Commitment(_, c) => format!("commitment {c}"),
        }
    }
}

/// A verified answer to a [`Query`].
enum Answer {
    Record(Option<Record>),
    Commitment(Option<u64>),
}

impl Config {
    /// Defaults for `params`, in memory.
    pub fn new(params: &'static Params) -> Self {
        Config {
            params,
            datadir: None,
            checkpoint: None,
            depth: params.confirmation_depth,
            max_tip_age: Duration::from_secs((10 * params.block_interval).max(60)),
            max_difficulty_drop: 4,
            allow_stale: false,
            refresh: Duration::from_secs(params.block_interval.max(1)),
            timeout: Duration::from_secs(10),
            claim_timeout: Duration::from_secs(
                ((params.claim_maturity + 10) * params.block_interval).max(30),
            ),
        }
    }
}

/// Why the light client could not give a verified answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configured checkpoint belongs to another network.
    #[error(
        "the checkpoint is for another network (genesis {found}), not {network} (genesis {expected}): check --network and --checkpoint"
    )]
    CheckpointNetwork {
        /// The configured network's name.
        network: &'static str,
        /// Its genesis.
        expected: Hash,
        /// The checkpoint's.
        found: Hash,
    },
    /// The checkpoint text does not parse.
    #[error("not a checkpoint: {0}")]
    BadCheckpoint(String),
    /// A checkpoint cannot be exported from this chain.
    #[error("no checkpoint: {0}")]
    NoCheckpoint(String),
    /// No sources configured.
    #[error("no sources: give at least one node URL (two or more to tolerate a faulty one)")]
    NoSources,
    /// No source answered.
    #[error("no source is reachable: {}", .0.join("; "))]
    NoSourceReachable(Vec<String>),
    /// Every source that answered sent data that failed verification.
    #[error("every reachable source sent data that failed verification: {}", .0.join("; "))]
    AllSourcesFaulty(Vec<String>),
    /// No source gave a verifiable answer for this lookup.
    #[error("no source gave a verifiable answer for {name}: {}", .reasons.join("; "))]
    NoVerifiedAnswer {
        /// The name.
        name: Name,
        /// What each source did.
        reasons: Vec<String>,
    },
    /// The chain is not yet `depth` blocks above the base.
    #[error(
        "not enough confirmations yet: the verified tip is at height {tip_height}, a lookup needs {depth} blocks under it"
    )]
    NotEnoughConfirmations {
        /// Verified tip height.
        tip_height: u64,
        /// Required depth.
        depth: u64,
    },
    /// The lookup height is at or below the checkpoint, whose state root is
    /// not known.
    #[error(
        "lookup height {height} is not above the checkpoint at {checkpoint}; wait for more blocks or use an older checkpoint"
    )]
    BelowCheckpoint {
        /// Lookup height.
        height: u64,
        /// Checkpoint height.
        checkpoint: u64,
    },
    /// The best verified tip is too old: the sources may be eclipsing us, or
    /// the network has stalled.
    #[error(
        "stale tip: the best verified block (height {tip_height}) is {age_secs} s old, more than {max_secs} s; the sources may be cut off from the network (eclipse) or the network has stalled"
    )]
    StaleTip {
        /// Verified tip height.
        tip_height: u64,
        /// Its age.
        age_secs: u64,
        /// The configured bound.
        max_secs: u64,
    },
    /// No source showed a chain with the network's minimum work
    /// (`Params::min_chain_work`): the sources may all be an attacker's
    /// (an eclipse with a cheap chain), or still syncing.
    #[error(
        "no source showed a chain with the network's minimum work: the best verified chain (height {tip_height}) has work {work:#x}, the network's has at least {min:#x}; the sources may be cut off from the network (eclipse) or still syncing"
    )]
    BelowMinimumWork {
        /// Verified tip height.
        tip_height: u64,
        /// Its cumulative work.
        work: U256,
        /// The network's minimum.
        min: U256,
    },
    /// The best verified chain's tip has a fresh timestamp, but its
    /// difficulty has fallen far below the network's anchor: it was mined
    /// far behind schedule, as an eclipse chain forked from old history
    /// would be (or the network lost most of its hash power).
    #[error(
        "stale chain: at height {tip_height} the next block's target is {drop}x easier than the network's anchor (at most {max_drop}x allowed): the chain was mined far behind schedule; the sources may be cut off from the network (eclipse) or the network lost most of its hash power"
    )]
    StaleWork {
        /// Verified tip height.
        tip_height: u64,
        /// Next target over anchor target.
        drop: u64,
        /// The configured bound.
        max_drop: u64,
    },
    /// The header store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// [`LightClient::publish`]: the key does not own the name.
    #[error("key {key} is not an owner of {name}")]
    NotOwner {
        /// The name.
        name: Name,
        /// The signing key.
        key: PublicKey,
    },
    /// [`LightClient::publish`]: the value or owners break a rule.
    #[error("cannot write {name}: {reason}")]
    BadOp {
        /// The name.
        name: Name,
        /// Which rule.
        reason: String,
    },
    /// [`LightClient::publish`]: no source accepted the op.
    #[error("no source accepted the op for {name}: {}", .reasons.join("; "))]
    Refused {
        /// The name.
        name: Name,
        /// What each source said.
        reasons: Vec<String>,
    },
}

/// How a source has behaved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceStatus {
    /// Not asked yet.
    Unknown,
    /// Answered, nothing wrong found.
    Ok,
    /// Did not answer last time.
    Unreachable(String),
    /// Sent data that failed verification; never asked again.
    Faulty(String),
}

/// A source as reported by [`LightClient::sources`].
#[derive(Debug, Clone)]
pub struct SourceReport {
    /// Its label (URL).
    pub label: String,
    /// Its status.
    pub status: SourceStatus,
    /// Its last claimed tip `(height, hash, work)`, unverified.
    pub claimed_tip: Option<(u64, Hash, U256)>,
    /// Bytes received from it.
    pub bytes_received: u64,
}

/// The verified tip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tip {
    /// Height.
    pub height: u64,
    /// Hash.
    pub hash: Hash,
    /// Cumulative work.
    pub work: U256,
    /// Timestamp.
    pub time: u64,
    /// Height of the trusted base (0: genesis).
    pub base_height: u64,
}

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReport {
    /// Tip height before.
    pub from_height: u64,
    /// Tip height after.
    pub to_height: u64,
    /// Did the chain switch branches?
    pub reorged: bool,
    /// Headers verified and stored.
    pub headers: u64,
}

#[derive(Debug)]
struct Slot<S> {
    source: S,
    /// What is known of it, behind a lock held only for reads and updates
    /// (never across a request).
    st: Mutex<SlotState>,
}

#[derive(Debug)]
struct SlotState {
    status: SourceStatus,
    claim: Option<TipClaim>,
    genesis_checked: bool,
    /// Strikes since its last good sync.
    strikes: u32,
}

/// How a step against one source failed.
enum Fail {
    /// The source is wrong: mark it faulty.
    Fault(String),
    /// The source advertised a tip, then withheld, refused or delayed what
    /// is under it: counts towards [`STRIKES_TO_FAULT`].
    Strike(String),
    /// The source did not answer usefully this time.
    Transient(String),
}

/// `h` carries proof of work against its own target, and that target is no
/// easier than the network allows (a header with easier bits than
/// `pow_limit` costs nothing to make).
fn has_pow(params: &Params, h: &Header) -> bool {
    h.target().is_ok_and(|t| t <= params.pow_limit) && h.check_pow().is_ok()
}

/// A failed header request after the source advertised `claimed`.
fn withheld(claimed: u64, at: u64, e: SourceError) -> Fail {
    if e.is_fault() {
        Fail::Fault(e.to_string())
    } else {
        Fail::Strike(format!(
            "claimed a tip at height {claimed} but did not send the headers at {at}: {e}"
        ))
    }
}

/// `f`, or [`SourceError::Unreachable`] when it takes longer than `timeout`
/// (the client does not rely on a source implementation's own timeout).
async fn within<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(SourceError::Unreachable(format!(
            "no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// The whole fork search against one source, in request timeouts.
pub const FORK_SEARCH_TIMEOUTS: u32 = 3;

/// Strikes that make a source faulty.
pub const STRIKES_TO_FAULT: u32 = 3;

/// How long a faulty source is remembered (in the data directory, across
/// runs) before it is asked again.
pub const FAULT_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// How long a source made faulty by strikes is remembered.
pub const STRIKES_FAULT_EXPIRY: Duration = Duration::from_secs(3600);

/// Most bytes a source may send per header it owes in a download (a header
/// is about 323 bytes as hex JSON), plus a fixed allowance of 16 headers.
pub const HEADER_BYTES_BUDGET: u64 = 400;

impl From<SourceError> for Fail {
    fn from(e: SourceError) -> Self {
        if e.is_fault() {
            Fail::Fault(e.to_string())
        } else {
            Fail::Transient(e.to_string())
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A light client over sources of type `S`.
///
/// Every method takes `&self`: one client can be shared (in an `Arc`) by
/// many tasks. Locks are held only for in-memory reads and updates, never
/// across a request to a source, so a lookup runs while a sync is in
/// progress, against the chain verified so far; one sync runs at a time.
#[derive(Debug)]
pub struct LightClient<S> {
    config: Config,
    slots: Vec<Slot<S>>,
    chain: RwLock<HeaderChain>,
    last_sync: Mutex<Option<Instant>>,
    load: LoadReport,
    /// Faulty sources by label: until when (Unix seconds), and why.
    faults: Mutex<HashMap<String, (u64, String)>>,
    /// Held by the running sync.
    syncing: tokio::sync::Mutex<()>,
}

impl<S: Source> LightClient<S> {
    /// Open the header store (if any) and set up the sources. Nothing is
    /// fetched yet.
    pub fn new(config: Config, sources: Vec<S>) -> Result<Self, Error> {
        if sources.is_empty() {
            return Err(Error::NoSources);
        }
        let base = match &config.checkpoint {
            Some(cp) if cp.genesis != config.params.genesis_hash => {
                return Err(Error::CheckpointNetwork {
                    network: config.params.name,
                    expected: config.params.genesis_hash,
                    found: cp.genesis,
                });
            }
            Some(cp) => cp.state.clone(),
            None => ChainState::genesis(config.params),
        };
        let (chain, load) = match &config.datadir {
            Some(dir) => HeaderChain::open(config.params, base, dir)?,
            None => (
                HeaderChain::in_memory(config.params, base),
                LoadReport::default(),
            ),
        };
        let now = unix_now();
        let faults = match &config.datadir {
            Some(dir) => faults::load(dir, now),
            None => HashMap::new(),
        };
        let slots = sources
            .into_iter()
            .map(|source| Slot {
                st: Mutex::new(SlotState {
                    status: match faults.get(source.label()) {
                        Some((until, why)) => SourceStatus::Faulty(format!(
                            "{why} (remembered from an earlier run for {} more s)",
                            until.saturating_sub(now)
                        )),
                        None => SourceStatus::Unknown,
                    },
                    claim: None,
                    genesis_checked: false,
                    strikes: 0,
                }),
                source,
            })
            .collect();
        Ok(LightClient {
            config,
            slots,
            chain: RwLock::new(chain),
            last_sync: Mutex::new(None),
            load,
            faults: Mutex::new(faults),
            syncing: tokio::sync::Mutex::new(()),
        })
    }

    /// What opening the header store found.
    pub fn load_report(&self) -> &LoadReport {
        &self.load
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The verified tip.
    pub fn tip(&self) -> Tip {
        let chain = self.chain.read();
        let t = chain.tip();
        Tip {
            height: t.tip_height,
            hash: t.tip_hash,
            work: t.total_work(),
            time: t.tip_time(),
            base_height: chain.base().tip_height,
        }
    }

    /// Does the chain ending at `tip` carry the network's minimum work? A
    /// chain below it is never adopted, but the client starts at genesis
    /// (or a checkpoint), which may be below it until a sync succeeds.
    fn check_min_work(&self, tip: &ChainState) -> Result<(), Error> {
        let min = self.config.params.min_chain_work;
        if tip.total_work() < min {
            return Err(Error::BelowMinimumWork {
                tip_height: tip.tip_height,
                work: tip.total_work(),
                min,
            });
        }
        Ok(())
    }

    /// Is the chain ending at `tip` live? Its tip must be recent
    /// (`max_tip_age`), and - since a timestamp is whatever the miner
    /// wrote - its difficulty must not have fallen more than
    /// `max_difficulty_drop` times below the anchor's: the difficulty rule
    /// eases the target only for a chain behind schedule, so a fork made
    /// from old history with fresh timestamps must either do about the
    /// work of the blocks it skipped or show the drop.
    fn check_fresh(&self, tip: &ChainState) -> Result<(), Error> {
        let age = unix_now().saturating_sub(tip.tip_time());
        if age > self.config.max_tip_age.as_secs() {
            return Err(Error::StaleTip {
                tip_height: tip.tip_height,
                age_secs: age,
                max_secs: self.config.max_tip_age.as_secs(),
            });
        }
        let drop = difficulty_drop(self.config.params, tip);
        if drop > self.config.max_difficulty_drop {
            return Err(Error::StaleWork {
                tip_height: tip.tip_height,
                drop,
                max_drop: self.config.max_difficulty_drop,
            });
        }
        Ok(())
    }

    /// Hash of the verified chain's block at `height` (the base and
    /// above), e.g. to check that a proof of work names a recent block.
    pub fn hash_at(&self, height: u64) -> Option<Hash> {
        self.chain.read().hash_at(height)
    }

    /// Headers held above the base.
    pub fn headers_held(&self) -> usize {
        self.chain.read().len()
    }

    /// A checkpoint others can start from: the verified state `depth` blocks
    /// under the tip. Share it only over a channel you trust; it is as
    /// trusted as genesis. Refused unless this client synced in this run,
    /// the tip is fresh (not older than `max_tip_age`, whatever
    /// `allow_stale` says: a stale tip may be an eclipse) and the chain
    /// holds `depth` blocks above its base, so that only a settled state of
    /// a live chain is passed on.
    pub fn checkpoint(&self) -> Result<Checkpoint, Error> {
        if self.last_sync.lock().is_none() {
            return Err(Error::NoCheckpoint("sync first".into()));
        }
        let chain = self.chain.read();
        let tip = chain.tip();
        self.check_min_work(tip)?;
        self.check_fresh(tip)?;
        let base = chain.base().tip_height;
        let Some(at) = tip
            .tip_height
            .checked_sub(self.config.depth)
            .filter(|&h| h > base)
        else {
            return Err(Error::NoCheckpoint(format!(
                "the chain needs more than {} blocks above its base (height {base}) to give a settled one; it has {}",
                self.config.depth,
                tip.tip_height - base
            )));
        };
        Ok(Checkpoint {
            genesis: self.config.params.genesis_hash,
            state: chain.branch_from(at)?.state().clone(),
        })
    }

    /// The sources and what is known of them.
    pub fn sources(&self) -> Vec<SourceReport> {
        self.slots
            .iter()
            .map(|s| {
                let st = s.st.lock();
                SourceReport {
                    label: s.source.label().to_owned(),
                    status: st.status.clone(),
                    claimed_tip: st.claim.as_ref().map(|c| (c.height, c.hash, c.work)),
                    bytes_received: s.source.bytes_received(),
                }
            })
            .collect()
    }

    /// Bytes received from all sources.
    pub fn bytes_received(&self) -> u64 {
        self.slots.iter().map(|s| s.source.bytes_received()).sum()
    }

    /// Follow the most-work chain the sources offer.
    pub async fn sync(&self) -> Result<SyncReport, Error> {
        self.sync_with(&mut |_, _| {}).await
    }

    /// [`Self::sync`], calling `progress(height, target)` after each batch.
    ///
    /// Every source whose claimed tip beats our chain is tried once,
    /// heaviest claim first; a source that fails is not asked again in
    /// this sync, so a liar cannot keep the sync to itself. A branch
    /// becomes our chain as it verifies only once it outweighs both our
    /// chain and every claim still untried; otherwise it is held, and the
    /// heaviest verified branch is adopted after every candidate was tried.
    pub async fn sync_with(
        &self,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<SyncReport, Error> {
        let running = self.syncing.lock().await;
        self.sync_running(running, progress).await
    }

    /// The sync itself, while `_running` (the sync lock) is held.
    async fn sync_running(
        &self,
        _running: tokio::sync::MutexGuard<'_, ()>,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<SyncReport, Error> {
        let from_height = self.chain.read().tip().tip_height;
        let start_hash = self.chain.read().tip().tip_hash;
        let mut headers = 0u64;
        self.poll_tips().await;
        let order = self.candidates(self.chain.read().tip().total_work());
        let mut held: Option<Branch> = None;
        for (k, &i) in order.iter().enumerate() {
            let held_work = held.as_ref().map_or(U256::zero(), Branch::work);
            let settled = self.chain.read().tip().total_work().max(held_work);
            if self.slots[i]
                .st
                .lock()
                .claim
                .as_ref()
                .is_none_or(|c| c.work <= settled)
            {
                // Its claim cannot beat what already verified.
                continue;
            }
            let untried = order[k + 1..]
                .iter()
                .filter_map(|&j| self.slots[j].st.lock().claim.as_ref().map(|c| c.work))
                .max()
                .unwrap_or_default();
            let (result, rest) = self
                .sync_from(i, untried.max(held_work), progress, &mut headers)
                .await;
            if rest.work() > self.chain.read().tip().total_work()
                && rest.work() > held.as_ref().map_or(U256::zero(), Branch::work)
            {
                held = Some(rest);
            }
            match result {
                Ok(()) => self.slots[i].st.lock().strikes = 0,
                Err(Fail::Fault(why)) => self.mark_faulty(i, why),
                Err(Fail::Strike(why)) => self.strike(i, why),
                Err(Fail::Transient(why)) => {
                    tracing::debug!(target: "lightclient::sync", source = self.slots[i].source.label(), "{why}");
                    self.slots[i].st.lock().status = SourceStatus::Unreachable(why);
                }
            }
        }
        // The heaviest branch that verified but was held back, if nothing
        // heavier was adopted since (its fork point is still ours).
        if let Some(mut b) = held {
            let mut chain = self.chain.write();
            if chain.hash_at(b.fork()) == Some(b.fork_hash())
                && b.work() > chain.tip().total_work()
                && b.work() >= self.config.params.min_chain_work
            {
                chain.commit(&mut b)?;
            }
        }
        self.check_any_usable()?;
        self.check_min_work(self.chain.read().tip())?;
        *self.last_sync.lock() = Some(Instant::now());
        let chain = self.chain.read();
        Ok(SyncReport {
            from_height,
            to_height: chain.tip().tip_height,
            reorged: chain.hash_at(from_height) != Some(start_hash),
            headers,
        })
    }

    fn mark_faulty(&self, i: usize, why: String) {
        self.mark_faulty_for(i, why, FAULT_EXPIRY);
    }

    /// Mark source `i` faulty for `expiry` (remembered in the data
    /// directory).
    fn mark_faulty_for(&self, i: usize, why: String, expiry: Duration) {
        tracing::warn!(target: "lightclient::sources", source = self.slots[i].source.label(), "faulty: {why}");
        self.slots[i].st.lock().status = SourceStatus::Faulty(why.clone());
        let until = unix_now().saturating_add(expiry.as_secs());
        let mut all = self.faults.lock();
        all.insert(self.slots[i].source.label().to_owned(), (until, why));
        if let Some(dir) = &self.config.datadir
            && let Err(e) = faults::save(dir, &all)
        {
            tracing::warn!(target: "lightclient::sources", "cannot remember faulty sources: {e}");
        }
    }

    /// A source advertised a tip, then withheld or refused what is under
    /// it (or sent a header ahead of our clock): after
    /// [`STRIKES_TO_FAULT`] strikes without a good sync it is faulty.
    fn strike(&self, i: usize, why: String) {
        let strikes = {
            let mut st = self.slots[i].st.lock();
            st.strikes += 1;
            if st.strikes < STRIKES_TO_FAULT {
                st.status = SourceStatus::Unreachable(why.clone());
            }
            st.strikes
        };
        tracing::info!(target: "lightclient::sources", source = self.slots[i].source.label(), strikes, "strike: {why}");
        if strikes >= STRIKES_TO_FAULT {
            // Withholding may be an honest node going down: a shorter
            // memory than for data that failed verification.
            self.mark_faulty_for(
                i,
                format!("{STRIKES_TO_FAULT} strikes; the last: {why}"),
                STRIKES_FAULT_EXPIRY,
            );
        }
    }

    /// Fail when no source answered or every one that did is faulty.
    fn check_any_usable(&self) -> Result<(), Error> {
        let statuses: Vec<SourceStatus> = self
            .slots
            .iter()
            .map(|s| s.st.lock().status.clone())
            .collect();
        if statuses.contains(&SourceStatus::Ok) {
            return Ok(());
        }
        let describe = |s: &Slot<S>, why: &str| format!("{}: {why}", s.source.label());
        let faults: Vec<String> = self
            .slots
            .iter()
            .zip(&statuses)
            .filter_map(|(s, st)| match st {
                SourceStatus::Faulty(w) => Some(describe(s, w)),
                _ => None,
            })
            .collect();
        let all: Vec<String> = self
            .slots
            .iter()
            .zip(&statuses)
            .map(|(s, st)| match st {
                SourceStatus::Faulty(w) => describe(s, &format!("faulty: {w}")),
                SourceStatus::Unreachable(w) => describe(s, w),
                _ => describe(s, "no answer"),
            })
            .collect();
        if faults.len() == self.slots.len() {
            Err(Error::AllSourcesFaulty(faults))
        } else if faults.is_empty() {
            Err(Error::NoSourceReachable(all))
        } else {
            Err(Error::AllSourcesFaulty(all))
        }
    }

    /// Ask every non-faulty source for its tip (concurrently, each within
    /// the request timeout).
    async fn poll_tips(&self) {
        let genesis = self.config.params.genesis_hash;
        let timeout = self.config.timeout;
        let answers = futures::future::join_all(self.slots.iter().map(|s| async move {
            let (faulty, genesis_checked) = {
                let st = s.st.lock();
                (
                    matches!(st.status, SourceStatus::Faulty(_)),
                    st.genesis_checked,
                )
            };
            if faulty {
                return None;
            }
            if !genesis_checked {
                match within(timeout, s.source.genesis()).await {
                    Ok(g) if g == genesis => {}
                    Ok(g) => {
                        return Some(Err(Fail::Fault(format!(
                            "runs another network (genesis {g})"
                        ))));
                    }
                    Err(e) => return Some(Err(e.into())),
                }
            }
            Some(within(timeout, s.source.tip()).await.map_err(Fail::from))
        }))
        .await;
        for (i, a) in answers.into_iter().enumerate() {
            let Some(a) = a else { continue };
            match a {
                Ok(c) if c.header.hash() != c.hash || c.header.height != c.height => {
                    self.mark_faulty(i, "its tip header is not the tip it names".into());
                }
                Ok(c) if !has_pow(self.config.params, &c.header) => {
                    self.mark_faulty(i, "its tip header lacks its proof of work".into());
                }
                Ok(c) => {
                    let mut st = self.slots[i].st.lock();
                    st.genesis_checked = true;
                    st.status = SourceStatus::Ok;
                    st.claim = Some(c);
                }
                Err(Fail::Fault(why)) => self.mark_faulty(i, why),
                Err(Fail::Transient(why) | Fail::Strike(why)) => {
                    let mut st = self.slots[i].st.lock();
                    st.status = SourceStatus::Unreachable(why);
                    st.claim = None;
                }
            }
        }
    }

    /// The answering sources claiming more work than `ours`, heaviest
    /// claim first; ties go to the lowest tip hash, then the earliest
    /// configured.
    fn candidates(&self, ours: U256) -> Vec<usize> {
        let mut c: Vec<(usize, TipClaim)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let st = s.st.lock();
                (st.status == SourceStatus::Ok)
                    .then(|| st.claim.clone().map(|c| (i, c)))
                    .flatten()
            })
            .filter(|(_, c)| c.work > ours)
            .collect();
        c.sort_by(|(i, a), (j, b)| {
            b.work
                .cmp(&a.work)
                .then_with(|| a.hash.cmp(&b.hash))
                .then_with(|| i.cmp(j))
        });
        c.into_iter().map(|(i, _)| i).collect()
    }

    /// One header of source `i` at `h`, for the fork search.
    async fn probe(&self, i: usize, h: u64, claimed: u64) -> Result<Header, Fail> {
        let src = &self.slots[i].source;
        let got = within(self.config.timeout, src.headers(h, 1))
            .await
            .map_err(|e| withheld(claimed, h, e))?;
        let Some(theirs) = got.first() else {
            return Err(Fail::Strike(format!(
                "claimed a tip at height {claimed} but has no header at {h}"
            )));
        };
        if theirs.height != h {
            return Err(Fail::Fault(format!(
                "sent the header of height {} when asked for {h}",
                theirs.height
            )));
        }
        Ok(*theirs)
    }

    /// Highest height where source `i`'s chain and ours agree: search back
    /// exponentially from `below` for a header we share (a match is
    /// checked against our own verified header), then bisect down to the
    /// first height that differs. Returns the fork point and the headers
    /// the source said differ; they carry proof of work and are checked
    /// against the branch it then sends, so lying about the fork point to
    /// make us download again what we hold is caught in the first batch.
    async fn find_fork(&self, i: usize, below: u64) -> Result<(u64, Vec<(u64, Hash)>), Fail> {
        let base = self.chain.read().base().tip_height;
        let mut probes = Vec::new();
        let mut differs: Option<u64> = None;
        let mut h = below.min(self.chain.read().tip().tip_height).max(base);
        let mut step = 1u64;
        let mut agree = loop {
            let theirs = self.probe(i, h, below).await?;
            if Some(theirs.hash()) == self.chain.read().hash_at(h) {
                break h;
            }
            if h == base {
                return Err(Fail::Fault(if base == 0 {
                    "its chain does not start at our genesis".into()
                } else {
                    format!("its chain does not contain our checkpoint at {base}")
                }));
            }
            if !has_pow(self.config.params, &theirs) {
                return Err(Fail::Fault(format!(
                    "its header at {h} lacks its proof of work"
                )));
            }
            probes.push((h, theirs.hash()));
            differs = Some(h);
            h = h.saturating_sub(step).max(base);
            step = step.saturating_mul(2);
        };
        while let Some(d) = differs
            && d > agree + 1
        {
            let mid = agree + (d - agree) / 2;
            let theirs = self.probe(i, mid, below).await?;
            if Some(theirs.hash()) == self.chain.read().hash_at(mid) {
                agree = mid;
            } else {
                if !has_pow(self.config.params, &theirs) {
                    return Err(Fail::Fault(format!(
                        "its header at {mid} lacks its proof of work"
                    )));
                }
                probes.push((mid, theirs.hash()));
                differs = Some(mid);
            }
        }
        Ok((agree, probes))
    }

    /// Download and verify source `i`'s chain up to its claimed tip. The
    /// branch becomes our chain as it verifies once it outweighs our chain
    /// and `bar` (the heaviest claim still untried, or a branch held);
    /// whatever verified but was not adopted is returned.
    async fn sync_from(
        &self,
        i: usize,
        bar: U256,
        progress: &mut (dyn FnMut(u64, u64) + Send),
        counted: &mut u64,
    ) -> (Result<(), Fail>, Branch) {
        let claim = self.slots[i].st.lock().claim.clone();
        let Some(claim) = claim else {
            return (Ok(()), self.tip_branch());
        };
        // The search is a few dozen one-header requests: three timeouts
        // in all, however slowly each is answered.
        let search = tokio::time::timeout(
            self.config.timeout.saturating_mul(FORK_SEARCH_TIMEOUTS),
            self.find_fork(i, claim.height),
        );
        let (fork, probes) = match search.await {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => return (Err(e), self.tip_branch()),
            Err(_) => {
                return (
                    Err(Fail::Strike(format!(
                        "its fork search took longer than {FORK_SEARCH_TIMEOUTS} timeouts"
                    ))),
                    self.tip_branch(),
                );
            }
        };
        let branch = self.chain.read().branch_from(fork);
        let mut branch = match branch {
            Ok(b) => b,
            Err(e) => {
                return (
                    Err(Fail::Transient(format!("header store: {e}"))),
                    self.tip_branch(),
                );
            }
        };
        let result = self
            .download(i, &claim, &probes, bar, &mut branch, progress, counted)
            .await;
        (result, branch)
    }

    /// The download loop of [`Self::sync_from`], within the source's
    /// budgets: each request within the timeout, the whole download
    /// within `2 + batches / 4` timeouts, and at most
    /// [`HEADER_BYTES_BUDGET`] bytes received per header needed.
    #[allow(clippy::too_many_arguments)]
    async fn download(
        &self,
        i: usize,
        claim: &TipClaim,
        probes: &[(u64, Hash)],
        bar: U256,
        branch: &mut Branch,
        progress: &mut (dyn FnMut(u64, u64) + Send),
        counted: &mut u64,
    ) -> Result<(), Fail> {
        let params = self.config.params;
        let fork = branch.fork();
        let needed = claim.height.saturating_sub(fork);
        let batches = needed.div_ceil(u64::from(MAX_HEADERS_PER_CALL));
        let budget = self.config.timeout.saturating_mul(2).saturating_add(
            (self.config.timeout / 4).saturating_mul(u32::try_from(batches).unwrap_or(u32::MAX)),
        );
        let deadline = Instant::now()
            .checked_add(budget)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        let bytes_at_start = self.slots[i].source.bytes_received();
        let byte_budget = needed
            .saturating_add(16)
            .saturating_mul(HEADER_BYTES_BUDGET);
        let mut next = fork + 1;
        while next <= claim.height {
            if Instant::now() > deadline {
                return Err(Fail::Strike(format!(
                    "too slow: {} of {needed} headers within its time budget",
                    next - fork - 1
                )));
            }
            let want = (claim.height - next + 1).min(u64::from(MAX_HEADERS_PER_CALL)) as u32;
            let hs = within(
                self.config.timeout,
                self.slots[i].source.headers(next, want),
            )
            .await
            .map_err(|e| withheld(claim.height, next, e))?;
            if hs.is_empty() {
                return Err(Fail::Strike(format!(
                    "claimed a tip at height {} but has no header at {next}",
                    claim.height
                )));
            }
            let received = self.slots[i].source.bytes_received() - bytes_at_start;
            if received > byte_budget {
                return Err(Fail::Fault(format!(
                    "sent {received} bytes for {needed} headers"
                )));
            }
            let got = hs.len() as u64;
            let res = branch.extend(params, &hs, unix_now());
            let valid = branch.state().tip_height.saturating_sub(next - 1);
            *counted += valid;
            // What it said in the fork search must be what it now sends.
            if let Some((h, _)) = probes
                .iter()
                .find(|(h, hash)| branch.hash_at(*h).is_some_and(|x| x != *hash))
            {
                // A strike, not a fault: an honest source may have
                // reorganised between the search and the download.
                return Err(Fail::Strike(format!(
                    "its headers contradict the header it sent for height {h} in the fork search"
                )));
            }
            // The network's compiled checkpoint: a branch through another
            // block at its height is not the network's chain, however
            // much work it claims.
            if let Some(cp) = params.assume_valid
                && branch.hash_at(cp.height).is_some_and(|h| h != cp.hash)
            {
                // Not even its valid prefix may be adopted later.
                *branch = self.tip_branch();
                return Err(Fail::Fault(format!(
                    "its chain does not pass through the network's checkpoint at height {}",
                    cp.height
                )));
            }
            if let Err(e) = res {
                // Keep what verified if it is already better than ours.
                self.commit_if_heavier(branch, bar)?;
                return Err(match e.error {
                    HeaderError::TimeTooNew { .. } => Fail::Strike(format!(
                        "header {} is ahead of our clock ({})",
                        e.height, e.error
                    )),
                    _ => Fail::Fault(format!("sent an invalid header: {e}")),
                });
            }
            next += got;
            self.commit_if_heavier(branch, bar)?;
            if got < u64::from(want) && next <= claim.height {
                // Fewer than asked, below the tip it claimed: withholding
                // (this also stops a source that drip-feeds headers to
                // stretch a budget sized by its claim).
                return Err(Fail::Strike(format!(
                    "sent {got} headers at {} when {want} were asked, below the tip it claimed at {}",
                    next - got,
                    claim.height
                )));
            }
            progress(
                branch
                    .state()
                    .tip_height
                    .max(self.chain.read().tip().tip_height),
                claim.height,
            );
        }
        let reached = branch.state();
        if reached.tip_hash == claim.hash && reached.total_work() != claim.work {
            return Err(Fail::Fault(format!(
                "claimed work {:#x} at height {}, but its headers add up to {:#x}",
                claim.work,
                claim.height,
                reached.total_work()
            )));
        }
        if reached.tip_hash != claim.hash {
            // Its chain moved while we downloaded; the next sync re-asks.
            return Err(Fail::Transient(
                "its chain changed during the download".into(),
            ));
        }
        Ok(())
    }

    /// Adopt `branch` when it carries more work than our chain and than
    /// `bar`, and at least the network's minimum chain work (a cheap chain
    /// forked from early history must not become a fresh client's view).
    fn commit_if_heavier(&self, branch: &mut Branch, bar: U256) -> Result<(), Fail> {
        let mut chain = self.chain.write();
        if branch.work() > chain.tip().total_work()
            && branch.work() > bar
            && branch.work() >= self.config.params.min_chain_work
        {
            chain
                .commit(branch)
                .map_err(|e| Fail::Transient(format!("cannot store headers: {e}")))?;
        }
        Ok(())
    }

    /// An empty branch at our tip.
    fn tip_branch(&self) -> Branch {
        self.chain.read().tip_branch()
    }

    /// Is a sync due (none yet, or the last is older than `refresh`)?
    fn sync_due(&self) -> bool {
        self.last_sync
            .lock()
            .is_none_or(|t| t.elapsed() >= self.config.refresh)
    }

    /// Sync when due, unless another task is syncing: then go on with the
    /// chain verified so far rather than wait for that sync.
    async fn sync_if_due(&self) -> Result<(), Error> {
        if self.sync_due()
            && let Ok(running) = self.syncing.try_lock()
        {
            self.sync_running(running, &mut |_, _| {}).await?;
        }
        Ok(())
    }

    /// Resolve `name`: its record, or proven absence, at `depth` blocks under
    /// the verified tip. Syncs first when the last sync is older than
    /// `refresh`.
    pub async fn resolve(&self, name: &Name) -> Result<Verified<Lookup>, Error> {
        self.sync_if_due().await?;
        self.resolve_synced(name).await
    }

    /// Resolve against the chain as it is, without syncing first.
    pub async fn resolve_synced(&self, name: &Name) -> Result<Verified<Lookup>, Error> {
        self.resolve_at_depth(name, self.config.depth).await
    }

    /// Resolve `name` at the verified tip itself (depth 0), syncing first
    /// when due: the newest state, for writers choosing the next nonce and
    /// for watching an own write land. Users of the answer should wait for
    /// [`LightClient::resolve`] before relying on it.
    pub async fn resolve_latest(&self, name: &Name) -> Result<Verified<Lookup>, Error> {
        self.sync_if_due().await?;
        self.resolve_at_depth(name, 0).await
    }

    /// Write `value` to `name`: update it when `key` owns it (one signed
    /// op with the next nonce from a verified lookup at the tip), or claim
    /// it when nobody holds it, in two phases: [`LightClient::commit_claim`],
    /// then wait (syncing, at most [`Config::claim_timeout`]) until the
    /// commitment is verified on chain and mature, then
    /// [`LightClient::reveal`]. `owners` defaults to `key` alone for a claim
    /// and to the current owners for an update. Returns the write once a
    /// source accepted it; it lands when a block includes it, which verified
    /// lookups show.
    pub async fn publish(
        &self,
        key: &SecretKey,
        name: &Name,
        value: Vec<u8>,
        owners: Option<Vec<PublicKey>>,
    ) -> Result<Write, Error> {
        self.sync().await?;
        let latest = self.resolve_at_depth(name, 0).await?;
        let me = key.public();
        let current = match latest.record() {
            None => None,
            Some(r) if !r.owners.contains(&me) => {
                return Err(Error::NotOwner {
                    name: name.clone(),
                    key: me,
                });
            }
            Some(r) => Some((r.nonce + 1, r.owners.clone())),
        };
        let Some((nonce, current_owners)) = current else {
            let pending = self.commit_claim(key, name).await?;
            let deadline = Instant::now() + self.config.claim_timeout;
            let pause =
                Duration::from_millis((self.config.params.block_interval * 250).clamp(50, 2000));
            let commit_height = loop {
                self.sync().await?;
                if let Some(h) = self.commitment_height(&pending).await? {
                    // The reveal goes into the block after our tip at the
                    // earliest.
                    if self.chain.read().tip().tip_height + 1
                        >= h + self.config.params.claim_maturity
                    {
                        break h;
                    }
                }
                if Instant::now() > deadline {
                    return Err(Error::BadOp {
                        name: name.clone(),
                        reason: format!(
                            "the claim's commitment was not mined and {} blocks deep within {:?}",
                            self.config.params.claim_maturity, self.config.claim_timeout
                        ),
                    });
                }
                tokio::time::sleep(pause).await;
            };
            return self
                .reveal(key, &pending, commit_height, value, owners)
                .await;
        };
        let owners = match owners {
            Some(keys) => Owners::new(keys).ok_or_else(|| Error::BadOp {
                name: name.clone(),
                reason: "between 1 and 16 owners".into(),
            })?,
            None => current_owners,
        };
        self.sign_and_submit(key, name, nonce, owners, value, None)
            .await
    }

    /// First phase of a claim: submit a hiding commitment to claiming
    /// `name` with `key` (a fresh random salt) to every usable source.
    /// Keep the returned value for [`LightClient::reveal`].
    pub async fn commit_claim(&self, key: &SecretKey, name: &Name) -> Result<PendingClaim, Error> {
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).map_err(|e| Error::BadOp {
            name: name.clone(),
            reason: format!("no OS randomness for the claim's salt: {e}"),
        })?;
        let params = self.config.params;
        let commitment = claim_commitment(params, name, &key.public(), &salt);
        let mut c = Commit::new(commitment, self.anchor(name)?);
        let mut start = 0u64;
        while !c.solve_stamp(params, start, 1 << 16) {
            start += 1 << 16;
            tokio::task::yield_now().await;
        }
        self.submit_everywhere(name, &Op::Commit(c)).await?;
        tracing::info!(target: "lightclient", %name, %commitment, "claim commitment submitted");
        Ok(PendingClaim {
            name: name.clone(),
            salt,
            commitment,
        })
    }

    /// The height `pending`'s commitment was mined at, verified at our tip
    /// (depth 0), or `None` while it is not on chain.
    pub async fn commitment_height(&self, pending: &PendingClaim) -> Result<Option<u64>, Error> {
        let v = self
            .query_at_depth(&Query::Commitment(&pending.name, &pending.commitment), 0)
            .await?;
        Ok(match v.into_inner() {
            Answer::Commitment(h) => h,
            Answer::Record(_) => None,
        })
    }

    /// Second phase of a claim: sign and submit the reveal of `pending`
    /// (its commitment mined at `commit_height`) with `value` and `owners`
    /// (default: `key` alone).
    pub async fn reveal(
        &self,
        key: &SecretKey,
        pending: &PendingClaim,
        commit_height: u64,
        value: Vec<u8>,
        owners: Option<Vec<PublicKey>>,
    ) -> Result<Write, Error> {
        let name = &pending.name;
        let owners = match owners {
            Some(keys) => Owners::new(keys).ok_or_else(|| Error::BadOp {
                name: name.clone(),
                reason: "between 1 and 16 owners".into(),
            })?,
            None => Owners::single(key.public()),
        };
        let claim = Claim {
            salt: pending.salt,
            commit_height,
        };
        self.sign_and_submit(key, name, 1, owners, value, Some(claim))
            .await
    }

    /// The hash of the verified block to anchor a new op at.
    fn anchor(&self, name: &Name) -> Result<Hash, Error> {
        let chain = self.chain.read();
        let tip = chain.tip().tip_height;
        let at = self
            .config
            .params
            .anchor_height(tip)
            .max(chain.base().tip_height);
        chain.hash_at(at).ok_or_else(|| Error::BadOp {
            name: name.clone(),
            reason: "no verified block to anchor the op at".into(),
        })
    }

    async fn sign_and_submit(
        &self,
        key: &SecretKey,
        name: &Name,
        nonce: u64,
        owners: Owners,
        value: Vec<u8>,
        claim: Option<Claim>,
    ) -> Result<Write, Error> {
        let bad = |reason: String| Error::BadOp {
            name: name.clone(),
            reason,
        };
        let len = value.len();
        let value =
            Value::new(value).ok_or_else(|| bad(format!("value of {len} bytes is too long")))?;
        let params = self.config.params;
        let mut w = Draft {
            key: name.clone(),
            nonce,
            owners,
            value,
            claim,
            anchor: self.anchor(name)?,
        }
        .sign(params, key);
        let mut start = 0u64;
        while !w.solve_stamp(params, start, 1 << 16) {
            start += 1 << 16;
            tokio::task::yield_now().await;
        }
        let op = Op::Write(w.clone());
        op.check_stateless(params).map_err(|e| bad(e.to_string()))?;
        self.submit_everywhere(name, &op).await?;
        tracing::info!(target: "lightclient", %name, nonce, claim = w.claim.is_some(), "op submitted");
        Ok(w)
    }

    /// Hand `op` to every usable source; fine when one took it.
    async fn submit_everywhere(&self, name: &Name, op: &Op) -> Result<(), Error> {
        let mut reasons = Vec::new();
        let mut accepted = false;
        for slot in self
            .slots
            .iter()
            .filter(|s| !matches!(s.st.lock().status, SourceStatus::Faulty(_)))
        {
            match within(self.config.timeout, slot.source.submit(op)).await {
                Ok(()) => accepted = true,
                Err(e) => reasons.push(format!("{}: {e}", slot.source.label())),
            }
        }
        if accepted {
            Ok(())
        } else {
            Err(Error::Refused {
                name: name.clone(),
                reasons,
            })
        }
    }

    /// Resolve `name` at `depth` blocks under the verified tip, against the
    /// chain as it is (no sync first; a sync running in another task is
    /// not waited for).
    pub async fn resolve_at(&self, name: &Name, depth: u64) -> Result<Verified<Lookup>, Error> {
        self.resolve_at_depth(name, depth).await
    }

    /// Resolve `name` with a proof at `depth` blocks under the verified tip.
    async fn resolve_at_depth(&self, name: &Name, depth: u64) -> Result<Verified<Lookup>, Error> {
        let v = self.query_at_depth(&Query::Name(name), depth).await?;
        Ok(v.map(|a| Lookup {
            name: name.clone(),
            record: match a {
                Answer::Record(r) => r,
                Answer::Commitment(_) => None,
            },
        }))
    }

    /// Answer `q` with a proof at `depth` blocks under the verified tip,
    /// asking sources in turn until one answer verifies.
    async fn query_at_depth(&self, q: &Query<'_>, depth: u64) -> Result<Verified<Answer>, Error> {
        let tip = self.chain.read().tip().clone();
        let age = unix_now().saturating_sub(tip.tip_time());
        self.check_min_work(&tip)?;
        if !self.config.allow_stale {
            self.check_fresh(&tip)?;
        }
        let Some(at) = tip.tip_height.checked_sub(depth) else {
            return Err(Error::NotEnoughConfirmations {
                tip_height: tip.tip_height,
                depth,
            });
        };
        let (header, hash, base) = {
            let chain = self.chain.read();
            (
                chain.header_at(at),
                chain.hash_at(at),
                chain.base().tip_height,
            )
        };
        let (Some(header), Some(hash)) = (header, hash) else {
            return Err(Error::BelowCheckpoint {
                height: at,
                checkpoint: base,
            });
        };
        let subject = q.subject();
        let mut reasons = Vec::new();
        for i in self.lookup_order(at) {
            let label = self.slots[i].source.label().to_owned();
            let source = &self.slots[i].source;
            let got = match q {
                Query::Name(n) => within(self.config.timeout, source.dir_get(n, at))
                    .await
                    .map(|a| (a.height, a.block_hash, Answer::Record(a.record), a.proof)),
                Query::Commitment(_, c) => within(self.config.timeout, source.commitment(c, at))
                    .await
                    .map(|a| {
                        (
                            a.height,
                            a.block_hash,
                            Answer::Commitment(a.mined_at),
                            a.proof,
                        )
                    }),
            };
            match got {
                Err(e) if e.is_fault() => {
                    reasons.push(format!("{label}: faulty: {e}"));
                    self.mark_faulty(i, e.to_string());
                }
                Err(e) => {
                    reasons.push(format!("{label}: {e}"));
                    // It advertised a chain through this block: not
                    // answering (or answering late) is withholding.
                    if self.holds(i, at) {
                        self.strike(
                            i,
                            format!("advertised a chain through height {at} but did not answer a lookup there: {e}"),
                        );
                    }
                }
                Ok((height, _, _, _)) if height != at => {
                    let why = format!("answered for height {height} when asked for {at}");
                    reasons.push(format!("{label}: faulty: {why}"));
                    self.mark_faulty(i, why);
                }
                Ok((_, block_hash, _, _)) if block_hash != hash => {
                    reasons.push(format!(
                        "{label}: its block at {at} is {block_hash}, not ours (another branch)"
                    ));
                }
                Ok((_, _, answer, proof)) => {
                    let verified = match (&answer, q) {
                        (Answer::Record(r), Query::Name(n)) => {
                            verify_state(&header.state_root, n, r.as_ref(), &proof)
                        }
                        (Answer::Commitment(h), Query::Commitment(_, c)) => verify_state_hashed(
                            &header.state_root,
                            &commit_key(c),
                            h.map(commit_entry_hash).as_ref(),
                            &proof,
                        ),
                        _ => Err(StateProofError::RootMismatch),
                    };
                    match verified {
                        Ok(()) => {
                            return Ok(Verified::new(answer, at, hash, tip.tip_height, age, label));
                        }
                        Err(e) => {
                            let why =
                                format!("its proof for {subject} at {at} does not verify: {e}");
                            reasons.push(format!("{label}: faulty: {why}"));
                            self.mark_faulty(i, why);
                        }
                    }
                }
            }
        }
        if self
            .slots
            .iter()
            .all(|s| matches!(s.st.lock().status, SourceStatus::Faulty(_)))
        {
            return Err(Error::AllSourcesFaulty(reasons));
        }
        Err(Error::NoVerifiedAnswer {
            name: q.name().clone(),
            reasons,
        })
    }

    /// Non-faulty sources, those whose claimed tip is on our chain at or
    /// above `at` first, then fewest strikes, then configuration order.
    fn lookup_order(&self, at: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.slots.len())
            .filter(|&i| !matches!(self.slots[i].st.lock().status, SourceStatus::Faulty(_)))
            .collect();
        order.sort_by_key(|&i| (!self.holds(i, at), self.slots[i].st.lock().strikes));
        order
    }

    /// Did source `i` claim a tip on our chain at or above `at`?
    fn holds(&self, i: usize, at: u64) -> bool {
        let claim = self.slots[i].st.lock().claim.clone();
        claim.is_some_and(|c| c.height >= at && self.chain.read().hash_at(c.height) == Some(c.hash))
    }
}

/// How many times easier the target of the block after `tip` is than the
/// network's anchor target (block 1's, the genesis `bits`), rounded down;
/// 0 when it is harder. Saturates at `u64::MAX`.
pub fn difficulty_drop(params: &Params, tip: &ChainState) -> u64 {
    let anchor = tip.anchor.as_ref().map_or(params.genesis_bits, |a| a.bits);
    let (Ok(anchor), Ok(next)) = (anchor.to_target(), tip.next_bits(params).to_target()) else {
        // Not reachable for a verified chain (its bits decoded when its
        // headers were checked); treat as no drop rather than fail.
        return 0;
    };
    if anchor.is_zero() {
        return u64::MAX;
    }
    let q = next / anchor;
    if q > U256::from(u64::MAX) {
        u64::MAX
    } else {
        q.low_u64()
    }
}
