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

use crate::common::{TestNode, claim_pending, key, memory_node, mine, prepare_claim, tip_hash};

/// The value of `@alice` that the node serves (checked proof).
async fn alice(rpc: &jsonrpsee::http_client::HttpClient) -> Option<Vec<u8>> {
    let c = xirtam_node_api::client::get(rpc, &crate::common::name("@alice"), None)
        .await
        .expect("dir_get verifies");
    c.value.map(|r| r.value.as_bytes().to_vec())
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

/// The main-chain blocks of `n` from height `from` to its tip.
fn main_blocks<S: KvStore>(n: &Node<S>, from: u64) -> Vec<Block> {
    let core = n.lock();
    (from..=core.chain.height())
        .map(|h| {
            let hash = core.chain.hash_at(h).expect("main chain");
            core.chain.block(&hash).expect("read").expect("stored")
        })
        .collect()
}

fn state_root<S: KvStore>(n: &Node<S>) -> Hash {
    n.lock().chain.tip().header.state_root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavier_branch_reorgs_and_back() {
    let t = TestNode::start().await;
    let rpc = t.client();
    let (alice_key, mallory) = (key(1), key(2));

    // Common prefix: 2 blocks. Then the node's branch: @alice = "original"
    // (commitment in block 3, reveal in block 4), 3 blocks.
    let prefix = t.mine(2).await;
    let reveal = prepare_claim(&t.node, "@alice", &alice_key, b"original").await;
    t.node.submit_op(reveal).expect("reveal admitted");
    t.mine(2).await;
    let original = main_blocks(&t.node, 3);
    assert_eq!(original.len(), 3);
    assert_eq!(alice(&rpc).await.as_deref(), Some(&b"original"[..]));
    let original_tip = tip_hash(&t.node);

    // A competing branch from the prefix with @alice = "other", one block
    // longer (equal work per block on regtest, so longer = heavier).
    let b = branch_from(&prefix);
    let reveal = prepare_claim(&b, "@alice", &mallory, b"other").await;
    b.submit_op(reveal).expect("reveal admitted");
    mine(b.clone(), 3).await;
    let side = main_blocks(&b, 3);
    let statuses = submit_all(&rpc, &side).await;
    // Lighter than the tip: held in memory, not stored, until the branch
    // catches up; the third ties the tip's work and connects (it may win).
    assert_eq!(statuses[..3], ["held", "held", "side-branch"]);
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
    // Mallory's ops were disconnected. Her reveal is invalid on this branch
    // (its commitment is not on it), so it did not return to the mempool;
    // her commitment is still valid there, so it did.
    assert_eq!(rpc.node_info().await.expect("info").mempool_ops, 1);
    let pending = t.node.lock().mempool.ops();
    assert!(
        matches!(pending[..], [xirtam_proofs::Op::Commit(_)]),
        "{pending:?}"
    );

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
    // The node includes @bob's claim (commitment in block 3, reveal in
    // block 4) and an update of @carol's; a heavier branch without them
    // wins.
    let reveal = claim_pending(&t.node, "@bob", &key(3), b"bob").await;
    t.mine(1).await;
    assert_eq!(rpc.node_info().await.expect("info").mempool_ops, 0);
    let b = branch_from(&prefix);
    let side = mine(b, 3).await;
    submit_all(&rpc, &side).await;
    assert_eq!(rpc.chain_tip().await.expect("tip").height, 5);
    // The commitment is still valid on the new branch (its anchor is in the
    // common prefix), so it is pending again; the reveal is not (its
    // commitment is gone). The next block includes the commitment, and the
    // reveal, re-signed with the new commitment height, follows.
    let pending = t.node.lock().mempool.ops();
    assert!(
        matches!(pending[..], [xirtam_proofs::Op::Commit(_)]),
        "{pending:?}"
    );
    let next = t.mine(1).await;
    assert_eq!(next[0].ops.len(), 1);
    assert!(!t.node.lock().mempool.contains(&reveal));
}
