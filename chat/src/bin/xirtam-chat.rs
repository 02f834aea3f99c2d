//! `xirtam-chat`: end-to-end-encrypted chat from the shell, a thin layer
//! over the client library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use xirtam_chat::client::groups::GroupInfo;
use xirtam_chat::client::store::{GroupMsg, Message};
use xirtam_chat::client::{ChatClient, ClientConfig, ClientEvent, FlushReport, PollReport};
use xirtam_chat::display;
use xirtam_proofs::Name;
use xirtam_proofs::params::Params;

mod common;
mod tui;

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
    /// Mark the conversation with `@name` read up to its latest message, on
    /// every device of yours.
    Read {
        /// The other side (`@...`).
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
    /// Link, list and remove this name's devices.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Groups hosted on a concierge server.
    #[command(subcommand)]
    Group(GroupCmd),
    /// The interactive terminal client: conversations, groups and every
    /// command above, updated as events arrive (`?` for help). Logs go to
    /// DATADIR/tui.log.
    Tui {
        /// Seconds between fresh lookups of your contacts' records (their
        /// moves and key changes become notices).
        #[arg(long, default_value_t = 30)]
        watch: u64,
        /// Write startup and key-to-screen times (JSON) here on exit.
        #[arg(long, hide = true)]
        stats: Option<PathBuf>,
    },
}

/// `G` is a group's name, or its id (or the first hex digits of it, at
/// least 4), as `group list` shows.
#[derive(Subcommand, Debug)]
enum GroupCmd {
    /// Create a group with you as its admin.
    Create {
        /// Its name.
        name: String,
        /// The server hosting it (`~...`; default: yours).
        #[arg(long)]
        server: Option<String>,
    },
    /// The groups this device is in, and invitations waiting.
    List,
    /// Add `@user` and send them an invitation (admins).
    Invite {
        /// The group.
        group: String,
        /// Who (`@...`).
        user: String,
    },
    /// Accept an invitation (`inbox` shows them).
    Join {
        /// The group the invitation is for.
        group: String,
    },
    /// Post a message.
    Send {
        /// The group.
        group: String,
        /// The text.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Members, admins, key epoch and log head.
    Members {
        /// The group.
        group: String,
    },
    /// Remove `@user`; the key rotates (admins).
    Kick {
        /// The group.
        group: String,
        /// Who (`@...`).
        user: String,
    },
    /// Remove `@user` for good; the key rotates (admins).
    Ban {
        /// The group.
        group: String,
        /// Who (`@...`).
        user: String,
    },
    /// Make `@user` an admin (or, with --remove, no longer one).
    Admin {
        /// The group.
        group: String,
        /// Who (`@...`).
        user: String,
        /// Take the role away instead.
        #[arg(long)]
        remove: bool,
    },
    /// Rename the group (admins).
    Rename {
        /// The group.
        group: String,
        /// The new name.
        name: String,
    },
    /// Change the settings (admins).
    Set {
        /// The group.
        group: String,
        /// Only admins may post (on|off).
        #[arg(long, value_parser = on_off)]
        admins_only: Option<bool>,
        /// New members may read the messages of the key epoch they join in
        /// (on|off; off: adding a member rotates the key).
        #[arg(long, value_parser = on_off)]
        history: Option<bool>,
    },
    /// Rotate the group's key now (admins).
    Rotate {
        /// The group.
        group: String,
    },
    /// Leave the group (an admin's client removes you and rotates the key).
    Leave {
        /// The group.
        group: String,
    },
    /// Move the group to another server (admins): the log continues there,
    /// the key rotates, and every member follows.
    Move {
        /// The group.
        group: String,
        /// The new server (`~...`).
        #[arg(long)]
        server: String,
    },
}

#[derive(Subcommand, Debug)]
enum DeviceCmd {
    /// On a new device (after `init`): show a one-time code for `@name`,
    /// and wait until a device holding the root key approves it.
    Link {
        /// The name to join (`@...`).
        name: String,
        /// Seconds the code stays valid (at most 600).
        #[arg(long, default_value_t = 300)]
        expires: u64,
    },
    /// On a device with the root key: approve the new device showing
    /// `code`, add it to the record and send it the recent history.
    Approve {
        /// The code the new device shows (`1234-5678-9012`).
        code: String,
        /// Days of history the new device receives.
        #[arg(long, default_value_t = 30)]
        days: u64,
    },
    /// The devices of this name's verified record.
    List,
    /// Remove a device (a lost phone) from the record; needs the root key.
    Remove {
        /// The device's key (as `device list` shows it).
        id: String,
    },
}

fn main() -> std::process::ExitCode {
    // Keys, history and databases: private to the user.
    xirtam_chat::private_files();
    let started = std::time::Instant::now();
    let cli = Cli::parse();
    let log = cli.log.clone();
    let result = if let Cmd::Tui { .. } = cli.cmd {
        // The screen is the terminal client's: logs go to a file.
        let log_file = data_dir(&cli).map(|d| d.join("tui.log"));
        match log_file {
            Ok(f) => {
                let _ = xirtam_chat::create_private_dir(f.parent().unwrap_or(&f));
                common::block_on_logging_to(&log, Some(&f), true, run(cli, started))
            }
            Err(e) => Err(e),
        }
    } else {
        common::block_on(&log, false, run(cli, started))
    };
    match result {
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
/// One event of `listen`. Whatever a peer or server chose is escaped.
fn show_event(e: &ClientEvent) {
    match e {
        ClientEvent::Message(m) | ClientEvent::Request(m) => show(m),
        ClientEvent::Delivered(d) => println!(
            "delivered [{}] to {} via {} (seq {})",
            d.local, d.to, d.server, d.seq
        ),
        ClientEvent::Retrying {
            local,
            to,
            attempts,
            error,
        } => eprintln!(
            "queued [{local}] for {to} after {attempts} attempt(s): {}",
            display::escape_line(error)
        ),
        ClientEvent::Missing { .. } => println!(
            "    ! a message is missing before the last one: the one it follows never arrived on this device"
        ),
        ClientEvent::Moved { user, from, to } => println!("{user} moved from {from} to {to}"),
        ClientEvent::Devices {
            user,
            added,
            removed,
        } => println!(
            "{user}'s devices changed: {} added, {} removed",
            added.len(),
            removed.len()
        ),
        ClientEvent::Pass(p) => println!("{p} accepted you as a contact"),
        ClientEvent::Read { peer, .. } => {
            println!("the conversation with {peer} was read on another of your devices")
        }
        ClientEvent::Rejected(w) => eprintln!("rejected: {}", display::escape_line(w)),
        ClientEvent::Synced {
            part,
            parts,
            messages,
        } => println!(
            "history from another of your devices: part {} of {parts}, {messages} message(s)",
            part + 1
        ),
        ClientEvent::Error(w) => eprintln!("warning: {}", display::escape_line(w)),
        ClientEvent::Lagged(n) => eprintln!("warning: {n} event(s) missed; run `inbox`"),
        ClientEvent::GroupMessage(m) => show_group(m),
        ClientEvent::GroupInvite { from, group, name } => println!(
            "{from} invites you to group {} ({}): xirtam-chat group join {}",
            display::escape(name),
            short(group),
            short(group)
        ),
        ClientEvent::GroupChanged { group, change } => {
            println!("group {}: {}", short(group), display::escape_line(change))
        }
        ClientEvent::GroupForked { group, reason } => eprintln!(
            "warning: group {} is marked forked: {}",
            short(group),
            display::escape_line(reason)
        ),
        other => eprintln!("{other:?}"),
    }
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: on or off")),
    }
}

fn short(h: &xirtam_proofs::Hash) -> String {
    h.to_hex()[..12].to_string()
}

fn show_group(m: &GroupMsg) {
    println!(
        "[{} #{}] {}: {}",
        short(&m.group),
        m.seq,
        m.from,
        display::escape(&m.text)
    );
}

fn show_group_info(g: &GroupInfo) {
    println!(
        "group {} ({}) on {}\n  id      {}\n  admins  {}\n  members {}\n  epoch {}, log entry {} ({})",
        display::escape(&g.name),
        short(&g.group),
        g.server,
        g.group,
        g.admins
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        g.members
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        g.epoch,
        g.seq,
        g.head
    );
    println!(
        "  {}; {}",
        if g.admins_only {
            "only admins post"
        } else {
            "everyone posts"
        },
        if g.history {
            "new members read the current key's messages"
        } else {
            "new members read only what follows them"
        }
    );
    if let Some(e) = g.waiting_key {
        println!("  waiting for the key of epoch {e} (asked an admin to re-share it)");
    }
    if let Some(f) = &g.forked {
        println!("  FORKED: {}", display::escape_line(f));
    }
}

async fn group(c: &ChatClient, cmd: GroupCmd) -> Result<()> {
    let find = |s: &str| c.find_group(s).map_err(anyhow::Error::from);
    match cmd {
        GroupCmd::Create { name: n, server } => {
            let server = server.as_deref().map(name).transpose()?;
            let g = c.group_create(&n, server.as_ref()).await?;
            c.flush().await?;
            show_group_info(&g);
        }
        GroupCmd::List => {
            for g in c.groups()? {
                show_group_info(&g);
            }
            for (from, i) in c.group_invites()? {
                println!(
                    "invitation from {from} to group {} ({}): xirtam-chat group join {}",
                    display::escape(&i.name),
                    short(&i.group),
                    short(&i.group)
                );
            }
        }
        GroupCmd::Invite { group: g, user } => {
            let info = c.group_invite(&find(&g)?, &name(&user)?).await?;
            show_flush(&c.flush().await?);
            show_group_info(&info);
        }
        GroupCmd::Join { group: g } => {
            let info = c.group_join(&find(&g)?).await?;
            c.flush().await?;
            show_group_info(&info);
        }
        GroupCmd::Send { group: g, text } => {
            let m = c.group_send(&find(&g)?, &text.join(" ")).await?;
            show_group(&m);
        }
        GroupCmd::Members { group: g } => show_group_info(&c.group(&find(&g)?)?),
        GroupCmd::Kick { group: g, user } => {
            show_group_info(&c.group_remove(&find(&g)?, &name(&user)?, false).await?)
        }
        GroupCmd::Ban { group: g, user } => {
            show_group_info(&c.group_remove(&find(&g)?, &name(&user)?, true).await?)
        }
        GroupCmd::Admin {
            group: g,
            user,
            remove,
        } => show_group_info(&c.group_admin(&find(&g)?, &name(&user)?, !remove).await?),
        GroupCmd::Rename { group: g, name: n } => {
            show_group_info(&c.group_rename(&find(&g)?, &n).await?)
        }
        GroupCmd::Rotate { group: g } => show_group_info(&c.group_rotate(&find(&g)?).await?),
        GroupCmd::Set {
            group: g,
            admins_only,
            history,
        } => show_group_info(&c.group_settings(&find(&g)?, admins_only, history).await?),
        GroupCmd::Move { group: g, server } => {
            let info = c.group_move(&find(&g)?, &name(&server)?).await?;
            show_flush(&c.flush().await?);
            show_group_info(&info);
        }
        GroupCmd::Leave { group: g } => {
            let id = find(&g)?;
            c.group_leave(&id).await?;
            println!("left group {}", short(&id));
        }
    }
    Ok(())
}

async fn device(c: &ChatClient, cmd: DeviceCmd) -> Result<()> {
    match cmd {
        DeviceCmd::Link { name: n, expires } => {
            let n = name(&n)?;
            let link = c.link(&n, Duration::from_secs(expires)).await?;
            println!(
                "link code: {}\non a device of {n} that has the root key, run: xirtam-chat device approve {}\n(valid for {expires} s; waiting...)",
                link.code(),
                link.code()
            );
            let v = c.finish_link(link).await?;
            println!(
                "this device is now {n} on {} (record verified at height {}); history arrives with the next `inbox`",
                v.record().server,
                v.lookup().height()
            );
        }
        DeviceCmd::Approve { code, days } => {
            let a = c
                .approve(&code, Duration::from_secs(days.saturating_mul(86_400)))
                .await?;
            println!(
                "device {} added (record verified at height {}); sent it {} message(s) of history in {} part(s)",
                a.device.sign,
                a.record.lookup().height(),
                a.messages,
                a.parts
            );
        }
        DeviceCmd::List => {
            let me = c.device().sign;
            for d in c.devices().await? {
                let this = if d.sign == me { "  (this device)" } else { "" };
                println!("{}{this}", d.sign);
            }
        }
        DeviceCmd::Remove { id } => {
            let key = xirtam_proofs::PublicKey::from_hex(id.trim()).map_err(|_| {
                anyhow!("{id:?} is not a device key (64 hex digits, as `device list` shows)")
            })?;
            let v = c.remove_device(&key).await?;
            println!(
                "device {key} removed (record verified at height {}); it can no longer log in, and new messages are not encrypted to it",
                v.lookup().height()
            );
        }
    }
    Ok(())
}

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

fn params(cli: &Cli) -> Result<&'static Params> {
    Params::by_name(&cli.network).ok_or_else(|| {
        anyhow!(
            "unknown network {:?}: use local, testnet or regtest",
            cli.network
        )
    })
}

/// `--datadir`, or `~/.xirtam/chat-NETWORK`.
fn data_dir(cli: &Cli) -> Result<PathBuf> {
    Ok(match &cli.datadir {
        Some(d) => d.clone(),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set; pass --datadir")?;
            PathBuf::from(home)
                .join(".xirtam")
                .join(format!("chat-{}", params(cli)?.name))
        }
    })
}

async fn run(cli: Cli, started: std::time::Instant) -> Result<()> {
    let params = params(&cli)?;
    let dir = data_dir(&cli)?;
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
            let g = c.group_poll(Duration::ZERO).await?;
            for e in g.rejected.iter().chain(&g.errors) {
                eprintln!("warning: {}", display::escape_line(e));
            }
            c.flush().await?;
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
            for info in c.groups()? {
                for m in c.group_messages(&info.group)? {
                    show_group(&m);
                }
                if let Some(f) = &info.forked {
                    eprintln!(
                        "warning: group {} is marked forked: {}",
                        short(&info.group),
                        display::escape_line(f)
                    );
                }
            }
            for (from, i) in c.group_invites()? {
                println!(
                    "{from} invites you to group {} ({}): xirtam-chat group join {}",
                    display::escape(&i.name),
                    short(&i.group),
                    short(&i.group)
                );
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
        Cmd::Read { name: n } => {
            let n = name(&n)?;
            match c.mark_read(&n)? {
                Some(_) => {
                    let f = c.flush().await?;
                    println!("the conversation with {n} is read up to its latest message");
                    show_flush(&f);
                }
                None => println!("nothing new to mark read with {n}"),
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
        Cmd::Listen => {
            // The client core's background work and its events.
            let mut events = c.events();
            let _running = c.start(Duration::from_secs(25));
            loop {
                tokio::select! {
                    e = events.next() => match e {
                        Some(ClientEvent::Stopped(why)) => bail!("{why}"),
                        Some(e) => show_event(&e),
                        None => return Ok(()),
                    },
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
        }
        Cmd::Device(d) => device(&c, d).await?,
        Cmd::Tui { watch, stats } => {
            if !tui::is_terminal() {
                bail!("`tui` needs a terminal; the other commands work without one");
            }
            tui::run(
                c,
                tui::Options {
                    datadir: dir,
                    watch: Duration::from_secs(watch.max(1)),
                    stats,
                    started,
                },
            )
            .await?
        }
        Cmd::Group(g) => group(&c, g).await?,
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
