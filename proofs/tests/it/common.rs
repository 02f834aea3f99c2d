//! Builders shared by the tests: keys, ops, mined header chains, trees.

use xirtam_proofs::block::ops_root;
use xirtam_proofs::header::{ChainState, Header, header_template, mine};
use xirtam_proofs::op::{Claim, Commit, Draft, Owners, Record, Value, Write, claim_commitment};
use xirtam_proofs::params::{LOCAL, Params};
use xirtam_proofs::state::{self, MemoryNodeStore, NodeRef};
use xirtam_proofs::{Hash, Name, SecretKey};

pub(crate) const FAR_FUTURE: u64 = u64::MAX / 2;

pub(crate) fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i; 32])
}

pub(crate) fn name(s: &str) -> Name {
    Name::new(s).expect("test names are valid")
}

/// A signed and stamped update on `LOCAL`, anchored at `block`.
pub(crate) fn op(
    n: &str,
    nonce: u64,
    signer: &SecretKey,
    owners: &[&SecretKey],
    value: &[u8],
    block: Hash,
) -> Write {
    write(n, nonce, signer, owners, value, None, block)
}

/// A signed and stamped first claim on `LOCAL` revealing the commitment
/// with `salt` mined at `commit_height`, anchored at `block`.
pub(crate) fn claim(
    n: &str,
    signer: &SecretKey,
    value: &[u8],
    salt: [u8; 32],
    commit_height: u64,
    block: Hash,
) -> Write {
    let c = Claim {
        salt,
        commit_height,
    };
    write(n, 1, signer, &[signer], value, Some(c), block)
}

/// The commitment op for a claim of `n` by `signer` with `salt`.
pub(crate) fn commit(n: &str, signer: &SecretKey, salt: [u8; 32], block: Hash) -> Commit {
    let mut c = Commit::new(
        claim_commitment(&LOCAL, &name(n), &signer.public(), &salt),
        block,
    );
    assert!(c.solve_stamp(&LOCAL, 0, 1 << 24), "stamp found");
    c
}

fn write(
    n: &str,
    nonce: u64,
    signer: &SecretKey,
    owners: &[&SecretKey],
    value: &[u8],
    claim: Option<Claim>,
    block: Hash,
) -> Write {
    let owners = Owners::new(owners.iter().map(|k| k.public()).collect()).expect("1..=16 owners");
    let mut o = Draft {
        key: name(n),
        nonce,
        owners,
        value: Value::new(value.to_vec()).expect("small value"),
        claim,
        anchor: block,
    }
    .sign(&LOCAL, signer);
    assert!(o.solve_stamp(&LOCAL, 0, 1 << 24), "stamp found");
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
    let (root, batch) = state::update(&s, NodeRef::EMPTY, 1, &items).expect("memory store");
    s.insert_batch(batch);
    (s, root.hash)
}

pub(crate) fn record(nonce: u64, owner: &SecretKey, value: &[u8]) -> Record {
    Record {
        nonce,
        owners: Owners::single(owner.public()),
        value: Value::new(value.to_vec()).expect("small value"),
        claimed_at: 1,
    }
}
