//! `xirtam-node`: the Xirtam directory full node, and the user-side
//! commands that talk to it (keys, claiming and updating names, lookups).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use xirtam_node::mempool::Mempool;
use xirtam_node::node::Node;
use xirtam_node::proofs::params::Params;
use xirtam_node::proofs::{Name, PublicKey, SecretKey};
use xirtam_node::store::RocksStore;
use xirtam_node_api::client::{self, Progress};

/// Xirtam directory full node.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a directory node.
    Run(RunArgs),
    /// Manage keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Claim, update or look up names through a node.
    #[command(subcommand)]
    Name(NameCmd),
    /// Print a network's consensus parameters and genesis header.
    Params {
        /// Network: local, testnet or regtest.
        #[arg(long, default_value = "local")]
        network: String,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Network: local, testnet or regtest.
    #[arg(long, default_value = "local")]
    network: String,
    /// Data directory (default: $HOME/.xirtam/<network>).
    #[arg(long)]
    datadir: Option<PathBuf>,
    /// JSON-RPC listen address (port 0 picks a free port; the bound address
    /// is written to <datadir>/rpc.addr).
    #[arg(long, default_value = "127.0.0.1:8645")]
    rpc_addr: SocketAddr,
    /// Mine blocks.
    #[arg(long)]
    mine: bool,
    /// Mining threads (with --mine).
    #[arg(long, default_value_t = 1)]
    mine_threads: usize,
    /// Log filter (tracing syntax, e.g. "info" or "chain=debug").
    #[arg(long, default_value = "info")]
    log: String,
    /// Peer-to-peer listen address (multiaddr; tcp port 0 picks a free
    /// port; the bound address is written to <datadir>/p2p.addr).
    #[arg(long, default_value = "/ip4/0.0.0.0/tcp/8646")]
    p2p_addr: String,
    /// A peer to connect to at start (repeatable), e.g.
    /// /ip4/203.0.113.5/tcp/8646/p2p/12D3KooW...
    #[arg(long = "bootstrap")]
    bootstrap: Vec<String>,
    /// Most peer connections.
    #[arg(long, default_value_t = 50)]
    max_peers: u32,
    /// Run without peer-to-peer networking (a lone node).
    #[arg(long)]
    no_p2p: bool,
}

#[derive(Debug, Subcommand)]
enum KeyCmd {
    /// Create a key and write its secret seed (hex) to a file (mode 0600).
    New {
        /// Where to write the key.
        #[arg(long, default_value = "xirtam.key")]
        out: PathBuf,
    },
    /// Print the public key of a key file.
    Show {
        /// Key file.
        #[arg(long, default_value = "xirtam.key")]
        key: PathBuf,
    },
}

#[derive(Debug, Args)]
struct Conn {
    /// Node JSON-RPC URL.
    #[arg(long, default_value = "http://127.0.0.1:8645")]
    rpc: String,
}

#[derive(Debug, Args)]
struct WriteArgs {
    /// The name (@user or ~server).
    name: String,
    /// Key file of the signer.
    #[arg(long, default_value = "xirtam.key")]
    key: PathBuf,
    /// New value, as text.
    #[arg(long, conflicts_with = "value_hex")]
    value: Option<String>,
    /// New value, as hex.
    #[arg(long)]
    value_hex: Option<String>,
    /// New owner key (hex), repeatable (default: the signer).
    #[arg(long = "owner")]
    owners: Vec<String>,
    /// Blocks to wait for (1 = included in the tip; 0 = don't wait).
    #[arg(long, default_value_t = 1)]
    confirmations: u64,
    /// Give up waiting after this many seconds (default: enough for the
    /// network's block interval, at least 300). An interrupted claim
    /// resumes where it stopped when run again with the same key.
    #[arg(long)]
    timeout: Option<u64>,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Debug, Subcommand)]
enum NameCmd {
    /// Claim an unclaimed name.
    Claim(WriteArgs),
    /// Update a name you own.
    Update(WriteArgs),
    /// Look a name up (the proof is checked against the node's header).
    Get {
        /// The name.
        name: String,
        /// Height (default: the tip).
        #[arg(long)]
        at: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain on one line; no backtrace for users.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run_node(args),
        Command::Key(k) => key_cmd(k),
        Command::Name(n) => {
            init_logs("warn")?;
            tokio::runtime::Runtime::new()?.block_on(name_cmd(n))
        }
        Command::Params { network } => {
            print_params(params(&network)?);
            Ok(())
        }
    }
}

fn params(network: &str) -> Result<&'static Params> {
    Params::by_name(network)
        .with_context(|| format!("unknown network {network:?} (known: local, testnet, regtest)"))
}

fn init_logs(filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).context("bad --log filter")?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn run_node(args: RunArgs) -> Result<()> {
    init_logs(&args.log)?;
    let params = params(&args.network)?;
    let datadir = match args.datadir.clone() {
        Some(d) => d,
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set; pass --datadir")?;
            PathBuf::from(home).join(".xirtam").join(params.name)
        }
    };
    std::fs::create_dir_all(&datadir).with_context(|| format!("create {}", datadir.display()))?;
    let store = Arc::new(
        RocksStore::open(&datadir.join("db"))
            .with_context(|| format!("open the database in {}", datadir.display()))?,
    );
    let node = Node::open(params, store, Mempool::default()).context("open the chain")?;
    {
        let core = node.lock();
        let tip = core.chain.tip();
        tracing::info!(
            target: "node",
            network = params.name,
            datadir = %datadir.display(),
            height = tip.header.height,
            tip = %tip.header.hash(),
            "chain opened"
        );
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let threads = if args.mine {
            args.mine_threads.max(1)
        } else {
            0
        };
        let p2p = if args.no_p2p {
            None
        } else {
            Some(start_p2p(&node, &args, &datadir).await?)
        };
        let (bound, handle) = xirtam_node::rpc::serve(
            node.clone(),
            args.rpc_addr,
            threads,
            p2p.as_ref().map(|(h, _)| h.clone()),
        )
        .await
        .with_context(|| format!("listen on {}", args.rpc_addr))?;
        write_atomically(&datadir.join("rpc.addr"), bound.to_string().as_bytes())?;
        println!("xirtam-node: JSON-RPC on http://{bound}");
        let miners = if args.mine {
            xirtam_node::miner::start(node.clone(), threads)
        } else {
            Vec::new()
        };
        tokio::signal::ctrl_c().await.context("wait for Ctrl-C")?;
        tracing::info!(target: "node", "shutting down");
        node.shut_down();
        let _ = handle.stop();
        handle.stopped().await;
        for m in miners {
            let _ = tokio::task::spawn_blocking(move || m.join()).await;
        }
        if let Some((_, task)) = p2p {
            task.abort();
        }
        tracing::info!(target: "node", "stopped");
        anyhow::Ok(())
    })
}

async fn start_p2p(
    node: &Arc<Node<RocksStore>>,
    args: &RunArgs,
    datadir: &Path,
) -> Result<(xirtam_node::p2p::P2pHandle, tokio::task::JoinHandle<()>)> {
    use xirtam_node::p2p::{P2pConfig, start};
    let keypair = load_or_create_p2p_key(&datadir.join("p2p.key"))?;
    let listen = args
        .p2p_addr
        .parse()
        .with_context(|| format!("--p2p-addr {:?} is not a multiaddr", args.p2p_addr))?;
    let mut config = P2pConfig::new(keypair, listen);
    config.max_peers = args.max_peers;
    for b in &args.bootstrap {
        config.bootstrap.push(
            b.parse()
                .with_context(|| format!("--bootstrap {b:?} is not a multiaddr"))?,
        );
    }
    let (handle, listening, task) = start(node.clone(), config)
        .await
        .context("start peer-to-peer networking")?;
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        tokio::spawn(sync_progress_bar(node.clone(), handle.sync_target()));
    }
    let lines: Vec<String> = listening.iter().map(ToString::to_string).collect();
    write_atomically(&datadir.join("p2p.addr"), lines.join("\n").as_bytes())?;
    for l in &lines {
        println!("xirtam-node: peer-to-peer on {l}");
    }
    Ok((handle, task))
}

/// A progress bar on the terminal while the node syncs from a peer.
async fn sync_progress_bar(
    node: Arc<Node<RocksStore>>,
    mut target: tokio::sync::watch::Receiver<Option<u64>>,
) {
    loop {
        let Some(goal) = *target.borrow_and_update() else {
            if target.changed().await.is_err() {
                return;
            }
            continue;
        };
        let bar = indicatif::ProgressBar::new(goal);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "sync [{bar:30}] {pos}/{len} blocks ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        loop {
            let Some(goal) = *target.borrow() else { break };
            bar.set_length(goal);
            bar.set_position(node.tip_summary().height.min(goal));
            if let Ok(Err(_)) =
                tokio::time::timeout(Duration::from_millis(250), target.changed()).await
            {
                break;
            }
        }
        bar.finish_and_clear();
    }
}

/// The node's libp2p identity, created on first start.
fn load_or_create_p2p_key(path: &Path) -> Result<libp2p::identity::Keypair> {
    let mut seed = [0u8; 32];
    if path.exists() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        hex::decode_to_slice(text.trim(), &mut seed)
            .with_context(|| format!("{} is not a 32-byte hex key", path.display()))?;
    } else {
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        write_secret(path, hex::encode(seed).as_bytes())?;
    }
    libp2p::identity::Keypair::ed25519_from_bytes(seed)
        .with_context(|| format!("{} does not hold a valid ed25519 key", path.display()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))
}

fn key_cmd(k: KeyCmd) -> Result<()> {
    match k {
        KeyCmd::New { out } => {
            if out.exists() {
                bail!("{} already exists; not overwriting a key", out.display());
            }
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
            write_secret(&out, hex::encode(seed).as_bytes())?;
            println!("public key {}", SecretKey::from_seed(seed).public());
            println!("secret written to {}", out.display());
            Ok(())
        }
        KeyCmd::Show { key } => {
            println!("{}", load_key(&key)?.public());
            Ok(())
        }
    }
}

fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

fn load_key(path: &Path) -> Result<SecretKey> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "read key {} (create one with `xirtam-node key new`)",
            path.display()
        )
    })?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed)
        .with_context(|| format!("{} is not a 32-byte hex key", path.display()))?;
    Ok(SecretKey::from_seed(seed))
}

async fn name_cmd(n: NameCmd) -> Result<()> {
    match n {
        NameCmd::Claim(a) => write_cmd(a, true).await,
        NameCmd::Update(a) => write_cmd(a, false).await,
        NameCmd::Get {
            name,
            at,
            json,
            conn,
        } => {
            let name = Name::new(&name).with_context(|| format!("invalid name {name:?}"))?;
            let rpc = client::connect(&conn.rpc)?;
            let c = client::get(&rpc, &name, at).await?;
            if json {
                let v = serde_json::json!({
                    "name": name.as_str(),
                    "height": c.header.height,
                    "block_hash": c.header.hash().to_hex(),
                    "tip_height": c.tip_height,
                    "proof_verified": true,
                    "record": c.value.as_ref().map(xirtam_node_api::RecordView::new),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_record(&name, &c);
            }
            Ok(())
        }
    }
}

async fn write_cmd(a: WriteArgs, claim: bool) -> Result<()> {
    let name = Name::new(&a.name).with_context(|| format!("invalid name {:?}", a.name))?;
    let key = load_key(&a.key)?;
    let value = match (&a.value, &a.value_hex) {
        (Some(t), _) => t.as_bytes().to_vec(),
        (None, Some(h)) => hex::decode(h).context("--value-hex is not hex")?,
        (None, None) => bail!("give --value TEXT or --value-hex HEX"),
    };
    let owners = a
        .owners
        .iter()
        .map(|h| PublicKey::from_hex(h).with_context(|| format!("bad owner key {h}")))
        .collect::<Result<Vec<_>>>()?;
    let rpc = client::connect(&a.conn.rpc)?;
    let params = client::network(&rpc).await?;
    // Ten times the expected time of the blocks to wait for (a claim waits
    // for its commitment to mature, then for the confirmations).
    let blocks = params.claim_maturity + a.confirmations + 2;
    let timeout = Duration::from_secs(
        a.timeout
            .unwrap_or_else(|| (blocks * params.block_interval * 10).max(300)),
    );
    // A claim's salt is stored before its commitment is submitted, so an
    // interrupted claim resumes with the commitment it already paid for.
    let pending = PendingClaims::new(&a.key, params);
    let salt = if claim {
        Some(pending.salt_for(&name)?)
    } else {
        None
    };
    let req = client::WriteRequest {
        name: name.clone(),
        value,
        owners,
        claim,
        salt,
    };
    let written = client::write_with(&rpc, &key, &req, timeout, &mut |p| {
        if let Progress::Committed {
            name,
            commitment,
            maturity,
        } = p
        {
            eprintln!(
                "committed to claiming {name} (commitment {commitment}); the name stays hidden until it is {maturity} blocks deep"
            );
        }
    })
    .await;
    if claim {
        match &written {
            // Transient: keep the salt, so that running again resumes.
            Err(client::ClientError::Timeout(_) | client::ClientError::Rpc { .. }) => {
                eprintln!("the claim can resume: run the same command again");
            }
            _ => pending.forget(&name)?,
        }
    }
    let w = written?;
    let hash = xirtam_node::proofs::Op::Write(w.clone()).hash();
    println!("submitted {} nonce {} (op {hash})", w.key, w.nonce);
    if a.confirmations > 0 {
        let bar = indicatif::ProgressBar::new(a.confirmations);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:20}] {pos}/{len} confirmations",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(format!("waiting for {} (nonce {})", w.key, w.nonce));
        let waited = client::wait_confirmed_with(&rpc, &w, a.confirmations, timeout, &mut |p| {
            if let Progress::Confirmations { have, .. } = p {
                bar.set_position(have);
            }
        })
        .await;
        match &waited {
            Ok(_) => bar.finish_with_message(format!("{} confirmed", w.key)),
            Err(_) => bar.abandon(),
        }
        let c = waited?;
        print_record(&name, &c);
        if let Some(r) = &c.value {
            let settled = r.settled_at(params);
            if settled > c.tip_height {
                println!(
                    "  settled at height {settled}: until then a claim with an earlier commitment could still take {name}"
                );
            }
        }
    }
    Ok(())
}

/// Salts of claims in progress, per key file: `<key file>.claims` holds one
/// line per claim, `<network> <name> <salt hex>` (mode 0600, replaced
/// atomically and synced before a commitment is submitted).
struct PendingClaims {
    path: PathBuf,
    network: &'static str,
}

impl PendingClaims {
    fn new(key: &Path, params: &'static Params) -> Self {
        let mut path = key.as_os_str().to_owned();
        path.push(".claims");
        PendingClaims {
            path: PathBuf::from(path),
            network: params.name,
        }
    }

    fn read(&self) -> Result<Vec<(String, String, [u8; 32])>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("read {}", self.path.display())),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let mut it = l.split_whitespace();
                let (Some(net), Some(name), Some(salt), None) =
                    (it.next(), it.next(), it.next(), it.next())
                else {
                    bail!("{}: malformed line {l:?}", self.path.display());
                };
                let mut s = [0u8; 32];
                hex::decode_to_slice(salt, &mut s)
                    .with_context(|| format!("{}: bad salt in {l:?}", self.path.display()))?;
                Ok((net.to_owned(), name.to_owned(), s))
            })
            .collect()
    }

    fn write(&self, entries: &[(String, String, [u8; 32])]) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self.path.with_extension("claims.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("write {}", tmp.display()))?;
        for (net, name, salt) in entries {
            writeln!(f, "{net} {name} {}", hex::encode(salt))?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("write {}", self.path.display()))
    }

    /// The salt of a claim of `name` in progress, or a new one, stored.
    fn salt_for(&self, name: &Name) -> Result<[u8; 32]> {
        let mut all = self.read()?;
        if let Some((_, _, s)) = all
            .iter()
            .find(|(n, m, _)| n == self.network && m == name.as_str())
        {
            eprintln!("resuming the claim of {name} started earlier");
            return Ok(*s);
        }
        let mut salt = [0u8; 32];
        getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
        all.push((self.network.to_owned(), name.as_str().to_owned(), salt));
        self.write(&all)?;
        Ok(salt)
    }

    /// Forget the claim of `name` (finished, lost or expired).
    fn forget(&self, name: &Name) -> Result<()> {
        let mut all = self.read()?;
        let before = all.len();
        all.retain(|(n, m, _)| !(n == self.network && m == name.as_str()));
        if all.len() == before {
            return Ok(());
        }
        if all.is_empty() {
            return std::fs::remove_file(&self.path)
                .with_context(|| format!("remove {}", self.path.display()));
        }
        self.write(&all)
    }
}

fn print_record(name: &Name, c: &client::Checked) {
    match &c.value {
        None => println!(
            "{name} is unclaimed (absence proven at height {}, block {})",
            c.header.height,
            c.header.hash()
        ),
        Some(r) => {
            println!(
                "{name} at height {} (block {}, tip {}), proof verified",
                c.header.height,
                c.header.hash(),
                c.tip_height
            );
            println!("  nonce  {}", r.nonce);
            println!("  claimed through a commitment at height {}", r.claimed_at);
            for o in r.owners.keys() {
                println!("  owner  {o}");
            }
            match std::str::from_utf8(r.value.as_bytes()) {
                Ok(s) => println!("  value  {s:?}"),
                Err(_) => println!("  value  0x{}", hex::encode(r.value.as_bytes())),
            }
        }
    }
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
        "claims             reveal {}..={} blocks after the commitment",
        p.claim_maturity, p.claim_expiry
    );
    println!("min chain work     {:#x}", p.min_chain_work);
    match p.assume_valid {
        Some(c) => println!("assumed valid      block {} at height {}", c.hash, c.height),
        None => println!("assumed valid      none"),
    }
    println!(
        "limits             name {} B, value {} B, {} owners, {} ops/block, {} B/block",
        p.max_name_len, p.max_value_len, p.max_owners, p.max_ops_per_block, p.max_block_bytes
    );
}
