//! Op rules and tampering: signature, nonce, owner, stamp reuse, stale
//! stamp, limits, cross-network replay; and block-body rules.

use xirtam_proofs::block::{Block, BlockError, ops_root};
use xirtam_proofs::keys::SignatureError;
use xirtam_proofs::op::{Op, OpError, Owners, Value, apply};
use xirtam_proofs::params::{LOCAL, TESTNET};
use xirtam_proofs::{Hash, Record};

use crate::common::{key, name, op};

fn recent() -> Hash {
    LOCAL.genesis_hash
}

#[test]
fn valid_claim_then_update() {
    let alice = key(1);
    let claim = op("@alice", 1, &alice, &[&alice], b"v1", recent());
    claim.check_stateless(&LOCAL).expect("valid claim");
    let r1 = apply(None, &claim).expect("first claim");
    assert_eq!(r1.nonce, 1);
    let upd = op("@alice", 2, &alice, &[&alice], b"v2", recent());
    upd.check_stateless(&LOCAL).expect("valid update");
    let r2 = apply(Some(&r1), &upd).expect("owner update");
    assert_eq!(r2.value.as_bytes(), b"v2");
}

#[test]
fn tampered_signature_is_rejected() {
    let alice = key(1);
    let mut o = op("@alice", 1, &alice, &[&alice], b"v", recent());
    o.signature.0[10] ^= 1;
    assert_eq!(
        o.check_stateless(&LOCAL),
        Err(OpError::Signature(SignatureError::Invalid))
    );
}

#[test]
fn changed_content_breaks_the_signature() {
    let alice = key(1);
    let o = op("@alice", 1, &alice, &[&alice], b"v", recent());
    // Change the value and re-solve the stamp so only the signature is stale.
    let mut changed = o.clone();
    changed.value = Value::new(b"evil".to_vec()).expect("small");
    assert!(changed.solve_stamp(&LOCAL, recent(), 0, 1 << 24));
    assert_eq!(
        changed.check_stateless(&LOCAL),
        Err(OpError::Signature(SignatureError::Invalid))
    );
    // Same for a bumped nonce.
    let mut bumped = o;
    bumped.nonce = 9;
    assert!(bumped.solve_stamp(&LOCAL, recent(), 0, 1 << 24));
    assert_eq!(
        bumped.check_stateless(&LOCAL),
        Err(OpError::Signature(SignatureError::Invalid))
    );
}

#[test]
fn nonce_must_grow() {
    let alice = key(1);
    let r = apply(None, &op("@alice", 5, &alice, &[&alice], b"v", recent())).expect("claim");
    for n in [1, 4, 5] {
        let o = op("@alice", n, &alice, &[&alice], b"w", recent());
        assert_eq!(
            apply(Some(&r), &o),
            Err(OpError::NonceNotIncreasing { current: 5, got: n })
        );
    }
    assert!(
        apply(
            Some(&r),
            &op("@alice", 6, &alice, &[&alice], b"w", recent())
        )
        .is_ok()
    );
    let mut zero = op("@alice", 1, &alice, &[&alice], b"v", recent());
    zero.nonce = 0;
    assert_eq!(zero.check_stateless(&LOCAL), Err(OpError::ZeroNonce));
}

#[test]
fn only_owners_may_update_and_claims_must_own() {
    let (alice, mallory) = (key(1), key(2));
    let r = apply(None, &op("@alice", 1, &alice, &[&alice], b"v", recent())).expect("claim");
    // A second claim of @alice by another key.
    let steal = op("@alice", 2, &mallory, &[&mallory], b"mine", recent());
    steal.check_stateless(&LOCAL).expect("well formed");
    assert_eq!(
        apply(Some(&r), &steal),
        Err(OpError::NotOwner(mallory.public()))
    );
    // A claim whose signer is not among the new owners.
    let odd = op("@bob", 1, &mallory, &[&alice], b"v", recent());
    assert_eq!(apply(None, &odd), Err(OpError::NotOwner(mallory.public())));
    // Owners can hand over: the new owner can then update.
    let handover = op("@alice", 2, &alice, &[&mallory], b"v", recent());
    let r2 = apply(Some(&r), &handover).expect("owner hands over");
    assert!(
        apply(
            Some(&r2),
            &op("@alice", 3, &mallory, &[&mallory], b"x", recent())
        )
        .is_ok()
    );
    assert!(
        apply(
            Some(&r2),
            &op("@alice", 3, &alice, &[&alice], b"x", recent())
        )
        .is_err()
    );
}

#[test]
fn stamp_reused_on_another_op_is_rejected() {
    let alice = key(1);
    let a = op("@alice", 1, &alice, &[&alice], b"one", recent());
    let mut b = op("@alice", 1, &alice, &[&alice], b"two", recent());
    b.stamp = a.stamp;
    assert_eq!(b.check_stateless(&LOCAL), Err(OpError::StampPow));
    // The stamp is also bound to its block.
    let mut moved = a.clone();
    moved.stamp.block.0[0] ^= 1;
    assert_eq!(moved.check_stateless(&LOCAL), Err(OpError::StampPow));
}

#[test]
fn stale_or_future_stamp_is_rejected() {
    let alice = key(1);
    let o = op("@alice", 1, &alice, &[&alice], b"v", recent());
    let w = LOCAL.stamp_window;
    assert!(o.check_stamp_age(&LOCAL, 10, 10 + w).is_ok());
    assert!(o.check_stamp_age(&LOCAL, 10, 11).is_ok());
    assert_eq!(
        o.check_stamp_age(&LOCAL, 10, 11 + w),
        Err(OpError::StaleStamp {
            stamp_height: 10,
            height: 11 + w,
            window: w
        })
    );
    // The stamp's block must be strictly below the including block.
    assert!(o.check_stamp_age(&LOCAL, 10, 10).is_err());
    assert!(o.check_stamp_age(&LOCAL, 11, 10).is_err());
}

#[test]
fn op_for_one_network_is_invalid_on_another() {
    let alice = key(1);
    let mut o = op("@alice", 1, &alice, &[&alice], b"v", recent());
    // Testnet's genesis with local's cheap stamps, so that only the
    // signature's network binding can fail.
    let mut testnet = TESTNET.clone();
    testnet.stamp_target = LOCAL.stamp_target;
    assert!(o.solve_stamp(&testnet, testnet.genesis_hash, 0, 1 << 24));
    assert_eq!(
        o.check_stateless(&testnet),
        Err(OpError::Signature(SignatureError::Invalid))
    );
}

#[test]
fn limits_are_enforced_per_network() {
    let alice = key(1);
    let big = vec![0u8; LOCAL.max_value_len + 1];
    let o = op("@alice", 1, &alice, &[&alice], &big, recent());
    assert!(matches!(
        o.check_stateless(&LOCAL),
        Err(OpError::ValueTooLong { .. })
    ));
    let many: Vec<_> = (10..10 + LOCAL.max_owners as u8 + 1).map(key).collect();
    let refs: Vec<_> = many.iter().collect();
    let o = op("@alice", 1, &many[0], &refs, b"v", recent());
    assert!(matches!(
        o.check_stateless(&LOCAL),
        Err(OpError::TooManyOwners { .. })
    ));
    assert!(Owners::new(vec![]).is_none());
    assert!(Value::new(vec![0; xirtam_proofs::op::MAX_VALUE_CAP + 1]).is_none());
}

fn block_with(ops: Vec<Op>) -> Block {
    let mut header = LOCAL.genesis_header();
    header.ops_root = ops_root(&ops.iter().map(Op::hash).collect::<Vec<_>>());
    Block { header, ops }
}

#[test]
fn block_body_rules() {
    let (alice, bob) = (key(1), key(2));
    let a = op("@alice", 1, &alice, &[&alice], b"v", recent());
    let b = op("@bob", 1, &bob, &[&bob], b"v", recent());
    block_with(vec![a.clone(), b.clone()])
        .check_stateless(&LOCAL)
        .expect("valid block");

    let mut wrong_root = block_with(vec![a.clone(), b.clone()]);
    wrong_root.ops.swap(0, 1);
    assert_eq!(wrong_root.check_stateless(&LOCAL), Err(BlockError::OpsRoot));

    let a2 = op("@alice", 2, &alice, &[&alice], b"w", recent());
    assert!(matches!(
        block_with(vec![a.clone(), a2]).check_stateless(&LOCAL),
        Err(BlockError::DuplicateName(_))
    ));

    let mut bad = b;
    bad.signature.0[0] ^= 1;
    assert!(matches!(
        block_with(vec![a, bad]).check_stateless(&LOCAL),
        Err(BlockError::Op { index: 1, .. })
    ));
}

#[test]
fn record_hash_depends_on_every_field() {
    let alice = key(1);
    let r = Record {
        nonce: 1,
        owners: Owners::single(alice.public()),
        value: Value::new(b"v".to_vec()).expect("small"),
    };
    let mut r2 = r.clone();
    r2.nonce = 2;
    let mut r3 = r.clone();
    r3.owners = Owners::single(key(2).public());
    let mut r4 = r.clone();
    r4.value = Value::new(b"w".to_vec()).expect("small");
    for other in [r2, r3, r4] {
        assert_ne!(r.hash(), other.hash());
    }
    let _ = name("@x");
}

/// Checking many ops at once (signatures batched) reports exactly what
/// checking them one by one reports: the first failing op and its rule.
#[test]
fn batched_op_checks_report_the_first_failure() {
    let ops: Vec<Op> = (1..=8u8)
        .map(|i| {
            let k = key(i);
            op(&format!("@u{i}"), 1, &k, &[&k], b"v", recent())
        })
        .collect();
    assert_eq!(Op::check_stateless_all(&LOCAL, &ops), Ok(()));
    let first_failure = |ops: &[Op]| {
        ops.iter().enumerate().find_map(|(i, o)| {
            o.check_stateless(&LOCAL)
                .err()
                .map(|e| (i, o.key.clone(), e))
        })
    };
    // A bad signature before a bad stamp, then the other way round.
    let mut sig_first = ops.clone();
    sig_first[2].signature.0[5] ^= 1;
    sig_first[5].stamp.nonce ^= 1 << 40;
    let mut stamp_first = ops.clone();
    stamp_first[2].stamp.nonce ^= 1 << 40;
    stamp_first[5].signature.0[5] ^= 1;
    for (case, expect_index) in [(sig_first, 2), (stamp_first, 2)] {
        let got = Op::check_stateless_all(&LOCAL, &case).err();
        assert_eq!(got, first_failure(&case));
        assert_eq!(got.map(|(i, _, _)| i), Some(expect_index));
    }
}
