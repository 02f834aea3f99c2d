//! Chat on a testnet: concierge servers (`xirtam-server`) as processes,
//! block production on a timer (regtest), client configurations that
//! point at the nodes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use jsonrpsee::http_client::HttpClient;
use xirtam_chat::api::ConciergeApiClient;
use xirtam_chat::client::ClientConfig;
use xirtam_proofs::PublicKey;
use xirtam_proofs::params::Params;

use crate::{Result, Testnet, TestnetError, find_bin, poll_until, spawn_until_files};

/// One concierge server process.
#[derive(Debug)]
pub struct ServerProc {
    /// Its `~name`.
    pub name: String,
    /// Data directory.
    pub datadir: PathBuf,
    /// JSON-RPC URL.
    pub url: String,
    /// Bound address (kept across restarts).
    pub addr: SocketAddr,
    /// Its server key (the TLS key its record names).
    pub key: PublicKey,
    args: Vec<String>,
    child: Option<Child>,
    rpc: HttpClient,
}

impl ServerProc {
    /// An RPC client for this server.
    pub fn rpc(&self) -> &HttpClient {
        &self.rpc
    }

    /// Process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log file.
    pub fn log_path(&self) -> PathBuf {
        self.datadir.join("server.log")
    }

    /// SIGKILL (its data stays).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Testnet {
    /// The nodes' RPC URLs.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.rpc_url.clone()).collect()
    }

    /// The network's parameters.
    pub fn params(&self) -> Result<&'static Params> {
        Params::by_name(&self.config.network).ok_or_else(|| {
            TestnetError::Invalid(format!("unknown network {}", self.config.network))
        })
    }

    /// A chat client configuration using every node as a source.
    pub fn client_config(&self) -> Result<ClientConfig> {
        let mut c = ClientConfig::new(self.params()?, self.node_urls());
        c.confirm_timeout = self.config.timeout;
        Ok(c)
    }

    /// Mine one block on node `i` every `every` in the background (regtest),
    /// until the testnet is dropped.
    pub fn auto_mine(&mut self, i: usize, every: Duration) {
        let rpc = self.rpc(i).clone();
        if let Some(m) = self.miner.take() {
            m.abort();
        }
        self.miner = Some(tokio::spawn(async move {
            use xirtam_node_api::NodeApiClient;
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = rpc.dev_mine(1).await {
                    eprintln!("auto-miner: {e}");
                }
            }
        }));
    }

    /// Stop the background miner of [`Testnet::auto_mine`] (no block is
    /// mined until it is started again).
    pub fn stop_auto_mine(&mut self) {
        if let Some(m) = self.miner.take() {
            m.abort();
        }
    }

    /// Start a concierge server named `name` (e.g. `~s1`) using every node,
    /// and wait until its record is confirmed. Returns its index.
    pub async fn add_server(&mut self, name: &str, extra: &[&str]) -> Result<usize> {
        let index = self.servers.len();
        let datadir = self.root.join(format!("server{index}"));
        let mut args = vec![
            "--name".to_string(),
            name.to_string(),
            "--network".into(),
            self.config.network.clone(),
            "--datadir".into(),
            datadir.display().to_string(),
            "--log".into(),
            self.config.log.clone(),
        ];
        for u in self.node_urls() {
            args.push("--node".into());
            args.push(u);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let s = self
            .launch_server(name, datadir, args, "127.0.0.1:0")
            .await?;
        self.servers.push(s);
        self.wait_server_registered(index).await?;
        Ok(index)
    }

    async fn launch_server(
        &self,
        name: &str,
        datadir: PathBuf,
        args: Vec<String>,
        listen: &str,
    ) -> Result<ServerProc> {
        let bin = find_bin("xirtam-server", "XIRTAM_SERVER_BIN")?;
        let mut full = args.clone();
        full.push("--listen".into());
        full.push(listen.into());
        let (child, files) = spawn_until_files(
            &bin,
            &full,
            &datadir,
            "server.log",
            &["rpc.addr"],
            &format!("server {name}"),
            self.config.timeout,
        )
        .await?;
        let addr: SocketAddr = files[0].trim().parse().map_err(|e| {
            TestnetError::Invalid(format!("server {name} wrote a bad address: {e}"))
        })?;
        // TLS with the server key (as its record says) unless told
        // otherwise; the key file exists once the address is written.
        let scheme = if args.iter().any(|a| a == "--plain-http") {
            "http"
        } else {
            "https"
        };
        let url = format!("{scheme}://{addr}");
        let key = xirtam_chat::server::ServerKeys::load_or_create(&datadir)
            .map_err(|e| TestnetError::Invalid(format!("server {name}'s keys: {e}")))?
            .server
            .public();
        let rpc = xirtam_chat::tls::concierge_client(&url, &key, Duration::from_secs(30), 64 << 20)
            .map_err(|e| TestnetError::Invalid(e.to_string()))?;
        Ok(ServerProc {
            name: name.to_string(),
            datadir,
            rpc,
            url,
            addr,
            key,
            args,
            child: Some(child),
        })
    }

    /// Wait until server `i` reports its record confirmed.
    pub async fn wait_server_registered(&self, i: usize) -> Result<u64> {
        let s = &self.servers[i];
        poll_until(
            &format!(
                "server {} to confirm its record (log: {})",
                s.name,
                s.log_path().display()
            ),
            self.config.timeout,
            Duration::from_millis(100),
            || async { s.rpc.server_info().await.ok().and_then(|i| i.registered_at) },
        )
        .await
    }

    /// Server `i`.
    pub fn server(&self, i: usize) -> &ServerProc {
        &self.servers[i]
    }

    /// SIGKILL server `i` (its data stays).
    pub fn kill_server(&mut self, i: usize) {
        self.servers[i].kill();
    }

    /// Restart server `i` on the same address with its original arguments.
    pub async fn restart_server(&mut self, i: usize) -> Result<()> {
        self.servers[i].kill();
        let (name, datadir, args, addr) = {
            let s = &self.servers[i];
            (s.name.clone(), s.datadir.clone(), s.args.clone(), s.addr)
        };
        let s = self
            .launch_server(&name, datadir, args, &addr.to_string())
            .await?;
        self.servers[i] = s;
        Ok(())
    }
}
