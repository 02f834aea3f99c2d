//! Builders shared by the tests: keys, ops, mined header chains, trees.

use xirtam_proofs::block::ops_root;
use xirtam_proofs::header::{ChainState, Header, header_template, mine};
use xirtam_proofs::op::{Op, Owners, Record, Value};
use xirtam_proofs::params::{LOCAL, Params};
use xirtam_proofs::state::{self, MemoryNodeStore};
use xirtam_proofs::{Hash, Name, SecretKey};

pub(crate) const FAR_FUTURE: u64 = u64::MAX / 2;

pub(crate) fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i; 32])
}

pub(crate) fn name(s: &str) -> Name {
    Name::new(s).expect("test names are valid")
}

/// A signed and stamped op on `LOCAL`, stamped against `block`.
pub(crate) fn op(
    n: &str,
    nonce: u64,
    signer: &SecretKey,
    owners: &[&SecretKey],
    value: &[u8],
    block: Hash,
) -> Op {
    let owners = Owners::new(owners.iter().map(|k| k.public()).collect()).expect("1..=16 owners");
    let mut o = Op::sign(
        &LOCAL,
        name(n),
        nonce,
        owners,
        Value::new(value.to_vec()).expect("small value"),
        signer,
    );
    assert!(o.solve_stamp(&LOCAL, block, 0, 1 << 24), "stamp found");
    o
}

/// Mine `n` headers on top of `state` with timestamps exactly on schedule
/// (so the target stays at the anchor's), advancing `state`.
pub(crate) fn mine_chain(params: &Params, state: &mut ChainState, n: usize) -> Vec<Header> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let h = next_header(params, state, state.tip_time() + params.block_interval);
        state
            .push(params, &h, FAR_FUTURE)
            .expect("mined header is valid");
        out.push(h);
    }
    out
}

/// A valid, mined next header at `time`.
pub(crate) fn next_header(params: &Params, state: &ChainState, time: u64) -> Header {
    let mut h = header_template(params, state, time);
    h.ops_root = ops_root(&[]);
    h.state_root = state::EMPTY_ROOT;
    assert!(mine(&mut h, 0, u64::MAX), "nonce found");
    h
}

/// Build a tree of records from `(name, record)` pairs.
pub(crate) fn tree(records: &[(Name, Record)]) -> (MemoryNodeStore, Hash) {
    let mut s = MemoryNodeStore::new();
    let items: Vec<_> = records
        .iter()
        .map(|(n, r)| (n.key_hash(), r.hash()))
        .collect();
    let (root, batch) = state::update(&s, state::EMPTY_ROOT, &items).expect("memory store");
    s.insert_batch(batch);
    (s, root)
}

pub(crate) fn record(nonce: u64, owner: &SecretKey, value: &[u8]) -> Record {
    Record {
        nonce,
        owners: Owners::single(owner.public()),
        value: Value::new(value.to_vec()).expect("small value"),
    }
}
