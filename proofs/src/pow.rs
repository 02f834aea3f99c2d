//! Proof of work: 256-bit targets, their compact form, and work.
//!
//! A header's hash, read as a big-endian 256-bit number, must be `<=` its
//! target. The target travels as a 32-bit [`CompactTarget`]. The work of a
//! block is the expected number of hashes to find it, `2^256 / (target + 1)`;
//! chains are compared by the sum of their blocks' work.

#![allow(
    clippy::assign_op_pattern,
    clippy::ptr_offset_with_cast,
    clippy::manual_div_ceil
)]

use bincode::{Decode, Encode};

use crate::hash::Hash;

uint::construct_uint! {
    /// Unsigned 256-bit integer (targets and work).
    pub struct U256(4);
}

uint::construct_uint! {
    /// Unsigned 512-bit integer (intermediate of the difficulty rule).
    pub(crate) struct U512(8);
}

impl U256 {
    /// Big-endian bytes.
    pub fn to_be_bytes(self) -> [u8; 32] {
        let mut b = [0u8; 32];
        self.write_as_big_endian(&mut b);
        b
    }

    /// From big-endian bytes.
    pub fn from_be_bytes(b: [u8; 32]) -> Self {
        U256::from_big_endian(&b)
    }
}

impl Encode for U256 {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        e: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        self.to_be_bytes().encode(e)
    }
}

impl<C> Decode<C> for U256 {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        d: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        Ok(U256::from_be_bytes(<[u8; 32]>::decode(d)?))
    }
}
bincode::impl_borrow_decode!(U256);

/// A target in 32 bits: the high byte is the target's length in bytes
/// (`size`, 0..=32), the low 24 bits its three most significant bytes
/// (`mantissa`). `target = mantissa * 256^(size - 3)` (shifted right when
/// `size < 3`). Only the canonical form is valid: the mantissa's top byte is
/// non-zero and no bits are lost, i.e. `to_compact(from_compact(c)) == c`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Encode, Decode, Default)]
pub struct CompactTarget(pub u32);

impl core::fmt::Debug for CompactTarget {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "CompactTarget({:#010x})", self.0)
    }
}

/// A compact target that is not canonical or not in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// Not the canonical encoding of any target.
    #[error("compact target {0:#010x} is not canonical")]
    NotCanonical(u32),
    /// Decodes to zero, which no hash can meet.
    #[error("compact target {0:#010x} is zero")]
    Zero(u32),
}

impl CompactTarget {
    /// Compact form of `target`, rounding down to 24 significant bits.
    pub fn from_target(target: U256) -> Self {
        let size = target.bits().div_ceil(8) as u32; // 0..=32 bytes
        let mantissa = if size <= 3 {
            target.low_u32() << (8 * (3 - size))
        } else {
            (target >> (8 * (size - 3)) as usize).low_u32()
        };
        CompactTarget((size << 24) | (mantissa & 0x00ff_ffff))
    }

    /// The target, if this is a canonical, non-zero compact target.
    ///
    /// Canonical means `from_target(to_target(c)) == c`, which comes down to:
    /// `size <= 32`, the mantissa's top byte is non-zero, and for `size < 3`
    /// the bytes shifted out are zero. (A property test checks this against
    /// the round-trip definition.)
    pub fn to_target(self) -> Result<U256, TargetError> {
        let size = self.0 >> 24;
        let mantissa = self.0 & 0x00ff_ffff;
        if size == 0 || mantissa == 0 {
            return Err(TargetError::Zero(self.0));
        }
        if size > 32 || mantissa < 0x01_0000 {
            return Err(TargetError::NotCanonical(self.0));
        }
        if size < 3 {
            let dropped = 8 * (3 - size);
            if mantissa & ((1 << dropped) - 1) != 0 {
                return Err(TargetError::NotCanonical(self.0));
            }
            return Ok(U256::from(mantissa >> dropped));
        }
        // size <= 32 and mantissa < 2^24, so this is below 2^256.
        Ok(U256::from(mantissa) << (8 * (size - 3)) as usize)
    }
}

/// Work represented by a target: `floor(2^256 / (target + 1))`.
pub fn work_from_target(target: U256) -> U256 {
    if target == U256::MAX {
        return U256::one();
    }
    if target.is_zero() {
        // Not a valid target (rejected by `to_target`); saturate, never panic.
        return U256::MAX;
    }
    // 2^256 / (t + 1) == (2^256 - 1 - t) / (t + 1) + 1, computed without
    // needing 257 bits.
    (!target / (target + U256::one())) + U256::one()
}

/// Does `hash` (big-endian) meet `target`?
#[inline]
pub fn meets_target(hash: &Hash, target_be: &[u8; 32]) -> bool {
    hash.0 <= *target_be
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_round_trips_canonical_values() {
        for t in [
            U256::one(),
            U256::from(0x7f),
            U256::from(0x1234),
            U256::from(0x12_3456),
            U256::from(0x1234_5678u64),
            U256::MAX,
            U256::MAX >> 8,
            U256::one() << 200,
        ] {
            let c = CompactTarget::from_target(t);
            let back = c.to_target().expect("canonical");
            assert!(back <= t, "rounds down");
            assert_eq!(CompactTarget::from_target(back), c);
        }
    }

    #[test]
    fn compact_rejects_non_canonical() {
        // top mantissa byte zero
        assert!(CompactTarget(0x0400_1234).to_target().is_err());
        // size above 32
        assert!(CompactTarget(0x21ff_ffff).to_target().is_err());
        // bits lost for small sizes
        assert!(CompactTarget(0x0112_3400).to_target().is_err());
        // zero
        assert!(matches!(
            CompactTarget(0).to_target(),
            Err(TargetError::Zero(0))
        ));
        assert_eq!(CompactTarget(0x0112_0000).to_target(), Ok(U256::from(0x12)));
    }

    proptest::proptest! {
        #[test]
        fn canonical_check_matches_round_trip_definition(c in proptest::prelude::any::<u32>()) {
            let c = CompactTarget(c);
            match c.to_target() {
                Ok(t) => {
                    proptest::prop_assert!(!t.is_zero());
                    proptest::prop_assert_eq!(CompactTarget::from_target(t), c);
                }
                Err(_) => {
                    // Either it decodes to zero, or some other compact
                    // value is the canonical form of what it encodes.
                    let size = c.0 >> 24;
                    let m = c.0 & 0x00ff_ffff;
                    if size <= 32 {
                        let t = if size <= 3 {
                            U256::from(m >> (8 * (3 - size)))
                        } else {
                            U256::from(m) << (8 * (size - 3)) as usize
                        };
                        proptest::prop_assert!(t.is_zero() || CompactTarget::from_target(t) != c);
                    }
                }
            }
        }
    }

    #[test]
    fn work_values() {
        assert_eq!(work_from_target(U256::MAX), U256::one());
        assert_eq!(work_from_target(U256::MAX >> 1), U256::from(2));
        assert_eq!(work_from_target(U256::MAX >> 16), U256::from(65536));
        assert_eq!(work_from_target(U256::zero()), U256::MAX); // 2^256 - 1 saturates
    }

    #[test]
    fn meets_target_is_big_endian() {
        let mut t = [0xffu8; 32];
        t[0] = 0;
        let mut h = Hash::ZERO;
        h.0[31] = 0xff;
        assert!(meets_target(&h, &t));
        h.0[0] = 1;
        assert!(!meets_target(&h, &t));
    }
}
