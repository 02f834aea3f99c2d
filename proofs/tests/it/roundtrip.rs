//! Proptest strategies for every encoded type, and encode/decode round trips.

use proptest::prelude::*;
use xirtam_proofs::block::{Block, OpProof};
use xirtam_proofs::header::{ChainState, Header};
use xirtam_proofs::history::{HistoryNode, HistoryProof};
use xirtam_proofs::op::{Claim, Commit, Op, Owners, Record, Stamp, Value, Write};
use xirtam_proofs::pow::{CompactTarget, U256};
use xirtam_proofs::state::{StateProof, Terminal};
use xirtam_proofs::{Hash, Name, PublicKey, Signature, decode, encode};

pub(crate) fn hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

pub(crate) fn name() -> impl Strategy<Value = Name> {
    "[@~][a-z0-9][a-z0-9_-]{0,30}".prop_map(|s| Name::new(&s).expect("regex matches the syntax"))
}

pub(crate) fn owners() -> impl Strategy<Value = Owners> {
    prop::collection::vec(any::<[u8; 32]>().prop_map(PublicKey), 1..5)
        .prop_map(|v| Owners::new(v).expect("1..5 keys"))
}

pub(crate) fn value() -> impl Strategy<Value = Value> {
    prop::collection::vec(any::<u8>(), 0..200).prop_map(|v| Value::new(v).expect("small"))
}

pub(crate) fn record() -> impl Strategy<Value = Record> {
    (any::<u64>(), owners(), value(), any::<u64>()).prop_map(|(nonce, owners, value, at)| Record {
        nonce,
        owners,
        value,
        claimed_at: at,
    })
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    let claim = prop::option::of((any::<[u8; 32]>(), any::<u64>()).prop_map(
        |(salt, commit_height)| Claim {
            salt,
            commit_height,
        },
    ));
    let write = (
        (name(), any::<u64>(), any::<[u8; 32]>(), owners(), value()),
        claim,
        prop::collection::vec(any::<u8>(), 64),
        hash(),
        any::<u64>(),
    )
        .prop_map(
            |((key, nonce, signer, owners, value), claim, sig, block, snonce)| {
                let mut s = [0u8; 64];
                s.copy_from_slice(&sig);
                Op::Write(Write {
                    key,
                    nonce,
                    signer: PublicKey(signer),
                    owners,
                    value,
                    claim,
                    signature: Signature(s),
                    stamp: Stamp {
                        block,
                        nonce: snonce,
                    },
                })
            },
        );
    let commit = (hash(), hash(), any::<u64>()).prop_map(|(commitment, block, nonce)| {
        Op::Commit(Commit {
            commitment,
            stamp: Stamp { block, nonce },
        })
    });
    prop_oneof![3 => write, 1 => commit]
}

pub(crate) fn header() -> impl Strategy<Value = Header> {
    (
        any::<u32>(),
        any::<u64>(),
        hash(),
        any::<u64>(),
        any::<u32>(),
        hash(),
        hash(),
        hash(),
        any::<u64>(),
    )
        .prop_map(
            |(version, height, prev, time, bits, ops_root, state_root, history_root, nonce)| {
                Header {
                    version,
                    height,
                    prev,
                    time,
                    bits: CompactTarget(bits),
                    ops_root,
                    state_root,
                    history_root,
                    nonce,
                }
            },
        )
}

pub(crate) fn state_proof() -> impl Strategy<Value = StateProof> {
    let terminal = prop_oneof![
        Just(Terminal::Empty),
        Just(Terminal::Leaf),
        (hash(), hash()).prop_map(|(key, value)| Terminal::Other { key, value }),
    ];
    let sibling = prop_oneof![
        Just(Hash::ZERO),
        hash().prop_filter("non-zero", |h| *h != Hash::ZERO)
    ];
    (prop::collection::vec(sibling, 0..40), terminal)
        .prop_map(|(siblings, terminal)| StateProof { siblings, terminal })
}

fn history_node() -> impl Strategy<Value = HistoryNode> {
    (hash(), any::<[u8; 32]>()).prop_map(|(hash, w)| HistoryNode {
        hash,
        work: U256::from_be_bytes(w),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn header_round_trips(h in header()) {
        let b = encode(&h);
        prop_assert_eq!(b.len(), xirtam_proofs::header::HEADER_LEN);
        prop_assert_eq!(decode::<Header>(&b), Ok(h));
    }

    #[test]
    fn op_and_record_round_trip(o in op(), r in record()) {
        prop_assert_eq!(decode::<Op>(&encode(&o)), Ok(o));
        prop_assert_eq!(decode::<Record>(&encode(&r)), Ok(r));
    }

    #[test]
    fn block_round_trips(h in header(), ops in prop::collection::vec(op(), 0..4)) {
        let b = Block { header: h, ops };
        prop_assert_eq!(decode::<Block>(&encode(&b)), Ok(b));
    }

    #[test]
    fn state_proof_round_trips(p in state_proof()) {
        prop_assert_eq!(decode::<StateProof>(&encode(&p)), Ok(p));
    }

    #[test]
    fn small_proofs_round_trip(
        index in any::<u64>(), count in any::<u64>(), sibs in prop::collection::vec(hash(), 0..20),
        path in prop::collection::vec(history_node(), 0..10),
    ) {
        let p = OpProof { index, count, siblings: sibs };
        prop_assert_eq!(decode::<OpProof>(&encode(&p)), Ok(p));
        let hp = HistoryProof { index, leaf_count: count, path: path.clone(), other_peaks: path };
        prop_assert_eq!(decode::<HistoryProof>(&encode(&hp)), Ok(hp));
    }

    #[test]
    fn chain_state_round_trips(n in 0usize..5) {
        let mut s = ChainState::genesis(&xirtam_proofs::LOCAL);
        crate::common::mine_chain(&xirtam_proofs::LOCAL, &mut s, n);
        prop_assert_eq!(decode::<ChainState>(&encode(&s)), Ok(s));
    }
}
