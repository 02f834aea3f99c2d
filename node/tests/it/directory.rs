//! The directory through JSON-RPC: claim, update, a rejected second claim,
//! and proofs at the tip and at an older height, for present and absent
//! names, verified with `xirtam-proofs`.

use std::time::Duration;

use xirtam_node::rpc::{NodeApiClient, code};
use xirtam_node_api::client::{self, WriteRequest};
use xirtam_proofs::header::Header;
use xirtam_proofs::state::{StateProof, verify_state};
use xirtam_proofs::{Record, decode_hex, encode};

use crate::common::{TestNode, key, name, op, tip_hash, while_mining};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_update_reject_and_prove() {
    let t = TestNode::start().await;
    let rpc = t.client();
    t.mine(2).await;
    let alice = key(1);

    // Claim @alice through the client path the CLI uses.
    let req = WriteRequest {
        name: name("@alice"),
        value: b"v1".to_vec(),
        owners: vec![],
        claim: true,
        salt: None,
    };
    // A claim takes two ops and blocks in between: mine meanwhile.
    let wait = Duration::from_secs(30);
    let claim = while_mining(&t.node, client::write(&rpc, &alice, &req, wait))
        .await
        .expect("claim submitted");
    assert!(claim.claim.is_some(), "a first write is a claim");
    let c = while_mining(&t.node, client::wait_confirmed(&rpc, &claim, 1, wait))
        .await
        .expect("confirmed");
    // The block that included the reveal: the first height from the
    // commitment's where @alice exists.
    let commit_height = claim.claim.map_or(0, |c| c.commit_height);
    let mut v1_height = commit_height;
    while client::get(&rpc, &name("@alice"), Some(v1_height))
        .await
        .expect("dir_get")
        .value
        .is_none()
    {
        v1_height += 1;
        assert!(v1_height <= c.header.height, "the claim is included");
    }
    assert!(v1_height >= commit_height + crate::common::NET.claim_maturity);
    assert_eq!(
        c.value.as_ref().map(|r| r.value.as_bytes().to_vec()),
        Some(b"v1".to_vec())
    );
    assert_eq!(
        rpc.node_info().await.expect("info").mempool_ops,
        0,
        "included op left the pool"
    );

    // Update it.
    let upd = client::write(
        &rpc,
        &alice,
        &WriteRequest {
            value: b"v2".to_vec(),
            claim: false,
            ..req.clone()
        },
        wait,
    )
    .await
    .expect("update submitted");
    assert_eq!(upd.nonce, 2);
    t.mine(2).await;
    let c = client::wait_confirmed(&rpc, &upd, 2, Duration::from_secs(30))
        .await
        .expect("confirmed");
    assert_eq!(c.value.as_ref().map(|r| r.nonce), Some(2));

    // A second claim of @alice by another key is rejected by the node.
    let mallory = key(2);
    let steal = op("@alice", 3, &mallory, &mallory, b"mine", tip_hash(&t.node));
    let e = rpc
        .dir_submit(hex::encode(encode(&steal)))
        .await
        .expect_err("rejected");
    let msg = e.to_string();
    assert!(
        msg.contains(&code::INVALID_OP.to_string()) && msg.contains("not_owner"),
        "{msg}"
    );
    // ...and the client refuses before even building it.
    let e = client::write(&rpc, &mallory, &req, wait)
        .await
        .expect_err("client refuses");
    assert!(e.to_string().contains("already claimed"), "{e}");

    // Proofs, checked here with nothing but xirtam-proofs: at the tip...
    let tip = rpc.chain_tip().await.expect("tip");
    let headers = rpc.chain_headers(0, 10_000).await.expect("headers");
    assert_eq!(headers.len() as u64, tip.height + 1);
    let header_at = |h: u64| -> Header { decode_hex(&headers[h as usize]).expect("header") };
    // The compact batch carries the same headers, from any height.
    for from in [0, 2] {
        let compact = rpc
            .chain_headers_compact(from, 10_000)
            .await
            .expect("compact headers");
        let decoded =
            xirtam_node_api::wire::decode_compact_headers(&compact, 2000).expect("decodes");
        let expected: Vec<Header> = (from..=tip.height).map(header_at).collect();
        assert_eq!(decoded, expected);
    }
    let past_tip = rpc
        .chain_headers_compact(tip.height + 1, 5)
        .await
        .expect("compact headers");
    assert_eq!(past_tip, "", "nothing above the tip");
    let check = |v: &xirtam_node::rpc::DirGetView, expect_present: bool| {
        let header = header_at(v.height);
        assert_eq!(
            hex::encode(header.to_bytes()),
            v.header,
            "dir_get header is the chain's"
        );
        let record: Option<Record> = v
            .record
            .as_ref()
            .map(|r| decode_hex(&r.bytes).expect("record"));
        assert_eq!(record.is_some(), expect_present);
        let proof: StateProof = decode_hex(&v.proof).expect("proof");
        let n = name(&v.key);
        verify_state(&header.state_root, &n, record.as_ref(), &proof).expect("proof verifies");
        // Claiming the opposite must fail with the same proof.
        let flipped = if record.is_some() {
            None
        } else {
            Some(Record {
                nonce: 1,
                owners: xirtam_proofs::Owners::single(alice.public()),
                value: xirtam_proofs::Value::default(),
                claimed_at: 1,
            })
        };
        assert!(verify_state(&header.state_root, &n, flipped.as_ref(), &proof).is_err());
        record
    };
    let now = rpc.dir_get("@alice".into(), None).await.expect("dir_get");
    assert_eq!(now.height, tip.height);
    assert_eq!(check(&now, true).map(|r| r.nonce), Some(2));
    let absent = rpc.dir_get("@nobody".into(), None).await.expect("dir_get");
    check(&absent, false);
    // ...and at an older height, where @alice still held v1.
    let old = rpc
        .dir_get("@alice".into(), Some(v1_height))
        .await
        .expect("dir_get");
    assert_eq!(
        check(&old, true).map(|r| r.value.as_bytes().to_vec()),
        Some(b"v1".to_vec())
    );
    // Before the claim, @alice was absent.
    let before = rpc
        .dir_get("@alice".into(), Some(v1_height - 1))
        .await
        .expect("dir_get");
    check(&before, false);
}

/// The shared answer check (`xirtam-node-api`'s `wire`, used by the CLI)
/// refuses an answer that contradicts itself: another name, a header that
/// is not the block named, a record or proof that does not hold, oversized
/// hex.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_answer_does_not_verify() {
    let t = TestNode::start().await;
    let rpc = t.client();
    t.mine(2).await;
    crate::common::claim_pending(&t.node, "@alice", &key(1), b"v1").await;
    t.mine(1).await;
    let good = rpc.dir_get("@alice".into(), None).await.expect("dir_get");
    let alice_name = name("@alice");
    assert!(good.verify(&alice_name).expect("verifies").value.is_some());

    // Asked for @bob, answered for @alice.
    assert_eq!(
        good.verify(&name("@bob")).expect_err("other name").what,
        "key"
    );
    // The header of another block.
    let mut v = good.clone();
    v.header = rpc.chain_headers(0, 1).await.expect("headers")[0].clone();
    assert_eq!(
        v.verify(&alice_name).expect_err("wrong header").what,
        "header"
    );
    // Absence claimed with a presence proof.
    let mut v = good.clone();
    v.record = None;
    assert_eq!(
        v.verify(&alice_name).expect_err("hidden record").what,
        "proof"
    );
    // Another value with the same proof.
    let absent = rpc.dir_get("@nobody".into(), None).await.expect("dir_get");
    let mut v = absent.clone();
    v.record = good.record.clone();
    v.key = "@nobody".into();
    assert_eq!(
        v.verify(&name("@nobody")).expect_err("forged").what,
        "proof"
    );
    // Oversized hex is refused before decoding.
    let mut v = good.clone();
    v.proof = "00".repeat(xirtam_node::rpc::wire::MAX_OBJECT_BYTES + 1);
    let e = v.verify(&alice_name).expect_err("too long");
    assert!(e.what == "proof" && e.reason.contains("longer than"), "{e}");
}
