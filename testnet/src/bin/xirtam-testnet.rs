//! `xirtam-testnet`: a local network of directory nodes, one command away.
//!
//! `up` starts the nodes in the background and saves their addresses in
//! `<dir>/testnet.json`; `status` shows each node's tip and peers; `down`
//! stops them and removes the directory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use xirtam_node_api::NodeApiClient;
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
    /// The chat demo: 3 nodes, 2 concierge servers, @alice and @bob
    /// exchange messages, @alice moves servers; prints a transcript, cleans
    /// up, exits 0 when every message arrived.
    Demo {
        /// Keep the data here instead of a temporary directory.
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Keep the network up after the story (until Ctrl-C) and print
        /// how to open `xirtam-chat tui` as @alice and @bob.
        #[arg(long)]
        stay: bool,
    },
    /// Show each node's tip and peers.
    Status,
    /// Stop the nodes and delete the directory.
    Down,
    /// Whole-system benchmarks on a fresh temporary network (results for
    /// docs/BENCHMARKS.md).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Serve a synthetic regtest header chain on a loopback port (for
    /// `bench lightclient-memory`); prints `listening on http://ADDR`, and
    /// stops when stdin closes.
    #[command(hide = true)]
    HeaderSource {
        /// Blocks above genesis.
        #[arg(long)]
        blocks: u64,
    },
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
    /// Concierge server: deposit throughput and deposit-to-delivery
    /// latency with many long-polling receivers; memory per idle long-poll.
    Chat {
        /// Long-polling receivers.
        #[arg(long, default_value_t = 100)]
        receivers: usize,
        /// Concurrent depositors.
        #[arg(long, default_value_t = 32)]
        senders: usize,
        /// Envelopes in total.
        #[arg(long, default_value_t = 50_000)]
        messages: usize,
        /// Idle long-polls for the memory figure.
        #[arg(long, default_value_t = 1000)]
        idle: usize,
        /// Plain HTTP instead of TLS (to see what TLS costs).
        #[arg(long)]
        plain_http: bool,
        /// Acknowledge with a `mailbox_ack` call after each batch instead
        /// of in the next long-poll's cursor (one more request per batch).
        #[arg(long)]
        ack_calls: bool,
    },
    /// Light client: cold start to a verified name (from genesis and from a
    /// checkpoint), resolve latency on a synced client, memory.
    Lightclient {
        /// Chain length.
        #[arg(long, default_value_t = 100_000)]
        blocks: u32,
        /// Cold starts to time (median reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Lookups to time on the synced client.
        #[arg(long, default_value_t = 1000)]
        lookups: usize,
        /// The checkpoint is this many blocks under the tip.
        #[arg(long, default_value_t = 100)]
        checkpoint_age: u64,
    },
    /// Light client memory and sync speed on a long chain: a cold sync of
    /// a synthetic regtest chain served by a stand-in node (regtest nodes
    /// cannot mine this far ahead of the clock), resident memory above an
    /// empty client, then a restart from the store.
    LightclientMemory {
        /// Chain length.
        #[arg(long, default_value_t = 500_000)]
        headers: u64,
    },
    /// Group fan-out: one group message delivered to this many members'
    /// long-polls on loopback; times the send until the last delivery.
    GroupFanout {
        /// Long-polling members.
        #[arg(long, default_value_t = 1000)]
        pollers: usize,
        /// Messages sent (median reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// The terminal client (`xirtam-chat tui`, in tmux): startup with
    /// this many stored messages, and key-to-screen latency idle and while
    /// messages arrive.
    Tui {
        /// Messages in the store.
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// Startups timed (median reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Keys typed per phase (one every 50 ms).
        #[arg(long, default_value_t = 200)]
        keys: usize,
        /// Messages a second arriving while typing.
        #[arg(long, default_value_t = 100)]
        rate: u32,
    },
    /// Device linking: a user with this much history links new devices
    /// (one per run); times the code shown until the new device holds the
    /// whole history.
    Link {
        /// Messages of history.
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        /// Devices linked (median reported; at most 7).
        #[arg(long, default_value_t = 3)]
        runs: usize,
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
        Cmd::Demo { keep, stay } => {
            xirtam_testnet::demo::run(keep.as_deref(), true, stay).await?;
            Ok(())
        }
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
        Cmd::HeaderSource { blocks } => {
            use std::io::Write as _;
            let (headers, state) =
                xirtam_testnet::header_source::synthetic_chain(&xirtam_proofs::REGTEST, blocks)?;
            let (addr, handle) = xirtam_testnet::header_source::serve_headers(
                &xirtam_proofs::REGTEST,
                headers,
                &state,
            )
            .await?;
            println!("listening on http://{addr}");
            std::io::stdout().flush()?;
            // Until the parent closes our stdin (or exits).
            let _ = tokio::task::spawn_blocking(|| {
                use std::io::Read as _;
                std::io::stdin().read_to_end(&mut Vec::new())
            })
            .await;
            let _ = handle.stop();
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

async fn bench(b: BenchCmd) -> Result<()> {
    use std::time::Instant;
    use xirtam_testnet::percentile;
    match b {
        BenchCmd::Chat {
            receivers,
            senders,
            messages,
            idle,
            plain_http,
            ack_calls,
        } => {
            let r = xirtam_testnet::bench_chat::run(xirtam_testnet::bench_chat::ChatBench {
                receivers,
                senders,
                messages,
                idle,
                plain_http,
                ack_calls,
            })
            .await?;
            println!(
                "chat server: {messages} envelopes of {} B, {receivers} long-polling receivers, {senders} depositors",
                r.envelope_bytes
            );
            println!(
                "  throughput      {:.0} envelopes/s (first deposit to last delivery)",
                r.throughput
            );
            println!(
                "  delivery        p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms (deposit call to long-poll return)",
                r.latency_ms[0], r.latency_ms[1], r.latency_ms[2]
            );
            println!(
                "  deposit call    p50 {:.2} ms  p99 {:.2} ms",
                r.deposit_ms[0], r.deposit_ms[1]
            );
            if let Some((server, runner)) = r.cpu_us {
                println!(
                    "  CPU / envelope  server {server:.0} us, bench clients {runner:.0} us (both share the machine)"
                );
            }
            let per = (r.rss_kib.1 as f64 - r.rss_kib.0 as f64) * 1024.0 / r.idle.max(1) as f64;
            println!(
                "  idle long-polls server RSS {} KiB -> {} KiB with {} parked: {:.1} KiB each",
                r.rss_kib.0,
                r.rss_kib.1,
                r.idle,
                per / 1024.0
            );
        }
        BenchCmd::GroupFanout { pollers, runs } => {
            let r = xirtam_testnet::bench_group::run(xirtam_testnet::bench_group::FanoutBench {
                pollers,
                runs,
            })
            .await?;
            let mut ms: Vec<f64> = r.runs.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
            for (i, t) in ms.iter().enumerate() {
                println!(
                    "  run {}: last of {pollers} deliveries after {t:.1} ms",
                    i + 1
                );
            }
            println!(
                "group message to {pollers} long-polling members: median {:.1} ms to the last delivery",
                percentile(&mut ms, 50.0)
            );
        }
        BenchCmd::Tui {
            messages,
            runs,
            keys,
            rate,
        } => {
            let r = xirtam_testnet::bench_tui::run(xirtam_testnet::bench_tui::TuiBench {
                messages,
                runs,
                keys,
                rate,
            })
            .await?;
            println!(
                "terminal client with {messages} stored messages (setup: sent and delivered in {:.1} s)",
                r.setup.as_secs_f64()
            );
            let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
            for (i, ((inside, screen), (opened, loaded))) in r
                .startup_inside
                .iter()
                .zip(&r.startup_screen)
                .zip(&r.startup_parts)
                .enumerate()
            {
                println!(
                    "  startup {}: first frame {:.1} ms after the process started (client open at {:.1} ms, store read at {:.1} ms); on the tmux screen {:.1} ms after asking tmux to start it",
                    i + 1,
                    ms(inside),
                    ms(opened),
                    ms(loaded),
                    ms(screen)
                );
            }
            let mut inside: Vec<f64> = r.startup_inside.iter().map(ms).collect();
            let mut screen: Vec<f64> = r.startup_screen.iter().map(ms).collect();
            println!(
                "startup median: {:.1} ms to the first frame, {:.1} ms to the screen",
                percentile(&mut inside, 50.0),
                percentile(&mut screen, 50.0)
            );
            for (what, keys) in [("idle", &r.keys_idle_us), ("loaded", &r.keys_loaded_us)] {
                let mut v: Vec<f64> = keys.iter().map(|&u| u as f64 / 1000.0).collect();
                if v.is_empty() {
                    println!("typing {what}: no key measured");
                    continue;
                }
                println!(
                    "typing {what}: {} keys, key read to frame written median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    v.len(),
                    percentile(&mut v, 50.0),
                    percentile(&mut v, 99.0),
                    percentile(&mut v, 100.0)
                );
            }
            println!(
                "messages arriving while typing: {} in {:.1} s ({:.0}/s; {} failed to queue)",
                r.arrived,
                r.loaded_for.as_secs_f64(),
                r.arrived as f64 / r.loaded_for.as_secs_f64(),
                r.send_errors
            );
        }
        BenchCmd::Link { messages, runs } => {
            let r = xirtam_testnet::bench_link::run(xirtam_testnet::bench_link::LinkBench {
                messages,
                runs,
            })
            .await?;
            println!(
                "device link with {messages} messages of history (setup: history queued and delivered in {:.1} s)",
                r.history_setup.as_secs_f64()
            );
            for (i, run) in r.runs.iter().enumerate() {
                println!(
                    "  run {}: name in {:.2} s, whole history in {:.2} s ({} envelopes)",
                    i + 1,
                    run.named.as_secs_f64(),
                    run.total.as_secs_f64(),
                    run.parts
                );
            }
            let mut named: Vec<f64> = r.runs.iter().map(|x| x.named.as_secs_f64()).collect();
            let mut total: Vec<f64> = r.runs.iter().map(|x| x.total.as_secs_f64()).collect();
            println!(
                "median: name in {:.2} s, whole history in {:.2} s",
                percentile(&mut named, 50.0),
                percentile(&mut total, 50.0)
            );
        }
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
        BenchCmd::Lightclient {
            blocks,
            runs,
            lookups,
            checkpoint_age,
        } => bench_lightclient(blocks, runs, lookups, checkpoint_age).await?,
        BenchCmd::LightclientMemory { headers } => bench_lightclient_memory(headers).await?,
    }
    Ok(())
}

/// Resident set size of this process (KiB), from /proc.
fn rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn bench_lightclient_memory(headers: u64) -> Result<()> {
    use std::time::Instant;
    use tokio::io::AsyncBufReadExt as _;
    use xirtam_lightclient::{Config as LcConfig, HttpSource, LightClient};
    use xirtam_proofs::REGTEST;

    let t = Instant::now();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["header-source", "--blocks", &headers.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("start the header source")?;
    let stdout = child.stdout.take().context("piped stdout")?;
    let line = tokio::time::timeout(
        Duration::from_secs(1800),
        tokio::io::BufReader::new(stdout).lines().next_line(),
    )
    .await
    .context("the header source did not start within 30 min")??
    .context("the header source exited")?;
    let url = line
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected line from the header source: {line:?}"))?
        .to_owned();
    println!(
        "synthetic regtest chain of {headers} headers mined and served in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let open = || {
        let mut cfg = LcConfig::new(&REGTEST);
        cfg.datadir = Some(dir.path().to_owned());
        cfg.timeout = Duration::from_secs(60);
        let source = HttpSource::new(&url, Duration::from_secs(60))?;
        anyhow::Ok(LightClient::new(cfg, vec![source])?)
    };
    let lc = open()?;
    let empty = rss_kib().context("/proc/self/status")?;
    let t = Instant::now();
    for _ in 0..10 {
        lc.sync().await?;
        if lc.tip().height >= headers {
            break;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        lc.tip().height == headers,
        "sync stopped at {}",
        lc.tip().height
    );
    let synced = rss_kib().context("/proc/self/status")?;
    println!(
        "cold sync of {headers} headers: {secs:.1} s ({:.0} headers/s), {:.1} MB received ({:.0} bytes a header)",
        headers as f64 / secs,
        lc.bytes_received() as f64 / 1e6,
        lc.bytes_received() as f64 / headers as f64
    );
    println!(
        "resident memory: {:.1} MB with an empty client, {:.1} MB after {} headers: {:.1} MB above empty",
        empty as f64 / 1024.0,
        synced as f64 / 1024.0,
        lc.headers_held(),
        (synced as f64 - empty as f64) / 1024.0
    );
    drop(lc);
    let t = Instant::now();
    let lc = open()?;
    let reopen_ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(lc.tip().height == headers, "store did not resume");
    println!("restart from the store ({headers} headers verified again): {reopen_ms:.0} ms");
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    Ok(())
}

async fn bench_lightclient(
    blocks: u32,
    runs: usize,
    lookups: usize,
    checkpoint_age: u64,
) -> Result<()> {
    use std::time::Instant;
    use xirtam_lightclient::{Config as LcConfig, HttpSource, LightClient};
    use xirtam_proofs::op::{Claim, Commit, Draft, Op, Owners, Value, claim_commitment};
    use xirtam_proofs::{Name, REGTEST, SecretKey};
    use xirtam_testnet::percentile;

    let net = Testnet::start(Config {
        nodes: 1,
        timeout: Duration::from_secs(1800),
        log: "warn".into(),
        ..Config::default()
    })
    .await?;
    let key = SecretKey::from_seed([1; 32]);
    let name = Name::new("@bench").context("name")?;
    // Claim @bench: commitment in block 1, reveal in block 2.
    let salt = [9; 32];
    let mut c = Commit::new(
        claim_commitment(&REGTEST, &name, &key.public(), &salt),
        REGTEST.genesis_hash,
    );
    anyhow::ensure!(c.solve_stamp(&REGTEST, 0, u64::MAX / 2));
    net.rpc(0)
        .dir_submit(hex::encode(xirtam_proofs::encode(&Op::Commit(c))))
        .await
        .context("submit")?;
    let commit_height = net.mine(0, 1).await?;
    let mut w = Draft {
        key: name.clone(),
        nonce: 1,
        owners: Owners::single(key.public()),
        value: Value::new(b"benchmark".to_vec()).context("value")?,
        claim: Some(Claim {
            salt,
            commit_height,
        }),
        anchor: REGTEST.genesis_hash,
    }
    .sign(&REGTEST, &key);
    anyhow::ensure!(w.solve_stamp(&REGTEST, 0, u64::MAX / 2));
    net.rpc(0)
        .dir_submit(hex::encode(xirtam_proofs::encode(&Op::Write(w))))
        .await
        .context("submit")?;
    let t = Instant::now();
    let height = net.mine(0, blocks).await?;
    println!(
        "mined {height} blocks in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let url = net.node(0).rpc_url.clone();
    let source = || HttpSource::new(&url, Duration::from_secs(30)).map_err(anyhow::Error::from);
    let rss_before = rss_kib();

    // A cold start: fresh store, sync (from genesis or a checkpoint), one
    // verified lookup. Returns milliseconds, bytes, and the client.
    let cold_start = |checkpoint: Option<xirtam_lightclient::Checkpoint>| {
        let source = &source;
        let name = &name;
        async move {
            let dir = tempfile::tempdir()?;
            let mut cfg = LcConfig::new(&REGTEST);
            cfg.datadir = Some(dir.path().to_owned());
            cfg.checkpoint = checkpoint;
            let t = Instant::now();
            let lc = LightClient::new(cfg, vec![source()?])?;
            let v = lc.resolve(name).await?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            anyhow::ensure!(v.record().is_some(), "@bench not found");
            anyhow::Ok((ms, lc.bytes_received(), lc, dir))
        }
    };

    // Cold start from genesis.
    let mut times = Vec::new();
    let mut bytes = 0;
    let mut synced = None;
    let mut rss_after = None;
    for run in 0..runs.max(1) {
        let (ms, b, lc, dir) = cold_start(None).await?;
        times.push(ms);
        bytes = b;
        if run == 0 {
            // Measured while the first client is alive, before later runs
            // leave freed memory behind in the allocator.
            rss_after = rss_kib();
        }
        synced = Some((lc, dir));
    }
    let (lc, dir) = synced.context("at least one run")?;
    println!(
        "cold start from genesis to a verified name, {height} headers: median {:.0} ms over {runs} runs, {:.1} MB received",
        percentile(&mut times, 50.0),
        bytes as f64 / 1e6
    );
    if let (Some(b), Some(a)) = (rss_before, rss_after) {
        println!(
            "resident memory: {:.1} MB for the process with a synced client ({} headers held), {:.1} MB before syncing",
            a as f64 / 1024.0,
            lc.headers_held(),
            b as f64 / 1024.0
        );
    }

    // Restart: open the synced store (every header verified again), no
    // network. A copy: the live client holds its directory's lock.
    let copy = tempfile::tempdir()?;
    std::fs::copy(
        dir.path().join("headers.dat"),
        copy.path().join("headers.dat"),
    )?;
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let mut cfg = LcConfig::new(&REGTEST);
        cfg.datadir = Some(copy.path().to_owned());
        let t = Instant::now();
        let reopened = LightClient::new(cfg, vec![source()?])?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(reopened.tip().height == height, "store did not resume");
    }
    println!(
        "restart: open and re-verify the {height}-header store: median {:.0} ms",
        percentile(&mut times, 50.0)
    );

    // Cold start from a checkpoint `checkpoint_age` blocks under the tip.
    let mut tmp = LcConfig::new(&REGTEST);
    tmp.depth = checkpoint_age;
    let checkpoint = {
        // The synced client's state `checkpoint_age` blocks down.
        let c = LightClient::new(tmp, vec![source()?])?;
        c.sync().await?;
        c.checkpoint()?
    };
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..runs.max(1) {
        let (ms, b, _, _) = cold_start(Some(checkpoint.clone())).await?;
        times.push(ms);
        bytes = b;
    }
    println!(
        "cold start from a checkpoint {checkpoint_age} blocks under the tip: median {:.1} ms, {:.1} KB received",
        percentile(&mut times, 50.0),
        bytes as f64 / 1e3
    );

    // Lookups on the synced client (no re-sync): found and absent.
    let absent = Name::new("@nobody").context("name")?;
    let mut lat = Vec::with_capacity(lookups);
    for i in 0..lookups {
        let n = if i % 2 == 0 { &name } else { &absent };
        let t = Instant::now();
        lc.resolve_synced(n).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "resolve on a synced client ({lookups} lookups, half present, half absent): p50 {:.2} ms, p95 {:.2} ms",
        percentile(&mut lat, 50.0),
        percentile(&mut lat, 95.0)
    );
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
