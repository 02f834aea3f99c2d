//! Measures the `jmt` crate (Jellyfish Merkle Tree) with BLAKE3 hashing and
//! its in-memory `MockTreeStore`, for comparison with Xirtam's own tree.
//!
//! Usage: jmt-compare [--batch-api] [--prune-keep N]
//!   default:         one `put_value_set` per version (the usual jmt API),
//!                    every version's nodes kept (full history)
//!   --batch-api:     one `batch_put_value_sets` per version (sorted bulk insert)
//!   --prune-keep N:  after each version, `purge_stale_nodes` so that only the
//!                    last N versions stay readable (purge time is counted)

use std::hint::black_box;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use jmt::mock::MockTreeStore;
use jmt::proof::SparseMerkleProof;
use jmt::{JellyfishMerkleTree, KeyHash, OwnedValue, RootHash, SimpleHasher, Version};

const TOTAL_KEYS: u64 = 1_000_000;
const KEYS_PER_VERSION: u64 = 1_000;
const VALUE_LEN: usize = 32 + 8 + 64; // owner + nonce + value = 104 bytes
const SAMPLES: usize = 1_000;
const VERIFY_RUNS: usize = 9;

/// BLAKE3 as jmt's hash function (used for every leaf and internal node).
struct Blake3Hasher(blake3::Hasher);

impl SimpleHasher for Blake3Hasher {
    fn new() -> Self {
        Blake3Hasher(blake3::Hasher::new())
    }
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    fn finalize(self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

type Tree<'a> = JellyfishMerkleTree<'a, MockTreeStore, Blake3Hasher>;
type Proof = SparseMerkleProof<Blake3Hasher>;

fn key_of(i: u64) -> KeyHash {
    KeyHash(*blake3::hash(format!("@user{i}").as_bytes()).as_bytes())
}

/// A 104-byte record: 32-byte owner, 8-byte nonce, 64-byte value.
fn value_of(i: u64) -> OwnedValue {
    let mut v = Vec::with_capacity(VALUE_LEN);
    v.extend_from_slice(blake3::hash(&i.to_le_bytes()).as_bytes()); // owner
    v.extend_from_slice(&i.to_le_bytes()); // nonce
    let mut xof = blake3::Hasher::new();
    xof.update(b"value");
    xof.update(&i.to_le_bytes());
    let mut tail = [0u8; 64];
    xof.finalize_xof().fill(&mut tail);
    v.extend_from_slice(&tail);
    debug_assert_eq!(v.len(), VALUE_LEN);
    v
}

/// splitmix64: a small deterministic PRNG so that runs are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn proc_status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l[field.len()..].trim().to_string())
        })
        .unwrap_or_else(|| "n/a".into())
}

fn stats(mut v: Vec<usize>) -> (usize, usize, usize) {
    v.sort_unstable();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Times `f` (which verifies all proofs once) VERIFY_RUNS times; returns the
/// median per-verify time in microseconds.
fn time_verify(count: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up
    let mut runs = Vec::with_capacity(VERIFY_RUNS);
    for _ in 0..VERIFY_RUNS {
        let t = Instant::now();
        f()?;
        runs.push(t.elapsed().as_secs_f64() * 1e6 / count as f64);
    }
    Ok(median(runs))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let batch_api = args.iter().any(|a| a == "--batch-api");
    let prune_keep: Option<u64> = args
        .iter()
        .position(|a| a == "--prune-keep")
        .map(|i| args.get(i + 1).context("--prune-keep needs N")?.parse().context("bad N"))
        .transpose()?;
    ensure!(prune_keep != Some(0), "--prune-keep must be at least 1");
    let versions = TOTAL_KEYS / KEYS_PER_VERSION;

    println!("== jmt-compare: jmt 0.12 (Jellyfish Merkle Tree), BLAKE3 hasher, MockTreeStore ==");
    println!(
        "insert API: {}",
        if batch_api { "batch_put_value_sets (one version per call)" } else { "put_value_set (one version per call)" }
    );
    match prune_keep {
        None => println!("history: all versions kept (no pruning)"),
        Some(n) => println!("history: purge_stale_nodes after each version, last {n} version(s) readable"),
    }
    println!(
        "workload: {TOTAL_KEYS} keys, {KEYS_PER_VERSION} keys/version, {versions} versions, value {VALUE_LEN} B"
    );

    // ---------------------------------------------------------------- insert
    let store = MockTreeStore::default();
    let tree: Tree = JellyfishMerkleTree::new(&store);
    let mut in_tree = Duration::ZERO; // apply batch + write node batch
    let wall = Instant::now();
    let mut root = RootHash([0; 32]);
    let mut stale_total = 0usize;
    let mut written_total = 0usize;
    for version in 0..versions {
        let base = version * KEYS_PER_VERSION;
        let batch: Vec<(KeyHash, OwnedValue)> =
            (base..base + KEYS_PER_VERSION).map(|i| (key_of(i), value_of(i))).collect();
        let t = Instant::now();
        let (r, update) = if batch_api {
            let (roots, update) = tree.batch_put_value_sets(vec![batch], None, version as Version)?;
            (roots[0], update)
        } else {
            tree.put_value_set(batch.into_iter().map(|(k, v)| (k, Some(v))), version as Version)?
        };
        stale_total += update.stale_node_index_batch.len();
        written_total += update.node_batch.nodes().len();
        store.write_tree_update_batch(update)?;
        if let Some(n) = prune_keep {
            if version + 1 >= n {
                store.purge_stale_nodes(version + 1 - n)?;
            }
        }
        in_tree += t.elapsed();
        root = r;
    }
    let wall = wall.elapsed();
    let last: Version = versions - 1;
    ensure!(tree.get_root_hash(last)? == root, "root mismatch");
    ensure!(tree.get_leaf_count(last)? == TOTAL_KEYS as usize, "leaf count mismatch");
    let nodes_live_and_stale = store.num_nodes();

    println!("\n-- insert --");
    println!("root @v{last}: {}", hex(&root.0));
    println!(
        "tree time (apply + write batch [+ purge]): {:.2} s  -> {:.0} inserts/s",
        in_tree.as_secs_f64(),
        TOTAL_KEYS as f64 / in_tree.as_secs_f64()
    );
    println!(
        "wall time incl. key/value generation: {:.2} s  -> {:.0} inserts/s",
        wall.as_secs_f64(),
        TOTAL_KEYS as f64 / wall.as_secs_f64()
    );
    println!(
        "nodes: {written_total} written, {stale_total} became stale, {} reachable from v{last}, {nodes_live_and_stale} held in store",
        written_total - stale_total
    );
    println!("VmRSS after insert: {}", proc_status("VmRSS:"));

    // ---------------------------------------------------------------- proofs
    let mut rng = Rng(0x5eed_0f_c0ffee);
    let present: Vec<u64> = (0..SAMPLES).map(|_| rng.next() % TOTAL_KEYS).collect();
    let absent: Vec<u64> = (0..SAMPLES).map(|_| TOTAL_KEYS + rng.next() % (1u64 << 40)).collect();

    let mut inc: Vec<(KeyHash, OwnedValue, Vec<u8>)> = Vec::with_capacity(SAMPLES);
    for &i in &present {
        let k = key_of(i);
        let (v, p) = tree.get_with_proof(k, last)?;
        let v = v.context("present key not found")?;
        ensure!(v == value_of(i), "wrong value");
        let bytes = borsh::to_vec(&p)?;
        inc.push((k, v, bytes));
    }
    let mut exc: Vec<(KeyHash, Vec<u8>)> = Vec::with_capacity(SAMPLES);
    let mut exc_empty_slot = 0usize;
    for &i in &absent {
        let k = key_of(i);
        let (v, p) = tree.get_with_proof(k, last)?;
        ensure!(v.is_none(), "absent key found");
        if p.leaf().is_none() {
            exc_empty_slot += 1;
        }
        exc.push((k, borsh::to_vec(&p)?));
    }
    let (imin, imed, imax) = stats(inc.iter().map(|x| x.2.len()).collect());
    let (emin, emed, emax) = stats(exc.iter().map(|x| x.1.len()).collect());
    println!("\n-- proofs @v{last} (SparseMerkleProof, borsh 1.x encoding) --");
    println!("inclusion  ({SAMPLES} present keys): min {imin} / median {imed} / max {imax} bytes");
    println!(
        "exclusion  ({SAMPLES} absent keys, get_with_proof): min {emin} / median {emed} / max {emax} bytes ({exc_empty_slot} end in an empty slot, {} in another key's leaf)",
        SAMPLES - exc_empty_slot
    );

    // ---------------------------------------------------------- verification
    // Proofs are decoded from their bytes first (decode time not included).
    let inc_proofs: Vec<(KeyHash, &OwnedValue, Proof)> = inc
        .iter()
        .map(|(k, v, b)| Ok((*k, v, borsh::from_slice::<Proof>(b)?)))
        .collect::<Result<_>>()?;
    let exc_proofs: Vec<(KeyHash, Proof)> =
        exc.iter().map(|(k, b)| Ok((*k, borsh::from_slice::<Proof>(b)?))).collect::<Result<_>>()?;

    let inc_us = time_verify(SAMPLES, || {
        for (k, v, p) in &inc_proofs {
            black_box(p).verify(black_box(root), *k, Some(v.as_slice()))?;
        }
        Ok(())
    })?;
    let exc_us = time_verify(SAMPLES, || {
        for (k, p) in &exc_proofs {
            black_box(p).verify(black_box(root), *k, None::<&[u8]>)?;
        }
        Ok(())
    })?;
    // Sanity: a wrong value must be rejected.
    let (k0, _, p0) = &inc_proofs[0];
    ensure!(p0.verify(root, *k0, Some(&[0u8; VALUE_LEN][..])).is_err(), "bad value accepted");
    ensure!(exc_proofs[0].1.verify(root, *k0, None::<&[u8]>).is_err(), "bad exclusion accepted");

    println!("\n-- verification (median of {VERIFY_RUNS} runs of {SAMPLES} verifies) --");
    println!("inclusion verify: {inc_us:.2} us/proof");
    println!("exclusion verify: {exc_us:.2} us/proof");

    let peak = proc_status("VmHWM:");
    println!("\n-- memory --");
    println!("peak RSS (VmHWM), measured here, before the extra sections below: {peak}");

    // jmt's other non-membership form, `get_with_exclusion_proof`, returns an
    // ICS23-style neighbour proof (`ExclusionProof`: one or two
    // SparseMerkleProofs of the adjacent present keys). That enum lives in a
    // private module and is not re-exported, so callers cannot name, match,
    // serialise or verify it outside jmt's ics23 conversion. We rebuild the
    // same content (proofs of the two neighbouring keys) to size it.
    let mut sorted: Vec<[u8; 32]> = (0..TOTAL_KEYS).map(|i| key_of(i).0).collect();
    sorted.sort_unstable();
    let mut nb_sizes = Vec::with_capacity(SAMPLES);
    for &i in &absent {
        let k = key_of(i);
        ensure!(tree.get_with_exclusion_proof(k, last)?.is_err(), "absent key found");
        let pos = sorted.binary_search(&k.0).expect_err("absent key present");
        let mut total = 0;
        if pos > 0 {
            total += borsh::to_vec(&tree.get_with_proof(KeyHash(sorted[pos - 1]), last)?.1)?.len();
        }
        if pos < sorted.len() {
            total += borsh::to_vec(&tree.get_with_proof(KeyHash(sorted[pos]), last)?.1)?.len();
        }
        nb_sizes.push(total);
    }
    let (nmin, nmed, nmax) = stats(nb_sizes);
    println!("\n-- exclusion, ICS23 neighbour form (get_with_exclusion_proof content, borsh of its parts) --");
    println!("min {nmin} / median {nmed} / max {nmax} bytes");

    // ---------------------------------------------------------------- reorg
    println!("\n-- reorg probe (small separate tree, 10 versions x 10 keys) --");
    reorg_probe()?;
    Ok(())
}

/// What happens when a node tries to replace versions 5..9 with a different
/// branch: jmt always builds version v on the root of version v-1, and nodes
/// are keyed by (version, nibble path), so the new version-5 nodes collide
/// with the old ones.
fn reorg_probe() -> Result<()> {
    for allow_overwrite in [false, true] {
        let store = MockTreeStore::new(allow_overwrite);
        let tree: Tree = JellyfishMerkleTree::new(&store);
        let mut roots = Vec::new();
        for v in 0..10u64 {
            let (r, b) = tree.put_value_set((0..10).map(|i| (key_of(v * 10 + i), Some(value_of(v)))), v)?;
            store.write_tree_update_batch(b)?;
            roots.push(r);
        }
        // New branch: version 5 again (on top of root 4), touching a key first written at v8.
        let fork = tree.put_value_set([(key_of(85), Some(value_of(999)))], 5);
        let (fork_root, batch) = fork?;
        println!(
            "  [allow_overwrite={allow_overwrite}] computing v5' on root v4: ok (root {} != old v5 {})",
            &hex(&fork_root.0)[..12],
            &hex(&roots[5].0)[..12]
        );
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let res = catch_unwind(AssertUnwindSafe(|| store.write_tree_update_batch(batch)));
        std::panic::set_hook(hook);
        match res {
            Err(_) => println!("  [allow_overwrite={allow_overwrite}] writing v5': PANIC (node key (5, path) already exists)"),
            Ok(Err(e)) => println!("  [allow_overwrite={allow_overwrite}] writing v5': error: {e:#}"),
            Ok(Ok(())) => {
                let now = tree.get_root_hash(5)?;
                let v9 = tree.get_with_proof(key_of(85), 9)?.0;
                println!(
                    "  [allow_overwrite={allow_overwrite}] writing v5': ok; root(5) is now fork root: {}; old v6..v9 still stored (key85@v9 = old value: {})",
                    now == fork_root,
                    v9 == Some(value_of(8))
                );
            }
        }
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
