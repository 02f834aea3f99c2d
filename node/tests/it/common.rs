//! Test nodes and op builders.

use std::sync::Arc;

use jsonrpsee::http_client::HttpClient;
use jsonrpsee::server::ServerHandle;
use xirtam_node::mempool::Mempool;
use xirtam_node::node::Node;
use xirtam_node::store::{KvStore, MemoryStore, RocksStore};
use xirtam_proofs::block::Block;
use xirtam_proofs::op::{Op, Owners, Value};
use xirtam_proofs::params::{Params, REGTEST};
use xirtam_proofs::{Hash, Name, SecretKey};

pub(crate) const NET: &Params = &REGTEST;

/// A node on RocksDB in a temporary directory, serving JSON-RPC.
pub(crate) struct TestNode {
    pub(crate) node: Arc<Node<RocksStore>>,
    pub(crate) url: String,
    pub(crate) handle: ServerHandle,
    pub(crate) _dir: tempfile::TempDir,
}

impl TestNode {
    pub(crate) async fn start() -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(RocksStore::open(&dir.path().join("db")).expect("open rocksdb"));
        let node = Node::open(NET, store, Mempool::default()).expect("open chain");
        let (addr, handle) =
            xirtam_node::rpc::serve(node.clone(), "127.0.0.1:0".parse().expect("addr"), 0, None)
                .await
                .expect("serve");
        TestNode {
            node,
            url: format!("http://{addr}"),
            handle,
            _dir: dir,
        }
    }

    pub(crate) fn client(&self) -> HttpClient {
        xirtam_node::client::connect(&self.url).expect("client")
    }

    pub(crate) async fn mine(&self, n: usize) -> Vec<Block> {
        mine(self.node.clone(), n).await
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.handle.stop();
    }
}

/// A node on the in-memory store (for building branches in tests).
pub(crate) fn memory_node() -> Arc<Node<MemoryStore>> {
    Node::open(NET, Arc::new(MemoryStore::new()), Mempool::default()).expect("open chain")
}

pub(crate) async fn mine<S: KvStore>(node: Arc<Node<S>>, n: usize) -> Vec<Block> {
    tokio::task::spawn_blocking(move || (0..n).map(|_| node.mine_block().expect("mine")).collect())
        .await
        .expect("join")
}

pub(crate) fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i; 32])
}

pub(crate) fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

/// A signed op stamped against `recent`.
pub(crate) fn op(
    n: &str,
    nonce: u64,
    signer: &SecretKey,
    owner: &SecretKey,
    value: &[u8],
    recent: Hash,
) -> Op {
    let mut o = Op::sign(
        NET,
        name(n),
        nonce,
        Owners::single(owner.public()),
        Value::new(value.to_vec()).expect("small"),
        signer,
    );
    assert!(o.solve_stamp(NET, recent, 0, 1 << 24));
    o
}

pub(crate) fn tip_hash<S: KvStore>(node: &Node<S>) -> Hash {
    node.lock().chain.tip().header.hash()
}
