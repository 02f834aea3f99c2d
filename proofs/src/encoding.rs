//! Canonical encoding: bincode 2 with one fixed configuration.
//!
//! * integers are fixed width, little-endian (`u32` = 4 bytes, `u64` = 8);
//! * byte strings, strings and sequences are a `u64` length then the items;
//! * fixed arrays (hashes, keys, signatures) are their bytes, no length;
//! * enums are a `u32` variant index then the fields; `Option` is one byte
//!   `0`/`1` then the value.
//!
//! Decoding never reads more than [`MAX_ENCODED_LEN`] bytes, rejects lengths
//! above each type's hard cap before allocating, rejects non-canonical forms
//! (unsorted sets, invalid names, bad booleans) and rejects trailing bytes, so
//! every value has exactly one encoding.

use bincode::config::{Configuration, Fixint, Limit, LittleEndian};
use bincode::de::Decoder;
use bincode::{Decode, Encode};

/// Hard cap on any single encoded value (a block is the largest).
pub const MAX_ENCODED_LEN: usize = 8 * 1024 * 1024;

/// The one configuration used for everything hashed, signed or sent.
pub type Config = Configuration<LittleEndian, Fixint, Limit<MAX_ENCODED_LEN>>;

/// The configuration value.
pub const CONFIG: Config = bincode::config::standard()
    .with_little_endian()
    .with_fixed_int_encoding()
    .with_limit::<MAX_ENCODED_LEN>();

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not a valid encoding of the type.
    #[error("malformed {ty}: {reason}")]
    Malformed {
        /// Type being decoded.
        ty: &'static str,
        /// What bincode or a canonical-form check said.
        reason: String,
    },
    /// A valid value was followed by more bytes.
    #[error("{ty} followed by {extra} trailing bytes")]
    TrailingBytes {
        /// Type being decoded.
        ty: &'static str,
        /// Number of unread bytes.
        extra: usize,
    },
    /// The input is larger than any value may be.
    #[error("{ty} input of {len} bytes exceeds the {max}-byte limit")]
    TooLong {
        /// Type being decoded.
        ty: &'static str,
        /// Input length.
        len: usize,
        /// Limit.
        max: usize,
    },
}

/// Encode with the canonical configuration.
pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, CONFIG)
        .expect("encoding into a Vec has no I/O and the limit applies to decoding only")
}

/// The length of `value`'s canonical encoding, without allocating it.
pub fn encoded_len<T: Encode>(value: &T) -> usize {
    let mut enc =
        bincode::enc::EncoderImpl::new(bincode::enc::write::SizeWriter::default(), CONFIG);
    value
        .encode(&mut enc)
        .expect("counting bytes has no I/O and the limit applies to decoding only");
    enc.into_writer().bytes_written
}

/// Encode into a fixed buffer; returns the number of bytes written. Used on
/// hot paths (header hashing) to avoid an allocation.
pub fn encode_into<T: Encode>(value: &T, buf: &mut [u8]) -> Result<usize, EncodeError> {
    bincode::encode_into_slice(value, buf, CONFIG).map_err(|_| EncodeError)
}

/// The destination buffer was too small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("encoding buffer too small")]
pub struct EncodeError;

/// Decode exactly one `T` from `bytes`; trailing bytes are an error.
pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, DecodeError> {
    let ty = short_type_name::<T>();
    if bytes.len() > MAX_ENCODED_LEN {
        return Err(DecodeError::TooLong {
            ty,
            len: bytes.len(),
            max: MAX_ENCODED_LEN,
        });
    }
    let (value, used) =
        bincode::decode_from_slice::<T, _>(bytes, CONFIG).map_err(|e| DecodeError::Malformed {
            ty,
            reason: e.to_string(),
        })?;
    if used != bytes.len() {
        return Err(DecodeError::TrailingBytes {
            ty,
            extra: bytes.len() - used,
        });
    }
    Ok(value)
}

/// Decode from lower-case or upper-case hex (as carried in JSON-RPC).
pub fn decode_hex<T: Decode<()>>(s: &str) -> Result<T, DecodeError> {
    let ty = short_type_name::<T>();
    if s.len() / 2 > MAX_ENCODED_LEN {
        return Err(DecodeError::TooLong {
            ty,
            len: s.len() / 2,
            max: MAX_ENCODED_LEN,
        });
    }
    let bytes = hex::decode(s).map_err(|e| DecodeError::Malformed {
        ty,
        reason: format!("bad hex: {e}"),
    })?;
    decode(&bytes)
}

fn short_type_name<T>() -> &'static str {
    let full = core::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Read a `u64` length and check it against `max` before anything is
/// allocated.
pub(crate) fn decode_len<D: Decoder>(
    d: &mut D,
    max: usize,
    what: &'static str,
) -> Result<usize, bincode::error::DecodeError> {
    let len = <u64 as Decode<D::Context>>::decode(d)?;
    if len > max as u64 {
        return Err(bincode::error::DecodeError::OtherString(format!(
            "{what} length {len} exceeds the limit of {max}"
        )));
    }
    // `len <= max` and `max` is a usize, so this cannot truncate.
    Ok(len as usize)
}

/// Read `len` raw bytes (the length was already checked).
pub(crate) fn decode_bytes<D: Decoder>(
    d: &mut D,
    len: usize,
) -> Result<Vec<u8>, bincode::error::DecodeError> {
    d.claim_bytes_read(len)?;
    let mut v = vec![0u8; len];
    bincode::de::read::Reader::read(d.reader(), &mut v)?;
    Ok(v)
}

/// A canonical-form violation, as a bincode error.
pub(crate) fn invalid(reason: String) -> bincode::error::DecodeError {
    bincode::error::DecodeError::OtherString(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_trailing_bytes() {
        let mut b = encode(&7u64);
        assert_eq!(decode::<u64>(&b), Ok(7));
        b.push(0);
        assert!(matches!(
            decode::<u64>(&b),
            Err(DecodeError::TrailingBytes { extra: 1, .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn encoded_len_is_the_encoding_s_length(v: Vec<Vec<u8>>, x: u64, o: Option<u32>) {
            let value = (v, x, o);
            proptest::prop_assert_eq!(encoded_len(&value), encode(&value).len());
        }
    }

    #[test]
    fn fixed_little_endian_layout() {
        assert_eq!(encode(&1u32), vec![1, 0, 0, 0]);
        assert_eq!(encode(&vec![9u8]), vec![1, 0, 0, 0, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn huge_claimed_length_is_rejected_without_allocating() {
        let mut b = u64::MAX.to_le_bytes().to_vec();
        b.extend_from_slice(&[0; 8]);
        assert!(decode::<Vec<u8>>(&b).is_err());
    }

    #[test]
    fn bad_bool_and_option_tags_are_rejected() {
        assert!(decode::<bool>(&[2]).is_err());
        assert!(decode::<Option<u8>>(&[2, 0]).is_err());
    }
}
