//! Convergence, op propagation, partitions and late joiners.

use std::time::{Duration, Instant};

use xirtam_node_api::NodeApiClient;
use xirtam_proofs::params::REGTEST;
use xirtam_testnet::{Config, Testnet, Topology, wait_for};

use crate::common::{commit, key, record, submit, wait_record, write};

/// 5 nodes, 3 of them mining for real on `local`: they converge on one tip,
/// and an op submitted to node 0 is mined and provable on node 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_three_miners_converge_and_an_op_spreads() {
    let net = Testnet::start(Config {
        network: "local".into(),
        nodes: 5,
        miners: 3,
        timeout: Duration::from_secs(90),
        ..Config::default()
    })
    .await
    .expect("testnet starts");
    let all = net.all();
    let tip = net.wait_same_tip(&all, 3).await.expect("converge");
    // The claim as a user makes it: `xirtam-node name claim` (commitment,
    // wait, reveal, wait for the record) against node 0.
    let keyfile = net.root().join("alice.key");
    std::fs::write(&keyfile, hex::encode([1u8; 32])).expect("write key");
    let out = tokio::process::Command::new(xirtam_testnet::find_node_bin().expect("node binary"))
        .args([
            "name",
            "claim",
            "@alice",
            "--value",
            "hello from node 0",
            "--timeout",
            "90",
        ])
        .arg("--key")
        .arg(&keyfile)
        .args(["--rpc", &net.node(0).rpc_url])
        .output()
        .await
        .expect("run xirtam-node name claim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "name claim failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("proof verified"), "{stdout}");
    let claimed_at = record(&net, 0, "@alice").await.expect("claimed").claimed_at;
    assert!(claimed_at > tip.height, "commitment mined after the start");
    wait_record(
        &net,
        4,
        "@alice",
        b"hello from node 0",
        Duration::from_secs(90),
    )
    .await;
    // Still one chain after the op went in.
    let later = net
        .wait_same_tip(&all, tip.height + 1)
        .await
        .expect("converge again");
    assert!(later.height > tip.height);
}

/// Two groups mine separately, each claiming `@x` for itself; the heavier
/// side wins everywhere after they reconnect, and the losing side's op
/// that is still valid returns to the mempool and gets mined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_heals_to_the_heavier_side() {
    let net = Testnet::start(Config {
        nodes: 4,
        topology: Topology::Groups(vec![vec![0, 1], vec![2, 3]]),
        ..Config::default()
    })
    .await
    .expect("testnet starts");
    // Stamps on genesis: valid on both sides. Each side commits in its
    // block 1 and reveals in block 2.
    let g = REGTEST.genesis_hash;
    let (ka, kb) = (key(1), key(2));
    submit(&net, 0, &commit(&REGTEST, "@x", &ka, g)).await;
    submit(&net, 0, &commit(&REGTEST, "@only-a", &ka, g)).await;
    submit(&net, 2, &commit(&REGTEST, "@x", &kb, g)).await;
    net.mine(0, 1).await.expect("mine A");
    net.mine(2, 1).await.expect("mine B");
    submit(
        &net,
        0,
        &write(&REGTEST, "@x", &ka, b"side A", 1, Some(1), g),
    )
    .await;
    submit(
        &net,
        0,
        &write(&REGTEST, "@only-a", &ka, b"A only", 1, Some(1), g),
    )
    .await;
    submit(
        &net,
        2,
        &write(&REGTEST, "@x", &kb, b"side B", 1, Some(1), g),
    )
    .await;
    net.mine(0, 2).await.expect("mine A");
    net.mine(2, 5).await.expect("mine B");
    let a = net.wait_same_tip(&[0, 1], 3).await.expect("group A agrees");
    let b = net.wait_same_tip(&[2, 3], 6).await.expect("group B agrees");
    assert_ne!(a.hash, b.hash);
    assert_eq!(
        record(&net, 1, "@x")
            .await
            .expect("claimed")
            .value
            .as_bytes(),
        b"side A"
    );
    assert_eq!(
        record(&net, 3, "@x")
            .await
            .expect("claimed")
            .value
            .as_bytes(),
        b"side B"
    );
    assert_eq!(net.net_info(0).await.expect("info").peers.len(), 1);

    // Heal.
    net.connect(1, 2).await.expect("connect");
    let healed = net
        .wait_same_tip(&net.all(), 6)
        .await
        .expect("all converge");
    assert_eq!(healed.hash, b.hash, "the side with more work wins");
    for i in net.all() {
        assert_eq!(
            record(&net, i, "@x")
                .await
                .expect("claimed")
                .value
                .as_bytes(),
            b"side B"
        );
        assert!(record(&net, i, "@only-a").await.is_none());
    }
    // Side A's commitments are valid on the new chain (anchored at
    // genesis): both are back in node 0's mempool. Their reveals are not
    // (their commitments are no longer on chain).
    let info = wait_for(
        "side A's commitments back in the mempool",
        Duration::from_secs(30),
        || async {
            net.rpc(0)
                .node_info()
                .await
                .ok()
                .filter(|i| i.mempool_ops == 2)
        },
    )
    .await
    .expect("the losing side's valid ops return");
    assert_eq!(info.height, 6);
    // They are announced again: side B's nodes, which never saw them, get
    // them by gossip.
    wait_for(
        "side A's commitments re-announced to side B",
        Duration::from_secs(30),
        || async {
            net.rpc(3)
                .node_info()
                .await
                .ok()
                .filter(|i| i.mempool_ops == 2)
        },
    )
    .await
    .expect("a reorg re-announces its returned ops");
    let commit_height = net.mine(0, 1).await.expect("mine");
    let reveal = write(
        &REGTEST,
        "@only-a",
        &ka,
        b"A only",
        1,
        Some(commit_height),
        g,
    );
    submit(&net, 0, &reveal).await;
    net.mine(0, 1).await.expect("mine");
    for i in net.all() {
        wait_record(&net, i, "@only-a", b"A only", Duration::from_secs(30)).await;
    }
}

/// A fresh node syncs a 10,000-block chain from its peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_joiner_syncs_10k_blocks() {
    let mut net = Testnet::start(Config {
        nodes: 2,
        timeout: Duration::from_secs(300),
        ..Config::default()
    })
    .await
    .expect("testnet starts");
    net.mine(0, 10_000).await.expect("mine 10k blocks");
    let tip = net
        .wait_same_tip(&[0, 1], 10_000)
        .await
        .expect("node 1 follows");
    let started = Instant::now();
    let late = net.add_node(false, &[1]).await.expect("late node starts");
    let synced = net
        .wait_same_tip(&[0, late], tip.height)
        .await
        .expect("late node syncs");
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(synced.hash, tip.hash);
    let stats = net.net_info(late).await.expect("info").stats;
    assert!(
        stats.synced_blocks >= 10_000,
        "synced through the sync protocol: {stats:?}"
    );
    println!(
        "late joiner: {} blocks in {secs:.1} s = {:.0} blocks/s (debug build, including process start)",
        tip.height,
        tip.height as f64 / secs
    );
}

/// `xirtam-node name claim` interrupted between its phases (here: it gives
/// up before the commitment is mined) keeps the claim's salt in
/// `<key>.claims`; run again, it resumes with the commitment it already
/// submitted, and forgets the salt once the claim is confirmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_cli_claim_resumes() {
    let mut net = Testnet::start(Config {
        nodes: 1,
        ..Config::default()
    })
    .await
    .expect("testnet starts");
    net.mine(0, 2).await.expect("mine");
    let keyfile = net.root().join("carol.key");
    std::fs::write(&keyfile, hex::encode([3u8; 32])).expect("write key");
    let url = net.node(0).rpc_url.clone();
    let claim = |timeout: &str| {
        let mut cmd =
            tokio::process::Command::new(xirtam_testnet::find_node_bin().expect("node binary"));
        cmd.args([
            "name",
            "claim",
            "@carol",
            "--value",
            "hi",
            "--timeout",
            timeout,
        ])
        .arg("--key")
        .arg(&keyfile)
        .args(["--rpc", &url]);
        cmd
    };
    // Nothing is mined: the claim submits its commitment and gives up.
    let out = claim("1").output().await.expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("can resume"), "{err}");
    let pending = keyfile.with_extension("key.claims");
    let saved = std::fs::read_to_string(&pending).expect("salt kept");
    assert!(saved.starts_with("regtest @carol "), "{saved}");
    let commit_height = net.mine(0, 1).await.expect("mine the commitment");
    // Run again while blocks come: it resumes and finishes.
    net.auto_mine(0, Duration::from_millis(200));
    let out = claim("60").output().await.expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("resuming the claim of @carol"), "{err}");
    assert!(!pending.exists(), "salt forgotten once confirmed");
    let r = record(&net, 0, "@carol").await.expect("claimed");
    assert_eq!(r.claimed_at, commit_height, "the first run's commitment");
}
