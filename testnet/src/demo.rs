//! The one-command demo: a local testnet (3 nodes, 2 concierge servers),
//! `@alice` on `~s1` and `@bob` on `~s2` exchange messages, `@alice` moves
//! to `~s2`, and they exchange more. Every step is printed with the heights
//! its lookups were verified at. The same function is the demo-story test.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xirtam_chat::client::store::Message;
use xirtam_chat::client::{ChatClient, FlushReport};
use xirtam_proofs::Name;

use crate::{Config, Testnet};

/// What the demo did (for the test).
#[derive(Debug, Default)]
pub struct DemoOutcome {
    /// Every line printed.
    pub transcript: Vec<String>,
    /// Alice's conversation at the end.
    pub alice_inbox: Vec<Message>,
    /// Bob's conversation at the end.
    pub bob_inbox: Vec<Message>,
}

struct Log {
    start: Instant,
    lines: Vec<String>,
    echo: bool,
}

impl Log {
    fn say(&mut self, line: impl Into<String>) {
        let line = format!(
            "[{:6.1}s] {}",
            self.start.elapsed().as_secs_f64(),
            line.into()
        );
        if self.echo {
            println!("{line}");
        }
        self.lines.push(line);
    }
}

fn name(s: &str) -> Result<Name> {
    Name::new(s).map_err(|e| anyhow::anyhow!("{s}: {e}"))
}

/// Poll `c` until it holds `n` new messages (or `timeout`).
async fn receive(c: &mut ChatClient, n: usize, timeout: Duration) -> Result<Vec<Message>> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < n {
        if Instant::now() > deadline {
            bail!("received {} of {n} messages in {timeout:?}", got.len());
        }
        let r = c.poll(Duration::from_secs(2)).await?;
        if !r.rejected.is_empty() {
            bail!("rejected envelopes: {:?}", r.rejected);
        }
        got.extend(r.messages);
    }
    Ok(got)
}

async fn send(log: &mut Log, c: &mut ChatClient, to: &Name, text: &str) -> Result<()> {
    let from = c.name().context("sender has no name")?;
    let (_, FlushReport { delivered, queued }) = c.send(to, text).await?;
    if let Some((_, _, e)) = queued.first() {
        bail!("{from} -> {to}: not delivered: {e}");
    }
    for d in delivered {
        log.say(format!(
            "{from} -> {to}: {text:?}\n           looked up {to} (record verified at height {}) and {} (verified at height {}); wrapped the key to {} device(s); {} signed receipt #{}",
            d.record_height, d.server, d.server_height, d.devices, d.server, d.seq
        ));
    }
    Ok(())
}

async fn show_received(log: &mut Log, c: &mut ChatClient, n: usize) -> Result<()> {
    let me = c.name().context("no name")?;
    for m in receive(c, n, Duration::from_secs(60)).await? {
        log.say(format!(
            "{me} <- {}: {:?}\n           via {}; signature checked against {}'s record verified at height {}",
            m.from,
            m.text,
            m.via.as_ref().map_or("?".into(), |v| v.to_string()),
            m.from,
            m.verified_at
        ));
    }
    Ok(())
}

/// Run the demo under `dir` (a fresh temporary directory when `None`),
/// printing the transcript when `echo`.
pub async fn run(dir: Option<&Path>, echo: bool, stay: bool) -> Result<DemoOutcome> {
    let mut log = Log {
        start: Instant::now(),
        lines: Vec::new(),
        echo,
    };
    let mut net = Testnet::start(Config {
        network: "regtest".into(),
        nodes: 3,
        dir: dir.map(Path::to_path_buf),
        log: "warn".into(),
        ..Config::default()
    })
    .await
    .context("start the testnet")?;
    net.auto_mine(0, Duration::from_millis(250));
    log.say(format!(
        "testnet up: 3 directory nodes (regtest) in {}; node 0 mines a block every 250 ms",
        net.root().display()
    ));
    for s in ["~s1", "~s2"] {
        let i = net.add_server(s, &[]).await?;
        let h = net.wait_server_registered(i).await?;
        log.say(format!(
            "{s}: concierge server up at {}; it claimed {s} on the chain, its light client saw the record confirmed at height {h}",
            net.server(i).url
        ));
    }
    let config = net.client_config()?;
    let root = net.root().to_path_buf();
    let mut alice = ChatClient::init(&root.join("alice"), config.clone())?;
    let mut bob = ChatClient::init(&root.join("bob"), config)?;
    let (a, b, s1, s2) = (name("@alice")?, name("@bob")?, name("~s1")?, name("~s2")?);
    let (ra, rb) = tokio::join!(alice.register(&a, &s1), bob.register(&b, &s2));
    for (who, srv, r) in [(&a, &s1, ra?), (&b, &s2, rb?)] {
        log.say(format!(
            "{who}: registered on {srv} - record verified at height {} ({} confirmation(s)); mailbox and medium-term key set up on {srv}",
            r.lookup().height(),
            r.lookup().confirmations()
        ));
    }
    let w = alice.whois(&b).await?;
    log.say(format!(
        "{a} looks up {b}: server {}, {} device(s), verified at height {} from {}",
        w.record().server,
        w.record().devices.len(),
        w.lookup().height(),
        w.lookup().source()
    ));
    send(
        &mut log,
        &mut alice,
        &b,
        "Hi Bob! This is end-to-end encrypted.",
    )
    .await?;
    show_received(&mut log, &mut bob, 1).await?;
    send(&mut log, &mut bob, &a, "Hi Alice, loud and clear.").await?;
    show_received(&mut log, &mut alice, 1).await?;

    log.say(format!("{a} moves to {s2} (one update to her own record)"));
    let moved = alice.move_to(&s2).await?;
    log.say(format!(
        "{a}: record now names {s2}, verified at height {}; {s1} is still read during the grace period",
        moved.lookup().height()
    ));
    // Bob still has Alice's old record cached: this one goes to ~s1.
    send(&mut log, &mut bob, &a, "Sent before I noticed your move.").await?;
    show_received(&mut log, &mut alice, 1).await?;
    let w = bob.whois(&a).await?;
    log.say(format!(
        "{b} looks {a} up again: server {}, verified at height {}",
        w.record().server,
        w.lookup().height()
    ));
    send(&mut log, &mut bob, &a, "Now straight to ~s2.").await?;
    show_received(&mut log, &mut alice, 1).await?;
    send(
        &mut log,
        &mut alice,
        &b,
        "Same conversation, new server. Nothing lost.",
    )
    .await?;
    show_received(&mut log, &mut bob, 1).await?;

    let alice_inbox = alice.inbox()?;
    let bob_inbox = bob.inbox()?;
    log.say(format!(
        "{a}'s conversation ({} messages):",
        alice_inbox.len()
    ));
    for m in &alice_inbox {
        log.say(format!("    {} -> {}: {}", m.from, m.to, m.text));
    }
    if alice_inbox.len() != 5 || bob_inbox.len() != 5 {
        bail!(
            "expected 5 messages on each side, alice has {} and bob {}",
            alice_inbox.len(),
            bob_inbox.len()
        );
    }
    if stay {
        // The clients let go of their data directories, which the
        // terminal client opens.
        drop((alice, bob));
        let bin = crate::find_bin("xirtam-chat", "XIRTAM_CHAT_BIN")
            .map_or_else(|_| "xirtam-chat".into(), |p| p.display().to_string());
        for who in ["alice", "bob"] {
            std::fs::write(root.join(who).join("nodes"), net.node_urls().join("\n"))?;
        }
        log.say(format!(
            "demo complete: every message arrived once, in order. The network stays up until Ctrl-C; in other terminals:\n    {bin} --network regtest --datadir {} tui\n    {bin} --network regtest --datadir {} tui",
            root.join("alice").display(),
            root.join("bob").display()
        ));
        tokio::signal::ctrl_c().await?;
        log.say("stopping the testnet");
        let (alice_inbox, bob_inbox) = (Vec::new(), Vec::new());
        return Ok(DemoOutcome {
            transcript: log.lines,
            alice_inbox,
            bob_inbox,
        });
    }
    log.say("demo complete: every message arrived once, in order; stopping the testnet");
    Ok(DemoOutcome {
        transcript: log.lines,
        alice_inbox,
        bob_inbox,
    })
}
