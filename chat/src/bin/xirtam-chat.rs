//! `xirtam-chat`: end-to-end-encrypted chat from the shell, a thin layer
//! over the client library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use xirtam_chat::client::store::Message;
use xirtam_chat::client::{ChatClient, ClientConfig, FlushReport, PollReport};
use xirtam_chat::display;
use xirtam_proofs::Name;
use xirtam_proofs::params::Params;

mod common;

/// Chat with names verified on the directory chain.
#[derive(Parser, Debug)]
#[command(name = "xirtam-chat", version)]
struct Cli {
    /// Network: local, testnet or regtest.
    #[arg(long, default_value = "local", global = true)]
    network: String,
    /// A directory node's RPC URL; repeat for several. Remembered by
    /// `init` (DATADIR/nodes) for later commands.
    #[arg(long = "node", global = true)]
    nodes: Vec<String>,
    /// Where this device's identity and messages live (default
    /// ~/.xirtam/chat-<network>).
    #[arg(long, global = true)]
    datadir: Option<PathBuf>,
    /// Blocks under the verified tip lookups are proven at.
    #[arg(long, global = true)]
    depth: Option<u64>,
    /// The root key file (owner of the name; default DATADIR/root.key).
    /// `init` creates it there; `register` and `move` need it. Keep it
    /// apart from the device (another machine, a USB stick) and pass it
    /// only for those: sending and receiving never read it.
    #[arg(long = "root-key", global = true)]
    root_key: Option<PathBuf>,
    /// Log filter (tracing).
    #[arg(long, default_value = "warn", global = true)]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create this device's keys.
    Init,
    /// Claim `@name` on the chain with this device, hosted on `~server`.
    Register {
        /// The name (`@...`).
        name: String,
        /// The concierge server (`~...`).
        #[arg(long)]
        server: String,
    },
    /// Show a user's verified record.
    Whois {
        /// The name (`@...`).
        name: String,
    },
    /// Send a text message.
    Send {
        /// Recipient (`@...`).
        to: String,
        /// The text.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Fetch new messages once, then show the conversation history.
    Inbox {
        /// Seconds to wait for new messages.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Stream incoming messages until interrupted.
    Listen,
    /// Accept `@name` as a contact: their messages skip your requests lane
    /// (and its postage). Sending to someone accepts them too.
    Accept {
        /// The name (`@...`).
        name: String,
    },
    /// Envelopes refused (undecryptable, forged, from a sender that could
    /// not be verified in time), most recent last.
    Rejected,
    /// Move to another concierge server (the old one is still read for a
    /// grace period).
    Move {
        /// The new server (`~...`).
        #[arg(long)]
        server: String,
    },
}

fn main() -> std::process::ExitCode {
    // Keys, history and databases: private to the user.
    xirtam_chat::private_files();
    let cli = Cli::parse();
    let log = cli.log.clone();
    match common::block_on(&log, false, run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Errors may quote a server or a peer: escaped.
            eprintln!("error: {}", display::escape_line(&format!("{e:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}

fn name(s: &str) -> Result<Name> {
    Name::new(s).map_err(|e| anyhow!("invalid name {s:?}: {e}"))
}

fn show(m: &Message) {
    let arrow = if m.delivered { "" } else { " (queued)" };
    // First contact from someone not accepted yet: marked, before the
    // text (which cannot fake the mark: it follows the colon).
    let request = if m.request { " (request)" } else { "" };
    // The text is the sender's: escaped, so it cannot fake a line of ours
    // or send the terminal escape sequences.
    println!(
        "[{}] {} -> {}{request}: {}{}",
        m.local,
        m.from,
        m.to,
        display::escape(&m.text),
        arrow
    );
}

/// Envelopes of this poll that were not shown as messages.
fn report_envelopes(r: &PollReport) {
    for e in &r.rejected {
        eprintln!("rejected: {}", display::escape_line(e));
    }
    for e in &r.held {
        eprintln!("held: {}", display::escape_line(e));
    }
}

fn show_flush(f: &FlushReport) {
    for d in &f.delivered {
        println!(
            "delivered to {} via {} (seq {}, recipient record verified at height {}, {} device(s))",
            d.to, d.server, d.seq, d.record_height, d.devices
        );
        if !d.long_term.is_empty() {
            println!(
                "  no forward secrecy for {} device(s) of {}: no medium-term key of theirs was ever seen, so it went to the long-term key from the record",
                d.long_term.len(),
                d.to
            );
        }
        for r in &d.refused_keys {
            println!("  refused key: {}", display::escape_line(&r.to_string()));
        }
    }
    for (_, to, e) in &f.queued {
        println!(
            "queued for {to}, will retry: {}",
            display::escape_line(&e.to_string())
        );
    }
}

async fn run(cli: Cli) -> Result<()> {
    let params = Params::by_name(&cli.network).ok_or_else(|| {
        anyhow!(
            "unknown network {:?}: use local, testnet or regtest",
            cli.network
        )
    })?;
    let dir = match &cli.datadir {
        Some(d) => d.clone(),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set; pass --datadir")?;
            PathBuf::from(home)
                .join(".xirtam")
                .join(format!("chat-{}", params.name))
        }
    };
    let nodes_file = dir.join("nodes");
    let nodes = if cli.nodes.is_empty() {
        std::fs::read_to_string(&nodes_file)
            .map(|s| {
                s.lines()
                    .map(str::to_owned)
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    } else {
        cli.nodes.clone()
    };
    if nodes.is_empty() {
        bail!("no directory nodes: pass --node URL (remembered after `init`)");
    }
    let mut config = ClientConfig::new(params, nodes.clone());
    config.depth = cli.depth;
    config.root_key_file = cli.root_key.clone();
    if let Cmd::Init = cli.cmd {
        let c = ChatClient::init(&dir, config)?;
        std::fs::write(&nodes_file, nodes.join("\n"))
            .with_context(|| format!("write {}", nodes_file.display()))?;
        println!(
            "new identity in {}\n  root key   {} (secret in {}: needed only to register, move or change devices; keep it apart from this device and pass --root-key FILE for those)\n  device key {}",
            dir.display(),
            c.root_key(),
            c.root_key_path().display(),
            c.device().sign
        );
        return Ok(());
    }
    let c = ChatClient::open(&dir, config)?;
    match cli.cmd {
        Cmd::Init => {}
        Cmd::Register { name: n, server } => {
            let (n, s) = (name(&n)?, name(&server)?);
            println!("registering {n} on {s} (waiting for confirmation)...");
            let v = c.register(&n, &s).await?;
            println!(
                "{n} registered on {s}: record verified at height {} ({} confirmation(s))",
                v.lookup().height(),
                v.lookup().confirmations()
            );
        }
        Cmd::Whois { name: n } => {
            let v = c.whois(&name(&n)?).await?;
            let l = v.lookup();
            println!(
                "{}\n  server  {}\n  height  {} ({} confirmation(s), verified from {})",
                l.name(),
                v.record().server,
                l.height(),
                l.confirmations(),
                l.source()
            );
            for d in &v.record().devices {
                println!("  device  {}", d.sign);
            }
            if let Some(r) = l.record() {
                for o in r.owners.keys() {
                    println!("  owner   {o}");
                }
            }
        }
        Cmd::Send { to, text } => {
            let (m, f) = c.send(&name(&to)?, &text.join(" ")).await?;
            show(&m);
            show_flush(&f);
        }
        Cmd::Inbox { wait } => {
            let r = c.poll(Duration::from_secs(wait)).await?;
            report_envelopes(&r);
            for e in &r.errors {
                eprintln!("warning: {}", display::escape_line(e));
            }
            let messages = c.inbox()?;
            let gaps = xirtam_chat::client::gaps(&messages);
            for m in &messages {
                if gaps.contains(&m.id) {
                    println!(
                        "    ! a message is missing here: the one this follows never arrived on this device"
                    );
                }
                show(m);
            }
        }
        Cmd::Accept { name: n } => {
            let n = name(&n)?;
            if c.accept(&n).await? {
                let f = c.flush().await?;
                println!("{n} accepted: their messages now skip your requests lane");
                show_flush(&f);
            } else {
                println!("{n} is a contact already");
            }
        }
        Cmd::Rejected => {
            for r in c.rejected()? {
                println!("{} {}", r.time_ms / 1000, display::escape_line(&r.what));
            }
            let held = c.held()?;
            if held > 0 {
                println!("{held} envelope(s) wait for their sender to be verified");
            }
        }
        Cmd::Listen => loop {
            tokio::select! {
                r = c.poll(Duration::from_secs(25)) => {
                    let r = r?;
                    for m in &r.messages {
                        show(m);
                    }
                    report_envelopes(&r);
                    for e in &r.errors {
                        eprintln!("warning: {}", display::escape_line(e));
                    }
                    if !r.errors.is_empty() {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        },
        Cmd::Move { server } => {
            let s = name(&server)?;
            println!("moving to {s} (waiting for confirmation)...");
            let v = c.move_to(&s).await?;
            println!(
                "now on {s}: record verified at height {}; the previous server is still read for the grace period",
                v.lookup().height()
            );
        }
    }
    Ok(())
}
