//! `xirtam-node`: the Xirtam directory full node.
//!
//! The node itself (store, chain, mempool, miner, RPC, p2p) is the next
//! issue; today the binary exposes the pure core's network definitions.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use xirtam_node::proofs::params::Params;

/// Xirtam directory full node.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a network's consensus parameters and genesis header.
    Params {
        /// Network: local or testnet.
        #[arg(long, default_value = "local")]
        network: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Params { network } => {
            let p = Params::by_name(&network)
                .with_context(|| format!("unknown network {network:?} (known: local, testnet)"))?;
            print_params(p);
        }
    }
    Ok(())
}

fn print_params(p: &Params) {
    let g = p.genesis_header();
    println!("network            {}", p.name);
    println!("genesis hash       {}", g.hash());
    println!("genesis time       {}", p.genesis_time);
    println!("genesis bits       {:#010x}", p.genesis_bits.0);
    println!("block interval     {} s", p.block_interval);
    println!("ASERT half-life    {} s", p.asert_half_life);
    println!("future drift       {} s", p.max_future_drift);
    println!("stamp window       {} blocks", p.stamp_window);
    println!("confirmation depth {}", p.confirmation_depth);
    println!(
        "limits             name {} B, value {} B, {} owners, {} ops/block, {} B/block",
        p.max_name_len, p.max_value_len, p.max_owners, p.max_ops_per_block, p.max_block_bytes
    );
}
