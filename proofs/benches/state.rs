//! The name-state tree at 1,000,000 names: bulk insert rate, insert cost of
//! a 1,000-name block, proof generation, proof size (target <= 1 KB for a
//! record with one owner and a 64-byte value) and verification time
//! (target <= 30 us).
//!
//! `cargo bench -p xirtam-proofs --bench state`
//! (set `XIRTAM_BENCH_NAMES` to change the tree size.)

use std::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use xirtam_proofs::op::{Owners, Record, Value};
use xirtam_proofs::state::{self, MemoryNodeStore, NodeRef, StateProof, verify_state};
use xirtam_proofs::{Hash, Name, SecretKey, encode};

const BLOCK: usize = 1_000;

fn name(i: usize) -> Name {
    Name::new(&format!("@user{i}")).expect("valid")
}

fn record(i: usize, owner: &SecretKey) -> Record {
    Record {
        nonce: i as u64 + 1,
        owners: Owners::single(owner.public()),
        value: Value::new(vec![(i % 251) as u8; 64]).expect("64 bytes"),
        claimed_at: 1,
    }
}

/// Peak resident memory (Linux `VmHWM`), for the report.
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.trim_start_matches("VmHWM:").trim().to_owned())
}

fn stats(mut v: Vec<usize>) -> (usize, usize, usize) {
    v.sort_unstable();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn bench(c: &mut Criterion) {
    let n: usize = std::env::var("XIRTAM_BENCH_NAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let owner = SecretKey::from_seed([9; 32]);

    // Bulk build, one 1,000-name batch per "block", as a chain would.
    let mut store = MemoryNodeStore::new();
    let mut root = NodeRef::EMPTY;
    let t = Instant::now();
    for (at, start) in (0..n).step_by(BLOCK).enumerate() {
        let items: Vec<(Hash, Hash)> = (start..(start + BLOCK).min(n))
            .map(|i| (name(i).key_hash(), record(i, &owner).hash()))
            .collect();
        let (r, batch) = state::update(&store, root, at as u64 + 1, &items).expect("memory store");
        store.insert_batch(batch);
        root = r;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "bulk insert: {n} names in {secs:.2} s = {:.0} names/s ({} nodes stored, all roots kept)",
        n as f64 / secs,
        store.len()
    );

    if let Some(rss) = peak_rss() {
        println!("peak RSS after the bulk build: {rss}");
    }

    // Proofs for 1,000 present and 1,000 absent names.
    let present: Vec<(Name, Record, StateProof)> = (0..1000)
        .map(|j| {
            let i = (j * 7919) % n;
            let (_, p) = state::prove(&store, root, &name(i).key_hash()).expect("stored");
            (name(i), record(i, &owner), p)
        })
        .collect();
    let absent: Vec<(Name, StateProof)> = (0..1000)
        .map(|j| {
            let nm = Name::new(&format!("@absent{j}")).expect("valid");
            let (v, p) = state::prove(&store, root, &nm.key_hash()).expect("stored");
            assert!(v.is_none());
            (nm, p)
        })
        .collect();
    let (lo, med, hi) = stats(present.iter().map(|(_, _, p)| encode(p).len()).collect());
    let rec_len = encode(&present[0].1).len();
    println!(
        "inclusion proof bytes at {n}: min {lo} / median {med} / max {hi} (+ {rec_len}-byte record = median {} total)",
        med + rec_len
    );
    let (lo, med, hi) = stats(absent.iter().map(|(_, p)| encode(p).len()).collect());
    println!("exclusion proof bytes at {n}: min {lo} / median {med} / max {hi}");
    let (_, dmed, dmax) = stats(present.iter().map(|(_, _, p)| p.siblings.len()).collect());
    println!("proof depth at {n}: median {dmed}, max {dmax}");

    let mut g = c.benchmark_group(format!("state_{n}"));
    g.sample_size(30);
    let mut i = 0;
    g.bench_function("verify_inclusion", |b| {
        b.iter(|| {
            let (nm, r, p) = &present[i % present.len()];
            i += 1;
            verify_state(&root.hash, nm, Some(r), black_box(p)).expect("valid")
        })
    });
    let mut i = 0;
    g.bench_function("verify_exclusion", |b| {
        b.iter(|| {
            let (nm, p) = &absent[i % absent.len()];
            i += 1;
            verify_state(&root.hash, nm, None, black_box(p)).expect("valid")
        })
    });
    let mut i = 0;
    g.bench_function("prove", |b| {
        b.iter(|| {
            let k = present[i % present.len()].0.key_hash();
            i += 1;
            state::prove(&store, root, black_box(&k)).expect("stored")
        })
    });
    let mut next = n;
    g.bench_function("insert_block_of_1000_new_names", |b| {
        b.iter_batched(
            || {
                let items: Vec<(Hash, Hash)> = (next..next + BLOCK)
                    .map(|i| (name(i).key_hash(), record(i, &owner).hash()))
                    .collect();
                next += BLOCK;
                items
            },
            |items| state::update(&store, root, root.at + 1, &items).expect("memory store"),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
