//! `xirtam-chat tui`: the interactive terminal client.
//!
//! One event loop owns the model ([`app::App`]) and the screen. It waits
//! on four sources at once: keys and the mouse (read on a thread of their
//! own), the client core's event stream, finished commands, and a
//! one-second tick for the status line. Every network operation (send,
//! post, group changes, lookups) runs as a task of its own and reports
//! back as an [`app::Outcome`], so the screen is redrawn the moment
//! anything arrives and never waits on a server or a long-poll.

mod app;
mod command;
mod composer;
mod view;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture, Event,
    KeyEventKind,
};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;
use xirtam_chat::client::ChatClient;
use xirtam_lightclient::SourceStatus;
use xirtam_proofs::{Hash, Name};

use app::{Action, App, ConvId, Loaded, Outcome};
use command::Command;

/// Settings of the terminal client.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// The data directory (read marks of groups are kept there).
    pub(crate) datadir: PathBuf,
    /// How often contacts' records are looked up again (moves and key
    /// changes become notices).
    pub(crate) watch: Duration,
    /// Write measurements here on exit (startup and key-to-screen times).
    pub(crate) stats: Option<PathBuf>,
    /// When the process started.
    pub(crate) started: Instant,
}

type Term = Terminal<CrosstermBackend<std::io::Stdout>>;

/// Restores the terminal when dropped (on every exit path, errors too).
struct Screen;

impl Screen {
    fn enter() -> Result<Self> {
        enable_raw_mode().context("put the terminal in raw mode (is this a terminal?)")?;
        let screen = Screen;
        execute!(
            std::io::stdout(),
            EnterAlternateScreen,
            EnableMouseCapture,
            EnableBracketedPaste
        )
        .context("set up the terminal")?;
        Ok(screen)
    }

    fn leave() {
        let _ = execute!(
            std::io::stdout(),
            DisableBracketedPaste,
            DisableMouseCapture,
            LeaveAlternateScreen,
            crossterm::cursor::Show
        );
        let _ = disable_raw_mode();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        Screen::leave();
    }
}

/// Keys, mouse and resizes, read on a thread of their own (reading blocks);
/// it can be paused while `$EDITOR` owns the terminal.
struct Input {
    paused: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Input {
    fn start(tx: mpsc::UnboundedSender<(Event, Instant)>) -> Self {
        let paused = Arc::new(AtomicBool::new(false));
        let idle = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, i, s) = (paused.clone(), idle.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if p.load(Ordering::Acquire) {
                    i.store(true, Ordering::Release);
                    std::thread::park_timeout(Duration::from_millis(20));
                    continue;
                }
                i.store(false, Ordering::Release);
                match crossterm::event::poll(Duration::from_millis(50)) {
                    Ok(true) => match crossterm::event::read() {
                        Ok(e) => {
                            if tx.send((e, Instant::now())).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    },
                    Ok(false) => {}
                    Err(_) => return,
                }
            }
        });
        Input { paused, idle, stop }
    }

    /// Stop reading (returns once the thread is not reading).
    fn pause(&self) {
        self.paused.store(true, Ordering::Release);
        let deadline = Instant::now() + Duration::from_secs(1);
        while !self.idle.load(Ordering::Acquire) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn resume(&self) {
        self.paused.store(false, Ordering::Release);
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Group read positions, one `hex position` line per group, in the data
/// directory (the client core keeps read marks of direct conversations).
fn group_read_path(dir: &Path) -> PathBuf {
    dir.join("tui-group-read")
}

fn load_group_read(dir: &Path) -> HashMap<Hash, u64> {
    let Ok(text) = std::fs::read_to_string(group_read_path(dir)) else {
        return HashMap::new();
    };
    text.lines()
        .filter_map(|l| {
            let (h, n) = l.split_once(' ')?;
            Some((Hash::from_hex(h).ok()?, n.parse().ok()?))
        })
        .collect()
}

fn save_group_read(dir: &Path, marks: &HashMap<Hash, u64>) -> std::io::Result<()> {
    let text: String = marks
        .iter()
        .map(|(h, n)| format!("{} {n}\n", h.to_hex()))
        .collect();
    let tmp = group_read_path(dir).with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, group_read_path(dir))
}

/// Everything the screen shows, from the store.
fn load(c: &ChatClient, dir: &Path) -> Result<Loaded> {
    let messages = c.inbox()?;
    let me = c.name();
    let mut read = HashMap::new();
    let peers: HashSet<&Name> = messages
        .iter()
        .map(|m| {
            if Some(&m.from) == me.as_ref() {
                &m.to
            } else {
                &m.from
            }
        })
        .collect();
    for p in peers {
        if let Some(mark) = c.read_mark(p)? {
            read.insert(p.clone(), mark.id);
        }
    }
    let mut groups = Vec::new();
    for info in c.groups()? {
        let msgs = c.group_messages(&info.group)?;
        groups.push((info, msgs));
    }
    Ok(Loaded {
        server: c.servers()?.current,
        outbox: c.outbox()?,
        contacts: c.granted()?.into_iter().map(|g| g.peer).collect(),
        read,
        groups,
        invites: c.group_invites()?,
        group_read: load_group_read(dir),
        messages,
        me,
    })
}

/// The light client's state, for the status line.
fn chain(c: &ChatClient) -> app::Chain {
    let lc = c.light_client();
    let tip = lc.tip();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let sources = lc.sources();
    let age = now.saturating_sub(tip.time);
    app::Chain {
        height: tip.height,
        tip_age_secs: age,
        sources_ok: sources
            .iter()
            .filter(|s| matches!(s.status, SourceStatus::Ok))
            .count(),
        sources: sources.len(),
        stale: age > lc.config().max_tip_age.as_secs(),
        error: None,
    }
}

/// Measurements (`--stats`): startup and key-to-screen latencies.
#[derive(Debug, Default)]
struct Stats {
    /// Process start to the client opened (store, light client).
    opened_us: u64,
    /// ... to the store read.
    loaded_us: u64,
    startup_us: u64,
    messages: usize,
    keys_us: Vec<u64>,
    events: u64,
    /// Messages that arrived while running.
    arrived: u64,
}

impl Stats {
    fn count(&mut self, e: &xirtam_chat::client::ClientEvent) {
        use xirtam_chat::client::ClientEvent as E;
        self.events += 1;
        if matches!(e, E::Message(_) | E::Request(_) | E::GroupMessage(_)) {
            self.arrived += 1;
        }
    }
}

impl Stats {
    fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::json!({
            "startup_us": self.startup_us,
            "opened_us": self.opened_us,
            "loaded_us": self.loaded_us,
            "messages": self.messages,
            "events": self.events,
            "arrived": self.arrived,
            "keys_us": self.keys_us,
        });
        std::fs::write(path, json.to_string()).with_context(|| format!("write {}", path.display()))
    }
}

/// Run the terminal client until the user quits.
pub(crate) async fn run(c: ChatClient, opts: Options) -> Result<()> {
    // Subscribe first: nothing that happens while loading is lost (the
    // model ignores what it already has).
    let mut events = c.events();
    let opened_us = opts.started.elapsed().as_micros() as u64;
    let mut app = App::new(load(&c, &opts.datadir)?);
    app.chain = chain(&c);
    let mut stats = Stats {
        messages: app.convs.values().map(|c| c.items.len()).sum(),
        opened_us,
        loaded_us: opts.started.elapsed().as_micros() as u64,
        ..Stats::default()
    };
    // A panic must not leave the terminal raw.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |p| {
        Screen::leave();
        hook(p);
    }));
    let _screen = Screen::enter()?;
    let mut term: Term =
        Terminal::new(CrosstermBackend::new(std::io::stdout())).context("open the terminal")?;
    term.clear()?;
    term.draw(|f| view::draw(f, &mut app))?;
    stats.startup_us = opts.started.elapsed().as_micros() as u64;
    tracing::info!(
        target: "tui",
        opened_ms = stats.opened_us / 1000,
        loaded_ms = stats.loaded_us / 1000,
        startup_ms = stats.startup_us / 1000,
        messages = stats.messages,
        "interactive"
    );

    let (input_tx, mut input_rx) = mpsc::unbounded_channel();
    let input = Input::start(input_tx);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Outcome>();
    let running = c.start(Duration::from_secs(25));
    spawn_watch(&c, opts.watch, done_tx.clone());
    let mut terminated = terminated()?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut read_due: HashSet<Name> = HashSet::new();
    let mut refresh_due: HashSet<Hash> = HashSet::new();
    let mut actions: Vec<Action> = app.select(app.open.clone());
    loop {
        // Keys waiting for this frame: their latency ends when it is drawn.
        let mut keys: Vec<Instant> = Vec::new();
        tokio::select! {
            Some((e, at)) = input_rx.recv() => {
                actions.extend(on_input(&mut app, e, at, &mut keys));
                // Everything typed meanwhile goes into the same frame.
                while let Ok((e, at)) = input_rx.try_recv() {
                    actions.extend(on_input(&mut app, e, at, &mut keys));
                }
            }
            e = events.next() => {
                let Some(e) = e else { break };
                stats.count(&e);
                actions.extend(app.on_event(e));
                while let Some(e) = events.try_next() {
                    stats.count(&e);
                    actions.extend(app.on_event(e));
                }
            }
            Some(o) = done_rx.recv() => {
                actions.extend(app.on_outcome(o));
            }
            Some(()) = terminated.recv() => app.quit = true,
            _ = tick.tick() => {
                app.tick();
                let error = app.chain.error.take();
                app.chain = app::Chain { error, ..chain(&c) };
                for g in refresh_due.drain() {
                    if let Ok(info) = c.group(&g) {
                        app.group_refreshed(info);
                    }
                }
                for peer in read_due.drain() {
                    let c = c.clone();
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = c.mark_read(&peer) {
                            tracing::warn!(target: "tui", error = %e, "mark read");
                        }
                    });
                }
            }
        }
        for a in std::mem::take(&mut actions) {
            match a {
                Action::Editor => {
                    input.pause();
                    let edited = edit(&opts.datadir, app.composer.text());
                    input.resume();
                    term.clear()?;
                    match edited {
                        Ok(text) => app.composer.set(text),
                        Err(e) => app.flash = Some((format!("editor: {e:#}"), true)),
                    }
                }
                Action::Repaint => term.clear()?,
                Action::MarkRead(peer) => {
                    read_due.insert(peer);
                }
                Action::GroupRead => {
                    if let Err(e) = save_group_read(&opts.datadir, &app.group_read) {
                        app.flash = Some((format!("cannot save read marks: {e}"), true));
                    }
                }
                Action::RefreshGroup(g) => {
                    if let Ok(info) = c.group(&g) {
                        app.group_refreshed(info);
                    }
                    // The core tells of a change before it has stored
                    // it: read again on the next tick too.
                    refresh_due.insert(g);
                }
                Action::Reload => match load(&c, &opts.datadir) {
                    Ok(data) => app.load(data),
                    Err(e) => app.flash = Some((format!("reload: {e:#}"), true)),
                },
                Action::Invites => {
                    if let Ok(invites) = c.group_invites() {
                        for (from, inv) in invites {
                            app.add_group_invite(from, inv);
                        }
                    }
                }
                other => spawn_action(&c, other, done_tx.clone()),
            }
        }
        if app.quit {
            break;
        }
        term.draw(|f| view::draw(f, &mut app))?;
        for at in keys {
            stats.keys_us.push(at.elapsed().as_micros() as u64);
        }
    }
    drop(input);
    drop(term);
    drop(_screen);
    // Read marks not sent yet.
    for peer in read_due {
        let _ = c.mark_read(&peer);
    }
    running.stop().await;
    if let Some(path) = &opts.stats {
        stats.write(path)?;
    }
    Ok(())
}

fn on_input(app: &mut App, e: Event, at: Instant, keys: &mut Vec<Instant>) -> Vec<Action> {
    match e {
        Event::Key(k) if k.kind != KeyEventKind::Release => {
            keys.push(at);
            app.on_key(k)
        }
        Event::Mouse(m) => app.on_mouse(m),
        Event::Paste(s) => {
            app.on_paste(&s);
            Vec::new()
        }
        // A resize is a redraw (the loop draws after every input).
        _ => Vec::new(),
    }
}

/// SIGTERM and SIGHUP (a closed terminal) end the client like Ctrl-C does,
/// so the terminal is restored.
fn terminated() -> Result<mpsc::Receiver<()>> {
    let (tx, rx) = mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("listen for SIGTERM")?;
        let mut hup = signal(SignalKind::hangup()).context("listen for SIGHUP")?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            let _ = tx.send(()).await;
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    Ok(rx)
}

/// Edit `text` in `$VISUAL` or `$EDITOR` (default `vi`) on a private file
/// in the data directory; the terminal is the editor's meanwhile.
fn edit(dir: &Path, text: &str) -> Result<String> {
    let path = dir.join("tui-compose.txt");
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    Screen::leave();
    let mut parts = editor.split_whitespace();
    let status = std::process::Command::new(parts.next().unwrap_or("vi"))
        .args(parts)
        .arg(&path)
        .status();
    // Back to the client's screen whatever happened.
    enable_raw_mode()?;
    execute!(
        std::io::stdout(),
        EnterAlternateScreen,
        EnableMouseCapture,
        EnableBracketedPaste
    )?;
    let status = status.with_context(|| format!("run {editor}"))?;
    let out = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let _ = std::fs::remove_file(&path);
    anyhow::ensure!(status.success(), "{editor} exited with {status}");
    Ok(out.trim_end_matches('\n').to_owned())
}

/// Keep the light client on the chain (every 10 s, so the status line is
/// current) and look contacts up again every `every` (fresh, verified): a
/// contact's move or key change becomes an event.
fn spawn_watch(c: &ChatClient, every: Duration, done: mpsc::UnboundedSender<Outcome>) {
    let c = c.clone();
    tokio::spawn(async move {
        let sync_every = every.min(Duration::from_secs(10));
        let mut tick = tokio::time::interval(sync_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut last_watch: Option<Instant> = None;
        let mut round = 0usize;
        loop {
            tick.tick().await;
            if done.is_closed() {
                return;
            }
            match c.light_client().sync().await {
                Ok(_) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    let _ = done.send(Outcome::Said {
                        conv: Some(ConvId::Notices),
                        lines: vec![format!("the light client cannot sync: {e}")],
                        warn: true,
                    });
                }
                Err(_) => {}
            }
            if last_watch.is_some_and(|t| t.elapsed() < every) {
                continue;
            }
            last_watch = Some(Instant::now());
            let peers: Vec<Name> = c
                .granted()
                .map(|g| g.into_iter().map(|g| g.peer).collect())
                .unwrap_or_default();
            let me = c.name();
            let peers: Vec<Name> = peers
                .into_iter()
                .filter(|p| Some(p) != me.as_ref())
                .collect();
            // At most 64 a round; a longer list is covered over rounds.
            let start = if peers.is_empty() {
                0
            } else {
                round % peers.len()
            };
            round = round.wrapping_add(64);
            for p in peers.iter().cycle().skip(start).take(peers.len().min(64)) {
                if let Err(e) = c.whois(p).await {
                    tracing::debug!(target: "tui", peer = %p, error = %e, "contact lookup");
                }
            }
        }
    });
}

fn said(conv: Option<ConvId>, lines: Vec<String>) -> Outcome {
    Outcome::Said {
        conv,
        lines,
        warn: false,
    }
}

fn failed(e: impl std::fmt::Display) -> Outcome {
    Outcome::Said {
        conv: None,
        lines: vec![e.to_string()],
        warn: true,
    }
}

/// Run one action as a task; its outcome goes back to the event loop.
fn spawn_action(c: &ChatClient, a: Action, done: mpsc::UnboundedSender<Outcome>) {
    let c = c.clone();
    tokio::spawn(async move {
        let out = act(&c, a).await;
        let _ = done.send(out);
    });
}

fn group_of(open: &ConvId) -> Result<Hash, String> {
    match open {
        ConvId::Group(g) => Ok(*g),
        _ => Err("open a group first (Tab, or click it)".into()),
    }
}

async fn act(c: &ChatClient, a: Action) -> Outcome {
    match a {
        Action::Send { to, text, pending } => match c.queue(&to, &text).await {
            Ok(msg) => Outcome::Queued { pending, msg },
            Err(e) => Outcome::NotSent {
                pending,
                conv: ConvId::Direct(to),
                error: e.to_string(),
            },
        },
        Action::Post {
            group,
            text,
            pending,
        } => Outcome::Posted {
            pending,
            group,
            result: c.group_send(&group, &text).await.map_err(|e| e.to_string()),
        },
        Action::Fingerprint(user) => match c.whois(&user).await {
            Ok(v) => said(
                Some(ConvId::Direct(user.clone())),
                vec![format!(
                    "{user}'s key fingerprint: {} - compare it with {user} in person or on another channel",
                    v.fingerprint()
                )],
            ),
            Err(e) => failed(format!("cannot verify {user}'s new record: {e}")),
        },
        Action::Run(cmd, open) => {
            // Output goes where the command was typed, wherever the user
            // is when it finishes.
            match run_command(c, cmd, open.clone()).await {
                Ok(Outcome::Said {
                    conv: None,
                    lines,
                    warn,
                }) => Outcome::Said {
                    conv: Some(open),
                    lines,
                    warn,
                },
                Ok(o) => o,
                Err(e) => Outcome::Said {
                    conv: Some(open),
                    lines: vec![e],
                    warn: true,
                },
            }
        }
        // Handled by the event loop.
        Action::Editor
        | Action::MarkRead(_)
        | Action::GroupRead
        | Action::RefreshGroup(_)
        | Action::Reload
        | Action::Repaint
        | Action::Invites => said(None, Vec::new()),
    }
}

async fn run_command(c: &ChatClient, cmd: Command, open: ConvId) -> Result<Outcome, String> {
    let err = |e: xirtam_chat::client::ClientError| e.to_string();
    let group_out = |info| Outcome::Group { info, open: false };
    Ok(match cmd {
        Command::Accept(who) => {
            let who = match (who, &open) {
                (Some(w), _) => w,
                (None, ConvId::Direct(p)) => p.clone(),
                _ => return Err("usage: /accept @user (or open their request)".into()),
            };
            c.accept(&who).await.map_err(err)?;
            Outcome::Accepted(who)
        }
        Command::Whois(user) => {
            let v = c.whois(&user).await.map_err(err)?;
            let l = v.lookup();
            let mut lines = vec![
                format!(
                    "{user} is on {} (record verified at height {}, {} confirmation(s), from {})",
                    v.record().server,
                    l.height(),
                    l.confirmations(),
                    l.source()
                ),
                format!("key fingerprint {}", v.fingerprint()),
            ];
            for d in &v.record().devices {
                lines.push(format!("device {}", d.sign));
            }
            said(None, lines)
        }
        Command::Move(server) => {
            let v = c.move_to(&server).await.map_err(err)?;
            let _ = v;
            Outcome::Server(server)
        }
        Command::Register(name, server) => {
            let v = c.register(&name, &server).await.map_err(err)?;
            said(
                Some(ConvId::Notices),
                vec![format!(
                    "{name} registered on {server} (record verified at height {}); restart the client to use it",
                    v.lookup().height()
                )],
            )
        }
        Command::Devices => {
            let me = c.device().sign;
            let lines = c
                .devices()
                .await
                .map_err(err)?
                .into_iter()
                .map(|d| {
                    let this = if d.sign == me { " (this device)" } else { "" };
                    format!("device {}{this}", d.sign)
                })
                .collect();
            said(None, lines)
        }
        Command::Approve(code) => {
            let a = c
                .approve(&code, Duration::from_secs(30 * 86_400))
                .await
                .map_err(err)?;
            said(
                None,
                vec![format!(
                    "device {} added; sent it {} message(s) of history",
                    a.device.sign, a.messages
                )],
            )
        }
        Command::RemoveDevice(key) => {
            let key = xirtam_proofs::PublicKey::from_hex(key.trim()).map_err(|_| {
                format!("{key:?} is not a device key (64 hex digits, as /devices shows)")
            })?;
            c.remove_device(&key).await.map_err(err)?;
            said(None, vec![format!("device {key} removed")])
        }
        Command::Rejected => {
            let mut lines: Vec<String> = c
                .rejected()
                .map_err(err)?
                .into_iter()
                .map(|r| format!("rejected: {}", r.what))
                .collect();
            if lines.is_empty() {
                lines.push("no envelope was rejected".into());
            }
            said(None, lines)
        }
        Command::GroupCreate(name, server) => Outcome::Group {
            info: c.group_create(&name, server.as_ref()).await.map_err(err)?,
            open: true,
        },
        Command::Join(which) => {
            let g = match (which, &open) {
                (Some(s), _) => c.find_group(&s).map_err(err)?,
                (None, ConvId::Invite(g)) => *g,
                _ => {
                    return Err("open the invitation first (under requests), or /join GROUP".into());
                }
            };
            Outcome::Group {
                info: c.group_join(&g).await.map_err(err)?,
                open: true,
            }
        }
        Command::Invite(user) => group_out(
            c.group_invite(&group_of(&open)?, &user)
                .await
                .map_err(err)?,
        ),
        Command::Kick(user, ban) => group_out(
            c.group_remove(&group_of(&open)?, &user, ban)
                .await
                .map_err(err)?,
        ),
        Command::Admin(user, on) => group_out(
            c.group_admin(&group_of(&open)?, &user, on)
                .await
                .map_err(err)?,
        ),
        Command::Rename(name) => group_out(
            c.group_rename(&group_of(&open)?, &name)
                .await
                .map_err(err)?,
        ),
        Command::AdminsOnly(on) => group_out(
            c.group_settings(&group_of(&open)?, Some(on), None)
                .await
                .map_err(err)?,
        ),
        Command::History(on) => group_out(
            c.group_settings(&group_of(&open)?, None, Some(on))
                .await
                .map_err(err)?,
        ),
        Command::Rotate => group_out(c.group_rotate(&group_of(&open)?).await.map_err(err)?),
        Command::GroupMove(server) => group_out(
            c.group_move(&group_of(&open)?, &server)
                .await
                .map_err(err)?,
        ),
        Command::Leave => {
            let g = group_of(&open)?;
            c.group_leave(&g).await.map_err(err)?;
            Outcome::Left(g)
        }
        Command::Members => {
            let i = c.group(&group_of(&open)?).map_err(err)?;
            let names = |v: &[Name]| {
                v.iter()
                    .map(|n| n.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let mut lines = vec![
                format!("members {}", names(&i.members)),
                format!("admins {}", names(&i.admins)),
                format!(
                    "on {}, key epoch {}, log entry {}; {}; {}",
                    i.server,
                    i.epoch,
                    i.seq,
                    if i.admins_only {
                        "only admins post"
                    } else {
                        "everyone posts"
                    },
                    if i.history {
                        "new members read the current key's messages"
                    } else {
                        "new members read only what follows them"
                    }
                ),
            ];
            if let Some(f) = &i.forked {
                lines.push(format!("FORKED: {f}"));
            }
            said(None, lines)
        }
        // Handled by the model.
        Command::Msg(..) | Command::Help | Command::Quit => said(None, Vec::new()),
    })
}

/// Is standard output a terminal?
pub(crate) fn is_terminal() -> bool {
    crossterm::tty::IsTty::is_tty(&std::io::stdout())
}
