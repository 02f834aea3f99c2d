//! Decoding arbitrary bytes into any type never panics; it returns a value
//! or a typed error. Random bytes, and mutations of valid encodings (which
//! get much deeper into the decoders).

use proptest::prelude::*;
use xirtam_proofs::block::{Block, OpProof};
use xirtam_proofs::header::{ChainState, Header};
use xirtam_proofs::history::{HistoryPeaks, HistoryProof};
use xirtam_proofs::op::{Op, Owners, Record, Stamp, Value};
use xirtam_proofs::pow::CompactTarget;
use xirtam_proofs::state::{Node, StateProof};
use xirtam_proofs::{Hash, Name, PublicKey, Signature, decode, decode_hex, encode};

use crate::roundtrip;

/// Try every decoder on `bytes`; any canonical success must re-encode to
/// exactly `bytes`.
fn decode_all(bytes: &[u8]) {
    fn one<T: bincode::Encode + bincode::Decode<()>>(bytes: &[u8]) {
        if let Ok(v) = decode::<T>(bytes) {
            assert_eq!(
                encode(&v),
                bytes,
                "decoding is canonical: one value, one encoding"
            );
        }
    }
    one::<Header>(bytes);
    one::<Block>(bytes);
    one::<Op>(bytes);
    one::<Record>(bytes);
    one::<Name>(bytes);
    one::<Owners>(bytes);
    one::<Value>(bytes);
    one::<Stamp>(bytes);
    one::<StateProof>(bytes);
    one::<OpProof>(bytes);
    one::<HistoryProof>(bytes);
    one::<HistoryPeaks>(bytes);
    one::<ChainState>(bytes);
    one::<Node>(bytes);
    one::<Hash>(bytes);
    one::<PublicKey>(bytes);
    one::<Signature>(bytes);
    one::<CompactTarget>(bytes);
    let _ = decode_hex::<Op>(&String::from_utf8_lossy(bytes));
}

fn mutate(mut b: Vec<u8>, edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
    if b.is_empty() {
        return b;
    }
    for (pos, x) in edits {
        let i = pos % b.len();
        b[i] ^= x;
    }
    b.truncate(b.len() - cut % b.len());
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        decode_all(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic(
        o in roundtrip::op(),
        h in roundtrip::header(),
        p in roundtrip::state_proof(),
        edits in prop::collection::vec((any::<usize>(), 1u8..), 1..4),
        cut in any::<usize>(),
    ) {
        let block = encode(&Block { header: h, ops: vec![o.clone()] });
        for b in [encode(&o), encode(&h), encode(&p), block] {
            decode_all(&mutate(b.clone(), &edits, 0));
            decode_all(&mutate(b, &edits, cut));
        }
    }
}

#[test]
fn huge_lengths_are_refused_before_allocating() {
    // A block header followed by a claimed 2^62 ops.
    let mut b = encode(&xirtam_proofs::LOCAL.genesis_header());
    b.extend_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(decode::<Block>(&b).is_err());
    // A value claiming 1 GiB.
    let mut v = (1u64 << 30).to_le_bytes().to_vec();
    v.push(0);
    assert!(decode::<Value>(&v).is_err());
}
