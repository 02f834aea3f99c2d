//! Group fan-out benchmark: one group message delivered to `pollers`
//! members' long-polls on loopback. A user creates a group on a local
//! testnet (one node, one concierge); `pollers` connections long-poll its
//! lane (`group_receive`, each its own HTTP connection, as members'
//! devices would); each run times one `group_send` from its start until
//! the last long-poll has answered with the message.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xirtam_chat::api::{self, ConciergeApiClient};
use xirtam_chat::client::ChatClient;
use xirtam_proofs::Name;

use crate::{Config, Testnet};

/// What to run.
#[derive(Debug, Clone)]
pub struct FanoutBench {
    /// Long-polling connections.
    pub pollers: usize,
    /// Messages sent (one per run).
    pub runs: usize,
}

/// The result: per run, the time to the last delivery.
#[derive(Debug, Clone)]
pub struct FanoutResult {
    /// Each run.
    pub runs: Vec<Duration>,
}

/// Run the benchmark.
pub async fn run(b: FanoutBench) -> Result<FanoutResult> {
    if b.pollers == 0 || b.runs == 0 {
        bail!("at least one poller and one run");
    }
    let mut net = Testnet::start(Config {
        nodes: 1,
        log: "warn".into(),
        timeout: Duration::from_secs(300),
        ..Config::default()
    })
    .await?;
    net.auto_mine(0, Duration::from_millis(200));
    let conns = (b.pollers + 64).to_string();
    net.add_server(
        "~s1",
        &["--postage-bits", "12", "--max-connections-per-ip", &conns],
    )
    .await?;
    let root = net.root().to_path_buf();
    let alice = ChatClient::init(&root.join("alice"), net.client_config()?)?;
    alice
        .register(
            &Name::new("@alice").context("name")?,
            &Name::new("~s1").context("name")?,
        )
        .await?;
    let g = alice.group_create("fan-out", None).await?.group;
    let (segment, access) = alice.group_access(&g)?;
    let server = net.server(0);
    let (url, key) = (format!("https://{}", server.addr), server.key);
    let mut clients = Vec::with_capacity(b.pollers);
    for _ in 0..b.pollers {
        clients.push(Arc::new(xirtam_chat::tls::concierge_client(
            &url,
            &key,
            Duration::from_secs(60),
            1 << 20,
        )?));
    }
    let mut runs = Vec::with_capacity(b.runs);
    let mut after = 0u64;
    for run in 0..b.runs {
        let cursor = api::GroupCursor {
            segment: segment.to_hex(),
            access: hex::encode(access),
            after,
            log_after: u64::MAX,
        };
        // Every poller parks a long-poll; each answers with what it got.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<u64>>(b.pollers);
        let (ready_tx, mut ready) = tokio::sync::mpsc::channel::<()>(b.pollers);
        for c in &clients {
            let (c, cursor, tx, ready_tx) =
                (c.clone(), cursor.clone(), tx.clone(), ready_tx.clone());
            tokio::spawn(async move {
                // A first call opens the connection (and returns at once).
                let warm = c.group_receive(vec![cursor.clone()], 0).await;
                let _ = ready_tx.send(()).await;
                let got = match warm {
                    Err(e) => Err(anyhow::anyhow!("{e}")),
                    Ok(_) => c
                        .group_receive(vec![cursor], 30_000)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))
                        .map(|batches| {
                            batches
                                .iter()
                                .flat_map(|b| b.messages.iter().map(|m| m.seq))
                                .max()
                                .unwrap_or(0)
                        }),
                };
                let _ = tx.send(got).await;
            });
        }
        drop(tx);
        for _ in 0..b.pollers {
            ready.recv().await.context("a poller stopped")?;
        }
        // The long-polls were sent right after their connection answered:
        // give the server a moment to have every one parked.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let start = Instant::now();
        let m = alice.group_send(&g, &format!("run {run}")).await?;
        let mut delivered = 0;
        while delivered < b.pollers {
            let seq = rx.recv().await.context("a poller stopped")??;
            if seq < m.seq {
                bail!(
                    "a long-poll answered without the message (seq {seq} < {})",
                    m.seq
                );
            }
            delivered += 1;
        }
        runs.push(start.elapsed());
        after = m.seq;
    }
    Ok(FanoutResult { runs })
}
