//! Header-chain validation throughput (target: >= 1,000,000 headers/s on one
//! core), plus the per-op stateless check, alone and in a batch of 2,048
//! (what each of the node's two op-check threads gets from a full block).
//!
//! `cargo bench -p xirtam-proofs --bench headers`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use xirtam_proofs::header::{ChainState, Header, header_template, mine, validate_header_chain};
use xirtam_proofs::op::{Draft, Op, Owners, Value};
use xirtam_proofs::params::{LOCAL, Params};
use xirtam_proofs::pow::{CompactTarget, U256};
use xirtam_proofs::{Name, SecretKey};

const CHAIN: usize = 100_000;

/// `local` with the easiest possible targets, so building a long valid chain
/// for the benchmark costs ~1 hash per header. Validation does exactly the
/// same work as on any network (every check runs; only the odds of meeting
/// the target change).
fn bench_params() -> Params {
    Params {
        genesis_bits: CompactTarget::from_target(U256::MAX),
        pow_limit: U256::MAX,
        ..LOCAL.clone()
    }
}

fn build_chain(p: &Params, n: usize) -> Vec<Header> {
    let mut state = ChainState::genesis(p);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut h = header_template(p, &state, state.tip_time() + p.block_interval);
        assert!(mine(&mut h, 0, u64::MAX));
        state.push(p, &h, u64::MAX / 2).expect("valid");
        out.push(h);
    }
    out
}

fn headers(c: &mut Criterion) {
    let p = bench_params();
    let chain = build_chain(&p, CHAIN);
    let genesis = ChainState::genesis(&p);
    let mut g = c.benchmark_group("header_chain");
    g.sample_size(20);
    g.throughput(Throughput::Elements(CHAIN as u64));
    g.bench_function("validate_100k_headers", |b| {
        b.iter_batched(
            || genesis.clone(),
            |mut s| {
                validate_header_chain(&p, &mut s, black_box(&chain), u64::MAX / 2).expect("valid");
                s
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let h = chain[CHAIN / 2];
    c.bench_function("header_hash", |b| b.iter(|| black_box(&h).hash()));
}

fn ops(c: &mut Criterion) {
    let k = SecretKey::from_seed([1; 32]);
    let mut w = Draft {
        key: Name::new("@alice").expect("valid"),
        nonce: 2,
        owners: Owners::single(k.public()),
        value: Value::new(vec![7; 64]).expect("small"),
        claim: None,
        anchor: LOCAL.genesis_hash,
    }
    .sign(&LOCAL, &k);
    assert!(w.solve_stamp(&LOCAL, 0, 1 << 24));
    let op = Op::Write(w);
    c.bench_function("op_check_stateless", |b| {
        b.iter(|| black_box(&op).check_stateless(&LOCAL).expect("valid"))
    });

    // Distinct keys and names, as in a real block.
    let batch: Vec<Op> = (0..2048u32)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..4].copy_from_slice(&i.to_le_bytes());
            let k = SecretKey::from_seed(seed);
            let mut w = Draft {
                key: Name::new(&format!("@user{i}")).expect("valid"),
                nonce: 2,
                owners: Owners::single(k.public()),
                value: Value::new(vec![7; 64]).expect("small"),
                claim: None,
                anchor: LOCAL.genesis_hash,
            }
            .sign(&LOCAL, &k);
            assert!(w.solve_stamp(&LOCAL, 0, 1 << 24));
            Op::Write(w)
        })
        .collect();
    let mut g = c.benchmark_group("op_check_stateless_all");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.sample_size(20);
    g.bench_function("2048_distinct_keys", |b| {
        b.iter(|| Op::check_stateless_all(&LOCAL, black_box(&batch)).expect("valid"))
    });
    g.finish();
}

criterion_group!(benches, headers, ops);
criterion_main!(benches);
