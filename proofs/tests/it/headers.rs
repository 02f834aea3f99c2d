//! Header-chain validation and tampering: PoW, linkage, difficulty, time,
//! history root, height, version.

use xirtam_proofs::header::{ChainState, HeaderError, mine, validate_header_chain};
use xirtam_proofs::params::LOCAL;
use xirtam_proofs::pow::{CompactTarget, U256, work_from_target};

use crate::common::{FAR_FUTURE, mine_chain, next_header};

fn setup(n: usize) -> (ChainState, ChainState, Vec<xirtam_proofs::Header>) {
    let start = ChainState::genesis(&LOCAL);
    let mut s = start.clone();
    let hs = mine_chain(&LOCAL, &mut s, n);
    (start, s, hs)
}

#[test]
fn valid_chain_validates_and_accumulates_work() {
    let (mut from, tip, hs) = setup(30);
    validate_header_chain(&LOCAL, &mut from, &hs, FAR_FUTURE).expect("valid");
    assert_eq!(from, tip);
    assert_eq!(from.tip_height, 30);
    // On schedule the target never moves, so work is 31 equal blocks.
    let w = work_from_target(LOCAL.genesis_bits.to_target().expect("valid"));
    assert_eq!(from.total_work(), w * U256::from(31));
}

fn first_error(
    mut hs: Vec<xirtam_proofs::Header>,
    i: usize,
    f: impl Fn(&mut xirtam_proofs::Header),
) -> HeaderError {
    let (start, _, _) = setup(0);
    f(&mut hs[i]);
    let mut s = start;
    let e = validate_header_chain(&LOCAL, &mut s, &hs, FAR_FUTURE).expect_err("tampered");
    assert_eq!(e.index, i, "fails at the tampered header");
    assert_eq!(
        s.tip_height, i as u64,
        "state stops at the last valid header"
    );
    e.error
}

#[test]
fn bad_pow_is_rejected() {
    let (_, _, hs) = setup(5);
    let e = first_error(hs, 3, |h| {
        // Find a nonce whose hash misses the target.
        let target = h.target().expect("valid").to_be_bytes();
        while h.hash().0 <= target {
            h.nonce = h.nonce.wrapping_add(1);
        }
    });
    assert!(matches!(e, HeaderError::Pow(_)), "{e}");
}

#[test]
fn broken_link_is_rejected() {
    let (_, _, hs) = setup(5);
    let e = first_error(hs, 2, |h| {
        h.prev.0[0] ^= 1;
        assert!(mine(h, 0, u64::MAX));
    });
    assert!(matches!(e, HeaderError::Linkage { .. }), "{e}");
}

#[test]
fn wrong_difficulty_is_rejected_even_with_valid_pow() {
    let (_, _, hs) = setup(5);
    let e = first_error(hs, 4, |h| {
        // Easier than required, and mined to meet it.
        h.bits = CompactTarget::from_target(LOCAL.pow_limit);
        assert!(mine(h, 0, u64::MAX));
    });
    assert!(matches!(e, HeaderError::Difficulty { .. }), "{e}");
}

#[test]
fn non_canonical_bits_are_rejected() {
    let (_, _, hs) = setup(2);
    let e = first_error(hs, 1, |h| h.bits = CompactTarget(0x2100_0000));
    assert!(matches!(e, HeaderError::Difficulty { .. }), "{e}");
}

#[test]
fn timestamp_not_after_median_is_rejected() {
    let (_, _, hs) = setup(12);
    let e = first_error(hs, 11, |h| {
        h.time -= 6 * LOCAL.block_interval; // the median of the previous 11
        assert!(mine(h, 0, u64::MAX));
    });
    assert!(matches!(e, HeaderError::TimeTooOld { .. }), "{e}");
}

#[test]
fn timestamp_too_far_in_future_is_rejected() {
    let start = ChainState::genesis(&LOCAL);
    let now = LOCAL.genesis_time + 100;
    let ok = next_header(&LOCAL, &start, now + LOCAL.max_future_drift);
    assert!(start.check_next(&LOCAL, &ok, now).is_ok());
    let bad = next_header(&LOCAL, &start, now + LOCAL.max_future_drift + 1);
    assert!(matches!(
        start.check_next(&LOCAL, &bad, now),
        Err(HeaderError::TimeTooNew { .. })
    ));
}

#[test]
fn wrong_history_root_is_rejected() {
    let (_, _, hs) = setup(4);
    let e = first_error(hs, 2, |h| {
        h.history_root.0[31] ^= 0x80;
        assert!(mine(h, 0, u64::MAX));
    });
    assert!(matches!(e, HeaderError::HistoryRoot { .. }), "{e}");
}

#[test]
fn wrong_height_and_version_are_rejected() {
    let (_, _, hs) = setup(3);
    let e = first_error(hs.clone(), 1, |h| h.height += 1);
    assert!(matches!(e, HeaderError::Height { .. }), "{e}");
    let e = first_error(hs, 0, |h| h.version = 2);
    assert!(matches!(e, HeaderError::Version(2)), "{e}");
}

#[test]
fn difficulty_follows_the_schedule() {
    // Blocks twice as fast as the interval: the target must fall (harder).
    let mut s = ChainState::genesis(&LOCAL);
    let anchor_target = LOCAL.genesis_bits.to_target().expect("valid");
    let mut t = LOCAL.genesis_time;
    for _ in 0..40 {
        t += 1;
        let h = next_header(&LOCAL, &s, t);
        s.push(&LOCAL, &h, FAR_FUTURE).expect("valid");
    }
    let fast = s.next_bits(&LOCAL).to_target().expect("valid");
    assert!(fast < anchor_target, "target falls when blocks come early");
    // Then a long gap: the target rises past the anchor's.
    let h = next_header(&LOCAL, &s, t + 10 * LOCAL.asert_half_life);
    s.push(&LOCAL, &h, FAR_FUTURE).expect("valid");
    let slow = s.next_bits(&LOCAL).to_target().expect("valid");
    assert!(slow > anchor_target, "target rises after a gap");
    assert!(slow <= LOCAL.pow_limit);
}
