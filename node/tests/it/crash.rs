//! Crash safety: run the real `xirtam-node` binary (mining on regtest,
//! accepting ops), kill it with SIGKILL at random moments 22 times. After
//! every restart, every op seen confirmed before any kill is still there;
//! at the end the stored chain and state root equal a replay of the stored
//! blocks from genesis.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use xirtam_node::chain::Chain;
use xirtam_node::rpc::NodeApiClient;
use xirtam_node::store::{MemoryStore, RocksStore};
use xirtam_proofs::{Hash, encode};

use crate::common::{NET, key, name, op};

const ROUNDS: usize = 22;

fn spawn(datadir: &Path) -> Child {
    let _ = std::fs::remove_file(datadir.join("rpc.addr"));
    Command::new(env!("CARGO_BIN_EXE_xirtam-node"))
        .args([
            "run",
            "--network",
            "regtest",
            "--rpc-addr",
            "127.0.0.1:0",
            "--mine",
            "--log",
            "warn",
            "--datadir",
        ])
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
    // name -> nonce seen confirmed (in a main-chain block the node served).
    let mut confirmed: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_height = 0;
    let signer = key(9);

    for round in 0..ROUNDS {
        let mut child = spawn(&datadir);
        let url = rpc_url(&datadir, &mut child).await;
        let rpc = xirtam_node::client::connect(&url).expect("client");

        // Nothing acknowledged before a kill is lost.
        let tip = rpc.chain_tip().await.expect("tip");
        assert!(
            tip.height >= last_height,
            "round {round}: tip went back from {last_height} to {}",
            tip.height
        );
        for (n, nonce) in &confirmed {
            let c = xirtam_node::client::get(&rpc, &name(n), None)
                .await
                .expect("verified lookup");
            let got = c.record.map(|r| r.nonce);
            assert!(
                got >= Some(*nonce),
                "round {round}: {n} (nonce {nonce}) lost after kill -9: {got:?}"
            );
        }

        // Submit a few claims while it mines.
        let recent = Hash::from_hex(&tip.hash).expect("hash");
        let mut submitted = Vec::new();
        for i in 0..3 {
            let n = format!("@r{round}x{i}");
            let o = op(
                &n,
                1,
                &signer,
                &signer,
                format!("round {round}").as_bytes(),
                recent,
            );
            if rpc.dir_submit(hex::encode(encode(&o))).await.is_ok() {
                submitted.push(n);
            }
        }
        // Let it run a random while, then record what is confirmed.
        tokio::time::sleep(Duration::from_millis(50 + rng.next(700))).await;
        if let Ok(t) = rpc.chain_tip().await {
            last_height = t.height;
        }
        for n in &submitted {
            if let Ok(c) = xirtam_node::client::get(&rpc, &name(n), None).await
                && let Some(r) = c.record
            {
                confirmed.insert(n.clone(), r.nonce);
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
    for n in confirmed.keys() {
        assert_eq!(
            replay.record(&name(n)).expect("read"),
            chain.record(&name(n)).expect("read")
        );
        assert!(
            chain.record(&name(n)).expect("read").is_some(),
            "{n} confirmed but absent at the end"
        );
    }
    println!(
        "{} rounds, final height {}, {} confirmed ops",
        ROUNDS,
        chain.height(),
        confirmed.len()
    );
}
