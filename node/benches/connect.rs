//! Whole-node benchmark on RocksDB (a runner, not criterion: each figure
//! is one long measurement over many blocks; medians of per-block rates).
//!
//! 1. Fill: claim `N` names (default 1,000,000) through real stamped
//!    commitments and signed, stamped reveals in full blocks (4,096 ops
//!    each: a block of commitments, then a block of their reveals),
//!    connected by the chain with every rule checked. This builds the state
//!    (N names and N commitments).
//! 2. Measure: connect 10 more pairs of full blocks on the N-name state.
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
use xirtam_proofs::op::{Claim, Commit, Draft, Op, Owners, Value, claim_commitment};
use xirtam_proofs::params::REGTEST;
use xirtam_proofs::state::verify_state;
use xirtam_proofs::{Hash, Name, SecretKey};

const PER_BLOCK: usize = 4096;

fn bench_name(i: usize) -> Name {
    Name::new(&format!("@n{i}")).expect("valid")
}

fn salt(i: usize) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64).to_le_bytes());
    s
}

/// Build one op per index of `range` on 2 threads.
fn build(range: std::ops::Range<usize>, f: impl Fn(usize) -> Op + Sync) -> Vec<Op> {
    let threads = 2;
    let idx: Vec<usize> = range.collect();
    let chunk = idx.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let hs: Vec<_> = idx
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(|i| f(*i)).collect::<Vec<_>>()))
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("signer thread"))
            .collect()
    })
}

/// Stamped commitments to claims of `@n{i}` for `range`, anchored at
/// `recent`.
fn commits(range: std::ops::Range<usize>, recent: Hash, key: &SecretKey) -> Vec<Op> {
    build(range, |i| {
        let c = claim_commitment(&REGTEST, &bench_name(i), &key.public(), &salt(i));
        let mut c = Commit::new(c, recent);
        assert!(c.solve_stamp(&REGTEST, 0, 1 << 20));
        Op::Commit(c)
    })
}

/// Signed, stamped claims (reveals) of `@n{i}` for `range`, their
/// commitments mined at `commit_height`, anchored at `recent`.
fn claims(
    range: std::ops::Range<usize>,
    commit_height: u64,
    recent: Hash,
    key: &SecretKey,
) -> Vec<Op> {
    build(range, |i| {
        let mut w = Draft {
            key: bench_name(i),
            nonce: 1,
            owners: Owners::single(key.public()),
            value: Value::new(vec![(i % 251) as u8; 64]).expect("64 bytes"),
            claim: Some(Claim {
                salt: salt(i),
                commit_height,
            }),
            anchor: recent,
        }
        .sign(&REGTEST, key);
        assert!(w.solve_stamp(&REGTEST, 0, 1 << 20));
        Op::Write(w)
    })
}

/// The next block on `chain`'s tip with `ops` (state root computed the way
/// a miner does).
fn block_on(chain: &Chain<RocksStore>, ops: Vec<Op>, time: u64) -> Block {
    let n = ops.len();
    let (ops, root) = chain.template_ops(ops).expect("template");
    assert_eq!(ops.len(), n, "every op is valid");
    let tip = chain.tip();
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

    // Fill: for each batch of names, a block of commitments, then (regtest
    // maturity is 1 block) a block of reveals.
    let mut commit_rates = Vec::new();
    let mut claim_rates = Vec::new();
    let t_fill = Instant::now();
    let mut next = 0usize;
    let connect = |chain: &mut Chain<RocksStore>, block: Block| {
        let count = block.ops.len();
        let t = Instant::now();
        chain
            .submit_block(block, far)
            .expect("valid block connects");
        count as f64 / t.elapsed().as_secs_f64()
    };
    while next < n + 10 * PER_BLOCK {
        let measuring = next >= n;
        let count = PER_BLOCK.min(n + 10 * PER_BLOCK - next);
        let recent = chain.tip().header.hash();
        let ops = commits(next..next + count, recent, &key);
        time += 1;
        let block = block_on(&chain, ops, time);
        let commit_height = block.header.height;
        let commit_rate = connect(&mut chain, block);
        let ops = claims(next..next + count, commit_height, recent, &key);
        time += 1;
        let block = block_on(&chain, ops, time);
        let rate = connect(&mut chain, block);
        next += count;
        if measuring {
            commit_rates.push(commit_rate);
            claim_rates.push(rate);
            println!(
                "connect at {} names: claims {rate:.0} ops/s, commitments {commit_rate:.0} ops/s",
                next - count
            );
        } else if (next / PER_BLOCK).is_multiple_of(25) {
            println!(
                "fill: {next} names, last block of claims {rate:.0} ops/s, {:.0} s elapsed",
                t_fill.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "connect, full blocks of {PER_BLOCK} claims (reveals) on a {n}-name RocksDB state: median {:.0} ops/s over {} blocks (all rules, signatures on 2 threads)",
        median(claim_rates.clone()),
        claim_rates.len()
    );
    println!(
        "connect, full blocks of {PER_BLOCK} commitments on a {n}-name RocksDB state: median {:.0} ops/s over {} blocks",
        median(commit_rates.clone()),
        commit_rates.len()
    );

    // dir_get with proof.
    let tip = chain.height();
    let mut rates = Vec::new();
    for round in 0..5 {
        let t = Instant::now();
        let count = 20_000;
        for j in 0..count {
            let i = (j * 7919 + round * 13) % n;
            let name = bench_name(i);
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
