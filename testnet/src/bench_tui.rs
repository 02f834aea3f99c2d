//! Terminal-client benchmark: the real `xirtam-chat tui` in tmux against a
//! local testnet (one node, one concierge).
//!
//! * Startup: @alice's store holds `messages` messages (sent to @bob and
//!   delivered through the server, as in real use); each run starts the
//!   client and times it to its first full frame - from inside (process
//!   start to the frame written, `--stats`) and from outside (tmux asked
//!   to start it until the screen shows the status line).
//! * Typing: a key every 50 ms (`keys` of them), from the key read to the
//!   frame showing it written to the terminal; once idle, once while @bob
//!   sends `rate` messages a second to @alice.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xirtam_proofs::Name;

use crate::Testnet;
use crate::tmux::Tmux;

/// What to run.
#[derive(Debug, Clone)]
pub struct TuiBench {
    /// Messages in the store at startup.
    pub messages: usize,
    /// Startups timed.
    pub runs: usize,
    /// Keys typed per typing phase.
    pub keys: usize,
    /// Messages a second arriving during the loaded typing phase.
    pub rate: u32,
}

/// The result.
#[derive(Debug, Clone, Default)]
pub struct TuiResult {
    /// Time to queue and deliver the history (setup, not a figure).
    pub setup: Duration,
    /// Per run: process start to the first frame written (the client's
    /// own clock).
    pub startup_inside: Vec<Duration>,
    /// Per run: process start to the client opened (store and light
    /// client), and to the store read.
    pub startup_parts: Vec<(Duration, Duration)>,
    /// Per run: tmux asked to start the client until its screen showed.
    pub startup_screen: Vec<Duration>,
    /// Key-to-frame latencies, idle (µs).
    pub keys_idle_us: Vec<u64>,
    /// Key-to-frame latencies with messages arriving (µs).
    pub keys_loaded_us: Vec<u64>,
    /// Messages that arrived during the loaded phase, and over how long.
    pub arrived: u64,
    /// Length of the loaded phase.
    pub loaded_for: Duration,
    /// Messages @bob failed to queue.
    pub send_errors: u64,
}

struct Stats {
    opened_us: u64,
    loaded_us: u64,
    startup_us: u64,
    keys_us: Vec<u64>,
    arrived: u64,
}

fn read_stats(path: &Path) -> Result<Stats> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).context("stats JSON")?;
    Ok(Stats {
        startup_us: v["startup_us"].as_u64().context("startup_us")?,
        opened_us: v["opened_us"].as_u64().unwrap_or(0),
        loaded_us: v["loaded_us"].as_u64().unwrap_or(0),
        keys_us: v["keys_us"]
            .as_array()
            .context("keys_us")?
            .iter()
            .filter_map(|x| x.as_u64())
            .collect(),
        arrived: v["arrived"].as_u64().unwrap_or(0),
    })
}

/// The client for `dir`, writing its measurements to `stats`.
fn start_tui(net: &Testnet, dir: &Path, stats: &Path) -> Result<Tmux> {
    let bin = crate::find_bin("xirtam-chat", "XIRTAM_CHAT_BIN")?;
    let mut args = vec![
        "--network".to_string(),
        "regtest".into(),
        "--datadir".into(),
        dir.display().to_string(),
    ];
    for u in net.node_urls() {
        args.push("--node".into());
        args.push(u);
    }
    args.extend(["tui".into(), "--stats".into(), stats.display().to_string()]);
    Tmux::start(&bin, &args, &[], 120, 40)
}

const READY: &str = "@alice on ~s1";
const WAIT: Duration = Duration::from_secs(60);

async fn quit(t: &Tmux, stats: &Path) -> Result<Stats> {
    t.keys(&["C-c"]).await?;
    t.wait_for("[exited 0]", WAIT).await?;
    read_stats(stats)
}

/// Type `keys` characters, one every 50 ms.
async fn type_keys(t: &Tmux, keys: usize) -> Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..keys {
        tick.tick().await;
        t.type_text("a").await?;
    }
    Ok(())
}

/// Run the benchmark.
pub async fn run(b: TuiBench) -> Result<TuiResult> {
    if b.runs == 0 || b.rate == 0 {
        bail!("at least one run, and a rate above 0");
    }
    let crate::bench_link::History {
        net,
        alice,
        bob,
        setup,
    } = crate::bench_link::two_users_with_history(b.messages).await?;
    let a = Name::new("@alice").context("name")?;
    let a_dir = net.root().join("alice");
    let mut out = TuiResult {
        setup,
        ..TuiResult::default()
    };
    // The terminal client opens alice's data directory.
    drop(alice);
    let stats: PathBuf = net.root().join("tui-stats.json");
    for _ in 0..b.runs {
        let t0 = Instant::now();
        let t = start_tui(&net, &a_dir, &stats)?;
        t.wait_for(READY, WAIT).await?;
        out.startup_screen.push(t0.elapsed());
        let s = quit(&t, &stats).await?;
        out.startup_inside.push(Duration::from_micros(s.startup_us));
        out.startup_parts.push((
            Duration::from_micros(s.opened_us),
            Duration::from_micros(s.loaded_us),
        ));
    }
    // Typing, idle.
    let t = start_tui(&net, &a_dir, &stats)?;
    t.wait_for(READY, WAIT).await?;
    type_keys(&t, b.keys).await?;
    out.keys_idle_us = quit(&t, &stats).await?.keys_us;
    // Typing while bob sends `rate` messages a second.
    let t = start_tui(&net, &a_dir, &stats)?;
    t.wait_for(READY, WAIT).await?;
    let running = bob.start(Duration::from_secs(25));
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = {
        let (bob, a, rate, failed) = (bob.clone(), a.clone(), b.rate, failed.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            let mut i = 0u64;
            loop {
                tick.tick().await;
                if bob.queue(&a, &format!("live message {i}")).await.is_err() {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                i += 1;
            }
        })
    };
    let t0 = Instant::now();
    type_keys(&t, b.keys).await?;
    out.loaded_for = t0.elapsed();
    sender.abort();
    let s = quit(&t, &stats).await?;
    running.stop().await;
    out.keys_loaded_us = s.keys_us;
    out.arrived = s.arrived;
    out.send_errors = failed.load(std::sync::atomic::Ordering::Relaxed);
    Ok(out)
}
