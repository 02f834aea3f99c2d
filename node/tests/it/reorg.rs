//! Reorgs: feed the node a heavier side branch (built here) that changes
//! `@alice`; tip, state root and `dir_get` follow it. Then feed a heavier
//! continuation of the original branch: the node switches back, and its
//! state equals a fresh replay of its main chain from genesis.

use std::sync::Arc;

use xirtam_node::node::Node;
use xirtam_node::rpc::{HeightOrHash, NodeApiClient};
use xirtam_node::store::KvStore;
use xirtam_proofs::block::Block;
use xirtam_proofs::{Hash, decode_hex, encode};

use crate::common::{TestNode, key, memory_node, mine, op, tip_hash};

/// The value of `@alice` that the node serves (checked proof).
async fn alice(rpc: &jsonrpsee::http_client::HttpClient) -> Option<Vec<u8>> {
    let c = xirtam_node::client::get(rpc, &crate::common::name("@alice"), None)
        .await
        .expect("dir_get verifies");
    c.record.map(|r| r.value.as_bytes().to_vec())
}

async fn submit_all(rpc: &jsonrpsee::http_client::HttpClient, blocks: &[Block]) -> Vec<String> {
    let mut statuses = Vec::new();
    for b in blocks {
        let s = rpc
            .chain_submit_block(hex::encode(encode(b)))
            .await
            .expect("block accepted");
        statuses.push(s.status);
    }
    statuses
}

/// A memory node holding the same first blocks as `blocks`.
fn branch_from(blocks: &[Block]) -> Arc<Node<xirtam_node::store::MemoryStore>> {
    let n = memory_node();
    for b in blocks {
        n.submit_block(b.clone()).expect("known-good block");
    }
    n
}

fn state_root<S: KvStore>(n: &Node<S>) -> Hash {
    n.lock().chain.tip().header.state_root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavier_branch_reorgs_and_back() {
    let t = TestNode::start().await;
    let rpc = t.client();
    let (alice_key, mallory) = (key(1), key(2));

    // Common prefix: 2 blocks. Then the node's branch: @alice = "original".
    let prefix = t.mine(2).await;
    t.node
        .submit_op(op(
            "@alice",
            1,
            &alice_key,
            &alice_key,
            b"original",
            tip_hash(&t.node),
        ))
        .expect("op admitted");
    let original = t.mine(3).await;
    assert_eq!(alice(&rpc).await.as_deref(), Some(&b"original"[..]));
    let original_tip = tip_hash(&t.node);

    // A competing branch from the prefix with @alice = "other", one block
    // longer (equal work per block on regtest, so longer = heavier).
    let b = branch_from(&prefix);
    b.submit_op(op("@alice", 1, &mallory, &mallory, b"other", tip_hash(&b)))
        .expect("op admitted");
    let side = mine(b.clone(), 4).await;
    let statuses = submit_all(&rpc, &side).await;
    assert_eq!(statuses[..3], ["side-branch", "side-branch", "side-branch"]);
    assert_eq!(
        statuses[3], "tip",
        "the fourth block makes the branch heavier"
    );
    let tip = rpc.chain_tip().await.expect("tip");
    assert_eq!(tip.hash, tip_hash(&b).to_hex());
    assert_eq!(state_root(&t.node), state_root(&b));
    assert_eq!(alice(&rpc).await.as_deref(), Some(&b"other"[..]));
    // The original blocks are still stored, off the main chain.
    let old = rpc
        .chain_block(HeightOrHash::Hash(original_tip.to_hex()))
        .await
        .expect("side block kept");
    assert!(!old.main_chain);

    // Extend the original branch until it is heavier again.
    let c = branch_from(&[prefix.clone(), original.clone()].concat());
    let more = mine(c.clone(), 3).await;
    let statuses = submit_all(&rpc, &more).await;
    assert_eq!(statuses.last().map(String::as_str), Some("tip"));
    assert_eq!(
        rpc.chain_tip().await.expect("tip").hash,
        tip_hash(&c).to_hex()
    );
    assert_eq!(alice(&rpc).await.as_deref(), Some(&b"original"[..]));
    // Mallory's claim was disconnected; it is invalid on this branch
    // (@alice is owned by alice), so it did not return to the mempool.
    assert_eq!(rpc.node_info().await.expect("info").mempool_ops, 0);

    // Replay the node's main chain from genesis into a fresh node.
    let tip = rpc.chain_tip().await.expect("tip");
    let replay = memory_node();
    for h in 1..=tip.height {
        let v = rpc
            .chain_block(HeightOrHash::Height(h))
            .await
            .expect("block");
        assert!(v.main_chain);
        let block: Block = decode_hex(&v.block).expect("block decodes");
        replay.submit_block(block).expect("replays");
    }
    assert_eq!(tip_hash(&replay), tip_hash(&t.node));
    assert_eq!(state_root(&replay), state_root(&t.node));
    let r1 = replay
        .lock()
        .chain
        .record(&crate::common::name("@alice"))
        .expect("read");
    let r2 = t
        .node
        .lock()
        .chain
        .record(&crate::common::name("@alice"))
        .expect("read");
    assert_eq!(r1, r2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnected_ops_return_to_the_mempool() {
    let t = TestNode::start().await;
    let rpc = t.client();
    let prefix = t.mine(2).await;
    // The node includes @bob's claim; a heavier branch without it wins.
    t.node
        .submit_op(op("@bob", 1, &key(3), &key(3), b"bob", tip_hash(&t.node)))
        .expect("admitted");
    t.mine(1).await;
    assert_eq!(rpc.node_info().await.expect("info").mempool_ops, 0);
    let b = branch_from(&prefix);
    let side = mine(b, 2).await;
    submit_all(&rpc, &side).await;
    assert_eq!(rpc.chain_tip().await.expect("tip").height, 4);
    // Still valid on the new branch (stamp block is in the common prefix),
    // so it is pending again, and the next block includes it.
    assert_eq!(rpc.node_info().await.expect("info").mempool_ops, 1);
    let next = t.mine(1).await;
    assert_eq!(next[0].ops.len(), 1);
}
