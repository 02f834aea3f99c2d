//! Claims that cannot be stolen: a pending reveal seen by a thief (even one
//! who mines and censors) does not lose the name; the CLI path reports a
//! lost claim honestly; nonce jumps and expired writes are refused.

use std::time::Duration;

use xirtam_node::rpc::{NodeApiClient, code};
use xirtam_node_api::client;
use xirtam_proofs::{Op, encode};

use crate::common::{
    NET, TestNode, claim_op, commit_op, key, memory_node, mine, name, op, prepare_claim, tip_hash,
};

/// Owner key (hex) and value of `n` as the node proves it at its tip.
async fn holder(rpc: &jsonrpsee::http_client::HttpClient, n: &str) -> Option<(String, Vec<u8>)> {
    client::get(rpc, &name(n), None)
        .await
        .expect("verified lookup")
        .value
        .map(|r| (r.owners.keys()[0].to_hex(), r.value.as_bytes().to_vec()))
}

fn rule(e: &jsonrpsee::core::ClientError) -> String {
    e.to_string()
}

/// A thief sees Alice's pending reveal (name, value, everything), commits
/// to the name itself, mines its own reveal into blocks that leave Alice's
/// out, and feeds them to Alice's node. Alice's earlier commitment still
/// wins the name, and the thief can neither update it nor claim it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_who_mines_cannot_steal_a_pending_claim() {
    let t = TestNode::start().await;
    let rpc = t.client();
    let (alice, thief) = (key(1), key(6));
    t.mine(2).await;
    let reveal = prepare_claim(&t.node, "@alice", &alice, b"alice's").await;
    let Op::Write(w) = &reveal else {
        panic!("a reveal is a write")
    };
    let alice_commit = w.claim.map(|c| c.commit_height).expect("a claim");
    t.node.submit_op(reveal.clone()).expect("reveal admitted");

    // The thief mines on a copy of the chain that never sees Alice's ops.
    let m = memory_node();
    let height = t.node.lock().chain.height();
    for h in 1..=height {
        let core = t.node.lock();
        let hash = core.chain.hash_at(h).expect("main chain");
        let b = core.chain.block(&hash).expect("read").expect("stored");
        drop(core);
        m.submit_block(b).expect("same chain");
    }
    let recent = tip_hash(&m);
    m.submit_op(commit_op("@alice", &thief, recent))
        .expect("thief's commitment");
    let commit_block = mine(m.clone(), 1).await;
    let thief_commit = commit_block[0].header.height;
    assert!(thief_commit > alice_commit);
    let stolen = claim_op("@alice", &thief, b"stolen", thief_commit, recent);

    // Through the honest node's mempool the theft goes nowhere.
    let e = rpc
        .dir_submit(hex::encode(encode(&stolen)))
        .await
        .expect_err("refused while the earlier claim is pending");
    assert!(
        rule(&e).contains(&code::MEMPOOL_REJECTED.to_string()),
        "{e}"
    );

    // As a miner it gets its reveal into a block, which becomes the tip.
    m.submit_op(stolen.clone()).expect("thief's own pool");
    let theft = mine(m.clone(), 1).await;
    assert_eq!(theft[0].ops.len(), 1);
    for b in commit_block.iter().chain(&theft) {
        let s = rpc
            .chain_submit_block(hex::encode(encode(b)))
            .await
            .expect("valid blocks");
        assert_eq!(s.status, "tip");
    }
    assert_eq!(
        holder(&rpc, "@alice").await.map(|h| h.1),
        Some(b"stolen".to_vec())
    );
    // Alice's reveal is still valid and pending: it takes the name back in
    // the next block.
    assert!(t.node.lock().mempool.contains(&reveal));
    t.mine(1).await;
    assert_eq!(
        holder(&rpc, "@alice").await,
        Some((alice.public().to_hex(), b"alice's".to_vec()))
    );
    let r = t
        .node
        .lock()
        .chain
        .record(&name("@alice"))
        .expect("read")
        .expect("claimed");
    assert_eq!(r.claimed_at, alice_commit);

    // The thief can do nothing more: not update, not claim again.
    let recent = tip_hash(&t.node);
    let upd = op("@alice", r.nonce + 1, &thief, &thief, b"mine", recent);
    let e = rpc
        .dir_submit(hex::encode(encode(&upd)))
        .await
        .expect_err("not an owner");
    assert!(rule(&e).contains("not_owner"), "{e}");
    let again = claim_op("@alice", &thief, b"stolen", thief_commit, recent);
    let e = rpc
        .dir_submit(hex::encode(encode(&again)))
        .await
        .expect_err("a later commitment never wins");
    assert!(rule(&e).contains("name_taken"), "{e}");
}

/// When another claim wins (here one with an earlier commitment), the
/// client's wait reports it instead of printing the winner's record and
/// succeeding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claim_is_reported_not_confirmed() {
    let t = TestNode::start().await;
    let rpc = t.client();
    let (alice, early) = (key(1), key(7));
    t.mine(2).await;
    let recent = tip_hash(&t.node);
    // Someone committed to @alice one block before Alice did.
    t.node
        .submit_op(commit_op("@alice", &early, recent))
        .expect("admitted");
    let early_commit = t.mine(1).await[0].header.height;
    let mine_reveal = prepare_claim(&t.node, "@alice", &alice, b"alice's").await;
    t.node.submit_op(mine_reveal.clone()).expect("admitted");
    t.mine(1).await;
    let Op::Write(w) = mine_reveal else {
        panic!("a write")
    };
    // Alice's claim is confirmed for now...
    let c = client::wait_confirmed(&rpc, &w, 1, Duration::from_secs(10))
        .await
        .expect("confirmed at first");
    assert!(c.value.is_some());
    // ...until the earlier commitment is revealed.
    t.node
        .submit_op(claim_op("@alice", &early, b"first!", early_commit, recent))
        .expect("earlier commitment wins");
    t.mine(2).await;
    let e = client::wait_confirmed(&rpc, &w, 2, Duration::from_secs(10))
        .await
        .expect_err("the claim was lost");
    let msg = format!("{e:#}");
    assert!(
        msg.contains("did not take effect") && msg.contains("earlier commitment"),
        "{msg}"
    );
}

/// An update must carry exactly the next nonce, and a signed write expires
/// `stamp_window` blocks after its anchor (nobody can re-stamp it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_jumps_and_expired_writes_are_refused() {
    let t = TestNode::start().await;
    let rpc = t.client();
    let alice = key(1);
    t.mine(2).await;
    let reveal = prepare_claim(&t.node, "@alice", &alice, b"v1").await;
    t.node.submit_op(reveal).expect("admitted");
    t.mine(1).await;
    let anchor = tip_hash(&t.node);
    for nonce in [3, u64::MAX] {
        let jump = op("@alice", nonce, &alice, &alice, b"v", anchor);
        let e = rpc
            .dir_submit(hex::encode(encode(&jump)))
            .await
            .expect_err("nonce jump");
        assert!(rule(&e).contains("nonce_not_next"), "{e}");
    }
    let late = op("@alice", 2, &alice, &alice, b"late", anchor);
    t.mine(NET.stamp_window as usize).await;
    let e = rpc
        .dir_submit(hex::encode(encode(&late)))
        .await
        .expect_err("expired");
    assert!(rule(&e).contains("stale_stamp"), "{e}");
    // The same write on a fresh anchor is accepted: the old one expired,
    // it was not malformed.
    let fresh = op("@alice", 2, &alice, &alice, b"late", tip_hash(&t.node));
    rpc.dir_submit(hex::encode(encode(&fresh)))
        .await
        .expect("a fresh anchor is accepted");
}

/// A claim interrupted between its two phases resumes with the same salt
/// (what `xirtam-node name claim` stores before submitting): the pending
/// commitment is not submitted twice, and once mined it is the one the
/// reveal uses, so the earlier commitment height (which decides who wins)
/// is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_claim_resumes_with_its_commitment() {
    use xirtam_node_api::client::{ClientError, WriteRequest};
    let t = TestNode::start().await;
    let rpc = t.client();
    t.mine(2).await;
    let req = WriteRequest {
        name: name("@alice"),
        value: b"resumed".to_vec(),
        owners: vec![],
        claim: true,
        salt: Some([9; 32]),
    };
    let alice = key(1);
    // Nothing is mined: two runs submit the commitment (once) and give up.
    for _ in 0..2 {
        let e = client::write(&rpc, &alice, &req, Duration::from_millis(300))
            .await
            .expect_err("nothing mined");
        assert!(matches!(e, ClientError::Timeout(_)), "{e}");
    }
    let commit_height = t.mine(1).await[0].header.height;
    let w = crate::common::while_mining(
        &t.node,
        client::write(&rpc, &alice, &req, Duration::from_secs(30)),
    )
    .await
    .expect("resumed");
    assert_eq!(w.claim.map(|c| c.commit_height), Some(commit_height));
    let c = crate::common::while_mining(
        &t.node,
        client::wait_confirmed(&rpc, &w, 1, Duration::from_secs(30)),
    )
    .await
    .expect("confirmed");
    assert_eq!(c.value.map(|r| r.claimed_at), Some(commit_height));
}
