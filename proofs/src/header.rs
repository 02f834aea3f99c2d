//! Headers and header-chain validation.
//!
//! [`ChainState`] is everything needed to validate the next header: the tip,
//! the last `mtp_span` timestamps, the difficulty anchor, the history MMR
//! peaks and the cumulative work. It is small (a few hundred bytes), so a
//! light client can store it as a checkpoint and resume from it.

use bincode::{Decode, Encode};

use crate::difficulty::{Anchor, median_time, next_bits};
use crate::encoding::{decode_len, encode_into, invalid};
use crate::hash::{Hash, hash_tagged, tag};
use crate::history::{HistoryNode, HistoryPeaks};
use crate::params::Params;
use crate::pow::{CompactTarget, TargetError, U256, meets_target, work_from_target};

/// Encoded size of a header in bytes.
pub const HEADER_LEN: usize = 160;

/// A block header. Encoded as its fields in order (160 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Encode, Decode)]
pub struct Header {
    /// Header format version ([`Header::VERSION`]).
    pub version: u32,
    /// Height (genesis is 0).
    pub height: u64,
    /// Hash of the parent header (zero for genesis).
    pub prev: Hash,
    /// Unix time in seconds, set by the miner.
    pub time: u64,
    /// Compact proof-of-work target.
    pub bits: CompactTarget,
    /// Root over this block's op hashes (see [`crate::block::ops_root`]).
    pub ops_root: Hash,
    /// Root of the name-state tree after applying this block.
    pub state_root: Hash,
    /// Root of the MMR over all previous headers.
    pub history_root: Hash,
    /// Proof-of-work nonce.
    pub nonce: u64,
}

/// Why a header is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Unknown version.
    #[error("unsupported header version {0}")]
    Version(u32),
    /// Height is not parent height + 1.
    #[error("height {got} does not follow the tip (expected {expected})")]
    Height {
        /// Expected height.
        expected: u64,
        /// Header height.
        got: u64,
    },
    /// `prev` is not the tip's hash.
    #[error("header does not link to the tip: prev {got}, tip {expected}")]
    Linkage {
        /// Tip hash.
        expected: Hash,
        /// Header's prev.
        got: Hash,
    },
    /// `bits` is not what the difficulty rule requires.
    #[error("difficulty bits {got:?} differ from the required {expected:?}")]
    Difficulty {
        /// Required.
        expected: CompactTarget,
        /// Header's.
        got: CompactTarget,
    },
    /// `bits` does not decode to a target.
    #[error("invalid target: {0}")]
    Target(#[from] TargetError),
    /// Hash above the target.
    #[error("header hash {0} does not meet its target")]
    Pow(Hash),
    /// Timestamp not above the median of the previous ones.
    #[error("timestamp {time} is not after the median time past {median}")]
    TimeTooOld {
        /// Header time.
        time: u64,
        /// Median time past.
        median: u64,
    },
    /// Timestamp too far in the future.
    #[error("timestamp {time} is more than the allowed drift ahead of now ({max} at most)")]
    TimeTooNew {
        /// Header time.
        time: u64,
        /// Latest acceptable time.
        max: u64,
    },
    /// `history_root` does not commit to the previous headers.
    #[error("history root {got} differs from the expected {expected}")]
    HistoryRoot {
        /// Expected root.
        expected: Hash,
        /// Header's root.
        got: Hash,
    },
}

impl HeaderError {
    /// True when the header may become valid later without changing:
    /// only [`HeaderError::TimeTooNew`] (the validator's clock may catch up).
    /// Nodes must not remember such a header as invalid or penalise its
    /// sender as for a consensus violation.
    pub fn is_transient(&self) -> bool {
        matches!(self, HeaderError::TimeTooNew { .. })
    }
}

impl Header {
    /// The only header version so far.
    pub const VERSION: u32 = 1;

    /// Canonical bytes (160).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut buf = [0u8; HEADER_LEN];
        let n = encode_into(self, &mut buf)
            .expect("a header has fixed-size fields totalling HEADER_LEN bytes");
        debug_assert_eq!(n, HEADER_LEN);
        buf
    }

    /// `H(HEADER, bytes)`: the block's identity and its proof-of-work hash.
    pub fn hash(&self) -> Hash {
        hash_tagged(tag::HEADER, &self.to_bytes())
    }

    /// The target encoded in `bits`.
    pub fn target(&self) -> Result<U256, TargetError> {
        self.bits.to_target()
    }

    /// Work of this header (from its target).
    pub fn work(&self) -> Result<U256, TargetError> {
        self.target().map(work_from_target)
    }

    /// Check that the hash meets the target; returns the hash.
    pub fn check_pow(&self) -> Result<Hash, HeaderError> {
        let target = self.target()?;
        let h = self.hash();
        if meets_target(&h, &target.to_be_bytes()) {
            Ok(h)
        } else {
            Err(HeaderError::Pow(h))
        }
    }
}

/// What is needed to validate the next header of a chain.
#[derive(Clone, PartialEq, Eq, Debug, Encode)]
pub struct ChainState {
    /// Hash of the tip.
    pub tip_hash: Hash,
    /// Height of the tip.
    pub tip_height: u64,
    /// Timestamps of the last `mtp_span` headers, oldest first.
    recent_times: Vec<u64>,
    /// Difficulty anchor (block 1), once known.
    pub anchor: Option<Anchor>,
    /// MMR over all headers up to and including the tip.
    pub history: HistoryPeaks,
}

/// Most timestamps a [`ChainState`] may carry when decoded.
const MAX_RECENT_TIMES: usize = 64;

impl<C> Decode<C> for ChainState {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        d: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let tip_hash = Hash::decode(d)?;
        let tip_height = <u64 as Decode<C>>::decode(d)?;
        let n = decode_len(d, MAX_RECENT_TIMES, "recent times")?;
        let mut recent_times = Vec::with_capacity(n);
        for _ in 0..n {
            recent_times.push(<u64 as Decode<C>>::decode(d)?);
        }
        let anchor = Option::<Anchor>::decode(d)?;
        let history = HistoryPeaks::decode(d)?;
        if history.leaves() != tip_height.saturating_add(1) {
            return Err(invalid(format!(
                "history has {} leaves for a tip at height {tip_height}",
                history.leaves()
            )));
        }
        Ok(ChainState {
            tip_hash,
            tip_height,
            recent_times,
            anchor,
            history,
        })
    }
}
bincode::impl_borrow_decode!(ChainState);

impl ChainState {
    /// The state after genesis (genesis itself is trusted: it is in code).
    pub fn genesis(params: &Params) -> Self {
        let g = params.genesis_header();
        let hash = g.hash();
        let mut history = HistoryPeaks::new();
        history.append(HistoryNode::leaf(
            &hash,
            g.work().unwrap_or_else(|_| U256::one()),
        ));
        ChainState {
            tip_hash: hash,
            tip_height: 0,
            recent_times: vec![g.time],
            anchor: None,
            history,
        }
    }

    /// Cumulative work of the chain up to and including the tip.
    pub fn total_work(&self) -> U256 {
        self.history.total_work()
    }

    /// Median time past: the median of the last `mtp_span` timestamps.
    pub fn median_time_past(&self) -> u64 {
        median_time(&self.recent_times)
    }

    /// Timestamp of the tip.
    pub fn tip_time(&self) -> u64 {
        self.recent_times.last().copied().unwrap_or(0)
    }

    /// The `bits` the next header must carry.
    pub fn next_bits(&self, params: &Params) -> CompactTarget {
        next_bits(
            params,
            self.anchor.as_ref(),
            self.tip_time(),
            self.tip_height,
        )
    }

    /// The `history_root` the next header must carry.
    pub fn next_history_root(&self) -> Hash {
        self.history.root()
    }

    /// Check `h` as the next header at validator time `now` (Unix seconds)
    /// without changing the state; returns its hash and work.
    pub fn check_next(
        &self,
        params: &Params,
        h: &Header,
        now: u64,
    ) -> Result<(Hash, U256), HeaderError> {
        if h.version != Header::VERSION {
            return Err(HeaderError::Version(h.version));
        }
        let expected_height = self.tip_height.saturating_add(1);
        if h.height != expected_height {
            return Err(HeaderError::Height {
                expected: expected_height,
                got: h.height,
            });
        }
        if h.prev != self.tip_hash {
            return Err(HeaderError::Linkage {
                expected: self.tip_hash,
                got: h.prev,
            });
        }
        let median = self.median_time_past();
        if h.time <= median {
            return Err(HeaderError::TimeTooOld {
                time: h.time,
                median,
            });
        }
        let expected_bits = self.next_bits(params);
        if h.bits != expected_bits {
            return Err(HeaderError::Difficulty {
                expected: expected_bits,
                got: h.bits,
            });
        }
        let expected_history = self.history.root();
        if h.history_root != expected_history {
            return Err(HeaderError::HistoryRoot {
                expected: expected_history,
                got: h.history_root,
            });
        }
        let target = h.target()?;
        let hash = h.hash();
        if !meets_target(&hash, &target.to_be_bytes()) {
            return Err(HeaderError::Pow(hash));
        }
        // Last: the only rule that may pass later. A header that breaks
        // any other rule is invalid for good (and its sender at fault),
        // whatever its timestamp; only one that cost real work can make a
        // node wait.
        let max = now.saturating_add(params.max_future_drift);
        if h.time > max {
            return Err(HeaderError::TimeTooNew { time: h.time, max });
        }
        Ok((hash, work_from_target(target)))
    }

    /// Validate `h` as the next header and advance to it.
    pub fn push(&mut self, params: &Params, h: &Header, now: u64) -> Result<Hash, HeaderError> {
        let (hash, work) = self.check_next(params, h, now)?;
        self.advance(params, h, hash, work);
        Ok(hash)
    }

    /// Advance to an already validated header.
    fn advance(&mut self, params: &Params, h: &Header, hash: Hash, work: U256) {
        if h.height == 1 {
            self.anchor = Some(Anchor {
                height: 1,
                time: h.time,
                bits: h.bits,
            });
        }
        self.recent_times.push(h.time);
        if self.recent_times.len() > params.mtp_span.max(1) {
            self.recent_times.remove(0);
        }
        self.history.append(HistoryNode::leaf(&hash, work));
        self.tip_hash = hash;
        self.tip_height = h.height;
    }
}

/// A header in a run failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header {index} of the run (height {height}) is invalid: {error}")]
pub struct HeaderChainError {
    /// Position in the run.
    pub index: usize,
    /// Its claimed height.
    pub height: u64,
    /// What was wrong.
    #[source]
    pub error: HeaderError,
}

/// Validate a run of headers on top of `state` (linkage, proof of work,
/// difficulty, timestamps, history root) and advance `state` past the valid
/// ones. On error `state` stays at the last valid header.
pub fn validate_header_chain(
    params: &Params,
    state: &mut ChainState,
    headers: &[Header],
    now: u64,
) -> Result<(), HeaderChainError> {
    for (index, h) in headers.iter().enumerate() {
        state
            .push(params, h, now)
            .map_err(|error| HeaderChainError {
                index,
                height: h.height,
                error,
            })?;
    }
    Ok(())
}

/// Build the next header on `state` (for miners and tests): fills height,
/// prev, bits and history root; the caller sets the roots, time and nonce.
pub fn header_template(params: &Params, state: &ChainState, time: u64) -> Header {
    Header {
        version: Header::VERSION,
        height: state.tip_height.saturating_add(1),
        prev: state.tip_hash,
        time,
        bits: state.next_bits(params),
        ops_root: crate::block::ops_root(&[]),
        state_root: Hash::ZERO,
        history_root: state.next_history_root(),
        nonce: 0,
    }
}

/// Search nonces `start..start+tries` for one that meets the header's target.
/// Returns whether one was found (and sets it).
pub fn mine(header: &mut Header, start: u64, tries: u64) -> bool {
    let Ok(target) = header.target() else {
        return false;
    };
    let target = target.to_be_bytes();
    let mut buf = header.to_bytes();
    for nonce in start..start.saturating_add(tries) {
        buf[HEADER_LEN - 8..].copy_from_slice(&nonce.to_le_bytes());
        if meets_target(&hash_tagged(tag::HEADER, &buf), &target) {
            header.nonce = nonce;
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::LOCAL;

    #[test]
    fn header_is_160_bytes_nonce_last() {
        let g = LOCAL.genesis_header();
        let b = g.to_bytes();
        assert_eq!(b.len(), HEADER_LEN);
        assert_eq!(b[HEADER_LEN - 8..], g.nonce.to_le_bytes());
        assert_eq!(crate::encoding::encode(&g), b.to_vec());
    }

    #[test]
    fn chain_state_round_trips_and_checks_shape() {
        let s = ChainState::genesis(&LOCAL);
        let b = crate::encoding::encode(&s);
        assert_eq!(crate::encoding::decode::<ChainState>(&b), Ok(s.clone()));
        let mut bad = s;
        bad.tip_height = 5;
        assert!(crate::encoding::decode::<ChainState>(&crate::encoding::encode(&bad)).is_err());
    }
}
