//! Whole-node benchmark on RocksDB (a runner, not criterion: each figure
//! is one long measurement over many blocks; medians of per-block rates).
//!
//! 1. Fill: claim `N` names (default 1,000,000) through real signed,
//!    stamped ops in full blocks (4,096 ops each), connected by the chain
//!    with every rule checked. This builds the state and measures connect
//!    throughput as the state grows.
//! 2. Measure: connect 10 more full blocks on the N-name state.
//! 3. `dir_get` with proof at the tip for random names: proofs/s.
//!
//! `cargo bench -p xirtam-node --bench connect` (`XIRTAM_BENCH_NAMES=N` to
//! change the state size).

use std::sync::Arc;
use std::time::Instant;

use xirtam_node::chain::Chain;
use xirtam_node::store::RocksStore;
use xirtam_proofs::block::{Block, ops_root};
use xirtam_proofs::header::{header_template, mine};
use xirtam_proofs::op::{Op, Owners, Value, apply};
use xirtam_proofs::params::REGTEST;
use xirtam_proofs::state::verify_state;
use xirtam_proofs::{Hash, Name, SecretKey};

const PER_BLOCK: usize = 4096;

/// Signed, stamped claims of `@n{i}` for `range`, stamped on `recent`.
fn claims(range: std::ops::Range<usize>, recent: Hash, key: &SecretKey) -> Vec<Op> {
    let threads = 2;
    let idx: Vec<usize> = range.collect();
    let chunk = idx.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let hs: Vec<_> = idx
            .chunks(chunk)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|i| {
                            let mut o = Op::sign(
                                &REGTEST,
                                Name::new(&format!("@n{i}")).expect("valid"),
                                1,
                                Owners::single(key.public()),
                                Value::new(vec![(*i % 251) as u8; 64]).expect("64 bytes"),
                                key,
                            );
                            assert!(o.solve_stamp(&REGTEST, recent, 0, 1 << 20));
                            o
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("signer thread"))
            .collect()
    })
}

/// The next block on `chain`'s tip with `ops` (state root computed the way
/// a miner does: from the records before).
fn block_on(chain: &Chain<RocksStore>, ops: Vec<Op>, time: u64) -> Block {
    let tip = chain.tip();
    let mut items = Vec::with_capacity(ops.len());
    for o in &ops {
        let before = chain.record(&o.key).expect("read");
        let after = apply(before.as_ref(), o).expect("valid claim");
        items.push((o.key.key_hash(), after.hash()));
    }
    let view = xirtam_node::chain::StateView(&**chain.store(), None);
    let (root, _) =
        xirtam_proofs::state::update(&view, tip.header.state_root, &items).expect("state");
    let mut h = header_template(&REGTEST, &tip.state, time);
    h.ops_root = ops_root(&ops.iter().map(Op::hash).collect::<Vec<_>>());
    h.state_root = root;
    assert!(mine(&mut h, 0, u64::MAX));
    Block { header: h, ops }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::var("XIRTAM_BENCH_NAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RocksStore::open(dir.path()).expect("rocksdb"));
    let mut chain = Chain::open(&REGTEST, store).expect("chain");
    let key = SecretKey::from_seed([5; 32]);
    let mut time = REGTEST.genesis_time;
    let far = u64::MAX / 2;

    // Fill.
    let mut fill_rates = Vec::new();
    let t_fill = Instant::now();
    let mut next = 0usize;
    while next < n + 10 * PER_BLOCK {
        let measuring = next >= n;
        let count = PER_BLOCK.min(n + 10 * PER_BLOCK - next);
        let recent = chain.tip().header.hash();
        let ops = claims(next..next + count, recent, &key);
        time += 1;
        let block = block_on(&chain, ops, time);
        let t = Instant::now();
        chain
            .submit_block(block, far)
            .expect("valid block connects");
        let rate = count as f64 / t.elapsed().as_secs_f64();
        next += count;
        if measuring {
            fill_rates.push(rate);
            println!("connect at {} names: {:.0} ops/s", next - count, rate);
        } else if (next / PER_BLOCK).is_multiple_of(25) {
            println!(
                "fill: {next} names, last block {rate:.0} ops/s, {:.0} s elapsed",
                t_fill.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "connect, full blocks of {PER_BLOCK} claims on a {n}-name RocksDB state: median {:.0} ops/s over {} blocks (all rules, signatures on 2 threads)",
        median(fill_rates.clone()),
        fill_rates.len()
    );

    // dir_get with proof.
    let tip = chain.height();
    let mut rates = Vec::new();
    for round in 0..5 {
        let t = Instant::now();
        let count = 20_000;
        for j in 0..count {
            let i = (j * 7919 + round * 13) % n;
            let name = Name::new(&format!("@n{i}")).expect("valid");
            let (header, record, proof) = chain.prove(&name, tip).expect("prove");
            debug_assert!(verify_state(&header.state_root, &name, record.as_ref(), &proof).is_ok());
            std::hint::black_box((record, proof));
        }
        rates.push(count as f64 / t.elapsed().as_secs_f64());
    }
    println!(
        "dir_get with proof (chain API, one thread, warm cache) at {n} names: median {:.0} proofs/s",
        median(rates)
    );
}
