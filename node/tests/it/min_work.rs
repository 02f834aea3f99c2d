//! The network's minimum chain work and assumed-valid block
//! (`Params::min_chain_work`, `Params::assume_valid`): a chain below the
//! minimum is held, never stored, unless sync checked a header chain that
//! meets it; below the assumed-valid block a synced block's op signatures
//! are skipped, and nowhere else.

use std::sync::Arc;

use xirtam_node::chain::{BlockStatus, Chain, ChainError, Origin};
use xirtam_node::store::{Column, KvStore, MemoryStore};
use xirtam_proofs::block::{Block, ops_root};
use xirtam_proofs::header::mine;
use xirtam_proofs::op::Op;
use xirtam_proofs::params::{Checkpoint, Params};
use xirtam_proofs::{OpError, U256};

use crate::common::{NET, claim_pending, key, memory_node, mine as mine_blocks};

const FAR: u64 = u64::MAX / 2;

/// Regtest with its minimum chain work and assumed-valid block replaced.
fn params(min_chain_work: U256, assume_valid: Option<Checkpoint>) -> &'static Params {
    Box::leak(Box::new(Params {
        min_chain_work,
        assume_valid,
        ..*NET
    }))
}

fn chain(p: &'static Params) -> (Arc<MemoryStore>, Chain<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let c = Chain::open(p, store.clone()).expect("open");
    (store, c)
}

/// A regtest main chain of `n` empty blocks (after genesis).
async fn source_chain(n: usize) -> Vec<Block> {
    mine_blocks(memory_node(), n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_below_the_minimum_work_is_held_until_it_meets_it() {
    let blocks = source_chain(4).await;
    let (_, probe) = chain(NET);
    let genesis_work = probe.tip().work();
    let per_block = blocks[0].header.work().expect("work");
    // The minimum is the work of genesis and three blocks.
    let min = genesis_work + per_block * U256::from(3u64);
    let p = params(min, None);

    let (store, mut c) = chain(p);
    assert!(!c.outweighs(genesis_work + per_block * U256::from(2u64)));
    assert!(c.outweighs(min));
    for b in &blocks[..2] {
        let s = c.submit_block(b.clone(), FAR).expect("valid header");
        assert_eq!(s.status, BlockStatus::Held, "below the minimum: held");
    }
    assert_eq!(
        store.scan(Column::Blocks).expect("scan").len(),
        1,
        "genesis only"
    );
    // The third block brings the branch to the minimum: all three connect.
    let s = c.submit_block(blocks[2].clone(), FAR).expect("valid");
    assert_eq!(s.status, BlockStatus::Tip);
    assert_eq!(c.height(), 3);

    // Without the minimum (the bug this guards against), the first block
    // would have been stored at once.
    let (_, mut plain) = chain(NET);
    let s = plain.submit_block(blocks[0].clone(), FAR).expect("valid");
    assert_eq!(s.status, BlockStatus::Tip);

    // A block that sync fetched for a header chain it checked (to outweigh
    // the tip and meet the minimum) is admitted below the minimum.
    let (_, mut synced) = chain(p);
    let s = synced
        .submit(
            blocks[0].clone(),
            Origin::Synced {
                assumed_valid: false,
            },
            FAR,
        )
        .expect("valid");
    assert_eq!(s.status, BlockStatus::Tip);
}

/// The main chain of a regtest node that claimed `@alice`, and the height
/// of the block holding the reveal (its last block), with the reveal's
/// signature corrupted and the block re-mined.
async fn chain_with_a_bad_signature() -> Vec<Block> {
    let node = memory_node();
    mine_blocks(node.clone(), 2).await;
    claim_pending(&node, "@alice", &key(1), b"hi").await;
    mine_blocks(node.clone(), 1).await;
    let core = node.lock();
    let mut blocks: Vec<Block> = (1..=core.chain.height())
        .map(|h| {
            let hash = core.chain.hash_at(h).expect("main");
            core.chain.block(&hash).expect("read").expect("stored")
        })
        .collect();
    drop(core);
    let last = blocks.last_mut().expect("blocks");
    let w = last
        .ops
        .iter_mut()
        .find_map(|o| match o {
            Op::Write(w) => Some(w),
            Op::Commit(_) => None,
        })
        .expect("the reveal is in the last block");
    w.signature.0[0] ^= 1;
    last.header.ops_root = ops_root(&last.op_hashes());
    assert!(mine(&mut last.header, 0, u64::MAX));
    blocks
}

fn submit_all(
    c: &mut Chain<MemoryStore>,
    blocks: &[Block],
    origin: Origin,
) -> Result<(), ChainError> {
    for b in blocks {
        c.submit(b.clone(), origin, FAR)?;
    }
    Ok(())
}

fn is_signature_error(e: &ChainError) -> bool {
    matches!(
        e,
        ChainError::Block(xirtam_proofs::block::BlockError::Op {
            error: OpError::Signature(_),
            ..
        })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_skipped_only_below_the_assumed_valid_block() {
    let blocks = chain_with_a_bad_signature().await;
    let bad = blocks.last().expect("blocks").header;
    let at_bad = Checkpoint {
        height: bad.height,
        hash: bad.hash(),
    };
    let synced = Origin::Synced {
        assumed_valid: true,
    };

    // Sync saw a header chain through the checkpoint: the bad signature at
    // (or below) it is not checked, everything else is.
    let (_, mut c) = chain(params(U256::zero(), Some(at_bad)));
    submit_all(&mut c, &blocks, synced).expect("assumed valid");
    assert_eq!(c.tip().header.hash(), bad.hash());

    // The same block anywhere else is checked in full and refused:
    // - not synced through the checkpoint;
    let (_, mut c) = chain(params(U256::zero(), Some(at_bad)));
    let e = submit_all(
        &mut c,
        &blocks,
        Origin::Synced {
            assumed_valid: false,
        },
    )
    .expect_err("checked");
    assert!(is_signature_error(&e), "{e}");
    // - above the checkpoint;
    let below = Checkpoint {
        height: bad.height - 1,
        hash: blocks[blocks.len() - 2].header.hash(),
    };
    let (_, mut c) = chain(params(U256::zero(), Some(below)));
    let e = submit_all(&mut c, &blocks, synced).expect_err("checked");
    assert!(is_signature_error(&e), "{e}");
    // - on a network without one;
    let (_, mut c) = chain(NET);
    let e = submit_all(&mut c, &blocks, synced).expect_err("checked");
    assert!(is_signature_error(&e), "{e}");
}
