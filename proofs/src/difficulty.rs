//! The difficulty rule: ASERT (absolutely scheduled exponentially rising
//! targets), as in Bitcoin Cash's aserti3-2d, anchored at block 1.
//!
//! The target of block `n >= 2` depends only on the anchor (block 1: its
//! height, timestamp and target) and block `n`'s parent:
//!
//! ```text
//! exponent = floor((parent.time - anchor.time - interval * (parent.height - anchor.height))
//!                  * 65536 / half_life)                       (16.16 fixed point)
//! target   = anchor.target * 2^(exponent / 65536)
//! ```
//!
//! with `2^frac` for the fractional part approximated by the same cubic
//! polynomial as aserti3-2d, all in integers. The result is clamped to
//! `[1, pow_limit]` and rounded down to its compact form. Block 1 uses the
//! genesis target. Being one half-life behind schedule doubles the target
//! (halves the difficulty); one half-life ahead halves it. Because the rule
//! is a pure function of two headers, a light client recomputes it exactly.
//!
//! The anchor is block 1 rather than genesis because genesis is fixed in
//! code long before a network starts: anchored there, a network started
//! later would be "behind schedule" and mine at minimum difficulty until it
//! caught up.

use crate::params::Params;
use crate::pow::{CompactTarget, U256, U512};

/// The difficulty anchor: block 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Anchor {
    /// Anchor height (1).
    pub height: u64,
    /// Anchor timestamp.
    pub time: u64,
    /// Anchor target (compact).
    pub bits: CompactTarget,
}

/// ASERT target for a block whose parent has `parent_time`/`parent_height`.
pub fn asert_target(
    params: &Params,
    anchor: &Anchor,
    parent_time: u64,
    parent_height: u64,
) -> U256 {
    let anchor_target = anchor.bits.to_target().unwrap_or(params.pow_limit);
    let time_delta = i128::from(parent_time) - i128::from(anchor.time);
    let height_delta = i128::from(parent_height) - i128::from(anchor.height);
    let interval = i128::from(params.block_interval);
    let half_life = i128::from(params.asert_half_life.max(1));
    // Floor division: the rule is defined with floor, not truncation.
    let exponent = ((time_delta - interval * height_delta) * 65536).div_euclid(half_life);
    let shifts = exponent >> 16; // floor
    let factor = exp2_fixed((exponent & 0xffff) as u128);
    // anchor_target < 2^256 and factor < 2^17, so the product fits in five
    // 64-bit limbs; multiply limb-wise (exact) rather than in 512 bits.
    let mut limbs = [0u64; 8];
    let mut carry: u128 = 0;
    for (i, l) in anchor_target.0.iter().enumerate() {
        let p = u128::from(*l) * factor + carry;
        limbs[i] = p as u64; // low 64 bits
        carry = p >> 64;
    }
    limbs[4] = carry as u64; // < 2^17
    let mut t = U512(limbs);
    let shift = shifts - 16;
    if shift <= 0 {
        let s = (-shift).min(512) as usize;
        t = if s >= 512 { U512::zero() } else { t >> s };
    } else if shift > 256 || t.bits() as i128 + shift > 512 {
        return params.pow_limit;
    } else {
        t <<= shift as usize;
    }
    if t.0[4..].iter().any(|l| *l != 0) {
        return params.pow_limit; // at least 2^256, above any limit
    }
    let t = U256([t.0[0], t.0[1], t.0[2], t.0[3]]);
    if t > params.pow_limit {
        return params.pow_limit;
    }
    if t.is_zero() {
        return U256::one();
    }
    t
}

/// `65536 * 2^(frac / 65536)` for `frac` in `0..65536`, by aserti3-2d's cubic
/// approximation (exact at 0, within 0.013% elsewhere).
fn exp2_fixed(frac: u128) -> u128 {
    65536
        + ((195_766_423_245_049u128 * frac
            + 971_821_376u128 * frac * frac
            + 5_127u128 * frac * frac * frac
            + (1u128 << 47))
            >> 48)
}

/// The compact target required of block `parent_height + 1`.
pub fn next_bits(
    params: &Params,
    anchor: Option<&Anchor>,
    parent_time: u64,
    parent_height: u64,
) -> CompactTarget {
    match anchor {
        // Block 1 (and, defensively, anything without an anchor) uses the
        // genesis target.
        None => params.genesis_bits,
        Some(a) => CompactTarget::from_target(asert_target(params, a, parent_time, parent_height)),
    }
}

/// Median of the given timestamps (the upper middle for an even count);
/// 0 for none. Only the last 64 are considered.
pub fn median_time(times: &[u64]) -> u64 {
    let times = &times[times.len().saturating_sub(64)..];
    let mut buf = [0u64; 64];
    let t = &mut buf[..times.len()];
    t.copy_from_slice(times);
    t.sort_unstable();
    t.get(t.len() / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::LOCAL;
    use crate::pow::U512;

    fn anchor() -> Anchor {
        Anchor {
            height: 1,
            time: 1000,
            bits: CompactTarget::from_target(U256::MAX >> 20),
        }
    }

    #[test]
    fn on_schedule_keeps_the_target() {
        let a = anchor();
        let t0 = a.bits.to_target().expect("valid");
        for n in [1u64, 2, 100, 10_000] {
            let t = asert_target(&LOCAL, &a, a.time + LOCAL.block_interval * (n - 1), n);
            // On schedule: exponent 0, factor exactly 65536.
            assert_eq!(t, t0, "height {n}");
        }
    }

    #[test]
    fn one_half_life_late_doubles_one_early_halves() {
        let a = anchor();
        let t0 = a.bits.to_target().expect("valid");
        let late = asert_target(&LOCAL, &a, a.time + 10 * 2 + LOCAL.asert_half_life, 11);
        assert_eq!(late, t0 * 2);
        let early = asert_target(&LOCAL, &a, a.time + 10 * 2 - LOCAL.asert_half_life, 11);
        assert_eq!(early, t0 / 2);
    }

    #[test]
    fn clamps_to_limits() {
        let a = anchor();
        // Far behind schedule: easiest allowed.
        assert_eq!(asert_target(&LOCAL, &a, u64::MAX, 2), LOCAL.pow_limit);
        // Far ahead of schedule: hardest possible, never zero.
        assert_eq!(asert_target(&LOCAL, &a, 0, u64::MAX), U256::one());
    }

    #[test]
    fn monotonic_in_time() {
        let a = anchor();
        let mut prev = U256::zero();
        for dt in (0..4000u64).step_by(7) {
            let t = asert_target(&LOCAL, &a, a.time + dt, 50);
            assert!(t >= prev);
            prev = t;
        }
    }

    /// The obvious 512-bit formulation of the same rule.
    fn reference(params: &Params, anchor_target: U256, dt: i128, dh: i128) -> U256 {
        let e = ((dt - i128::from(params.block_interval) * dh) * 65536)
            .div_euclid(i128::from(params.asert_half_life));
        let (shifts, factor) = (e >> 16, exp2_fixed((e & 0xffff) as u128));
        let mut be = [0u8; 64];
        be[32..].copy_from_slice(&anchor_target.to_be_bytes());
        let t = U512::from_big_endian(&be) * U512::from(factor);
        let s = shifts - 16;
        let t = if s <= 0 {
            if -s >= 512 {
                U512::zero()
            } else {
                t >> (-s) as usize
            }
        } else if t.bits() as i128 + s > 512 {
            return params.pow_limit;
        } else {
            t << s as usize
        };
        let mut lim = [0u8; 64];
        lim[32..].copy_from_slice(&params.pow_limit.to_be_bytes());
        if t > U512::from_big_endian(&lim) {
            return params.pow_limit;
        }
        if t.is_zero() {
            return U256::one();
        }
        let mut out = [0u8; 64];
        t.write_as_big_endian(&mut out);
        U256::from_big_endian(&out[32..])
    }

    proptest::proptest! {
        #[test]
        fn matches_512_bit_reference(
            bits in proptest::prelude::any::<u32>(),
            dt in 0u64..100_000,
            dh in 1u64..100_000,
            easiest in proptest::prelude::any::<bool>(),
        ) {
            let bits = CompactTarget::from_target(
                CompactTarget(bits).to_target().unwrap_or(U256::MAX >> (bits % 256)),
            );
            let a = Anchor { height: 1, time: 1000, bits };
            let mut p = LOCAL.clone();
            if easiest {
                p.pow_limit = U256::MAX;
            }
            let at = bits.to_target().expect("canonical by construction");
            proptest::prop_assert_eq!(
                asert_target(&p, &a, a.time + dt, 1 + dh),
                reference(&p, at, i128::from(dt), i128::from(dh))
            );
        }
    }

    #[test]
    fn median() {
        assert_eq!(median_time(&[]), 0);
        assert_eq!(median_time(&[5]), 5);
        assert_eq!(median_time(&[3, 1, 2]), 2);
        assert_eq!(median_time(&[4, 1, 3, 2]), 3);
    }
}
