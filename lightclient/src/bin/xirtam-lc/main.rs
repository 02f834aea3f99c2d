//! `xirtam-lc`: the light client from the shell.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use serde_json::json;
use xirtam_lightclient::{
    Checkpoint, Config, HttpSource, LightClient, Lookup, SourceStatus, Verified,
};
use xirtam_proofs::Name;
use xirtam_proofs::params::Params;

mod serve;

/// Verify names against the proof-of-work directory chain, trusting none of
/// the nodes asked.
#[derive(Parser, Debug)]
#[command(name = "xirtam-lc", version)]
struct Cli {
    /// Network: local, testnet or regtest.
    #[arg(long, default_value = "local", global = true)]
    network: String,
    /// A directory node's RPC URL; repeat for several (two or more let a
    /// faulty node be outvoted by verification).
    #[arg(long = "node", global = true)]
    nodes: Vec<String>,
    /// Where verified headers are kept (default ~/.xirtam/lc-<network>).
    #[arg(long, global = true)]
    datadir: Option<PathBuf>,
    /// Blocks under the verified tip a lookup is proven at (default: the
    /// network's confirmation depth).
    #[arg(long, global = true)]
    depth: Option<u64>,
    /// Start from this checkpoint (hex, from `xirtam-lc checkpoint` on a
    /// client you trust) instead of genesis.
    #[arg(long, global = true)]
    checkpoint: Option<String>,
    /// Fail lookups when the verified tip is older than this (seconds;
    /// default ten block intervals, at least 60).
    #[arg(long, global = true)]
    max_tip_age: Option<u64>,
    /// Answer even when the tip is stale (the age is shown).
    #[arg(long, global = true)]
    allow_stale: bool,
    /// Per-request timeout (seconds, 1 to 3600).
    #[arg(long, default_value_t = 10, global = true)]
    timeout: u64,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    /// Log filter (tracing), e.g. `info` or `lightclient=debug`.
    #[arg(long, default_value = "warn", global = true)]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Download and verify headers up to the most-work tip.
    Sync,
    /// Show the verified tip and the sources (syncs first unless --offline).
    Tip {
        /// Do not contact the sources.
        #[arg(long)]
        offline: bool,
    },
    /// Resolve a name (`@user` or `~server`) to its verified record or
    /// proven absence.
    Resolve {
        /// The name.
        name: String,
    },
    /// Print a checkpoint: the verified state `depth` blocks under the tip.
    Checkpoint,
    /// Keep one synced client and answer `lc_resolve`, `lc_tip` and
    /// `lc_watch` over JSON-RPC on a local address (docs/lightclient.md).
    Serve {
        /// Address to listen on (port 0: any free port; the address bound
        /// is printed on stdout).
        #[arg(long, default_value = "127.0.0.1:8650")]
        listen: std::net::SocketAddr,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .map_err(|e| anyhow!("bad --log filter: {e}"))?,
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(run(cli))
}

fn config(cli: &Cli) -> Result<Config> {
    let params = Params::by_name(&cli.network).ok_or_else(|| {
        anyhow!(
            "unknown network {:?}: use local, testnet or regtest",
            cli.network
        )
    })?;
    let mut c = Config::new(params);
    c.datadir = Some(match &cli.datadir {
        Some(d) => d.clone(),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set; pass --datadir")?;
            PathBuf::from(home)
                .join(".xirtam")
                .join(format!("lc-{}", params.name))
        }
    });
    if let Some(cp) = &cli.checkpoint {
        c.checkpoint = Some(Checkpoint::from_hex(cp).context("--checkpoint")?);
    }
    if let Some(d) = cli.depth {
        c.depth = d;
    }
    if let Some(a) = cli.max_tip_age {
        c.max_tip_age = Duration::from_secs(a);
    }
    c.allow_stale = cli.allow_stale;
    c.timeout = Duration::from_secs(cli.timeout.clamp(1, 3600));
    Ok(c)
}

async fn run(cli: Cli) -> Result<()> {
    let cfg = config(&cli)?;
    let nodes = if cli.nodes.is_empty() {
        vec!["http://127.0.0.1:8645".to_owned()]
    } else {
        cli.nodes.clone()
    };
    let timeout = Duration::from_secs(cli.timeout.clamp(1, 3600));
    let sources = nodes
        .iter()
        .map(|u| HttpSource::new(u, timeout).map_err(|e| anyhow!("--node {u}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    let lc = LightClient::new(cfg, sources)?;
    let r = lc.load_report();
    if r.truncated_bytes > 0 || r.rebased {
        eprintln!(
            "note: header store repaired (cut {} bytes{})",
            r.truncated_bytes,
            if r.rebased {
                ", restarted from the checkpoint"
            } else {
                ""
            }
        );
    }
    if let Cmd::Serve { listen } = cli.cmd {
        return serve::serve(lc, listen).await;
    }
    match &cli.cmd {
        Cmd::Serve { .. } => {}
        Cmd::Sync => {
            sync(&lc, cli.json).await?;
        }
        Cmd::Tip { offline } => {
            if !offline {
                sync(&lc, true).await?;
            }
            print_tip(&lc, cli.json);
        }
        Cmd::Resolve { name } => {
            let name = Name::new(name).map_err(|e| anyhow!("{name:?} is not a name: {e}"))?;
            sync(&lc, true).await?;
            let v = lc.resolve_synced(&name).await?;
            print_lookup(&v, cli.json);
        }
        Cmd::Checkpoint => {
            sync(&lc, true).await?;
            let cp = lc.checkpoint()?;
            let st = &cp.state;
            if cli.json {
                println!(
                    "{}",
                    json!({"height": st.tip_height, "hash": st.tip_hash.to_hex(),
                           "work": format!("{:#x}", st.total_work()),
                           "network": cfg_network(&lc),
                           "checkpoint": cp.to_hex()})
                );
            } else {
                eprintln!(
                    "{} checkpoint at height {} (block {}), {} blocks under the verified tip:",
                    cfg_network(&lc),
                    st.tip_height,
                    st.tip_hash,
                    lc.tip().height - st.tip_height
                );
                println!("{}", cp.to_hex());
            }
        }
    }
    Ok(())
}

fn cfg_network(lc: &LightClient<HttpSource>) -> &'static str {
    lc.config().params.name
}

/// Sync with a progress bar on a terminal; print a summary unless `quiet`.
async fn sync(lc: &LightClient<HttpSource>, quiet: bool) -> Result<()> {
    let bar = if std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} headers [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(b)
    } else {
        None
    };
    let mut progress = |h: u64, target: u64| {
        if let Some(b) = &bar {
            b.set_length(target);
            b.set_position(h);
        }
    };
    let res = lc.sync_with(&mut progress).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let rep = res?;
    if !quiet {
        let t = lc.tip();
        println!(
            "verified tip: height {} (block {}), {} new headers{}",
            t.height,
            t.hash,
            rep.headers,
            if rep.reorged {
                ", chain reorganised"
            } else {
                ""
            }
        );
        print_sources(lc);
    }
    Ok(())
}

fn print_sources(lc: &LightClient<HttpSource>) {
    for s in lc.sources() {
        let status = match &s.status {
            SourceStatus::Ok => "ok".to_owned(),
            SourceStatus::Unknown => "not asked".to_owned(),
            SourceStatus::Unreachable(w) => format!("unreachable: {w}"),
            SourceStatus::Faulty(w) => format!("FAULTY: {w}"),
            other => format!("{other:?}"),
        };
        let claim = s
            .claimed_tip
            .map(|(h, _, _)| format!(", claims height {h}"))
            .unwrap_or_default();
        println!("  source {}: {status}{claim}", s.label);
    }
}

/// The verified tip and the sources, as `tip --json` and `lc_tip` give it.
fn tip_json(lc: &LightClient<HttpSource>) -> serde_json::Value {
    let t = lc.tip();
    let sources: Vec<_> = lc
        .sources()
        .into_iter()
        .map(|s| {
            let (status, reason) = match s.status {
                SourceStatus::Ok => ("ok", None),
                SourceStatus::Unknown => ("unknown", None),
                SourceStatus::Unreachable(w) => ("unreachable", Some(w)),
                SourceStatus::Faulty(w) => ("faulty", Some(w)),
                _ => ("other", None),
            };
            json!({"url": s.label, "status": status, "reason": reason,
                       "claimed_height": s.claimed_tip.map(|c| c.0)})
        })
        .collect();
    json!({"height": t.height, "hash": t.hash.to_hex(), "time": t.time,
           "work": format!("{:#x}", t.work), "base_height": t.base_height,
           "sources": sources})
}

fn print_tip(lc: &LightClient<HttpSource>, as_json: bool) {
    let t = lc.tip();
    if as_json {
        println!("{}", tip_json(lc));
    } else {
        println!(
            "verified tip: height {} (block {}), time {}, work {:#x}{}",
            t.height,
            t.hash,
            t.time,
            t.work,
            if t.base_height > 0 {
                format!(", from checkpoint {}", t.base_height)
            } else {
                String::new()
            }
        );
        print_sources(lc);
    }
}

/// A verified lookup, as `resolve --json` and `lc_resolve` give it.
fn lookup_json(v: &Verified<Lookup>) -> serde_json::Value {
    let rec = v.record();
    let record = rec.map(|r| {
        json!({"nonce": r.nonce,
               "owners": r.owners.keys().iter().map(|k| k.to_hex()).collect::<Vec<_>>(),
               "value_hex": hex::encode(r.value.as_bytes()),
               "value_utf8": std::str::from_utf8(r.value.as_bytes()).ok()})
    });
    json!({"name": v.name().to_string(), "found": rec.is_some(), "record": record,
           "height": v.height(), "block_hash": v.block_hash().to_hex(),
           "confirmations": v.confirmations(), "tip_height": v.tip_height(),
           "tip_age_secs": v.tip_age_secs(), "source": v.source()})
}

fn print_lookup(v: &Verified<Lookup>, as_json: bool) {
    let rec = v.record();
    if as_json {
        println!("{}", lookup_json(v));
        return;
    }
    let at = format!(
        "at height {} (block {}), {} confirmations; tip {} is {} s old",
        v.height(),
        v.block_hash(),
        v.confirmations(),
        v.tip_height(),
        v.tip_age_secs()
    );
    match rec {
        None => println!("{} is not registered (absence proven {at})", v.name()),
        Some(r) => {
            println!("{} (verified {at})", v.name());
            println!("  nonce  {}", r.nonce);
            for k in r.owners.keys() {
                println!("  owner  {}", k.to_hex());
            }
            match std::str::from_utf8(r.value.as_bytes()) {
                Ok(s) => println!("  value  {s:?}"),
                Err(_) => println!("  value  0x{}", hex::encode(r.value.as_bytes())),
            }
        }
    }
}
