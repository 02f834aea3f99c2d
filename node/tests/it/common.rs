//! Test nodes and op builders.

use std::sync::Arc;

use jsonrpsee::http_client::HttpClient;
use jsonrpsee::server::ServerHandle;
use xirtam_node::mempool::Mempool;
use xirtam_node::node::Node;
use xirtam_node::store::{KvStore, MemoryStore, RocksStore};
use xirtam_proofs::block::Block;
use xirtam_proofs::op::{Claim, Commit, Draft, Op, Owners, Value, claim_commitment};
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
        xirtam_node_api::client::connect(&self.url).expect("client")
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

/// A signed update giving `n` to `owner`, anchored at `recent`.
pub(crate) fn op(
    n: &str,
    nonce: u64,
    signer: &SecretKey,
    owner: &SecretKey,
    value: &[u8],
    recent: Hash,
) -> Op {
    write(n, nonce, signer, owner, value, None, recent)
}

fn write(
    n: &str,
    nonce: u64,
    signer: &SecretKey,
    owner: &SecretKey,
    value: &[u8],
    claim: Option<Claim>,
    recent: Hash,
) -> Op {
    let mut w = Draft {
        key: name(n),
        nonce,
        owners: Owners::single(owner.public()),
        value: Value::new(value.to_vec()).expect("small"),
        claim,
        anchor: recent,
    }
    .sign(NET, signer);
    assert!(w.solve_stamp(NET, 0, 1 << 24));
    Op::Write(w)
}

/// The salt tests use for a claim of `n` by `k` (fixed, so a test can
/// build the reveal without keeping state).
fn salt(n: &str, k: &SecretKey) -> [u8; 32] {
    xirtam_proofs::hash::hash_parts("test-salt", &[n.as_bytes(), &k.public().0]).0
}

/// The commitment op for a claim of `n` by `k`, anchored at `recent`.
pub(crate) fn commit_op(n: &str, k: &SecretKey, recent: Hash) -> Op {
    let c = claim_commitment(NET, &name(n), &k.public(), &salt(n, k));
    let mut c = Commit::new(c, recent);
    assert!(c.solve_stamp(NET, 0, 1 << 24));
    Op::Commit(c)
}

/// The reveal of [`commit_op`] (mined at `commit_height`) giving `n` to
/// `k` with `value`, anchored at `recent`.
pub(crate) fn claim_op(
    n: &str,
    k: &SecretKey,
    value: &[u8],
    commit_height: u64,
    recent: Hash,
) -> Op {
    let claim = Claim {
        salt: salt(n, k),
        commit_height,
    };
    write(n, 1, k, k, value, Some(claim), recent)
}

/// Commit to claiming `n` for `k` on `node` and mine until the reveal is
/// due; returns the reveal, not yet submitted.
pub(crate) async fn prepare_claim<S: KvStore>(
    node: &Arc<Node<S>>,
    n: &str,
    k: &SecretKey,
    value: &[u8],
) -> Op {
    let recent = tip_hash(node);
    node.submit_op(commit_op(n, k, recent))
        .expect("commitment admitted");
    let blocks = mine(node.clone(), NET.claim_maturity as usize).await;
    let commit_height = blocks[0].header.height;
    claim_op(n, k, value, commit_height, recent)
}

/// [`prepare_claim`], then submit the reveal to the pool (not mined).
pub(crate) async fn claim_pending<S: KvStore>(
    node: &Arc<Node<S>>,
    n: &str,
    k: &SecretKey,
    value: &[u8],
) -> Op {
    let reveal = prepare_claim(node, n, k, value).await;
    node.submit_op(reveal.clone()).expect("reveal admitted");
    reveal
}

/// Mine a block every few milliseconds until `fut` completes (for client
/// calls that wait for blocks, like a two-phase claim).
pub(crate) async fn while_mining<S: KvStore, T>(
    node: &Arc<Node<S>>,
    fut: impl std::future::Future<Output = T>,
) -> T {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let miner = {
        let (node, stop) = (node.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                node.mine_block().expect("mine");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        })
    };
    let out = fut.await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    miner.await.expect("miner joins");
    out
}

pub(crate) fn tip_hash<S: KvStore>(node: &Node<S>) -> Hash {
    node.lock().chain.tip().header.hash()
}
