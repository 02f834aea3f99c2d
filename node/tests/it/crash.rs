//! Crash safety: run the real `xirtam-node` binary (mining on regtest,
//! accepting ops), kill it with SIGKILL at random moments 22 times. After
//! every restart, every op seen confirmed before any kill is still there;
//! at the end the stored chain and state root equal a replay of the stored
//! blocks from genesis. And ops acknowledged into the mempool of a node
//! that is not mining survive a SIGKILL.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use xirtam_node::chain::Chain;
use xirtam_node::rpc::NodeApiClient;
use xirtam_node::store::{MemoryStore, RocksStore};
use xirtam_proofs::{Hash, Op, encode};

use crate::common::{NET, commit_op, key};

const ROUNDS: usize = 22;

fn spawn(datadir: &Path) -> Child {
    spawn_with(datadir, true)
}

fn spawn_with(datadir: &Path, mine: bool) -> Child {
    let _ = std::fs::remove_file(datadir.join("rpc.addr"));
    Command::new(env!("CARGO_BIN_EXE_xirtam-node"))
        .args([
            "run",
            "--network",
            "regtest",
            "--rpc-addr",
            "127.0.0.1:0",
            "--log",
            "warn",
        ])
        .args(mine.then_some("--mine"))
        .arg("--datadir")
        .arg(datadir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start xirtam-node")
}

/// Wait (bounded) for the node to publish its RPC address.
async fn rpc_url(datadir: &Path, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(a) = std::fs::read_to_string(datadir.join("rpc.addr")) {
            return format!("http://{}", a.trim());
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("xirtam-node exited early: {status}");
        }
        assert!(Instant::now() < deadline, "node did not start within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A small deterministic generator (the seed is printed for reproduction).
struct Rng(u64);
impl Rng {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let datadir = dir.path().to_path_buf();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!("crash test seed {seed}");
    let mut rng = Rng(seed);
    // commitment -> height it was seen mined at (in a main-chain block the
    // node served).
    let mut confirmed: BTreeMap<Hash, u64> = BTreeMap::new();
    let mut last_height = 0;
    let signer = key(9);

    for round in 0..ROUNDS {
        let mut child = spawn(&datadir);
        let url = rpc_url(&datadir, &mut child).await;
        let rpc = xirtam_node_api::client::connect(&url).expect("client");

        // Nothing acknowledged before a kill is lost.
        let tip = rpc.chain_tip().await.expect("tip");
        assert!(
            tip.height >= last_height,
            "round {round}: tip went back from {last_height} to {}",
            tip.height
        );
        for (c, at) in &confirmed {
            let v = rpc
                .dir_commitment(c.to_hex(), None)
                .await
                .expect("dir_commitment");
            assert_eq!(
                v.mined_at,
                Some(*at),
                "round {round}: commitment {c} (mined at {at}) lost after kill -9"
            );
        }

        // Submit a few commitments while it mines.
        let recent = Hash::from_hex(&tip.hash).expect("hash");
        let mut submitted = Vec::new();
        for i in 0..3 {
            let o = commit_op(&format!("@r{round}x{i}"), &signer, recent);
            if rpc.dir_submit(hex::encode(encode(&o))).await.is_ok()
                && let Op::Commit(c) = o
            {
                submitted.push(c.commitment);
            }
        }
        // Let it run a random while, then record what is confirmed.
        tokio::time::sleep(Duration::from_millis(50 + rng.next(700))).await;
        if let Ok(t) = rpc.chain_tip().await {
            last_height = t.height;
        }
        for c in &submitted {
            if let Ok(v) = rpc.dir_commitment(c.to_hex(), None).await
                && let Some(at) = v.mined_at
            {
                confirmed.insert(*c, at);
            }
        }
        // And kill it at a random moment after that, mid-work.
        tokio::time::sleep(Duration::from_millis(rng.next(300))).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }
    assert!(
        confirmed.len() >= ROUNDS,
        "most rounds confirmed ops ({} confirmed)",
        confirmed.len()
    );

    // The store equals a replay of its own main chain from genesis.
    let store = Arc::new(RocksStore::open(&datadir.join("db")).expect("reopen"));
    let chain = Chain::open(NET, store).expect("chain opens after kills");
    let replay_store = Arc::new(MemoryStore::new());
    let mut replay = Chain::open(NET, replay_store).expect("fresh chain");
    for h in 1..=chain.height() {
        let hash = chain.hash_at(h).expect("main chain");
        let block = chain.block(&hash).expect("read").expect("stored");
        replay
            .submit_block(block, u64::MAX / 2)
            .expect("stored blocks replay");
    }
    assert_eq!(replay.tip().header.hash(), chain.tip().header.hash());
    assert_eq!(
        replay.tip().header.state_root,
        chain.tip().header.state_root
    );
    for (c, at) in &confirmed {
        let h = chain.height();
        assert_eq!(
            replay.prove_commitment(c, h).expect("read").1,
            Some(*at),
            "{c} confirmed but absent at the end"
        );
        assert_eq!(chain.prove_commitment(c, h).expect("read").1, Some(*at));
    }
    println!(
        "{} rounds, final height {}, {} confirmed ops",
        ROUNDS,
        chain.height(),
        confirmed.len()
    );
}

/// Ops acknowledged by `dir_submit` survive a SIGKILL of a node that was
/// not mining: after the restart they are pending again, and the next block
/// includes them. (The mempool used to live in memory only.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_ops_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let datadir = dir.path().to_path_buf();
    let mut child = spawn_with(&datadir, false);
    let rpc =
        xirtam_node_api::client::connect(&rpc_url(&datadir, &mut child).await).expect("client");
    let recent = NET.genesis_hash;
    let ops: Vec<Op> = (0..5)
        .map(|i| commit_op(&format!("@keep{i}"), &key(4), recent))
        .collect();
    for o in &ops {
        rpc.dir_submit(hex::encode(encode(o)))
            .await
            .expect("acknowledged");
    }
    assert_eq!(rpc.node_info().await.expect("info").mempool_ops, 5);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    let mut child = spawn_with(&datadir, false);
    let rpc =
        xirtam_node_api::client::connect(&rpc_url(&datadir, &mut child).await).expect("client");
    assert_eq!(
        rpc.node_info().await.expect("info").mempool_ops,
        5,
        "every acknowledged op is pending after kill -9"
    );
    rpc.dev_mine(1).await.expect("mine");
    let b = rpc
        .chain_block(xirtam_node::rpc::HeightOrHash::Height(1))
        .await
        .expect("block 1");
    assert_eq!(b.ops.len(), 5);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}
