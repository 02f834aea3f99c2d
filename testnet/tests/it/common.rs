//! Helpers shared by the tests.

use std::time::Duration;

use xirtam_node_api::NodeApiClient;
use xirtam_proofs::op::{Claim, Commit, Draft, Op, Owners, Value, claim_commitment};
use xirtam_proofs::params::Params;
use xirtam_proofs::{Hash, Name, Record, SecretKey, encode};
use xirtam_testnet::{Testnet, wait_for};

pub(crate) fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i; 32])
}

fn salt(name: &str, k: &SecretKey) -> [u8; 32] {
    xirtam_proofs::hash::hash_parts("test-salt", &[name.as_bytes(), &k.public().0]).0
}

/// The commitment op for a claim of `name` by `k`, anchored at `recent`.
pub(crate) fn commit(params: &Params, name: &str, k: &SecretKey, recent: Hash) -> Op {
    let n = Name::new(name).expect("valid name");
    let mut c = Commit::new(
        claim_commitment(params, &n, &k.public(), &salt(name, k)),
        recent,
    );
    assert!(c.solve_stamp(params, 0, u64::MAX / 2));
    Op::Commit(c)
}

/// A signed write of `name` anchored at `recent`: the reveal of
/// [`commit`] (mined at `commit_height`) when that is given, else an
/// update with `nonce`.
pub(crate) fn write(
    params: &Params,
    name: &str,
    k: &SecretKey,
    value: &[u8],
    nonce: u64,
    commit_height: Option<u64>,
    recent: Hash,
) -> Op {
    let mut w = Draft {
        key: Name::new(name).expect("valid name"),
        nonce,
        owners: Owners::single(k.public()),
        value: Value::new(value.to_vec()).expect("small value"),
        claim: commit_height.map(|commit_height| Claim {
            salt: salt(name, k),
            commit_height,
        }),
        anchor: recent,
    }
    .sign(params, k);
    assert!(w.solve_stamp(params, 0, u64::MAX / 2));
    Op::Write(w)
}

/// Claim `name` for `k` through node `i` of a network that mines only on
/// request: submit the commitment (anchored at `recent`), mine until the
/// reveal is due, submit the reveal (not mined yet) and return it.
pub(crate) async fn claim(
    net: &Testnet,
    i: usize,
    params: &Params,
    name: &str,
    k: &SecretKey,
    value: &[u8],
    recent: Hash,
) -> Op {
    submit(net, i, &commit(params, name, k, recent)).await;
    let commit_height = net.mine(i, 1).await.expect("mine");
    if params.claim_maturity > 1 {
        net.mine(i, params.claim_maturity as u32 - 1)
            .await
            .expect("mine");
    }
    let reveal = write(params, name, k, value, 1, Some(commit_height), recent);
    submit(net, i, &reveal).await;
    reveal
}

/// Submit `op` to node `i`.
pub(crate) async fn submit(net: &Testnet, i: usize, op: &Op) {
    net.rpc(i)
        .dir_submit(hex::encode(encode(op)))
        .await
        .expect("op accepted");
}

/// The verified record of `name` on node `i` at its tip (the proof is
/// checked against the header's state root).
pub(crate) async fn record(net: &Testnet, i: usize, name: &str) -> Option<Record> {
    let name = Name::new(name).expect("valid name");
    net.rpc(i)
        .dir_get(name.to_string(), None)
        .await
        .expect("dir_get answers")
        .verify(&name)
        .expect("dir_get verifies")
        .value
}

/// Wait until node `i` proves `name` holds `value`.
pub(crate) async fn wait_record(
    net: &Testnet,
    i: usize,
    name: &str,
    value: &[u8],
    timeout: Duration,
) {
    wait_for(&format!("{name} on node {i}"), timeout, || async move {
        record(net, i, name)
            .await
            .filter(|r| r.value.as_bytes() == value)
    })
    .await
    .expect("record arrives");
}
