//! `xirtam-testnet`: a local network of directory nodes, one command away.
//!
//! `up` starts the nodes in the background and saves their addresses in
//! `<dir>/testnet.json`; `status` shows each node's tip and peers; `down`
//! stops them and removes the directory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use xirtam_node::rpc::NodeApiClient;
use xirtam_testnet::{Config, State, Testnet, Topology};

/// Local Xirtam testnet.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Directory for the nodes' data and the state file.
    #[arg(long, global = true, default_value_os_t = default_dir())]
    dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start nodes in the background.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// How many of them mine.
        #[arg(long, default_value_t = 1)]
        miners: usize,
        /// Network: local (real mining, 2 s blocks) or regtest.
        #[arg(long, default_value = "local")]
        network: String,
    },
    /// Show each node's tip and peers.
    Status,
    /// Stop the nodes and delete the directory.
    Down,
    /// Whole-system benchmarks on a fresh temporary network (results for
    /// docs/BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Debug, Subcommand)]
enum BenchCmd {
    /// Block propagation: mine one block at a time on rotating nodes and
    /// time its arrival at every other node.
    Propagation {
        /// Nodes.
        #[arg(long, default_value_t = 10)]
        nodes: usize,
        /// Blocks to time.
        #[arg(long, default_value_t = 50)]
        blocks: u32,
    },
    /// Late-joiner sync: mine a chain on one node, then time a fresh node
    /// syncing it.
    Sync {
        /// Chain length.
        #[arg(long, default_value_t = 10_000)]
        blocks: u32,
    },
}

fn default_dir() -> PathBuf {
    std::env::temp_dir().join("xirtam-testnet")
}

fn state_path(dir: &std::path::Path) -> PathBuf {
    dir.join("testnet.json")
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Cli::parse()).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Up {
            nodes,
            miners,
            network,
        } => {
            if state_path(&cli.dir).exists() {
                bail!(
                    "a testnet is already up in {} (run `xirtam-testnet down` first)",
                    cli.dir.display()
                );
            }
            if miners > nodes {
                bail!("--miners {miners} is more than --nodes {nodes}");
            }
            let net = Testnet::start(Config {
                network,
                nodes,
                miners,
                topology: Topology::Star,
                dir: Some(cli.dir.clone()),
                timeout: Duration::from_secs(60),
                ..Config::default()
            })
            .await
            .context("start the testnet")?;
            let state = net.detach();
            std::fs::write(state_path(&cli.dir), serde_json::to_vec_pretty(&state)?)
                .context("write the state file")?;
            println!(
                "testnet up: {} nodes on {} ({} mining), data in {}",
                state.nodes.len(),
                state.network,
                miners,
                cli.dir.display()
            );
            for (i, n) in state.nodes.iter().enumerate() {
                println!(
                    "  node {i}{}: rpc {}  p2p {}",
                    if n.miner { " (miner)" } else { "" },
                    n.rpc_url,
                    n.p2p_addr
                );
            }
            println!(
                "try: xirtam-node name get @alice --rpc {}",
                state.nodes[0].rpc_url
            );
            Ok(())
        }
        Cmd::Bench(b) => bench(b).await,
        Cmd::Status => {
            let state = load(&cli.dir)?;
            for (i, n) in state.nodes.iter().enumerate() {
                let rpc = jsonrpsee::http_client::HttpClientBuilder::default()
                    .request_timeout(Duration::from_secs(5))
                    .build(&n.rpc_url)?;
                match (rpc.chain_tip().await, rpc.net_info().await) {
                    (Ok(t), Ok(info)) => println!(
                        "node {i}: height {} tip {} peers {} (pid {}, {})",
                        t.height,
                        &t.hash[..16],
                        info.peers.len(),
                        n.pid,
                        n.rpc_url
                    ),
                    (Err(e), _) | (_, Err(e)) => {
                        println!("node {i}: unreachable ({e}) (pid {}, {})", n.pid, n.rpc_url)
                    }
                }
            }
            Ok(())
        }
        Cmd::Down => {
            let state = load(&cli.dir)?;
            for n in &state.nodes {
                if n.pid != 0 {
                    // SIGINT: the node shuts down cleanly.
                    let _ = std::process::Command::new("kill")
                        .args(["-INT", &n.pid.to_string()])
                        .status();
                }
            }
            // Wait for the processes to exit (their RPC stops answering).
            for n in &state.nodes {
                let gone =
                    xirtam_testnet::wait_for("a node to stop", Duration::from_secs(20), || async {
                        let alive = std::path::Path::new(&format!("/proc/{}", n.pid)).exists();
                        (!alive).then_some(())
                    })
                    .await;
                if gone.is_err() {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &n.pid.to_string()])
                        .status();
                }
            }
            std::fs::remove_dir_all(&cli.dir)
                .with_context(|| format!("remove {}", cli.dir.display()))?;
            println!("testnet down; removed {}", cli.dir.display());
            Ok(())
        }
    }
}

async fn bench(b: BenchCmd) -> Result<()> {
    use std::time::Instant;
    use xirtam_testnet::percentile;
    match b {
        BenchCmd::Propagation { nodes, blocks } => {
            let net = Testnet::start(Config {
                nodes,
                timeout: Duration::from_secs(120),
                log: "warn".into(),
                ..Config::default()
            })
            .await?;
            // Let discovery fill the mesh: every node sees at least 2 peers.
            for i in net.all() {
                net.wait_peers(i, 2.min(nodes - 1)).await?;
            }
            let mut lat_ms = Vec::new();
            for k in 0..blocks {
                let origin = k as usize % nodes;
                let before = net.tip(origin).await?.height;
                let t0 = Instant::now();
                net.mine(origin, 1).await?;
                let tip = net.tip(origin).await?;
                anyhow::ensure!(tip.height == before + 1, "block not mined");
                let waits = net.all().into_iter().filter(|&i| i != origin).map(|i| {
                    let net = &net;
                    let hash = tip.hash.clone();
                    async move {
                        // Poll every 2 ms: the figure's resolution.
                        xirtam_testnet::poll_until(
                            "the block",
                            Duration::from_secs(30),
                            Duration::from_millis(2),
                            || {
                                let hash = hash.clone();
                                async move {
                                    let t = net.tip(i).await.ok()?;
                                    (t.hash == hash).then(|| t0.elapsed())
                                }
                            },
                        )
                        .await
                    }
                });
                for r in futures::future::join_all(waits).await {
                    lat_ms.push(r?.as_secs_f64() * 1e3);
                }
            }
            let n = lat_ms.len();
            let p50 = percentile(&mut lat_ms, 50.0);
            let p95 = percentile(&mut lat_ms, 95.0);
            let max = percentile(&mut lat_ms, 100.0);
            println!(
                "block propagation, {nodes} nodes, {blocks} blocks ({n} arrivals): p50 {p50:.1} ms, p95 {p95:.1} ms, max {max:.1} ms"
            );
        }
        BenchCmd::Sync { blocks } => {
            let mut net = Testnet::start(Config {
                nodes: 1,
                timeout: Duration::from_secs(1800),
                log: "warn".into(),
                ..Config::default()
            })
            .await?;
            let t = Instant::now();
            let height = net.mine(0, blocks).await?;
            println!(
                "mined {height} blocks in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            let tip = net.tip(0).await?;
            let t = Instant::now();
            let late = net.add_node(false, &[0]).await?;
            let started = t.elapsed();
            net.wait_same_tip(&[0, late], tip.height).await?;
            let secs = t.elapsed().as_secs_f64();
            println!(
                "late joiner synced {} blocks in {secs:.2} s ({:.0} blocks/s; process start {:.2} s included)",
                tip.height,
                tip.height as f64 / secs,
                started.as_secs_f64()
            );
        }
    }
    Ok(())
}

fn load(dir: &std::path::Path) -> Result<State> {
    let p = state_path(dir);
    let bytes = std::fs::read(&p).with_context(|| {
        format!(
            "no testnet in {} (start one with `xirtam-testnet up`)",
            dir.display()
        )
    })?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt", p.display()))
}
