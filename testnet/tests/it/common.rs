//! Helpers shared by the tests.

use std::time::Duration;

use xirtam_node::client;
use xirtam_node::rpc::NodeApiClient;
use xirtam_proofs::op::{Op, Owners, Value};
use xirtam_proofs::params::Params;
use xirtam_proofs::{Hash, Name, Record, SecretKey, encode};
use xirtam_testnet::{Testnet, wait_for};

pub(crate) fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i; 32])
}

/// A signed first claim of `name`, stamped on `recent`.
pub(crate) fn claim(params: &Params, name: &str, k: &SecretKey, value: &[u8], recent: Hash) -> Op {
    let mut op = Op::sign(
        params,
        Name::new(name).expect("valid name"),
        1,
        Owners::single(k.public()),
        Value::new(value.to_vec()).expect("small value"),
        k,
    );
    assert!(op.solve_stamp(params, recent, 0, u64::MAX / 2));
    op
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
    client::get(net.rpc(i), &name, None)
        .await
        .expect("dir_get verifies")
        .record
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
