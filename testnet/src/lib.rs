//! Xirtam local testnet: directory nodes as real processes on loopback.
//!
//! [`Testnet::start`] launches `xirtam-node` processes with their own data
//! directories, RPC on `127.0.0.1:0` and peer-to-peer on
//! `/ip4/127.0.0.1/tcp/0`, wires bootstrap addresses by [`Topology`], and
//! waits until each node has announced its addresses and found a peer. The
//! same library drives the `xirtam-testnet` binary, the multi-process tests
//! and the whole-system benchmarks. Nothing here sleeps to synchronise: every
//! wait polls for an observable condition with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use serde::{Deserialize, Serialize};
use xirtam_node_api::{NetInfo, NodeApiClient, TipView};

pub mod bench_chat;
pub mod bench_group;
pub mod bench_link;
pub mod bench_tui;
pub mod chat;
pub mod demo;
pub mod header_source;
pub mod tmux;

pub use xirtam_chat;
pub use xirtam_node_api as node_api;
pub use xirtam_proofs as proofs;

/// Harness errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestnetError {
    /// The node binary was not found.
    #[error(
        "cannot find a workspace binary (looked at {0}); build it with `cargo build --workspace` or set XIRTAM_NODE_BIN / XIRTAM_LC_BIN"
    )]
    NoBinary(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A condition did not hold in time.
    #[error("timed out after {secs:.1} s waiting for {what}")]
    Timeout {
        /// The condition.
        what: String,
        /// How long.
        secs: f64,
    },
    /// A process exited early.
    #[error("{what} exited early ({status}); log: {log}")]
    Exited {
        /// Which process.
        what: String,
        /// Exit status.
        status: String,
        /// Its log file.
        log: String,
    },
    /// An RPC call failed.
    #[error("node {index}: RPC {method}: {message}")]
    Rpc {
        /// Node index.
        index: usize,
        /// Method.
        method: &'static str,
        /// Error.
        message: String,
    },
    /// Bad arguments.
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, TestnetError>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestnetError {
    let what = what.into();
    move |source| TestnetError::Io { what, source }
}

/// Which nodes bootstrap from which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// Every node bootstraps from node 0 (Kademlia finds the rest).
    Star,
    /// Node i bootstraps from node i - 1.
    Line,
    /// Isolated groups (node indexes); within a group every node
    /// bootstraps from the group's first. Used for partitions.
    Groups(Vec<Vec<usize>>),
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Network name (`regtest` by default: trivial PoW and `dev_mine`;
    /// `local` for real mining).
    pub network: String,
    /// Number of nodes.
    pub nodes: usize,
    /// The first `miners` nodes run `--mine`.
    pub miners: usize,
    /// Mining threads per miner.
    pub mine_threads: usize,
    /// Bootstrap wiring.
    pub topology: Topology,
    /// Where the data directories go (a fresh temporary directory if
    /// `None`; kept on disk only when given).
    pub dir: Option<PathBuf>,
    /// `xirtam-node` to run (found automatically if `None`).
    pub node_bin: Option<PathBuf>,
    /// Log filter for the nodes.
    pub log: String,
    /// How long to wait for each start-up condition.
    pub timeout: Duration,
    /// Extra `xirtam-node run` arguments for every node (e.g.
    /// `["--max-peers", "9"]`).
    pub node_args: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            network: "regtest".into(),
            nodes: 3,
            miners: 0,
            mine_threads: 1,
            topology: Topology::Star,
            dir: None,
            node_bin: None,
            log: "info".into(),
            timeout: Duration::from_secs(60),
            node_args: Vec::new(),
        }
    }
}

/// One node process.
#[derive(Debug)]
pub struct NodeProc {
    /// Index in the testnet.
    pub index: usize,
    /// Data directory.
    pub datadir: PathBuf,
    /// JSON-RPC URL.
    pub rpc_url: String,
    /// Peer-to-peer address (with `/p2p/<peer id>`).
    pub p2p_addr: String,
    /// Arguments it was started with (for restarts).
    args: Vec<String>,
    child: Option<Child>,
    rpc: HttpClient,
}

impl NodeProc {
    /// An RPC client for this node.
    pub fn rpc(&self) -> &HttpClient {
        &self.rpc
    }

    /// Process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log file.
    pub fn log_path(&self) -> PathBuf {
        self.datadir.join("node.log")
    }
}

/// Saved state of a detached testnet (`xirtam-testnet up`), read by
/// `status` and `down`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Network.
    pub network: String,
    /// Nodes.
    pub nodes: Vec<NodeState>,
}

/// One node of a detached testnet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeState {
    /// Process id.
    pub pid: u32,
    /// JSON-RPC URL.
    pub rpc_url: String,
    /// Peer-to-peer address.
    pub p2p_addr: String,
    /// Data directory.
    pub datadir: PathBuf,
    /// Mining?
    pub miner: bool,
}

/// A running testnet. Dropping it kills its nodes (unless detached).
#[derive(Debug)]
pub struct Testnet {
    config: Config,
    bin: PathBuf,
    root: PathBuf,
    _temp: Option<tempfile::TempDir>,
    nodes: Vec<NodeProc>,
    servers: Vec<chat::ServerProc>,
    miner: Option<tokio::task::JoinHandle<()>>,
}

/// A memory figure of process `pid` from `/proc/<pid>/status`, in KiB:
/// `field` is `VmRSS` (resident now) or `VmHWM` (peak resident). `None` off
/// Linux or when the process is gone.
pub fn memory_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time (ns) that the live threads of process `pid` ("self" for this
/// one) have run, from `/proc/<pid>/task/*/schedstat`; `None` where that
/// is not available.
pub fn cpu_ns(pid: &str) -> Option<u64> {
    let mut total = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = t.ok()?.path().join("schedstat");
        // A thread that exited since the listing counts as zero.
        let Ok(s) = std::fs::read_to_string(path) else {
            continue;
        };
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Find `xirtam-node`: `XIRTAM_NODE_BIN`, else next to the running
/// executable (or one directory up, for test binaries in `deps/`).
pub fn find_node_bin() -> Result<PathBuf> {
    find_bin("xirtam-node", "XIRTAM_NODE_BIN")
}

/// Find the workspace binary `name`: the environment variable `env`, else
/// next to the running executable (or one directory up).
pub fn find_bin(name: &str, env: &str) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(io("locate the running executable"))?;
    let mut tried = Vec::new();
    let mut dir = exe.parent().map(Path::to_path_buf);
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
        dir = d.parent().map(Path::to_path_buf);
    }
    Err(TestnetError::NoBinary(tried.join(", ")))
}

/// Poll `check` every 25 ms until it yields a value or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    poll_until(what, timeout, Duration::from_millis(25), check).await
}

/// Poll `check` every `every` until it yields a value or `timeout` passes.
pub async fn poll_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            return Err(TestnetError::Timeout {
                what: what.to_string(),
                secs: timeout.as_secs_f64(),
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// Start `bin` with `args`, logging to `datadir/log_name`, and wait until
/// it has written each of `files` (non-empty) in `datadir` (stale copies
/// are removed first). Returns the child and the files' contents.
pub(crate) async fn spawn_until_files(
    bin: &Path,
    args: &[String],
    datadir: &Path,
    log_name: &str,
    files: &[&str],
    label: &str,
    timeout: Duration,
) -> Result<(Child, Vec<String>)> {
    for f in files {
        let _ = std::fs::remove_file(datadir.join(f));
    }
    std::fs::create_dir_all(datadir).map_err(io(format!("create {}", datadir.display())))?;
    let log_path = datadir.join(log_name);
    let mut log_opts = std::fs::OpenOptions::new();
    log_opts.create(true).append(true);
    #[cfg(unix)]
    {
        // Logs name users and devices: private, like the rest of the
        // data directory.
        use std::os::unix::fs::OpenOptionsExt;
        log_opts.mode(0o600);
    }
    let log = log_opts
        .open(&log_path)
        .map_err(io(format!("open {}", log_path.display())))?;
    let log2 = log.try_clone().map_err(io("clone the log handle"))?;
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(io(format!("start {}", bin.display())))?;
    let read = |name: &str| {
        std::fs::read_to_string(datadir.join(name))
            .ok()
            .filter(|s| !s.trim().is_empty())
    };
    let start = Instant::now();
    loop {
        let got: Vec<Option<String>> = files.iter().map(|f| read(f)).collect();
        if got.iter().all(Option::is_some) {
            return Ok((child, got.into_iter().flatten().collect()));
        }
        if let Ok(Some(status)) = child.try_wait() {
            // The directory may be temporary: quote the log's tail.
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(TestnetError::Exited {
                what: label.to_string(),
                status: status.to_string(),
                log: format!("{}:\n{}", log_path.display(), tail.join("\n")),
            });
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TestnetError::Timeout {
                what: format!("{label} to start (log: {})", log_path.display()),
                secs: timeout.as_secs_f64(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rpc_client(url: &str) -> Result<HttpClient> {
    HttpClientBuilder::default()
        .request_timeout(Duration::from_secs(120))
        .max_response_size(64 * 1024 * 1024)
        .build(url)
        .map_err(|e| TestnetError::Invalid(format!("bad RPC URL {url}: {e}")))
}

impl Testnet {
    /// Start the nodes and wait until every one is up and has a peer (with
    /// more than one node).
    pub async fn start(config: Config) -> Result<Testnet> {
        if config.nodes == 0 {
            return Err(TestnetError::Invalid(
                "a testnet needs at least one node".into(),
            ));
        }
        let bin = match &config.node_bin {
            Some(b) => b.clone(),
            None => find_node_bin()?,
        };
        let (root, temp) = match &config.dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(io(format!("create {}", d.display())))?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("xirtam-testnet-")
                    .tempdir()
                    .map_err(io("create a temporary directory"))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let mut net = Testnet {
            config: config.clone(),
            bin,
            root,
            _temp: temp,
            nodes: Vec::new(),
            servers: Vec::new(),
            miner: None,
        };
        let groups = match &config.topology {
            Topology::Groups(g) => g.clone(),
            _ => vec![(0..config.nodes).collect()],
        };
        for i in 0..config.nodes {
            let bootstrap = match &config.topology {
                Topology::Star => (i > 0).then_some(0),
                Topology::Line => i.checked_sub(1),
                Topology::Groups(_) => groups
                    .iter()
                    .find(|g| g.contains(&i))
                    .and_then(|g| g.first().copied())
                    .filter(|&first| first != i),
            };
            let bootstrap: Vec<String> = bootstrap
                .and_then(|b| net.nodes.get(b))
                .map(|n| n.p2p_addr.clone())
                .into_iter()
                .collect();
            net.spawn_node(i < config.miners, &bootstrap).await?;
        }
        // Every node with someone to connect to (a group of one stays
        // isolated) must have a peer before the network is ready.
        for i in 0..config.nodes {
            let group_size = groups.iter().find(|g| g.contains(&i)).map_or(1, Vec::len);
            if group_size > 1 {
                net.wait_peers(i, 1).await?;
            }
        }
        Ok(net)
    }

    /// Start one more node that bootstraps from `bootstrap` (node indexes).
    /// Returns its index.
    pub async fn add_node(&mut self, mine: bool, bootstrap: &[usize]) -> Result<usize> {
        let addrs: Vec<String> = bootstrap
            .iter()
            .filter_map(|&b| self.nodes.get(b).map(|n| n.p2p_addr.clone()))
            .collect();
        self.spawn_node(mine, &addrs).await
    }

    async fn spawn_node(&mut self, mine: bool, bootstrap: &[String]) -> Result<usize> {
        let index = self.nodes.len();
        let datadir = self.root.join(format!("node{index}"));
        std::fs::create_dir_all(&datadir).map_err(io(format!("create {}", datadir.display())))?;
        let mut args = vec![
            "run".to_string(),
            "--network".into(),
            self.config.network.clone(),
            "--datadir".into(),
            datadir.display().to_string(),
            "--rpc-addr".into(),
            "127.0.0.1:0".into(),
            "--p2p-addr".into(),
            "/ip4/127.0.0.1/tcp/0".into(),
            "--log".into(),
            self.config.log.clone(),
        ];
        if mine {
            args.push("--mine".into());
            args.push("--mine-threads".into());
            args.push(self.config.mine_threads.to_string());
        }
        for b in bootstrap {
            args.push("--bootstrap".into());
            args.push(b.clone());
        }
        args.extend(self.config.node_args.iter().cloned());
        let node = self.launch(index, datadir, args).await?;
        self.nodes.push(node);
        Ok(index)
    }

    async fn launch(&self, index: usize, datadir: PathBuf, args: Vec<String>) -> Result<NodeProc> {
        let (child, files) = spawn_until_files(
            &self.bin,
            &args,
            &datadir,
            "node.log",
            &["rpc.addr", "p2p.addr"],
            &format!("node {index}"),
            self.config.timeout,
        )
        .await?;
        let rpc_addr = files[0].trim().to_string();
        let p2p_addr = files[1].lines().next().unwrap_or("").to_string();
        let rpc_url = format!("http://{rpc_addr}");
        Ok(NodeProc {
            index,
            datadir,
            rpc: rpc_client(&rpc_url)?,
            rpc_url,
            p2p_addr,
            args,
            child: Some(child),
        })
    }

    /// The nodes.
    pub fn nodes(&self) -> &[NodeProc] {
        &self.nodes
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> &NodeProc {
        &self.nodes[i]
    }

    /// RPC client of node `i`.
    pub fn rpc(&self, i: usize) -> &HttpClient {
        &self.nodes[i].rpc
    }

    /// Where the data directories are.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Network name.
    pub fn network(&self) -> &str {
        &self.config.network
    }

    /// Node `i`'s tip.
    pub async fn tip(&self, i: usize) -> Result<TipView> {
        self.rpc(i)
            .chain_tip()
            .await
            .map_err(|e| TestnetError::Rpc {
                index: i,
                method: "chain_tip",
                message: e.to_string(),
            })
    }

    /// Node `i`'s network status.
    pub async fn net_info(&self, i: usize) -> Result<NetInfo> {
        self.rpc(i).net_info().await.map_err(|e| TestnetError::Rpc {
            index: i,
            method: "net_info",
            message: e.to_string(),
        })
    }

    /// Mine `count` blocks on node `i` now (regtest), in calls of at most
    /// the node's `dev_mine` limit. Returns its height.
    pub async fn mine(&self, i: usize, count: u32) -> Result<u64> {
        const PER_CALL: u32 = 20_000;
        let mut left = count;
        loop {
            let n = left.min(PER_CALL);
            let height = self
                .rpc(i)
                .dev_mine(n)
                .await
                .map_err(|e| TestnetError::Rpc {
                    index: i,
                    method: "dev_mine",
                    message: e.to_string(),
                })?;
            left -= n;
            if left == 0 {
                return Ok(height);
            }
        }
    }

    /// Connect node `i` to node `j`.
    pub async fn connect(&self, i: usize, j: usize) -> Result<()> {
        let addr = self.nodes[j].p2p_addr.clone();
        self.rpc(i)
            .net_connect(addr)
            .await
            .map(|_| ())
            .map_err(|e| TestnetError::Rpc {
                index: i,
                method: "net_connect",
                message: e.to_string(),
            })
    }

    /// Wait until node `i` has at least `n` peers.
    pub async fn wait_peers(&self, i: usize, n: usize) -> Result<NetInfo> {
        wait_for(
            &format!("node {i} to have {n} peer(s)"),
            self.config.timeout,
            || async move {
                self.net_info(i)
                    .await
                    .ok()
                    .filter(|info| info.peers.len() >= n)
            },
        )
        .await
    }

    /// Wait until the nodes in `which` report the same tip, at least at
    /// `min_height`. Returns it.
    pub async fn wait_same_tip(&self, which: &[usize], min_height: u64) -> Result<TipView> {
        wait_for(
            &format!("nodes {which:?} to agree on a tip at height >= {min_height}"),
            self.config.timeout,
            || async move {
                let mut first: Option<TipView> = None;
                for &i in which {
                    let t = self.tip(i).await.ok()?;
                    if t.height < min_height {
                        return None;
                    }
                    match &first {
                        None => first = Some(t),
                        Some(f) if f.hash != t.hash => return None,
                        Some(_) => {}
                    }
                }
                first
            },
        )
        .await
    }

    /// All node indexes.
    pub fn all(&self) -> Vec<usize> {
        (0..self.nodes.len()).collect()
    }

    /// Kill node `i` with SIGKILL (its data stays).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restart node `i` with its original arguments.
    pub async fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        let datadir = self.nodes[i].datadir.clone();
        let args = self.nodes[i].args.clone();
        let node = self.launch(i, datadir, args).await?;
        self.nodes[i] = node;
        Ok(())
    }

    /// Leave the processes running (for `xirtam-testnet up`); returns what
    /// `status` and `down` need.
    pub fn detach(mut self) -> State {
        let miners = self.config.miners;
        let nodes = self
            .nodes
            .iter_mut()
            .map(|n| NodeState {
                pid: n.child.take().map_or(0, |c| c.id()),
                rpc_url: n.rpc_url.clone(),
                p2p_addr: n.p2p_addr.clone(),
                datadir: n.datadir.clone(),
                miner: n.index < miners,
            })
            .collect();
        if let Some(t) = self._temp.take() {
            // Keep the directory: the nodes still use it.
            let _ = t.keep();
        }
        State {
            network: self.config.network.clone(),
            nodes,
        }
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        if let Some(m) = self.miner.take() {
            m.abort();
        }
        for s in &mut self.servers {
            s.kill();
        }
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Percentile (0..=100) of `v` (sorted in place); 0 for an empty slice.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx.min(v.len() - 1)]
}
