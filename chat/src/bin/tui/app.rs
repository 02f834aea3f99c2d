//! The terminal client's model: conversations, the open one, the composer,
//! and how each key, mouse action, client event and finished command
//! changes them. Nothing here does I/O: it returns [`Action`]s for the
//! event loop (`mod.rs`) to run, so that the screen never waits on the
//! network.

use std::collections::{HashMap, HashSet};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};
use xirtam_chat::client::groups::{GroupInfo, Invite};
use xirtam_chat::client::store::{GroupMsg, Message, Pending};
use xirtam_chat::client::{ClientEvent, gaps};
use xirtam_proofs::{Hash, Name};

use super::command::{self, Command};
use super::composer::Composer;

/// A conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ConvId {
    /// What the client reports: rejections, errors, moves, command output
    /// that belongs to no conversation.
    Notices,
    /// With one user.
    Direct(Name),
    /// A group this device is in.
    Group(Hash),
    /// An invitation to a group, not accepted yet.
    Invite(Hash),
}

/// Where an outgoing message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mark {
    /// From someone else.
    Incoming,
    /// Being stored (or, for a group, posted).
    Sending,
    /// Stored and queued; not acknowledged by a server yet.
    Queued,
    /// A server signed a receipt (for a group: accepted the post).
    Delivered,
    /// The last attempt failed; it is retried.
    Retrying(String),
    /// Not sent (refused before it was queued).
    Failed(String),
}

/// One line of a conversation: a message or a notice.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) time_ms: u64,
    pub(crate) body: Body,
}

#[derive(Debug, Clone)]
pub(crate) enum Body {
    Msg {
        /// Event id (zero while sending).
        id: Hash,
        /// Local sequence (direct) or position (group); the TUI's own
        /// number while sending.
        local: u64,
        from: Name,
        text: String,
        mark: Mark,
        /// The message it follows never arrived.
        missing_before: bool,
    },
    /// Said by the client, not a peer (still shown escaped: it may quote
    /// one).
    Notice { text: String, warn: bool },
}

/// A conversation as the list and the message pane show it.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    pub(crate) id: ConvId,
    pub(crate) items: Vec<Item>,
    pub(crate) unread: usize,
    /// A stranger's messages, or an invitation: listed apart until
    /// accepted.
    pub(crate) request: bool,
    pub(crate) last_ms: u64,
}

impl Conv {
    fn new(id: ConvId) -> Self {
        Conv {
            id,
            items: Vec::new(),
            unread: 0,
            request: false,
            last_ms: 0,
        }
    }

    /// The last message's text, for the list.
    pub(crate) fn preview(&self) -> Option<(&Name, &str)> {
        self.items.iter().rev().find_map(|i| match &i.body {
            Body::Msg {
                mark: Mark::Failed(_),
                ..
            }
            | Body::Notice { .. } => None,
            Body::Msg { from, text, .. } => Some((from, text.as_str())),
        })
    }

    /// Did we write in this conversation?
    fn has_ours(&self, me: Option<&Name>) -> bool {
        self.items
            .iter()
            .any(|i| matches!(&i.body, Body::Msg { from, .. } if Some(from) == me))
    }

    fn push(&mut self, item: Item) {
        self.last_ms = self.last_ms.max(item.time_ms);
        self.items.push(item);
    }

    fn msg_mut(&mut self, pred: impl Fn(&Hash, u64) -> bool) -> Option<&mut Body> {
        self.items
            .iter_mut()
            .rev()
            .map(|i| &mut i.body)
            .find(|b| matches!(b, Body::Msg { id, local, .. } if pred(id, *local)))
    }
}

/// The light client's state for the status line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Chain {
    pub(crate) height: u64,
    pub(crate) tip_age_secs: u64,
    pub(crate) sources_ok: usize,
    pub(crate) sources: usize,
    /// The verified tip is older than the light client accepts.
    pub(crate) stale: bool,
    /// The last sync failed: why.
    pub(crate) error: Option<String>,
}

/// Everything read from the store at start (or after a lag).
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) me: Option<Name>,
    pub(crate) server: Option<Name>,
    pub(crate) messages: Vec<Message>,
    pub(crate) outbox: Vec<Pending>,
    pub(crate) contacts: HashSet<Name>,
    /// Per peer: the id of the last message read.
    pub(crate) read: HashMap<Name, Hash>,
    pub(crate) groups: Vec<(GroupInfo, Vec<GroupMsg>)>,
    pub(crate) invites: Vec<(Name, Invite)>,
    /// Per group: the position of the last message read.
    pub(crate) group_read: HashMap<Hash, u64>,
}

/// Work for the event loop.
#[derive(Debug)]
pub(crate) enum Action {
    /// Store and queue a direct message (`pending`: its placeholder).
    Send {
        to: Name,
        text: String,
        pending: u64,
    },
    /// Post to a group.
    Post {
        group: Hash,
        text: String,
        pending: u64,
    },
    /// Run a command (`open`: the conversation it was typed in).
    Run(Command, ConvId),
    /// Look a user up and tell their fingerprint (after a move or a key
    /// change), in their conversation.
    Fingerprint(Name),
    /// Mark the conversation with a peer read (debounced).
    MarkRead(Name),
    /// Save how far groups were read ([`App::group_read`]).
    GroupRead,
    /// Re-read a group's state.
    RefreshGroup(Hash),
    /// Re-read everything (events were missed).
    Reload,
    /// Re-read the invitations waiting.
    Invites,
    /// Edit the composer's text in `$EDITOR`.
    Editor,
    /// Clear and redraw the whole screen (Ctrl-L).
    Repaint,
}

/// A finished [`Action`].
#[derive(Debug)]
pub(crate) enum Outcome {
    Queued {
        pending: u64,
        msg: Message,
    },
    Posted {
        pending: u64,
        group: Hash,
        result: Result<GroupMsg, String>,
    },
    NotSent {
        pending: u64,
        conv: ConvId,
        error: String,
    },
    /// Lines to show in a conversation (`None`: the open one).
    Said {
        conv: Option<ConvId>,
        lines: Vec<String>,
        warn: bool,
    },
    /// A group changed (created, joined, updated): its state, and
    /// whether to open it.
    Group {
        info: GroupInfo,
        open: bool,
    },
    /// Left a group.
    Left(Hash),
    /// A user was accepted as a contact.
    Accepted(Name),
    /// The account moved.
    Server(Name),
}

/// Screen areas of the last frame, for the mouse.
#[derive(Debug, Clone, Default)]
pub(crate) struct Areas {
    pub(crate) list: Rect,
    /// The conversation on each row of the list (row 0 = `list.y + 1`).
    pub(crate) rows: Vec<Option<ConvId>>,
    pub(crate) messages: Rect,
}

/// The model.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) me: Option<Name>,
    pub(crate) server: Option<Name>,
    pub(crate) convs: HashMap<ConvId, Conv>,
    pub(crate) open: ConvId,
    pub(crate) composer: Composer,
    /// Lines scrolled up from the bottom of the open conversation.
    pub(crate) scroll: usize,
    pub(crate) help: bool,
    /// Lines of help scrolled.
    pub(crate) help_scroll: usize,
    /// Items that arrived below while the open conversation was scrolled
    /// up.
    pub(crate) new_below: usize,
    /// A one-line message in the status line (the last outcome).
    pub(crate) flash: Option<(String, bool)>,
    pub(crate) chain: Chain,
    pub(crate) contacts: HashSet<Name>,
    pub(crate) groups: HashMap<Hash, GroupInfo>,
    pub(crate) invites: HashMap<Hash, (Name, Invite)>,
    pub(crate) group_read: HashMap<Hash, u64>,
    /// The background work stopped for good.
    pub(crate) stopped: Option<String>,
    pub(crate) areas: Areas,
    pub(crate) quit: bool,
    /// The flash as of the last tick, and for how many ticks it has shown.
    flash_seen: Option<(String, bool)>,
    flash_ticks: u32,
    next_pending: u64,
    seen_group_msgs: HashSet<Hash>,
}

/// Seconds a status message shows.
const FLASH_SECS: u32 = 15;

/// Shown while a command runs.
const WORKING: &str = "working...";

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl App {
    pub(crate) fn new(data: Loaded) -> Self {
        let mut app = App {
            me: None,
            server: None,
            convs: HashMap::new(),
            open: ConvId::Notices,
            composer: Composer::default(),
            scroll: 0,
            help: false,
            help_scroll: 0,
            new_below: 0,
            flash: None,
            chain: Chain::default(),
            contacts: HashSet::new(),
            groups: HashMap::new(),
            invites: HashMap::new(),
            group_read: HashMap::new(),
            stopped: None,
            areas: Areas::default(),
            quit: false,
            flash_seen: None,
            flash_ticks: 0,
            next_pending: 1,
            seen_group_msgs: HashSet::new(),
        };
        app.load(data);
        // Open the most recent conversation.
        if let Some(first) = app.ordered().into_iter().find(|c| *c != ConvId::Notices) {
            app.open = first;
        }
        app
    }

    /// Replace everything with what the store holds (the open
    /// conversation stays open if it still exists).
    pub(crate) fn load(&mut self, data: Loaded) {
        self.me = data.me;
        self.server = data.server;
        self.contacts = data.contacts;
        self.group_read = data.group_read;
        let notices = self.convs.remove(&ConvId::Notices);
        self.convs.clear();
        self.convs.insert(
            ConvId::Notices,
            notices.unwrap_or_else(|| Conv::new(ConvId::Notices)),
        );
        let failing: HashMap<u64, &Pending> = data
            .outbox
            .iter()
            .filter(|p| p.attempts > 0)
            .map(|p| (p.local, p))
            .collect();
        let missing = gaps(&data.messages);
        for m in &data.messages {
            let peer = self.peer_of(m);
            let mark = if Some(&m.from) != self.me.as_ref() {
                Mark::Incoming
            } else if m.delivered {
                Mark::Delivered
            } else if let Some(p) = failing.get(&m.local) {
                Mark::Retrying(p.last_error.clone())
            } else {
                Mark::Queued
            };
            let conv = self
                .convs
                .entry(ConvId::Direct(peer.clone()))
                .or_insert_with(|| Conv::new(ConvId::Direct(peer)));
            conv.push(Item {
                time_ms: m.time_ms,
                body: Body::Msg {
                    id: m.id,
                    local: m.local,
                    from: m.from.clone(),
                    text: m.text.clone(),
                    mark,
                    missing_before: missing.contains(&m.id),
                },
            });
        }
        // Unread: incoming messages after the last one read.
        for conv in self.convs.values_mut() {
            let ConvId::Direct(peer) = &conv.id else {
                continue;
            };
            let read = data.read.get(peer);
            let start = read
                .and_then(|r| {
                    conv.items
                        .iter()
                        .position(|i| matches!(&i.body, Body::Msg { id, .. } if id == r))
                })
                .map_or(0, |p| p + 1);
            conv.unread = conv.items[start..]
                .iter()
                .filter(|i| {
                    matches!(
                        &i.body,
                        Body::Msg {
                            mark: Mark::Incoming,
                            ..
                        }
                    )
                })
                .count();
            conv.request = !self.contacts.contains(peer) && !conv.has_ours(self.me.as_ref());
        }
        self.groups.clear();
        self.seen_group_msgs.clear();
        for (info, msgs) in data.groups {
            let g = info.group;
            let mut conv = Conv::new(ConvId::Group(g));
            let read = self.group_read.get(&g).copied().unwrap_or(0);
            for m in msgs {
                self.seen_group_msgs.insert(m.id);
                if m.local > read && Some(&m.from) != self.me.as_ref() {
                    conv.unread += 1;
                }
                conv.push(group_item(&m, self.me.as_ref()));
            }
            if let Some(f) = &info.forked {
                conv.push(notice(format!("this group is marked forked: {f}"), true));
            }
            self.convs.insert(ConvId::Group(g), conv);
            self.groups.insert(g, info);
        }
        self.invites.clear();
        for (from, inv) in data.invites {
            if self.groups.contains_key(&inv.group) {
                continue;
            }
            self.add_invite(from, inv);
        }
        if !self.convs.contains_key(&self.open) {
            self.open = ConvId::Notices;
        }
    }

    fn add_invite(&mut self, from: Name, inv: Invite) {
        let id = ConvId::Invite(inv.group);
        let mut conv = Conv::new(id.clone());
        conv.request = true;
        conv.unread = 1;
        conv.push(notice(
            format!(
                "{from} invites you to the group \"{}\" on {}: /join to accept",
                inv.name, inv.server
            ),
            false,
        ));
        self.convs.insert(id, conv);
        self.invites.insert(inv.group, (from, inv));
    }

    fn peer_of(&self, m: &Message) -> Name {
        if Some(&m.from) == self.me.as_ref() {
            m.to.clone()
        } else {
            m.from.clone()
        }
    }

    /// The conversations in list order: notices, then by last activity,
    /// then requests (strangers and invitations).
    pub(crate) fn ordered(&self) -> Vec<ConvId> {
        let mut rest: Vec<&Conv> = self
            .convs
            .values()
            .filter(|c| c.id != ConvId::Notices)
            .collect();
        rest.sort_by(|a, b| {
            (a.request, std::cmp::Reverse(a.last_ms), title_key(&a.id)).cmp(&(
                b.request,
                std::cmp::Reverse(b.last_ms),
                title_key(&b.id),
            ))
        });
        std::iter::once(ConvId::Notices)
            .chain(rest.into_iter().map(|c| c.id.clone()))
            .collect()
    }

    /// A conversation's title.
    pub(crate) fn title(&self, id: &ConvId) -> String {
        match id {
            ConvId::Notices => "notices".into(),
            ConvId::Direct(n) => n.to_string(),
            ConvId::Group(g) => self
                .groups
                .get(g)
                .map_or_else(|| short(g), |i| format!("# {}", i.name)),
            ConvId::Invite(g) => self
                .invites
                .get(g)
                .map_or_else(|| short(g), |(_, i)| format!("# {} (invite)", i.name)),
        }
    }

    pub(crate) fn open_conv(&self) -> Option<&Conv> {
        self.convs.get(&self.open)
    }

    fn say(&mut self, conv: Option<ConvId>, text: String, warn: bool) {
        let id = conv.unwrap_or_else(|| self.open.clone());
        let open = id == self.open;
        let conv = self
            .convs
            .entry(id.clone())
            .or_insert_with(|| Conv::new(id.clone()));
        conv.push(notice(text, warn));
        // Unread counts messages; a notice counts when it warns (a key
        // change, a fork) or is in the notices pane.
        if !open && (warn || conv.id == ConvId::Notices) {
            conv.unread += 1;
        }
        self.arrived(&id);
    }

    /// An item was added to conversation `id`: when that is the open one
    /// and the user has scrolled up, the text being read stays put and a
    /// marker counts what arrived below.
    fn arrived(&mut self, id: &ConvId) {
        if *id != self.open || self.scroll == 0 {
            return;
        }
        let width = usize::from(self.areas.messages.width.saturating_sub(2));
        if let Some(item) = self.convs.get(id).and_then(|c| c.items.last()) {
            self.scroll += super::view::item_height(item, self.me.as_ref(), width);
            self.new_below += 1;
        }
    }

    fn flash(&mut self, text: impl Into<String>, warn: bool) {
        self.flash = Some((text.into(), warn));
    }

    /// A second passed: a status message goes after 15 s (an error that
    /// has passed must not stay on screen).
    pub(crate) fn tick(&mut self) {
        if self.flash != self.flash_seen {
            self.flash_seen = self.flash.clone();
            self.flash_ticks = 0;
        } else if self.flash.is_some() {
            self.flash_ticks += 1;
            if self.flash_ticks >= FLASH_SECS {
                self.flash = None;
            }
        }
    }

    /// Open a conversation (creating an empty one with a user).
    pub(crate) fn select(&mut self, id: ConvId) -> Vec<Action> {
        self.convs
            .entry(id.clone())
            .or_insert_with(|| Conv::new(id.clone()));
        self.open = id;
        self.scroll = 0;
        self.new_below = 0;
        self.help = false;
        self.read_open()
    }

    /// The open conversation is on screen: it is read.
    fn read_open(&mut self) -> Vec<Action> {
        let Some(conv) = self.convs.get_mut(&self.open) else {
            return Vec::new();
        };
        if conv.unread == 0 {
            return Vec::new();
        }
        conv.unread = 0;
        match &self.open {
            ConvId::Direct(peer) => vec![Action::MarkRead(peer.clone())],
            ConvId::Group(g) => {
                let last = conv
                    .items
                    .iter()
                    .filter_map(|i| match &i.body {
                        Body::Msg { local, id, .. } if *id != Hash::ZERO => Some(*local),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0);
                self.group_read.insert(*g, last);
                vec![Action::GroupRead]
            }
            _ => Vec::new(),
        }
    }

    fn step(&mut self, by: isize) -> Vec<Action> {
        let order = self.ordered();
        let at = order.iter().position(|c| *c == self.open).unwrap_or(0) as isize;
        let n = order.len() as isize;
        let next = order[((at + by).rem_euclid(n)) as usize].clone();
        self.select(next)
    }

    /// A key was pressed.
    pub(crate) fn on_key(&mut self, k: KeyEvent) -> Vec<Action> {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let alt = k.modifiers.contains(KeyModifiers::ALT);
        if ctrl && matches!(k.code, KeyCode::Char('c' | 'q')) {
            self.quit = true;
            return Vec::new();
        }
        if self.help {
            // Arrows and pages scroll help; any other key closes it, and a
            // typed character is not lost.
            match k.code {
                KeyCode::Up => {
                    self.help_scroll = self.help_scroll.saturating_sub(1);
                    return Vec::new();
                }
                KeyCode::Down => {
                    self.help_scroll += 1;
                    return Vec::new();
                }
                KeyCode::PageUp => {
                    self.help_scroll = self.help_scroll.saturating_sub(10);
                    return Vec::new();
                }
                KeyCode::PageDown => {
                    self.help_scroll += 10;
                    return Vec::new();
                }
                _ => {}
            }
            self.help = false;
            self.help_scroll = 0;
            if !matches!(k.code, KeyCode::Char(_)) || ctrl || k.code == KeyCode::Char('?') {
                return Vec::new();
            }
        }
        match k.code {
            KeyCode::Char('e') if ctrl => vec![Action::Editor],
            KeyCode::Char('j') if ctrl => {
                self.composer.insert('\n');
                Vec::new()
            }
            KeyCode::Char('n') if ctrl => self.step(1),
            KeyCode::Char('p') if ctrl => self.step(-1),
            KeyCode::Char('w') if ctrl => {
                self.composer.delete_word();
                Vec::new()
            }
            KeyCode::Char('u') if ctrl => {
                self.composer.delete_to_line_start();
                Vec::new()
            }
            KeyCode::Char('a') if ctrl => {
                self.composer.home();
                Vec::new()
            }
            KeyCode::Char('l') if ctrl => vec![Action::Repaint],
            KeyCode::Char('?') if self.composer.is_empty() => {
                self.help = true;
                Vec::new()
            }
            KeyCode::Char(c) if !ctrl => {
                self.composer.insert(c);
                Vec::new()
            }
            KeyCode::Enter if alt => {
                self.composer.insert('\n');
                Vec::new()
            }
            KeyCode::Enter => self.submit(),
            KeyCode::Tab => self.step(1),
            KeyCode::BackTab => self.step(-1),
            KeyCode::Up if alt => self.step(-1),
            KeyCode::Down if alt => self.step(1),
            KeyCode::Up => {
                self.composer.vertical(true);
                Vec::new()
            }
            KeyCode::Down => {
                self.composer.vertical(false);
                Vec::new()
            }
            KeyCode::Left => {
                self.composer.left();
                Vec::new()
            }
            KeyCode::Right => {
                self.composer.right();
                Vec::new()
            }
            KeyCode::Home => {
                self.composer.home();
                Vec::new()
            }
            KeyCode::End => {
                self.composer.end();
                Vec::new()
            }
            KeyCode::Backspace => {
                self.composer.backspace();
                Vec::new()
            }
            KeyCode::Delete => {
                self.composer.delete();
                Vec::new()
            }
            KeyCode::PageUp => {
                self.scroll = self.scroll.saturating_add(10);
                Vec::new()
            }
            KeyCode::PageDown => {
                self.scroll = self.scroll.saturating_sub(10);
                Vec::new()
            }
            KeyCode::F(1) => {
                self.help = true;
                Vec::new()
            }
            KeyCode::Esc => {
                self.flash = None;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Text was pasted (bracketed paste: newlines stay in the composer).
    pub(crate) fn on_paste(&mut self, text: &str) {
        self.composer.insert_str(text);
    }

    /// The mouse: a click in the list opens a conversation; the wheel
    /// scrolls the messages.
    pub(crate) fn on_mouse(&mut self, m: MouseEvent) -> Vec<Action> {
        let at = Position::new(m.column, m.row);
        match m.kind {
            MouseEventKind::Down(_) if self.areas.list.contains(at) => {
                let row = usize::from(m.row.saturating_sub(self.areas.list.y + 1));
                if let Some(Some(id)) = self.areas.rows.get(row).cloned() {
                    return self.select(id);
                }
                Vec::new()
            }
            MouseEventKind::ScrollUp if self.areas.messages.contains(at) => {
                self.scroll = self.scroll.saturating_add(3);
                Vec::new()
            }
            MouseEventKind::ScrollDown if self.areas.messages.contains(at) => {
                self.scroll = self.scroll.saturating_sub(3);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn placeholder(&mut self, conv: ConvId, text: String) -> u64 {
        let pending = self.next_pending;
        self.next_pending += 1;
        let from = self.me.clone();
        let c = self
            .convs
            .entry(conv.clone())
            .or_insert_with(|| Conv::new(conv));
        if let Some(from) = from {
            c.push(Item {
                time_ms: now_ms(),
                body: Body::Msg {
                    id: Hash::ZERO,
                    local: pending,
                    from,
                    text,
                    mark: Mark::Sending,
                    missing_before: false,
                },
            });
        }
        pending
    }

    /// Enter: run the command, or send the text to the open conversation.
    fn submit(&mut self) -> Vec<Action> {
        let text = self.composer.text().trim_end().to_owned();
        if text.trim().is_empty() {
            return Vec::new();
        }
        if text.starts_with('/') && !text.starts_with("//") {
            return match command::parse(&text) {
                Ok(cmd) => {
                    self.composer.take();
                    self.command(cmd)
                }
                Err(e) => {
                    self.flash(e, true);
                    Vec::new()
                }
            };
        }
        // "//" sends a text that starts with "/".
        let text = match text.strip_prefix('/') {
            Some(t) if t.starts_with('/') => t.to_owned(),
            _ => text,
        };
        match self.open.clone() {
            ConvId::Direct(to) if self.open_conv().is_some_and(|c| c.request) => {
                self.flash(
                    format!("{to} is not a contact: /accept first (a reply would accept them)"),
                    true,
                );
                Vec::new()
            }
            ConvId::Direct(to) => {
                self.composer.take();
                self.scroll = 0;
                let pending = self.placeholder(ConvId::Direct(to.clone()), text.clone());
                vec![Action::Send { to, text, pending }]
            }
            ConvId::Group(group) => {
                self.composer.take();
                self.scroll = 0;
                let pending = self.placeholder(ConvId::Group(group), text.clone());
                vec![Action::Post {
                    group,
                    text,
                    pending,
                }]
            }
            ConvId::Invite(_) => {
                self.flash("accept the invitation first: /join", true);
                Vec::new()
            }
            ConvId::Notices => {
                self.flash("open a conversation first: /msg @user, or Tab", true);
                Vec::new()
            }
        }
    }

    fn command(&mut self, cmd: Command) -> Vec<Action> {
        match cmd {
            Command::Help => {
                self.help = true;
                Vec::new()
            }
            Command::Quit => {
                self.quit = true;
                Vec::new()
            }
            Command::Msg(to, text) => {
                let id = ConvId::Direct(to.clone());
                let mut actions = self.select(id.clone());
                if let Some(text) = text {
                    if self.open_conv().is_some_and(|c| c.request) {
                        self.composer.set(text);
                        self.flash(
                            format!(
                                "{to} is not a contact: /accept first (a reply would accept them)"
                            ),
                            true,
                        );
                        return actions;
                    }
                    let pending = self.placeholder(id, text.clone());
                    actions.push(Action::Send { to, text, pending });
                }
                actions
            }
            other => {
                self.flash(WORKING, false);
                vec![Action::Run(other, self.open.clone())]
            }
        }
    }

    /// What the client core reported.
    pub(crate) fn on_event(&mut self, e: ClientEvent) -> Vec<Action> {
        match e {
            ClientEvent::Message(m) | ClientEvent::Request(m) => self.message(m),
            ClientEvent::Delivered(d) => {
                if let Some(c) = self.convs.get_mut(&ConvId::Direct(d.to.clone()))
                    && let Some(Body::Msg { mark, .. }) =
                        c.msg_mut(|id, l| *id != Hash::ZERO && l == d.local)
                {
                    *mark = Mark::Delivered;
                }
                if !d.long_term.is_empty() {
                    self.say(
                        Some(ConvId::Direct(d.to.clone())),
                        format!(
                            "no forward secrecy for {} of {}'s devices: none of their medium-term keys was ever seen",
                            d.long_term.len(),
                            d.to
                        ),
                        true,
                    );
                }
                Vec::new()
            }
            ClientEvent::Retrying {
                local,
                to,
                attempts,
                error,
            } => {
                if let Some(c) = self.convs.get_mut(&ConvId::Direct(to))
                    && let Some(Body::Msg { mark, .. }) =
                        c.msg_mut(|id, l| *id != Hash::ZERO && l == local)
                {
                    *mark = Mark::Retrying(format!("attempt {attempts}: {error}"));
                }
                Vec::new()
            }
            ClientEvent::Missing { message, .. } => {
                for c in self.convs.values_mut() {
                    if let Some(Body::Msg { missing_before, .. }) =
                        c.msg_mut(|id, _| *id == message)
                    {
                        *missing_before = true;
                        break;
                    }
                }
                Vec::new()
            }
            ClientEvent::Moved { user, from, to } => {
                if Some(&user) == self.me.as_ref() {
                    self.server = Some(to.clone());
                    self.say(
                        Some(ConvId::Notices),
                        format!(
                            "your account moved from {from} to {to} (on another of your devices)"
                        ),
                        false,
                    );
                    return Vec::new();
                }
                self.say(
                    Some(ConvId::Direct(user.clone())),
                    format!("{user} moved from {from} to {to}"),
                    false,
                );
                vec![Action::Fingerprint(user)]
            }
            ClientEvent::Devices {
                user,
                added,
                removed,
            } => {
                let what = format!("{} device(s) added, {} removed", added.len(), removed.len());
                if Some(&user) == self.me.as_ref() {
                    self.say(
                        Some(ConvId::Notices),
                        format!("your devices changed: {what}"),
                        true,
                    );
                    return Vec::new();
                }
                self.say(
                    Some(ConvId::Direct(user.clone())),
                    format!("{user}'s keys changed: {what}"),
                    true,
                );
                vec![Action::Fingerprint(user)]
            }
            ClientEvent::Pass(p) => {
                self.say(
                    Some(ConvId::Direct(p.clone())),
                    format!("{p} accepted you as a contact"),
                    false,
                );
                Vec::new()
            }
            ClientEvent::Read { peer, id } => {
                if let Some(c) = self.convs.get_mut(&ConvId::Direct(peer)) {
                    let start = c
                        .items
                        .iter()
                        .position(|i| matches!(&i.body, Body::Msg { id: x, .. } if *x == id))
                        .map_or(0, |p| p + 1);
                    c.unread = c.items[start..]
                        .iter()
                        .filter(|i| {
                            matches!(
                                &i.body,
                                Body::Msg {
                                    mark: Mark::Incoming,
                                    ..
                                }
                            )
                        })
                        .count();
                }
                Vec::new()
            }
            ClientEvent::Rejected(w) => {
                self.say(Some(ConvId::Notices), format!("rejected: {w}"), true);
                Vec::new()
            }
            ClientEvent::Synced {
                part,
                parts,
                messages,
            } => {
                self.say(
                    Some(ConvId::Notices),
                    format!(
                        "history from another of your devices: part {} of {parts}, {messages} message(s)",
                        part + 1
                    ),
                    false,
                );
                vec![Action::Reload]
            }
            ClientEvent::Error(w) => {
                self.flash(w.clone(), true);
                Vec::new()
            }
            ClientEvent::Stopped(why) => {
                self.say(Some(ConvId::Notices), why.clone(), true);
                self.stopped = Some(why);
                Vec::new()
            }
            ClientEvent::Lagged(_) => vec![Action::Reload],
            ClientEvent::GroupMessage(m) => self.group_message(m),
            ClientEvent::GroupInvite { group, .. } => {
                // The invitation itself is in the store: re-read it.
                if self.groups.contains_key(&group) {
                    return Vec::new();
                }
                vec![Action::Invites]
            }
            ClientEvent::GroupChanged { group, change } => {
                self.say(Some(ConvId::Group(group)), change, false);
                vec![Action::RefreshGroup(group)]
            }
            ClientEvent::GroupForked { group, reason } => {
                self.say(
                    Some(ConvId::Group(group)),
                    format!("this group's server showed a log other members did not see: {reason}; consider /group move ~other"),
                    true,
                );
                vec![Action::RefreshGroup(group)]
            }
            _ => Vec::new(),
        }
    }

    fn message(&mut self, m: Message) -> Vec<Action> {
        let peer = self.peer_of(&m);
        let id = ConvId::Direct(peer.clone());
        let ours = Some(&m.from) == self.me.as_ref();
        let conv = self
            .convs
            .entry(id.clone())
            .or_insert_with(|| Conv::new(id.clone()));
        if conv.msg_mut(|x, _| *x == m.id).is_some() {
            return Vec::new();
        }
        if !ours {
            // A request until accepted: from someone not a contact, to
            // whom we never wrote (notices do not count).
            if m.request && !self.contacts.contains(&peer) && !conv.has_ours(self.me.as_ref()) {
                conv.request = true;
            }
            conv.unread += 1;
        }
        conv.push(Item {
            time_ms: m.time_ms,
            body: Body::Msg {
                id: m.id,
                local: m.local,
                from: m.from,
                text: m.text,
                mark: if ours {
                    if m.delivered {
                        Mark::Delivered
                    } else {
                        Mark::Queued
                    }
                } else {
                    Mark::Incoming
                },
                missing_before: false,
            },
        });
        self.arrived(&id);
        if self.open == id {
            return self.read_open();
        }
        Vec::new()
    }

    fn group_message(&mut self, m: GroupMsg) -> Vec<Action> {
        if !self.seen_group_msgs.insert(m.id) {
            return Vec::new();
        }
        let id = ConvId::Group(m.group);
        let ours = Some(&m.from) == self.me.as_ref();
        let conv = self
            .convs
            .entry(id.clone())
            .or_insert_with(|| Conv::new(id.clone()));
        if !ours {
            conv.unread += 1;
        }
        conv.push(group_item(&m, self.me.as_ref()));
        self.arrived(&id);
        if self.open == id {
            return self.read_open();
        }
        Vec::new()
    }

    /// A finished action.
    pub(crate) fn on_outcome(&mut self, o: Outcome) -> Vec<Action> {
        // The "working..." of a command ends with its outcome.
        if matches!(&self.flash, Some((f, false)) if f == WORKING) {
            self.flash = None;
        }
        match o {
            Outcome::Queued { pending, msg } => {
                let conv = ConvId::Direct(msg.to.clone());
                self.contacts.insert(msg.to.clone());
                if let Some(c) = self.convs.get_mut(&conv) {
                    c.request = false;
                    if let Some(b) = c.msg_mut(|id, l| *id == Hash::ZERO && l == pending) {
                        *b = Body::Msg {
                            id: msg.id,
                            local: msg.local,
                            from: msg.from,
                            text: msg.text,
                            // Delivery may have been reported already.
                            mark: if msg.delivered {
                                Mark::Delivered
                            } else {
                                Mark::Queued
                            },
                            missing_before: false,
                        };
                    }
                }
            }
            Outcome::Posted {
                pending,
                group,
                result,
            } => {
                if let Some(c) = self.convs.get_mut(&ConvId::Group(group))
                    && let Some(b) = c.msg_mut(|id, l| *id == Hash::ZERO && l == pending)
                {
                    match result {
                        Ok(m) => {
                            self.seen_group_msgs.insert(m.id);
                            *b = group_item(&m, self.me.as_ref()).body;
                        }
                        Err(e) => {
                            self.flash
                                .replace((format!("{e} (the text is back in the composer)"), true));
                            if let Body::Msg { mark, text, .. } = b {
                                if self.composer.is_empty() {
                                    self.composer.set(text.clone());
                                }
                                *mark = Mark::Failed(e);
                            }
                        }
                    }
                }
            }
            Outcome::NotSent {
                pending,
                conv,
                error,
            } => {
                self.flash(format!("{error} (the text is back in the composer)"), true);
                let mut lost = None;
                if let Some(c) = self.convs.get_mut(&conv)
                    && let Some(Body::Msg { mark, text, .. }) =
                        c.msg_mut(|id, l| *id == Hash::ZERO && l == pending)
                {
                    lost = Some(text.clone());
                    *mark = Mark::Failed(error);
                }
                // A conversation holding only this failure (a name that
                // does not exist) goes away.
                let only_failed = self.convs.get(&conv).is_some_and(|c| {
                    c.items.iter().all(|i| {
                        matches!(
                            &i.body,
                            Body::Msg {
                                mark: Mark::Failed(_),
                                ..
                            }
                        )
                    })
                });
                if let Some(text) = lost
                    && self.composer.is_empty()
                {
                    // Where the conversation went, the whole command comes
                    // back: Enter must not send the text somewhere else.
                    match (&conv, only_failed) {
                        (ConvId::Direct(to), true) => {
                            self.composer.set(format!("/msg {to} {text}"))
                        }
                        _ => self.composer.set(text),
                    }
                }
                if only_failed {
                    self.convs.remove(&conv);
                    if self.open == conv {
                        self.open = ConvId::Notices;
                    }
                }
            }
            Outcome::Said { conv, lines, warn } => {
                if let Some(first) = lines.first() {
                    self.flash(first.clone(), warn);
                }
                for l in lines {
                    self.say(conv.clone(), l, warn);
                }
            }
            Outcome::Group { info, open } => {
                let g = info.group;
                self.invites.remove(&g);
                self.convs.remove(&ConvId::Invite(g));
                self.groups.insert(g, info);
                self.convs
                    .entry(ConvId::Group(g))
                    .or_insert_with(|| Conv::new(ConvId::Group(g)));
                if open {
                    return self.select(ConvId::Group(g));
                }
                if self.open == ConvId::Invite(g) {
                    self.open = ConvId::Group(g);
                }
            }
            Outcome::Left(g) => {
                let title = self.title(&ConvId::Group(g));
                self.groups.remove(&g);
                self.convs.remove(&ConvId::Group(g));
                if self.open == ConvId::Group(g) {
                    self.open = ConvId::Notices;
                }
                self.flash(format!("left {title}"), false);
            }
            Outcome::Accepted(n) => {
                self.contacts.insert(n.clone());
                if let Some(c) = self.convs.get_mut(&ConvId::Direct(n.clone())) {
                    c.request = false;
                }
                self.flash(format!("{n} accepted: your answers reach them"), false);
            }
            Outcome::Server(s) => {
                self.flash(format!("now on {s}"), false);
                self.server = Some(s);
            }
        }
        Vec::new()
    }

    /// The open conversation is a request or an invitation: what accepts
    /// it.
    pub(crate) fn pending_request(&self) -> Option<&'static str> {
        match &self.open {
            ConvId::Invite(_) => Some("/join to accept this invitation"),
            ConvId::Direct(_) if self.open_conv().is_some_and(|c| c.request) => Some(
                "a request from someone you have not accepted: /accept to answer (replying needs it)",
            ),
            _ => None,
        }
    }

    /// The group state of a refreshed group.
    pub(crate) fn group_refreshed(&mut self, info: GroupInfo) {
        self.groups.insert(info.group, info);
    }

    /// The group of the open conversation (or a `ConvId::Invite`'s).
    pub(crate) fn add_group_invite(&mut self, from: Name, inv: Invite) {
        if !self.groups.contains_key(&inv.group) && !self.invites.contains_key(&inv.group) {
            self.add_invite(from, inv);
        }
    }
}

fn title_key(id: &ConvId) -> String {
    match id {
        ConvId::Notices => String::new(),
        ConvId::Direct(n) => n.to_string(),
        ConvId::Group(g) | ConvId::Invite(g) => g.to_hex(),
    }
}

pub(crate) fn short(h: &Hash) -> String {
    h.to_hex()[..12].to_string()
}

fn notice(text: String, warn: bool) -> Item {
    Item {
        time_ms: now_ms(),
        body: Body::Notice { text, warn },
    }
}

fn group_item(m: &GroupMsg, me: Option<&Name>) -> Item {
    Item {
        time_ms: m.time_ms,
        body: Body::Msg {
            id: m.id,
            local: m.local,
            from: m.from.clone(),
            text: m.text.clone(),
            mark: if Some(&m.from) == me {
                Mark::Delivered
            } else {
                Mark::Incoming
            },
            missing_before: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyEvent;
    use xirtam_chat::client::Delivery;

    /// A distinct id per text.
    fn h(text: &str) -> Hash {
        let mut b = [0u8; 32];
        for (i, c) in text.bytes().enumerate() {
            b[i % 32] ^= c.wrapping_add(i as u8);
        }
        b[31] = 1;
        Hash(b)
    }

    fn n(s: &str) -> Name {
        Name::new(s).expect("valid")
    }

    fn msg(local: u64, from: &str, to: &str, text: &str, request: bool) -> Message {
        Message {
            local,
            id: h(text),
            from: n(from),
            to: n(to),
            time_ms: local,
            after: Hash::ZERO,
            text: text.into(),
            delivered: from == "@alice",
            verified_at: 1,
            via: None,
            request,
        }
    }

    fn app(messages: Vec<Message>, contacts: &[&str]) -> App {
        App::new(Loaded {
            me: Some(n("@alice")),
            server: Some(n("~s1")),
            messages,
            contacts: contacts.iter().map(|c| n(c)).collect(),
            ..Loaded::default()
        })
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn type_line(a: &mut App, text: &str) -> Vec<Action> {
        for ch in text.chars() {
            a.on_key(key(KeyCode::Char(ch)));
        }
        a.on_key(key(KeyCode::Enter))
    }

    #[test]
    fn a_strangers_messages_stay_apart_until_accepted() {
        let mut a = app(
            vec![
                msg(1, "@bob", "@alice", "hi", false),
                msg(2, "@eve", "@alice", "buy now", true),
            ],
            &["@bob"],
        );
        let eve = ConvId::Direct(n("@eve"));
        assert_eq!(
            a.ordered(),
            vec![ConvId::Notices, ConvId::Direct(n("@bob")), eve.clone()]
        );
        assert!(a.convs[&eve].request);
        // A new message from a stranger is a request too, and opening it
        // does not accept it.
        a.on_event(ClientEvent::Request(msg(
            3, "@mallory", "@alice", "psst", true,
        )));
        let mallory = ConvId::Direct(n("@mallory"));
        a.select(mallory.clone());
        assert!(a.convs[&mallory].request);
        assert!(a.pending_request().is_some());
        a.on_outcome(Outcome::Accepted(n("@mallory")));
        assert!(!a.convs[&mallory].request);
        assert!(a.pending_request().is_none());
    }

    #[test]
    fn delivery_marks_follow_the_client_core() {
        let mut a = app(vec![msg(1, "@bob", "@alice", "hi", false)], &["@bob"]);
        assert_eq!(a.open, ConvId::Direct(n("@bob")));
        let actions = type_line(&mut a, "hello");
        let pending = match actions.as_slice() {
            [Action::Send { to, text, pending }] if *to == n("@bob") && text == "hello" => *pending,
            other => panic!("{other:?}"),
        };
        assert!(a.composer.is_empty(), "the composer clears at once");
        let mark = |a: &App| match &a.convs[&ConvId::Direct(n("@bob"))]
            .items
            .last()
            .expect("item")
            .body
        {
            Body::Msg { mark, .. } => mark.clone(),
            Body::Notice { .. } => panic!("a notice"),
        };
        assert_eq!(mark(&a), Mark::Sending);
        let mut queued = msg(7, "@alice", "@bob", "hello", false);
        queued.delivered = false;
        a.on_outcome(Outcome::Queued {
            pending,
            msg: queued,
        });
        assert_eq!(mark(&a), Mark::Queued);
        a.on_event(ClientEvent::Retrying {
            local: 7,
            to: n("@bob"),
            attempts: 1,
            error: "server down".into(),
        });
        assert!(matches!(mark(&a), Mark::Retrying(e) if e.contains("server down")));
        a.on_event(ClientEvent::Delivered(Delivery {
            local: 7,
            to: n("@bob"),
            server: n("~s1"),
            seq: 1,
            record_height: 1,
            server_height: 1,
            devices: 1,
            refused_keys: Vec::new(),
            long_term: Vec::new(),
        }));
        assert_eq!(mark(&a), Mark::Delivered);
        // Refused before it was queued: shown as not sent.
        let actions = type_line(&mut a, "again");
        let [Action::Send { pending, .. }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        a.on_outcome(Outcome::NotSent {
            pending: *pending,
            conv: ConvId::Direct(n("@bob")),
            error: "no such user".into(),
        });
        assert!(matches!(mark(&a), Mark::Failed(e) if e == "no such user"));
    }

    #[test]
    fn unread_counts_and_the_open_conversation() {
        let mut a = app(
            vec![
                msg(1, "@bob", "@alice", "one", false),
                msg(2, "@carol", "@alice", "two", false),
            ],
            &["@bob", "@carol"],
        );
        // Carol's is the latest: open, and read at once.
        assert_eq!(a.open, ConvId::Direct(n("@carol")));
        let actions = a.select(a.open.clone());
        assert!(matches!(actions.as_slice(), [Action::MarkRead(p)] if *p == n("@carol")));
        assert_eq!(a.convs[&ConvId::Direct(n("@bob"))].unread, 1);
        a.on_event(ClientEvent::Message(msg(
            3, "@bob", "@alice", "three", false,
        )));
        assert_eq!(a.convs[&ConvId::Direct(n("@bob"))].unread, 2);
        // A message in the open conversation is read as it arrives.
        let actions = a.on_event(ClientEvent::Message(msg(
            4, "@carol", "@alice", "four", false,
        )));
        assert!(matches!(actions.as_slice(), [Action::MarkRead(_)]));
        assert_eq!(a.convs[&ConvId::Direct(n("@carol"))].unread, 0);
        // The same message twice is shown once.
        a.on_event(ClientEvent::Message(msg(
            4, "@carol", "@alice", "four", false,
        )));
        assert_eq!(a.convs[&ConvId::Direct(n("@carol"))].items.len(), 2);
        // Another device read bob's conversation up to "three".
        a.on_event(ClientEvent::Read {
            peer: n("@bob"),
            id: h("three"),
        });
        assert_eq!(a.convs[&ConvId::Direct(n("@bob"))].unread, 0);
    }

    #[test]
    fn a_gap_is_marked_and_commands_need_their_context() {
        let mut a = app(vec![msg(1, "@bob", "@alice", "one", false)], &["@bob"]);
        a.on_event(ClientEvent::Missing {
            message: h("one"),
            after: h("zero"),
        });
        let conv = &a.convs[&ConvId::Direct(n("@bob"))];
        assert!(matches!(
            conv.items[0].body,
            Body::Msg {
                missing_before: true,
                ..
            }
        ));
        // Typing in the notices pane sends nothing.
        a.select(ConvId::Notices);
        assert!(type_line(&mut a, "hello?").is_empty());
        assert!(
            a.flash
                .as_ref()
                .is_some_and(|(f, _)| f.contains("open a conversation"))
        );
        a.composer.take();
        // A bad command says why and keeps the text to fix.
        assert!(type_line(&mut a, "/whois bob").is_empty());
        assert_eq!(a.composer.text(), "/whois bob");
        // `?` on an empty composer is help; in text it is a character.
        a.composer.take();
        a.on_key(key(KeyCode::Char('?')));
        assert!(a.help);
        a.on_key(key(KeyCode::Char('x')));
        assert!(!a.help);
        assert_eq!(a.composer.text(), "x");
        a.on_key(key(KeyCode::Char('?')));
        assert_eq!(a.composer.text(), "x?");
        // Ctrl-C quits even with help open.
        a.help = true;
        a.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert!(a.quit);
    }

    /// Review finding: a stranger's client sends a contact pass before its
    /// first message; the pass notice must not make it a conversation.
    #[test]
    fn a_stranger_who_sent_a_pass_first_is_still_a_request() {
        let mut a = app(vec![msg(1, "@bob", "@alice", "hi", false)], &["@bob"]);
        a.on_event(ClientEvent::Pass(n("@eve")));
        a.on_event(ClientEvent::Request(msg(2, "@eve", "@alice", "buy", true)));
        let eve = ConvId::Direct(n("@eve"));
        assert!(a.convs[&eve].request);
        assert_eq!(a.ordered().last(), Some(&eve));
        // Notices do not count as unread messages.
        assert_eq!(a.convs[&eve].unread, 1);
        // Enter in a request does not answer (and accept) it.
        a.select(eve.clone());
        assert!(type_line(&mut a, "oops").is_empty());
        assert_eq!(a.composer.text(), "oops");
        assert!(a.convs[&eve].request);
        // Nor does /msg with a text.
        a.composer.take();
        let actions = type_line(&mut a, "/msg @eve hello");
        assert!(
            !actions.iter().any(|x| matches!(x, Action::Send { .. })),
            "{actions:?}"
        );
        assert_eq!(a.composer.text(), "hello");
        assert!(a.convs[&eve].request);
        // An open request is read as messages arrive.
        a.on_event(ClientEvent::Request(msg(3, "@eve", "@alice", "more", true)));
        assert_eq!(a.convs[&eve].unread, 0);
    }

    /// Review findings: a failed send gives its text back, a conversation
    /// holding only a failure goes, and a delivery never marks a message
    /// still being stored (whose number is the client's own).
    #[test]
    fn failures_give_the_text_back_and_marks_match_stored_messages_only() {
        let mut a = app(vec![msg(1, "@bob", "@alice", "hi", false)], &["@bob"]);
        let actions = type_line(&mut a, "/msg @nobody hello there");
        let [Action::Send { pending, .. }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        a.on_outcome(Outcome::NotSent {
            pending: *pending,
            conv: ConvId::Direct(n("@nobody")),
            error: "@nobody is not registered".into(),
        });
        // The conversation is gone, so the whole command comes back (Enter
        // must not send the text to whatever is open now).
        assert_eq!(a.composer.text(), "/msg @nobody hello there");
        assert!(!a.convs.contains_key(&ConvId::Direct(n("@nobody"))));
        a.composer.take();
        a.select(ConvId::Direct(n("@bob")));
        let actions = type_line(&mut a, "pending");
        let [Action::Send { pending, .. }] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        a.on_event(ClientEvent::Delivered(Delivery {
            local: *pending,
            to: n("@bob"),
            server: n("~s1"),
            seq: 1,
            record_height: 1,
            server_height: 1,
            devices: 1,
            refused_keys: Vec::new(),
            long_term: Vec::new(),
        }));
        let last = &a.convs[&ConvId::Direct(n("@bob"))]
            .items
            .last()
            .expect("item")
            .body;
        assert!(
            matches!(
                last,
                Body::Msg {
                    mark: Mark::Sending,
                    ..
                }
            ),
            "{last:?}"
        );
    }

    #[test]
    fn a_status_message_goes_after_a_while() {
        let mut a = app(Vec::new(), &[]);
        a.on_event(ClientEvent::Error("server ~s1 is unreachable".into()));
        for _ in 0..FLASH_SECS {
            assert!(a.flash.is_some());
            a.tick();
        }
        a.tick();
        assert!(a.flash.is_none());
    }

    /// Review finding: a message arriving while the user reads further up
    /// must not move the text; a marker counts it.
    #[test]
    fn reading_further_up_is_not_moved_by_arrivals() {
        let mut a = app(vec![msg(1, "@bob", "@alice", "one", false)], &["@bob"]);
        a.areas.messages = Rect::new(0, 0, 60, 20);
        a.on_event(ClientEvent::Message(msg(2, "@bob", "@alice", "two", false)));
        assert_eq!((a.scroll, a.new_below), (0, 0), "at the bottom, it follows");
        a.scroll = 5;
        let long = "word ".repeat(40);
        a.on_event(ClientEvent::Message(msg(3, "@bob", "@alice", &long, false)));
        assert!(
            a.scroll > 5 + 2,
            "scrolled by the new item's lines: {}",
            a.scroll
        );
        assert_eq!(a.new_below, 1);
    }
}
