//! `xirtam-server`: a concierge chat server.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use xirtam_chat::server::{Limits, ServerConfig, start};
use xirtam_proofs::Name;
use xirtam_proofs::params::Params;

mod common;

/// mimalloc rather than glibc malloc: a server allocates and frees small
/// buffers for every request (docs/BENCHMARKS.md, "Concierge server").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Host mailboxes for the users who name this server in their records.
/// Stores only ciphertext; learns users' device keys from verified
/// directory lookups.
#[derive(Parser, Debug)]
#[command(name = "xirtam-server", version)]
struct Cli {
    /// The server's `~name` (claimed on the chain on first start).
    #[arg(long)]
    name: String,
    /// Network: local, testnet or regtest.
    #[arg(long, default_value = "local")]
    network: String,
    /// Data directory (keys, mailboxes, verified headers).
    #[arg(long)]
    datadir: PathBuf,
    /// A directory node's RPC URL; repeat for several.
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    /// Address to listen on (port 0: any free port; the bound address is
    /// written to DATADIR/rpc.addr).
    #[arg(long, default_value = "127.0.0.1:8650")]
    listen: std::net::SocketAddr,
    /// URL published in the server's record (default: https:// + the
    /// bound address; http:// with --plain-http).
    #[arg(long)]
    public_url: Option<String>,
    /// Blocks under the verified tip lookups are proven at (default: the
    /// network's confirmation depth).
    #[arg(long)]
    depth: Option<u64>,
    /// Largest envelope accepted (bytes).
    #[arg(long, default_value_t = 128 * 1024)]
    max_envelope: usize,
    /// Most unacknowledged envelopes in a user's contacts lane.
    #[arg(long, default_value_t = 10_000)]
    max_stored: u64,
    /// Most unacknowledged envelopes in a user's requests lane (first
    /// contact, with postage).
    #[arg(long, default_value_t = 1_000)]
    max_requests: u64,
    /// Postage difficulty (leading zero bits) of a deposit without a
    /// contact pass: 22 costs about a second of one core.
    #[arg(long, default_value_t = xirtam_chat::server::DEFAULT_POSTAGE_BITS)]
    postage_bits: u32,
    /// Most concurrent connections from one IP address.
    #[arg(long, default_value_t = 256)]
    max_connections_per_ip: u32,
    /// Days an envelope is kept when some device never acknowledges it.
    #[arg(long, default_value_t = 30)]
    retention_days: u64,
    /// Sustained deposits per second into one mailbox.
    #[arg(long, default_value_t = 200.0)]
    deposit_rate: f64,
    /// Deposit burst per mailbox.
    #[arg(long, default_value_t = 1000.0)]
    deposit_burst: f64,
    /// Login token lifetime (seconds).
    #[arg(long, default_value_t = 3600)]
    token_lifetime: u64,
    /// Seconds deposits are still taken for a user whose record names
    /// another server (then refused as "moved"); default 7 days.
    #[arg(long, default_value_t = 7 * 24 * 3600)]
    moved_grace: u64,
    /// Serve plain HTTP instead of TLS with the record's server key: only
    /// behind your own TLS terminator, whose URL you then publish with
    /// `--public-url https+ca://HOST:PORT` (docs/chat.md, "Transport"), or
    /// on loopback.
    #[arg(long)]
    plain_http: bool,
    /// Log filter (tracing), e.g. `info` or `server=debug`.
    #[arg(long, default_value = "info")]
    log: String,
}

fn main() -> Result<()> {
    // Keys, history and databases: private to the user.
    xirtam_chat::private_files();
    let cli = Cli::parse();
    let log = cli.log.clone();
    common::block_on(&log, true, run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    let params = Params::by_name(&cli.network).ok_or_else(|| {
        anyhow!(
            "unknown network {:?}: use local, testnet or regtest",
            cli.network
        )
    })?;
    let name = Name::new(&cli.name).map_err(|e| anyhow!("invalid --name {:?}: {e}", cli.name))?;
    if cli.postage_bits > xirtam_chat::api::MAX_POSTAGE_BITS {
        bail!(
            "--postage-bits at most {}: clients refuse to pay more",
            xirtam_chat::api::MAX_POSTAGE_BITS
        );
    }
    if cli.deposit_rate <= 0.0 || cli.deposit_burst < 1.0 {
        bail!("--deposit-rate must be positive and --deposit-burst at least 1");
    }
    let limits = Limits {
        max_envelope: cli.max_envelope,
        max_stored: cli.max_stored,
        max_requests: cli.max_requests,
        max_connections_per_ip: cli.max_connections_per_ip,
        postage_bits: cli.postage_bits,
        retention: Duration::from_secs(cli.retention_days * 86_400),
        deposit_rate: cli.deposit_rate,
        deposit_burst: cli.deposit_burst,
        token_lifetime: Duration::from_secs(cli.token_lifetime),
        moved_grace: Duration::from_secs(cli.moved_grace),
        ..Limits::default()
    };
    let server = start(ServerConfig {
        name,
        params,
        datadir: cli.datadir,
        nodes: cli.nodes,
        listen: cli.listen,
        public_url: cli.public_url,
        plain_http: cli.plain_http,
        depth: cli.depth,
        limits,
    })
    .await?;
    eprintln!(
        "xirtam-server {} serving on {} (record URL {}, server key {})",
        cli.name, server.addr, server.url, server.key
    );
    tokio::select! {
        r = tokio::signal::ctrl_c() => {
            r.context("wait for Ctrl-C")?;
            tracing::info!(target: "server", "shutting down");
            server.stop().await;
        }
    }
    Ok(())
}
