//! Device linking benchmark: a user with `messages` messages of history
//! links new devices, one per run, on a fresh local testnet (one node, one
//! concierge, blocks every 200 ms). Each run times the whole link as a
//! user sees it: from the new device showing its code to the new device
//! holding the whole history, and the part until it has the name.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xirtam_chat::client::ChatClient;
use xirtam_proofs::Name;

use crate::{Config, Testnet};

/// What to run.
#[derive(Debug, Clone)]
pub struct LinkBench {
    /// Messages of history the approving device holds.
    pub messages: usize,
    /// Devices linked (at most 7: a record lists at most 8).
    pub runs: usize,
}

/// One run.
#[derive(Debug, Clone)]
pub struct LinkRun {
    /// Code shown until the new device has the name (record confirmed,
    /// logged in).
    pub named: Duration,
    /// Code shown until the new device has stored the whole history.
    pub total: Duration,
    /// Envelopes the bundle took.
    pub parts: usize,
}

/// The result.
#[derive(Debug, Clone)]
pub struct LinkBenchResult {
    /// Time to queue and deliver the history (setup, not the figure).
    pub history_setup: Duration,
    /// Each run.
    pub runs: Vec<LinkRun>,
}

/// A fresh local testnet (one node; one concierge, `~s1`, that takes
/// deposits without rate or size limits), `@alice` and `@bob` registered
/// on it and contacts both ways, and `messages` messages from alice to bob
/// delivered: where the link and terminal-client benchmarks start.
pub(crate) struct History {
    /// The network (stopped when dropped).
    pub(crate) net: Testnet,
    /// `@alice`, holding the history.
    pub(crate) alice: ChatClient,
    /// `@bob`.
    pub(crate) bob: ChatClient,
    /// Time to queue and deliver the history.
    pub(crate) setup: Duration,
}

/// Set up a [`History`].
pub(crate) async fn two_users_with_history(messages: usize) -> Result<History> {
    let mut net = Testnet::start(Config {
        nodes: 1,
        log: "warn".into(),
        timeout: Duration::from_secs(300),
        ..Config::default()
    })
    .await?;
    net.auto_mine(0, Duration::from_millis(200));
    net.add_server(
        "~s1",
        &[
            "--deposit-rate",
            "100000",
            "--deposit-burst",
            "100000",
            "--postage-bits",
            "12",
            // Bob never reads: his lane holds the whole history.
            "--max-stored",
            "1000000",
        ],
    )
    .await?;
    let root = net.root().to_path_buf();
    let config = net.client_config()?;
    let (a, b_name, s1) = (
        Name::new("@alice").context("name")?,
        Name::new("@bob").context("name")?,
        Name::new("~s1").context("name")?,
    );
    let alice = ChatClient::init(&root.join("alice"), config.clone())?;
    alice.register(&a, &s1).await?;
    let bob = ChatClient::init(&root.join("bob"), config)?;
    bob.register(&b_name, &s1).await?;
    // Bob accepts alice: her messages go into his contacts lane with his
    // pass, without postage (writing to him accepts him on her side).
    bob.accept(&a).await?;
    bob.flush().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while alice.poll(Duration::from_secs(1)).await?.passes.is_empty() {
        if Instant::now() > deadline {
            bail!("bob's contact pass did not reach alice");
        }
    }
    let t = Instant::now();
    for i in 0..messages {
        alice
            .queue(&b_name, &format!("history message {i}: {}", "x".repeat(40)))
            .await?;
    }
    let f = alice.flush().await?;
    if let Some((_, _, why)) = f.queued.first() {
        bail!("{} history messages not delivered: {why}", f.queued.len());
    }
    Ok(History {
        net,
        alice,
        bob,
        setup: t.elapsed(),
    })
}

/// Run the benchmark.
pub async fn run(b: LinkBench) -> Result<LinkBenchResult> {
    if b.runs == 0 || b.runs > 7 {
        bail!("between 1 and 7 runs (a record lists at most 8 devices)");
    }
    let History {
        net,
        alice,
        setup: history_setup,
        ..
    } = two_users_with_history(b.messages).await?;
    let root = net.root().to_path_buf();
    let config = net.client_config()?;
    let a = Name::new("@alice").context("name")?;
    let mut runs = Vec::new();
    for r in 0..b.runs {
        let new = ChatClient::init(&root.join(format!("new{r}")), config.clone())?;
        let t = Instant::now();
        let link = new.link(&a, Duration::from_secs(300)).await?;
        let code = link.code().to_string();
        let (approved, named) = tokio::join!(
            alice.approve(&code, Duration::from_secs(30 * 86_400)),
            async {
                let v = new.finish_link(link).await;
                (v, t.elapsed())
            }
        );
        let approved = approved?;
        let (joined, named) = named;
        joined?;
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut got = 0;
        while got < b.messages {
            if Instant::now() > deadline {
                bail!("the new device got {got} of {} messages", b.messages);
            }
            got += new.poll(Duration::from_secs(1)).await?.synced;
        }
        runs.push(LinkRun {
            named,
            total: t.elapsed(),
            parts: approved.parts,
        });
    }
    Ok(LinkBenchResult {
        history_setup,
        runs,
    })
}
