//! Op rules and tampering: signature, nonce, owner, stamp reuse, stale
//! stamp, expiry, claims by commitment, limits, cross-network replay; and
//! block-body rules.

use xirtam_proofs::block::{Block, BlockError, ops_root};
use xirtam_proofs::keys::SignatureError;
use xirtam_proofs::op::{Op, OpError, Owners, Value, Write, apply};
use xirtam_proofs::params::{LOCAL, TESTNET};
use xirtam_proofs::{Hash, Record};

use crate::common::{claim, commit, key, name, op};

fn recent() -> Hash {
    LOCAL.genesis_hash
}

const SALT: [u8; 32] = [7; 32];

/// Height at which a claim of a commitment mined at 10 is first valid.
fn ripe() -> u64 {
    10 + LOCAL.claim_maturity
}

/// `@alice` claimed by `alice` through a commitment mined at height 10.
fn claimed(alice: &xirtam_proofs::SecretKey) -> Record {
    let c = claim("@alice", alice, b"v1", SALT, 10, recent());
    apply(&LOCAL, None, &c, ripe(), true).expect("first claim")
}

#[test]
fn valid_claim_then_update() {
    let alice = key(1);
    let c = claim("@alice", &alice, b"v1", SALT, 10, recent());
    Op::Write(c.clone())
        .check_stateless(&LOCAL)
        .expect("valid claim");
    let r1 = apply(&LOCAL, None, &c, ripe(), true).expect("first claim");
    assert_eq!((r1.nonce, r1.claimed_at), (1, 10));
    assert_eq!(r1.settled_at(&LOCAL), 10 + LOCAL.claim_expiry);
    let upd = op("@alice", 2, &alice, &[&alice], b"v2", recent());
    Op::Write(upd.clone())
        .check_stateless(&LOCAL)
        .expect("valid update");
    let r2 = apply(&LOCAL, Some(&r1), &upd, ripe() + 1, false).expect("owner update");
    assert_eq!(r2.value.as_bytes(), b"v2");
    assert_eq!((r2.nonce, r2.claimed_at), (2, 10));
    // The claim names its commitment's state entry, bound to the claimant.
    let (key_hash, value) = c.claim_entry(&LOCAL).expect("a claim");
    let posted = commit("@alice", &alice, SALT, recent());
    assert_eq!(key_hash, Op::Commit(posted).state_key());
    assert_eq!(value, xirtam_proofs::state::commit_entry_hash(10));
    assert_ne!(
        Op::Commit(commit("@alice", &key(2), SALT, recent())).state_key(),
        key_hash
    );
}

#[test]
fn a_name_cannot_be_written_without_a_commitment() {
    let alice = key(1);
    // A plain write to an unclaimed name (the old one-step claim).
    let w = op("@alice", 1, &alice, &[&alice], b"v", recent());
    assert_eq!(
        apply(&LOCAL, None, &w, 50, true),
        Err(OpError::Unclaimed(name("@alice")))
    );
    // A claim whose commitment is not in the state.
    let c = claim("@alice", &alice, b"v", SALT, 10, recent());
    assert_eq!(
        apply(&LOCAL, None, &c, ripe(), false),
        Err(OpError::CommitmentUnknown(10))
    );
}

#[test]
fn claims_wait_for_maturity_and_expire() {
    let alice = key(1);
    let c = claim("@alice", &alice, b"v", SALT, 10, recent());
    for h in [9, 10, ripe() - 1] {
        assert!(
            matches!(
                apply(&LOCAL, None, &c, h, true),
                Err(OpError::ClaimTooEarly { .. })
            ),
            "height {h}"
        );
    }
    assert!(apply(&LOCAL, None, &c, ripe(), true).is_ok());
    assert!(apply(&LOCAL, None, &c, 10 + LOCAL.claim_expiry, true).is_ok());
    assert_eq!(
        apply(&LOCAL, None, &c, 11 + LOCAL.claim_expiry, true),
        Err(OpError::CommitmentExpired {
            commit_height: 10,
            height: 11 + LOCAL.claim_expiry,
            expiry: LOCAL.claim_expiry
        })
    );
}

/// The front-running attack: a thief who sees Alice's reveal can only
/// commit after it, so the earliest commitment wins, whatever order the
/// reveals are mined in.
#[test]
fn the_earliest_commitment_wins_whatever_the_reveal_order() {
    let (alice, thief) = (key(1), key(6));
    let honest = claim("@alice", &alice, b"honest", SALT, 10, recent());
    let stolen = claim("@alice", &thief, b"forged", [9; 32], 12, recent());
    // The thief's reveal is mined first (a miner's choice)...
    let h = 12 + LOCAL.claim_maturity;
    let thief_record = apply(&LOCAL, None, &stolen, h, true).expect("unclaimed");
    // ... even with a jump of its nonce to the end ...
    let burn = op("@alice", 2, &thief, &[&thief], b"forged", recent());
    let thief_record =
        apply(&LOCAL, Some(&thief_record), &burn, h + 1, false).expect("thief updates");
    // ... Alice's earlier commitment still takes the name.
    let r = apply(&LOCAL, Some(&thief_record), &honest, h + 2, true).expect("earlier wins");
    assert_eq!(r.owners, Owners::single(alice.public()));
    assert_eq!((r.nonce, r.claimed_at), (3, 10));
    // And the thief's claim can never take it back.
    assert_eq!(
        apply(&LOCAL, Some(&r), &stolen, h + 3, true),
        Err(OpError::NameTaken {
            name: name("@alice"),
            held: 10,
            commit_height: 12
        })
    );
    // A commitment in the same block does not win either (ties: first
    // mined).
    let same = claim("@alice", &thief, b"x", [3; 32], 10, recent());
    assert!(matches!(
        apply(&LOCAL, Some(&r), &same, h + 3, true),
        Err(OpError::NameTaken { .. })
    ));
}

#[test]
fn a_claim_carries_nonce_one() {
    let alice = key(1);
    let mut c = claim("@alice", &alice, b"v", SALT, 10, recent());
    c.nonce = 2;
    assert_eq!(
        Op::Write(c).check_stateless(&LOCAL),
        Err(OpError::ClaimNonce(2))
    );
}

#[test]
fn tampered_signature_is_rejected() {
    let alice = key(1);
    let mut o = op("@alice", 1, &alice, &[&alice], b"v", recent());
    o.signature.0[10] ^= 1;
    assert_eq!(
        Op::Write(o).check_stateless(&LOCAL),
        Err(OpError::Signature(SignatureError::Invalid))
    );
}

fn resolved(mut w: Write) -> Op {
    assert!(w.solve_stamp(&LOCAL, 0, 1 << 24));
    Op::Write(w)
}

#[test]
fn changed_content_breaks_the_signature() {
    let alice = key(1);
    let o = op("@alice", 1, &alice, &[&alice], b"v", recent());
    // Change the value and re-solve the stamp so only the signature is stale.
    let mut changed = o.clone();
    changed.value = Value::new(b"evil".to_vec()).expect("small");
    assert_eq!(
        resolved(changed).check_stateless(&LOCAL),
        Err(OpError::Signature(SignatureError::Invalid))
    );
    // Same for a bumped nonce, and for a claim's salt or height.
    let mut bumped = o.clone();
    bumped.nonce = 9;
    assert_eq!(
        resolved(bumped).check_stateless(&LOCAL),
        Err(OpError::Signature(SignatureError::Invalid))
    );
    let c = claim("@alice", &alice, b"v", SALT, 10, recent());
    let mut other_salt = c.clone();
    if let Some(cl) = other_salt.claim.as_mut() {
        cl.salt[0] ^= 1;
    }
    let mut other_height = c;
    if let Some(cl) = other_height.claim.as_mut() {
        cl.commit_height = 9;
    }
    for tampered in [other_salt, other_height] {
        assert_eq!(
            resolved(tampered).check_stateless(&LOCAL),
            Err(OpError::Signature(SignatureError::Invalid))
        );
    }
}

/// A signed write expires: its anchor is signed, so nobody can re-stamp it
/// on a newer block to apply it later.
#[test]
fn an_old_write_cannot_be_re_stamped() {
    let alice = key(1);
    let o = op("@alice", 2, &alice, &[&alice], b"v", recent());
    let mut restamped = o.clone();
    restamped.stamp.block = Hash([5; 32]);
    assert_eq!(
        resolved(restamped).check_stateless(&LOCAL),
        Err(OpError::Signature(SignatureError::Invalid))
    );
    // And with its own anchor it is stale past the window.
    let w = LOCAL.stamp_window;
    assert!(matches!(
        Op::Write(o).check_stamp_age(&LOCAL, 10, 11 + w),
        Err(OpError::StaleStamp { .. })
    ));
}

#[test]
fn the_nonce_must_be_exactly_the_next() {
    let alice = key(1);
    let r = claimed(&alice);
    for n in [1, 3, 4, u64::MAX] {
        let o = op("@alice", n, &alice, &[&alice], b"w", recent());
        assert_eq!(
            apply(&LOCAL, Some(&r), &o, 50, false),
            Err(OpError::NonceNotNext {
                expected: 2,
                got: n
            })
        );
    }
    let next = op("@alice", 2, &alice, &[&alice], b"w", recent());
    assert!(apply(&LOCAL, Some(&r), &next, 50, false).is_ok());
    let mut zero = op("@alice", 1, &alice, &[&alice], b"v", recent());
    zero.nonce = 0;
    assert_eq!(
        resolved(zero).check_stateless(&LOCAL),
        Err(OpError::ZeroNonce)
    );
}

#[test]
fn only_owners_may_update_and_claims_must_own() {
    let (alice, mallory) = (key(1), key(2));
    let r = claimed(&alice);
    // An update of @alice by another key.
    let steal = op("@alice", 2, &mallory, &[&mallory], b"mine", recent());
    assert_eq!(
        apply(&LOCAL, Some(&r), &steal, 50, false),
        Err(OpError::NotOwner(mallory.public()))
    );
    // Owners can hand over: the new owner can then update.
    let handover = op("@alice", 2, &alice, &[&mallory], b"v", recent());
    let r2 = apply(&LOCAL, Some(&r), &handover, 50, false).expect("owner hands over");
    assert!(
        apply(
            &LOCAL,
            Some(&r2),
            &op("@alice", 3, &mallory, &[&mallory], b"x", recent()),
            51,
            false
        )
        .is_ok()
    );
    assert!(
        apply(
            &LOCAL,
            Some(&r2),
            &op("@alice", 3, &alice, &[&alice], b"x", recent()),
            51,
            false
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
    assert_eq!(Op::Write(b).check_stateless(&LOCAL), Err(OpError::StampPow));
    // A commitment's stamp is bound to the commitment and its block.
    let c = commit("@alice", &alice, SALT, recent());
    let mut other = commit("@bob", &alice, SALT, recent());
    other.stamp = c.stamp;
    assert_eq!(
        Op::Commit(other).check_stateless(&LOCAL),
        Err(OpError::StampPow)
    );
    let mut moved = c;
    moved.stamp.block.0[0] ^= 1;
    assert_eq!(
        Op::Commit(moved).check_stateless(&LOCAL),
        Err(OpError::StampPow)
    );
    assert_eq!(Op::Commit(c).check_stateless(&LOCAL), Ok(()));
}

#[test]
fn stale_or_future_stamp_is_rejected() {
    let alice = key(1);
    let o = Op::Write(op("@alice", 1, &alice, &[&alice], b"v", recent()));
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
    assert!(o.solve_stamp(&testnet, 0, 1 << 24));
    assert_eq!(
        Op::Write(o).check_stateless(&testnet),
        Err(OpError::Signature(SignatureError::Invalid))
    );
    // A commitment names the network too.
    let n = name("@alice");
    assert_ne!(
        xirtam_proofs::op::claim_commitment(&LOCAL, &n, &alice.public(), &SALT),
        xirtam_proofs::op::claim_commitment(&TESTNET, &n, &alice.public(), &SALT)
    );
}

#[test]
fn limits_are_enforced_per_network() {
    let alice = key(1);
    let big = vec![0u8; LOCAL.max_value_len + 1];
    let o = op("@alice", 1, &alice, &[&alice], &big, recent());
    assert!(matches!(
        Op::Write(o).check_stateless(&LOCAL),
        Err(OpError::ValueTooLong { .. })
    ));
    let many: Vec<_> = (10..10 + LOCAL.max_owners as u8 + 1).map(key).collect();
    let refs: Vec<_> = many.iter().collect();
    let o = op("@alice", 1, &many[0], &refs, b"v", recent());
    assert!(matches!(
        Op::Write(o).check_stateless(&LOCAL),
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
    let a = Op::Write(op("@alice", 2, &alice, &[&alice], b"v", recent()));
    let b = op("@bob", 2, &bob, &[&bob], b"v", recent());
    let c = Op::Commit(commit("@carol", &bob, SALT, recent()));
    block_with(vec![a.clone(), Op::Write(b.clone()), c.clone()])
        .check_stateless(&LOCAL)
        .expect("valid block");

    let mut wrong_root = block_with(vec![a.clone(), Op::Write(b.clone())]);
    wrong_root.ops.swap(0, 1);
    assert_eq!(wrong_root.check_stateless(&LOCAL), Err(BlockError::OpsRoot));

    let a2 = Op::Write(op("@alice", 3, &alice, &[&alice], b"w", recent()));
    assert!(matches!(
        block_with(vec![a.clone(), a2]).check_stateless(&LOCAL),
        Err(BlockError::DuplicateKey(_))
    ));
    assert!(matches!(
        block_with(vec![c.clone(), c]).check_stateless(&LOCAL),
        Err(BlockError::DuplicateKey(_))
    ));

    let mut bad = b;
    bad.signature.0[0] ^= 1;
    assert!(matches!(
        block_with(vec![a, Op::Write(bad)]).check_stateless(&LOCAL),
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
        claimed_at: 5,
    };
    let mut r2 = r.clone();
    r2.nonce = 2;
    let mut r3 = r.clone();
    r3.owners = Owners::single(key(2).public());
    let mut r4 = r.clone();
    r4.value = Value::new(b"w".to_vec()).expect("small");
    let mut r5 = r.clone();
    r5.claimed_at = 6;
    for other in [r2, r3, r4, r5] {
        assert_ne!(r.hash(), other.hash());
    }
}

/// Checking many ops at once (signatures batched) reports exactly what
/// checking them one by one reports: the first failing op and its rule.
#[test]
fn batched_op_checks_report_the_first_failure() {
    let mut ops: Vec<Op> = (1..=8u8)
        .map(|i| {
            let k = key(i);
            Op::Write(op(&format!("@u{i}"), 2, &k, &[&k], b"v", recent()))
        })
        .collect();
    ops.insert(3, Op::Commit(commit("@c", &key(1), SALT, recent())));
    assert_eq!(Op::check_stateless_all(&LOCAL, &ops), Ok(()));
    let first_failure = |ops: &[Op]| {
        ops.iter()
            .enumerate()
            .find_map(|(i, o)| o.check_stateless(&LOCAL).err().map(|e| (i, o.subject(), e)))
    };
    let corrupt_sig = |o: &mut Op| {
        if let Op::Write(w) = o {
            w.signature.0[5] ^= 1;
        }
    };
    let corrupt_stamp = |o: &mut Op| match o {
        Op::Write(w) => w.stamp.nonce ^= 1 << 40,
        Op::Commit(c) => c.stamp.nonce ^= 1 << 40,
    };
    // A bad signature before a bad stamp, then the other way round, then a
    // bad commitment stamp before a bad signature.
    let mut sig_first = ops.clone();
    corrupt_sig(&mut sig_first[2]);
    corrupt_stamp(&mut sig_first[5]);
    let mut stamp_first = ops.clone();
    corrupt_stamp(&mut stamp_first[2]);
    corrupt_sig(&mut stamp_first[5]);
    let mut commit_first = ops.clone();
    corrupt_stamp(&mut commit_first[3]);
    corrupt_sig(&mut commit_first[6]);
    for (case, expect_index) in [(sig_first, 2), (stamp_first, 2), (commit_first, 3)] {
        let got = Op::check_stateless_all(&LOCAL, &case).err();
        assert_eq!(got, first_failure(&case));
        assert_eq!(got.map(|(i, _, _)| i), Some(expect_index));
    }
}
