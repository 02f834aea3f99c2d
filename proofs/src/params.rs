//! Network parameters and genesis, defined in code.
//!
//! Networks differ only in these constants. `local` is for a developer's
//! machine (blocks every 2 s, cheap stamps); `testnet` is a public test
//! network (blocks every 60 s). The genesis hash of each network is pinned
//! here and checked by a test, and every op signature covers it, so an op
//! made for one network is invalid on every other.

use crate::hash::Hash;
use crate::header::Header;
use crate::pow::{CompactTarget, U256};

/// Every consensus constant of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Short name (`local`, `testnet`).
    pub name: &'static str,
    /// Genesis timestamp (Unix seconds).
    pub genesis_time: u64,
    /// Genesis target, also the target of block 1 (the difficulty anchor).
    pub genesis_bits: CompactTarget,
    /// Genesis proof-of-work nonce.
    pub genesis_nonce: u64,
    /// Pinned hash of the genesis header (checked by a test).
    pub genesis_hash: Hash,
    /// Easiest target the difficulty rule may produce.
    pub pow_limit: U256,
    /// Block interval the difficulty rule aims for (seconds).
    pub block_interval: u64,
    /// ASERT half-life (seconds): being this far ahead of or behind schedule
    /// doubles or halves the target.
    pub asert_half_life: u64,
    /// Number of previous timestamps whose median a new one must exceed.
    pub mtp_span: usize,
    /// How far in the future of the validator's clock a timestamp may be
    /// (seconds).
    pub max_future_drift: u64,
    /// Target an op stamp must meet.
    pub stamp_target: U256,
    /// A stamp's block must be at most this many blocks below the block that
    /// includes the op.
    pub stamp_window: u64,
    /// Blocks under the tip a light client requires by default.
    pub confirmation_depth: u64,
    /// A claim may be revealed only this many blocks after its commitment
    /// was mined (at least 1): a front-runner would have to rewrite this
    /// many blocks to place an earlier commitment.
    pub claim_maturity: u64,
    /// A claim must be revealed at most this many blocks after its
    /// commitment; a claimed name is settled (no earlier commitment can
    /// still be revealed) this many blocks after its own commitment.
    pub claim_expiry: u64,
    /// Longest name (bytes, sigil included).
    pub max_name_len: usize,
    /// Longest record value (bytes).
    pub max_value_len: usize,
    /// Most owners per record.
    pub max_owners: usize,
    /// Most ops per block.
    pub max_ops_per_block: usize,
    /// Largest encoded block (bytes).
    pub max_block_bytes: usize,
    /// Least cumulative work of a chain this software treats as the
    /// network's. A node fetches no block bodies of a header chain below it
    /// (and holds, never stores, blocks of a lighter branch); a light client
    /// adopts no branch below it. It makes a cheap chain - one that forks
    /// from early history where blocks cost little - useless for an eclipse
    /// attack on a fresh node or client. Raised at each release to the work
    /// of the network's chain some weeks earlier; zero on networks without
    /// such history.
    pub min_chain_work: U256,
    /// A block known to be on the network's chain. A node skips the op
    /// signature checks of its ancestors (and of itself) once a checked
    /// header chain shows it passes through them; every other rule runs
    /// and the state roots must match. A light client refuses every branch
    /// that does not pass through it. Set at each release with
    /// `min_chain_work`.
    pub assume_valid: Option<Checkpoint>,
}

/// A block of the network's chain compiled into the software
/// ([`Params::assume_valid`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// Its height.
    pub height: u64,
    /// Its hash.
    pub hash: Hash,
}

/// `2^(256 - zero_bits) - 1`: the target met by about one hash in
/// `2^zero_bits`.
pub const fn target_for_zero_bits(zero_bits: u32) -> U256 {
    let mut limbs = [u64::MAX; 4]; // little-endian limbs: [3] is the top
    let mut bits = zero_bits;
    let mut i = 3;
    while bits >= 64 && i > 0 {
        limbs[i] = 0;
        bits -= 64;
        i -= 1;
    }
    limbs[i] = if bits >= 64 { 0 } else { u64::MAX >> bits };
    U256(limbs)
}

/// The `local` network.
pub const LOCAL: Params = Params {
    name: "local",
    genesis_time: 1_767_225_600,              // 2026-01-01T00:00:00Z
    genesis_bits: CompactTarget(0x1f0f_ffff), // ~2^12 hashes per block
    genesis_nonce: LOCAL_GENESIS_NONCE,
    genesis_hash: Hash(LOCAL_GENESIS_HASH),
    pow_limit: target_for_zero_bits(8),
    block_interval: 2,
    asert_half_life: 30,
    mtp_span: 11,
    max_future_drift: 30,
    stamp_target: target_for_zero_bits(10),
    stamp_window: 100,
    confirmation_depth: 3,
    claim_maturity: 3,
    claim_expiry: 150,
    max_name_len: 32,
    max_value_len: 4096,
    max_owners: 8,
    max_ops_per_block: 4096,
    max_block_bytes: 2 * 1024 * 1024,
    // A fresh chain every time it is started: no history to protect.
    min_chain_work: U256([0; 4]),
    assume_valid: None,
};

/// The public `testnet`.
pub const TESTNET: Params = Params {
    name: "testnet",
    genesis_time: 1_798_761_600,              // 2027-01-01T00:00:00Z
    genesis_bits: CompactTarget(0x1e0f_ffff), // ~2^20 hashes per block
    genesis_nonce: TESTNET_GENESIS_NONCE,
    genesis_hash: Hash(TESTNET_GENESIS_HASH),
    pow_limit: target_for_zero_bits(16),
    block_interval: 60,
    asert_half_life: 3600,
    mtp_span: 11,
    max_future_drift: 600,
    stamp_target: target_for_zero_bits(20),
    stamp_window: 60,
    confirmation_depth: 6,
    claim_maturity: 6,
    claim_expiry: 1440,
    max_name_len: 32,
    max_value_len: 4096,
    max_owners: 8,
    max_ops_per_block: 4096,
    max_block_bytes: 2 * 1024 * 1024,
    // The network starts on 2027-01-01: no history yet. Both are set from
    // the running chain at each release.
    min_chain_work: U256([0; 4]),
    assume_valid: None,
};

/// `regtest`: for tests and local development. Proof of work is trivial and
/// the difficulty practically constant (a half-life of ~32 years), so tests
/// can produce hundreds of blocks in a second; the generous drift (a day)
/// lets a fast miner run its timestamps ahead of the clock (the
/// median-time-past rule forces a new second about every six blocks, so a
/// miner may run ~259,000 blocks ahead before it has to wait).
pub const REGTEST: Params = Params {
    name: "regtest",
    genesis_time: 1_767_225_600,              // 2026-01-01T00:00:00Z
    genesis_bits: CompactTarget(0x207f_ffff), // ~2 hashes per block
    genesis_nonce: REGTEST_GENESIS_NONCE,
    genesis_hash: Hash(REGTEST_GENESIS_HASH),
    pow_limit: U256::MAX,
    block_interval: 1,
    asert_half_life: 1_000_000_000,
    mtp_span: 11,
    max_future_drift: 86_400,
    stamp_target: target_for_zero_bits(4),
    stamp_window: 1000,
    confirmation_depth: 1,
    claim_maturity: 1,
    claim_expiry: 100,
    max_name_len: 32,
    max_value_len: 4096,
    max_owners: 8,
    max_ops_per_block: 4096,
    max_block_bytes: 2 * 1024 * 1024,
    // A fresh chain every time it is started: no history to protect.
    min_chain_work: U256([0; 4]),
    assume_valid: None,
};

// Mined by `cargo run --release -p xirtam-proofs --example mine_genesis`.
const LOCAL_GENESIS_NONCE: u64 = 9265;
const LOCAL_GENESIS_HASH: [u8; 32] =
    hex32("000e531ef2a76c79fb1a37af778131104c18dd066021d405f1b5dfed798e6225");
const REGTEST_GENESIS_NONCE: u64 = 0;
const REGTEST_GENESIS_HASH: [u8; 32] =
    hex32("618fb96d299b03398ea4f24a906b7293f39ac0eeadf4a6bc373245fe89b51fe1");
const TESTNET_GENESIS_NONCE: u64 = 1_039_145;
const TESTNET_GENESIS_HASH: [u8; 32] =
    hex32("00000f64ff4b5090362217a2b57960f057fa5e8fbe9495ce19277c4eb8e5c1dc");

/// Parse 64 hex digits at compile time (a bad constant fails the build).
const fn hex32(s: &str) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("genesis hash constant is not lower-case hex"),
        }
    }
    let b = s.as_bytes();
    assert!(b.len() == 64, "genesis hash constant is not 64 hex digits");
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

impl Params {
    /// Look up a network by name.
    pub fn by_name(name: &str) -> Option<&'static Params> {
        match name {
            "local" => Some(&LOCAL),
            "testnet" => Some(&TESTNET),
            "regtest" => Some(&REGTEST),
            _ => None,
        }
    }

    /// The genesis header, built from the constants.
    pub fn genesis_header(&self) -> Header {
        Header {
            version: Header::VERSION,
            height: 0,
            prev: Hash::ZERO,
            time: self.genesis_time,
            bits: self.genesis_bits,
            ops_root: crate::block::ops_root(&[]),
            state_root: crate::state::EMPTY_ROOT,
            history_root: crate::history::HistoryPeaks::new().root(),
            nonce: self.genesis_nonce,
        }
    }

    /// The height a writer should anchor a new op at when the tip is at
    /// `tip`: `confirmation_depth` blocks down, so that a short reorg does
    /// not drop the anchor (and with it the op, whose signature covers it).
    pub fn anchor_height(&self, tip: u64) -> u64 {
        tip.saturating_sub(self.confirmation_depth)
    }

    /// The stamp target as big-endian bytes.
    pub fn stamp_target_be(&self) -> [u8; 32] {
        self.stamp_target.to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_bit_targets() {
        assert_eq!(target_for_zero_bits(0), U256::MAX);
        assert_eq!(target_for_zero_bits(8), U256::MAX >> 8);
        assert_eq!(target_for_zero_bits(70), U256::MAX >> 70);
        assert_eq!(target_for_zero_bits(255), U256::one());
    }

    #[test]
    fn genesis_is_pinned_and_valid() {
        for p in [&LOCAL, &TESTNET, &REGTEST] {
            let g = p.genesis_header();
            let target = p.genesis_bits.to_target().expect("canonical genesis bits");
            assert!(
                target <= p.pow_limit,
                "{}: genesis target above pow limit",
                p.name
            );
            assert!(
                g.check_pow().is_ok(),
                "{}: genesis nonce {} does not meet the target",
                p.name,
                p.genesis_nonce
            );
            assert_eq!(
                g.hash(),
                p.genesis_hash,
                "{}: pinned genesis hash is stale; computed {}",
                p.name,
                g.hash()
            );
            assert_eq!(Params::by_name(p.name), Some(p));
        }
    }
}
