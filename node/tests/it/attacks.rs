//! Cheap attacks on the chain: low-work side branches, orphan floods,
//! children of invalid blocks, and storage corruption. Each costs the
//! attacker little; none may cost the node unbounded memory or disk, or
//! make it condemn a valid block.

use std::sync::Arc;

use xirtam_node::chain::{
    BlockStatus, Chain, ChainError, MAX_ORPHAN_BYTES, MAX_ORPHANS, Origin, node_key, state_root,
};
use xirtam_node::store::{Batch, Column, KvStore, MemoryStore};
use xirtam_proofs::block::{Block, ops_root};
use xirtam_proofs::header::{ChainState, header_template, mine};
use xirtam_proofs::op::{Draft, Op, Owners, Value};
use xirtam_proofs::state::EMPTY_ROOT;
use xirtam_proofs::{Hash, Name, encode};

use crate::common::{NET, key};

const FAR: u64 = u64::MAX / 2;

/// An empty block on `state` at `time`, mined; advances `state`.
fn empty_block(state: &mut ChainState, time: u64, state_root: Hash) -> Block {
    let mut h = header_template(NET, state, time);
    h.ops_root = ops_root(&[]);
    h.state_root = state_root;
    assert!(mine(&mut h, 0, u64::MAX));
    state.push(NET, &h, FAR).expect("valid header");
    Block {
        header: h,
        ops: vec![],
    }
}

fn chain() -> (Arc<MemoryStore>, Chain<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    let c = Chain::open(NET, store.clone()).expect("open");
    (store, c)
}

/// Extend `c` by `n` empty blocks.
fn grow(c: &mut Chain<MemoryStore>, n: usize) {
    let mut state = c.tip().state.clone();
    let mut time = c.tip().header.time;
    let root = c.tip().header.state_root;
    for _ in 0..n {
        time += 1;
        let b = empty_block(&mut state, time, root);
        assert_eq!(
            c.submit_block(b, FAR).expect("valid").status,
            BlockStatus::Tip
        );
    }
}

fn stored(store: &MemoryStore, col: Column) -> usize {
    store.scan(col).expect("scan").len()
}

/// 10,000 valid side blocks forking from genesis, each with less work than
/// the tip, cost the node nothing that lasts: none is validated in full,
/// stored, or remembered; at most MAX_ORPHANS blocks and MAX_ORPHAN_BYTES
/// are held in memory (before branch admission each one was stored
/// forever, and gossip relayed it).
#[test]
fn ten_thousand_low_work_side_blocks_are_not_stored() {
    let (store, mut c) = chain();
    grow(&mut c, 10_010);
    let blocks_before = stored(&store, Column::Blocks);
    let index_before = stored(&store, Column::Index);
    let mut state = ChainState::genesis(NET);
    // Other timestamps than the main chain's, so the blocks differ.
    let mut time = NET.genesis_time + 50_000;
    for i in 0..10_000u64 {
        time += 1;
        let b = empty_block(&mut state, time, EMPTY_ROOT);
        let s = c.submit_block(b, FAR).expect("a valid header");
        assert_eq!(s.status, BlockStatus::Held, "side block {i}");
        assert!(c.orphan_count() <= MAX_ORPHANS);
        assert!(c.orphan_bytes() <= MAX_ORPHAN_BYTES);
    }
    assert_eq!(stored(&store, Column::Blocks), blocks_before);
    assert_eq!(stored(&store, Column::Index), index_before);
    assert_eq!(stored(&store, Column::Invalid), 0);
    assert_eq!(c.invalid_count(), 0);
    assert_eq!(c.orphan_count(), MAX_ORPHANS);
    assert_eq!(c.height(), 10_010);
}

/// A competing block with as much work as the tip is kept (it may win),
/// and a branch that a sync marked wanted is validated even while lighter.
#[test]
fn equal_work_and_wanted_branches_are_admitted() {
    let (_, mut c) = chain();
    grow(&mut c, 3);
    // A competitor of the tip (a fork from height 2) ties its work: kept
    // as a side branch, since its successor would win.
    let parent = c.hash_at(2).expect("main");
    let mut state = c.meta(&parent).expect("stored").state.clone();
    let root = c.tip().header.state_root;
    let time = c.tip().header.time + 100;
    let b3 = empty_block(&mut state, time, root);
    assert_eq!(
        c.submit_block(b3, FAR).expect("equal work").status,
        BlockStatus::SideBranch
    );
    // A deeper fork's first block is lighter unless wanted.
    let parent = c.hash_at(1).expect("main");
    let mut state = c.meta(&parent).expect("stored").state.clone();
    let f2 = empty_block(&mut state, time + 10, root);
    let f3 = empty_block(&mut state, time + 11, root);
    let f4 = empty_block(&mut state, time + 12, root);
    let f5 = empty_block(&mut state, time + 13, root);
    assert_eq!(
        c.submit_block(f2.clone(), FAR).expect("held").status,
        BlockStatus::Held
    );
    // A block that sync fetched (for a header chain it checked to
    // outweigh the tip) is validated at once.
    assert_eq!(
        c.submit(
            f2,
            Origin::Synced {
                assumed_valid: false
            },
            FAR
        )
        .expect("synced")
        .status,
        BlockStatus::SideBranch,
    );
    assert_eq!(
        c.submit_block(f3, FAR).expect("equal work").status,
        BlockStatus::SideBranch,
        "f3 brings the branch to the tip's work"
    );
    for b in [f4, f5] {
        assert_eq!(
            c.submit_block(b, FAR).expect("heavier").status,
            BlockStatus::Tip
        );
    }
    // A held branch that a descendant brings to the tip's work connects.
    let parent = c.hash_at(1).expect("main");
    let mut state = c.meta(&parent).expect("stored").state.clone();
    let mut side = Vec::new();
    for i in 0..6 {
        side.push(empty_block(&mut state, time + 100 + i, root));
    }
    let statuses: Vec<BlockStatus> = side
        .into_iter()
        .map(|b| c.submit_block(b, FAR).expect("valid").status)
        .collect();
    assert_eq!(
        statuses,
        [
            BlockStatus::Held,
            BlockStatus::Held,
            BlockStatus::Held,
            BlockStatus::SideBranch,
            BlockStatus::Tip,
            BlockStatus::Tip
        ]
    );
}

/// `count` junk writes of 4,000-byte values under distinct names (a body
/// can match its header without valid ops: ops are checked only once the
/// parent is known).
fn fat_ops(tag: u32, count: usize) -> Vec<Op> {
    let k = key(3);
    (0..count)
        .map(|i| {
            let mut w = Draft {
                key: Name::new(&format!("@o{tag}x{i}")).expect("valid"),
                nonce: 2,
                owners: Owners::single(k.public()),
                value: Value::new(vec![0xab; 4000]).expect("small"),
                claim: None,
                anchor: Hash([1; 32]),
            }
            .sign(NET, &k);
            w.stamp.nonce = u64::from(tag);
            Op::Write(w)
        })
        .collect()
}

/// A flood of large orphans (unknown parents, real work, bodies that match
/// their headers) is held within MAX_ORPHANS and MAX_ORPHAN_BYTES; an
/// orphan whose body is not its header's is refused before it is held, so
/// junk cannot shadow the real block.
#[test]
fn an_orphan_flood_is_bounded_in_count_and_bytes() {
    let (_, mut c) = chain();
    grow(&mut c, 2);
    let ops = fat_ops(0, 480);
    let mut biggest = 0;
    for i in 0..(MAX_ORPHANS as u32 + 40) {
        let mut h = header_template(NET, &ChainState::genesis(NET), NET.genesis_time + 1);
        h.prev = Hash(
            [0x40, (i >> 8) as u8, i as u8, 7]
                .repeat(8)
                .try_into()
                .expect("32"),
        );
        let mut ops = ops.clone();
        if let Op::Write(w) = &mut ops[0] {
            w.stamp.nonce = u64::from(i);
        }
        h.ops_root = ops_root(&ops.iter().map(Op::hash).collect::<Vec<_>>());
        assert!(mine(&mut h, 0, u64::MAX));
        let b = Block { header: h, ops };
        biggest = biggest.max(encode(&b).len());
        assert_eq!(
            c.submit_block(b, FAR).expect("held").status,
            BlockStatus::Orphan
        );
        assert!(c.orphan_count() <= MAX_ORPHANS);
        assert!(c.orphan_bytes() <= MAX_ORPHAN_BYTES, "{}", c.orphan_bytes());
    }
    assert!(biggest > 1_900_000, "orphans of about 2 MB ({biggest})");
    assert!(c.orphan_bytes() > MAX_ORPHAN_BYTES - biggest);
    // A body that does not match its header is refused, not held.
    let mut h = header_template(NET, &ChainState::genesis(NET), NET.genesis_time + 1);
    h.prev = Hash([0x55; 32]);
    h.ops_root = ops_root(&[]);
    assert!(mine(&mut h, 0, u64::MAX));
    let junk = Block {
        header: h,
        ops: fat_ops(9, 1),
    };
    assert!(c.submit_block(junk, FAR).is_err());
}

/// Children of a known-invalid block are refused without being
/// remembered one by one (only the invalid block itself is).
#[test]
fn children_of_an_invalid_block_do_not_grow_the_invalid_set() {
    let (_, mut c) = chain();
    grow(&mut c, 2);
    let mut state = c.tip().state.clone();
    let time = c.tip().header.time + 1;
    // Valid header, wrong state root: invalid once its body is checked.
    let bad = empty_block(&mut state, time, Hash([7; 32]));
    assert!(c.submit_block(bad.clone(), FAR).is_err());
    assert_eq!(c.invalid_count(), 1);
    for i in 0..100 {
        let mut s = state.clone();
        let child = empty_block(&mut s, time + 1 + i, Hash([7; 32]));
        assert!(matches!(
            c.submit_block(child, FAR),
            Err(ChainError::InvalidParent(_))
        ));
    }
    assert_eq!(c.invalid_count(), 1);
}

/// A node on a memory store where `@a` (owner `key(1)`) and `@b` (owner
/// `key(2)`) are claimed, so the state tree has inner nodes.
fn node_with_two_names() -> (Arc<MemoryStore>, Arc<xirtam_node::node::Node<MemoryStore>>) {
    let store = Arc::new(MemoryStore::new());
    let node =
        xirtam_node::node::Node::open(NET, store.clone(), xirtam_node::mempool::Mempool::default())
            .expect("open");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    for (n, k) in [("@a", key(1)), ("@b", key(2))] {
        let reveal = rt.block_on(crate::common::prepare_claim(&node, n, &k, b"v"));
        node.submit_op(reveal).expect("admitted");
        node.mine_block().expect("mine");
    }
    (store, node)
}

/// A block that fails a stateless rule (here a bad signature) after its
/// state was computed leaves none of its state-tree nodes in the node
/// cache: a cached inner node names where its children are stored, and this
/// block stored nothing. (A valid block at another height that built the
/// same node would otherwise find an entry pointing at nodes never written,
/// and fail with a missing node once they left the cache.)
#[test]
fn a_rejected_block_leaves_nothing_in_the_node_cache() {
    let (_, node) = node_with_two_names();
    let mut c = node.lock();
    let recent = c.chain.tip().header.hash();
    let good = crate::common::op("@a", 2, &key(1), &key(1), b"w", recent);
    // Signed by @b's owner, then changed: the signature no longer matches,
    // but the stamp is solved again, so only the signature is wrong.
    let mut bad = crate::common::op("@b", 2, &key(2), &key(2), b"w", recent);
    if let Op::Write(w) = &mut bad {
        w.value = Value::new(b"forged".to_vec()).expect("small");
        assert!(w.solve_stamp(NET, 0, 1 << 24));
    }
    // The state rules do not check signatures: the template takes both.
    let (ops, root) = c
        .chain
        .template_ops(vec![good.clone(), bad])
        .expect("template");
    assert_eq!(ops.len(), 2);
    let state = c.chain.tip().state.clone();
    let time = c.chain.tip().header.time + 1;
    let mut h = header_template(NET, &state, time);
    h.ops_root = ops_root(&ops.iter().map(Op::hash).collect::<Vec<_>>());
    h.state_root = root;
    assert!(mine(&mut h, 0, u64::MAX));
    let e = c
        .chain
        .submit_block(Block { header: h, ops }, FAR)
        .expect_err("bad signature");
    assert!(e.is_invalid_block(), "{e}");
    assert!(
        !c.chain.node_cached(&root),
        "the rejected block's state root is cached"
    );
    // Control: the valid op alone connects, and its root is cached.
    let (ops, root) = c.chain.template_ops(vec![good]).expect("template");
    let mut h = header_template(NET, &state, time);
    h.ops_root = ops_root(&ops.iter().map(Op::hash).collect::<Vec<_>>());
    h.state_root = root;
    assert!(mine(&mut h, 0, u64::MAX));
    let block = Block { header: h, ops };
    assert_eq!(
        c.chain.submit_block(block, FAR).expect("valid").status,
        BlockStatus::Tip
    );
    assert!(c.chain.node_cached(&root));
}

/// A database written by another schema (here 2, before state nodes were
/// keyed by version) is refused with a message that says what to do, never
/// read as if it were current.
#[test]
fn a_database_of_another_schema_is_refused_with_advice() {
    let store = Arc::new(MemoryStore::new());
    drop(Chain::open(NET, store.clone()).expect("fresh"));
    let mut b = Batch::new();
    b.put(
        Column::Meta,
        b"schema".to_vec(),
        2u32.to_le_bytes().to_vec(),
    );
    store.write(b).expect("write");
    let e = Chain::open(NET, store).expect_err("schema 2");
    let msg = e.to_string();
    assert!(
        msg.contains("schema 2")
            && msg.contains("reads schema 3")
            && msg.contains("data directory"),
        "{msg}"
    );
    // Said once: as the binary prints it (anyhow, with its sources), the
    // message does not repeat itself.
    let chain = format!("{:#}", anyhow::Error::new(e).context("open the chain"));
    assert_eq!(chain.matches("reads schema 3").count(), 1, "{chain}");
}

/// A corrupted state node shows up as a storage error, and the block that
/// ran into it is not remembered as invalid: once the store is repaired,
/// the same block connects.
#[test]
fn storage_corruption_is_not_blamed_on_the_block() {
    let (store, node) = node_with_two_names();
    let root = node_key(&state_root(&node.lock().chain.tip().header));
    let good = store
        .get(Column::StateNodes, &root)
        .expect("read")
        .expect("root stored");
    // An update of @a: its block must read the root node.
    let recent = node.lock().chain.tip().header.hash();
    node.submit_op(crate::common::op("@a", 2, &key(1), &key(1), b"w", recent))
        .expect("admitted");
    let t = node.template().expect("template").expect("on time");
    let mut h = t.header;
    assert!(mine(&mut h, 0, u64::MAX));
    let block = Block {
        header: h,
        ops: t.ops,
    };
    // Corrupt the root node on "disk" (another valid node's bytes).
    let other = store
        .scan(Column::StateNodes)
        .expect("scan")
        .into_iter()
        .find(|(k, _)| k[..] != root[..])
        .expect("another node");
    let mut b = Batch::new();
    b.put(Column::StateNodes, root, other.1);
    store.write(b).expect("write");
    let mut c = Chain::open(NET, store.clone()).expect("reopen");
    let e = c
        .submit_block(block.clone(), FAR)
        .expect_err("corrupt store");
    assert!(
        matches!(e, ChainError::Tree(_) | ChainError::Store(_)),
        "{e}"
    );
    assert!(!e.is_invalid_block());
    assert_eq!(c.invalid_reason(&block.header.hash()), None);
    // Repaired: the same block connects.
    let mut b = Batch::new();
    b.put(Column::StateNodes, root, good);
    store.write(b).expect("write");
    let mut c = Chain::open(NET, store).expect("reopen");
    assert_eq!(
        c.submit_block(block, FAR).expect("valid").status,
        BlockStatus::Tip
    );
}

/// Blocks timestamped a day ahead (within regtest's drift) push the
/// chain's median time past what this node's miner may use: `dev_mine`
/// reports it within seconds instead of pinning an RPC thread for a day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mine_gives_up_when_the_chain_is_ahead_of_the_clock() {
    use xirtam_node::rpc::{NodeApiClient, code};
    let t = crate::common::TestNode::start().await;
    let rpc = t.client();
    let (mut state, root) = {
        let core = t.node.lock();
        (
            core.chain.tip().state.clone(),
            core.chain.tip().header.state_root,
        )
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    for i in 0..12 {
        let b = empty_block(&mut state, now + 86_000 + i, root);
        t.node.submit_block(b).expect("within the drift");
    }
    let started = std::time::Instant::now();
    let e = rpc.dev_mine(1).await.expect_err("cannot mine now");
    assert!(
        e.to_string().contains(&code::CLOCK_BEHIND.to_string()),
        "{e}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
}
