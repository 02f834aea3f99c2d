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
