//! Drawing the model: the conversation list, the open conversation, the
//! composer, the status line and the help screen.
//!
//! Everything a peer or a server chose (message text, names of groups,
//! error messages quoting them) goes through [`safe`]: control characters
//! never reach the terminal, so a peer cannot move the cursor, clear the
//! screen, set the window title or fake a line of the program's own.

use chrono::TimeZone;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use unicode_width::UnicodeWidthChar;
use xirtam_chat::display;

use super::app::{App, Body, ConvId, Item, Mark};
use super::command::HELP;

/// Width of the conversation list.
const LIST_WIDTH: u16 = 30;
/// Most lines the composer grows to.
const COMPOSER_MAX: u16 = 8;

/// One line of a peer's text, safe for the terminal.
pub(crate) fn safe(text: &str) -> String {
    display::escape_line(text)
}

/// Cut `s` to `width` columns, with an ellipsis when cut.
fn fit(s: &str, width: usize) -> String {
    if s.chars().map(|c| c.width().unwrap_or(0)).sum::<usize>() <= width {
        return s.to_owned();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = c.width().unwrap_or(0);
        if w + cw + 1 > width {
            break;
        }
        out.push(c);
        w += cw;
    }
    out.push('…');
    out
}

/// Split `s` (one line, already safe) into pieces of at most `width`
/// columns, breaking after a space when there is one.
fn wrap(s: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    let mut line = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = c.width().unwrap_or(0);
        if w + cw > width {
            // Break after the last space, if that keeps some of the line.
            match line.rfind(' ') {
                Some(i) if i > 0 && i + 1 < line.len() => {
                    let rest = line.split_off(i + 1);
                    out.push(std::mem::take(&mut line));
                    w = rest.chars().map(|c| c.width().unwrap_or(0)).sum();
                    line = rest;
                }
                _ => {
                    out.push(std::mem::take(&mut line));
                    w = 0;
                }
            }
        }
        line.push(c);
        w += cw;
    }
    out.push(line);
    out
}

/// `HH:MM` today, `Mon 02 HH:MM` before.
fn time(ms: u64) -> String {
    let Some(t) = chrono::Local.timestamp_millis_opt(ms as i64).single() else {
        return "--:--".into();
    };
    if t.date_naive() == chrono::Local::now().date_naive() {
        t.format("%H:%M").to_string()
    } else {
        t.format("%b %d %H:%M").to_string()
    }
}

fn mark_text(mark: &Mark) -> Option<(String, Style)> {
    let dim = Style::default().fg(Color::DarkGray);
    let warn = Style::default().fg(Color::Red);
    Some(match mark {
        Mark::Incoming => return None,
        Mark::Sending => (" (sending)".into(), dim),
        Mark::Queued => (" (queued)".into(), dim),
        Mark::Delivered => (" ✓".into(), Style::default().fg(Color::Green)),
        Mark::Retrying(e) => (format!(" (failed, retrying: {})", safe(e)), warn),
        Mark::Failed(e) => (format!(" (not sent: {})", safe(e)), warn),
    })
}

/// How many lines an item takes at `width` columns.
pub(crate) fn item_height(item: &Item, me: Option<&xirtam_proofs::Name>, width: usize) -> usize {
    item_lines(item, me, width).len()
}

/// The display lines of one item at `width` columns.
fn item_lines(item: &Item, me: Option<&xirtam_proofs::Name>, width: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let stamp = format!("{} ", time(item.time_ms));
    let indent = " ".repeat(stamp.chars().count());
    match &item.body {
        Body::Notice { text, warn } => {
            let style = if *warn {
                Style::default().fg(Color::Yellow)
            } else {
                Style::default().fg(Color::Cyan)
            };
            let text = format!("* {}", safe(text));
            for (i, piece) in wrap(&text, width.saturating_sub(stamp.len()))
                .into_iter()
                .enumerate()
            {
                let lead = if i == 0 {
                    stamp.clone()
                } else {
                    indent.clone()
                };
                lines.push(Line::from(vec![
                    Span::styled(lead, Style::default().fg(Color::DarkGray)),
                    Span::styled(piece, style),
                ]));
            }
        }
        Body::Msg {
            from,
            text,
            mark,
            missing_before,
            ..
        } => {
            if *missing_before {
                lines.push(Line::styled(
                    format!(
                        "{indent}! a message is missing here: the one this follows never arrived"
                    ),
                    Style::default().fg(Color::Yellow),
                ));
            }
            let who = format!("{from}: ");
            let own = Some(from) == me;
            let who_style = if own {
                Style::default()
                    .fg(Color::Blue)
                    .add_modifier(Modifier::BOLD)
            } else {
                Style::default()
                    .fg(Color::Magenta)
                    .add_modifier(Modifier::BOLD)
            };
            let body_width = width.saturating_sub(stamp.len()).max(8);
            let mut pieces: Vec<String> = Vec::new();
            for (i, raw) in text.split('\n').enumerate() {
                let line = safe(raw);
                let first = if i == 0 { format!("{who}{line}") } else { line };
                pieces.extend(wrap(&first, body_width));
            }
            // The mark goes after the text, or on lines of its own when it
            // does not fit (a long error must stay readable).
            let mark = mark_text(mark);
            let mut mark_lines = Vec::new();
            let last_width: usize = pieces
                .last()
                .map_or(0, |p| p.chars().map(|c| c.width().unwrap_or(0)).sum());
            let mut inline_mark = None;
            if let Some((m, style)) = mark {
                if last_width + m.chars().count() <= body_width {
                    inline_mark = Some((m, style));
                } else {
                    mark_lines = wrap(m.trim_start(), body_width)
                        .into_iter()
                        .map(|l| {
                            Line::from(vec![Span::raw(indent.clone()), Span::styled(l, style)])
                        })
                        .collect();
                }
            }
            let last = pieces.len() - 1;
            for (i, piece) in pieces.into_iter().enumerate() {
                let lead = if i == 0 {
                    stamp.clone()
                } else {
                    indent.clone()
                };
                let mut spans = vec![Span::styled(lead, Style::default().fg(Color::DarkGray))];
                if i == 0 && piece.starts_with(&who) {
                    spans.push(Span::styled(who.clone(), who_style));
                    spans.push(Span::raw(piece[who.len()..].to_owned()));
                } else {
                    spans.push(Span::raw(piece));
                }
                if i == last
                    && let Some((m, style)) = inline_mark.take()
                {
                    spans.push(Span::styled(m, style));
                }
                lines.push(Line::from(spans));
            }
            lines.extend(mark_lines);
        }
    }
    lines
}

/// Draw everything.
pub(crate) fn draw(f: &mut Frame<'_>, app: &mut App) {
    let area = f.area();
    let (composer_lines, cursor) = app.composer.layout(area.width.saturating_sub(2));
    let composer_height = (composer_lines.len() as u16).clamp(1, COMPOSER_MAX) + 2;
    let [main, composer_area, status] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(composer_height),
        Constraint::Length(1),
    ])
    .areas(area);
    let list_width = LIST_WIDTH.min(main.width / 3);
    let [list, messages] =
        Layout::horizontal([Constraint::Length(list_width), Constraint::Min(10)]).areas(main);
    draw_list(f, app, list);
    draw_messages(f, app, messages);
    draw_composer(f, app, composer_area, &composer_lines, cursor);
    draw_status(f, app, status);
    if app.help {
        draw_help(f, area, &mut app.help_scroll);
    }
}

fn draw_list(f: &mut Frame<'_>, app: &mut App, area: Rect) {
    let inner_width = usize::from(area.width.saturating_sub(2));
    let mut lines = Vec::new();
    let mut rows = Vec::new();
    let mut requests = false;
    for id in app.ordered() {
        let Some(conv) = app.convs.get(&id) else {
            continue;
        };
        if conv.request && !requests {
            requests = true;
            lines.push(Line::styled(
                "── requests ──",
                Style::default().fg(Color::Yellow),
            ));
            rows.push(None);
        }
        let selected = id == app.open;
        let unread = if conv.unread > 0 {
            format!(" {}", conv.unread)
        } else {
            String::new()
        };
        let title = fit(
            &safe(&app.title(&id)),
            inner_width.saturating_sub(unread.len() + 1),
        );
        let pad = inner_width.saturating_sub(
            title.chars().map(|c| c.width().unwrap_or(0)).sum::<usize>() + unread.len(),
        );
        let mut style = Style::default();
        if selected {
            style = style.bg(Color::DarkGray).add_modifier(Modifier::BOLD);
        } else if conv.unread > 0 {
            style = style.add_modifier(Modifier::BOLD);
        }
        lines.push(Line::from(vec![
            Span::styled(format!("{title}{}", " ".repeat(pad)), style),
            Span::styled(unread, style.fg(Color::Green)),
        ]));
        rows.push(Some(id.clone()));
        if id != ConvId::Notices {
            let preview = conv
                .preview()
                .map(|(from, text)| format!("  {from}: {}", safe(text)))
                .unwrap_or_default();
            lines.push(Line::styled(
                fit(&preview, inner_width),
                Style::default().fg(Color::DarkGray),
            ));
            rows.push(Some(id.clone()));
        }
    }
    // Keep the open conversation in view.
    let height = usize::from(area.height.saturating_sub(2));
    let at = rows
        .iter()
        .position(|r| r.as_ref() == Some(&app.open))
        .unwrap_or(0);
    let skip = (at + 2).saturating_sub(height);
    let lines: Vec<Line<'_>> = lines.into_iter().skip(skip).collect();
    app.areas.list = area;
    app.areas.rows = rows.into_iter().skip(skip).collect();
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" conversations "),
        ),
        area,
    );
}

fn conv_title(app: &App) -> String {
    let base = safe(&app.title(&app.open));
    match &app.open {
        ConvId::Group(g) => match app.groups.get(g) {
            Some(i) => {
                let mut t = format!(
                    "{base} · {} member(s) · on {} · key epoch {}",
                    i.members.len(),
                    i.server,
                    i.epoch
                );
                if i.forked.is_some() {
                    t.push_str(" · FORKED");
                }
                t
            }
            None => base,
        },
        ConvId::Direct(n) if !app.contacts.contains(n) => format!("{base} (not a contact)"),
        _ => base,
    }
}

fn draw_messages(f: &mut Frame<'_>, app: &mut App, area: Rect) {
    app.areas.messages = area;
    let mut block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" {} ", conv_title(app)));
    if app.new_below > 0 {
        block = block.title_bottom(
            Line::styled(
                format!(" ↓ {} new below (PgDn) ", app.new_below),
                Style::default().fg(Color::Black).bg(Color::Yellow),
            )
            .right_aligned(),
        );
    }
    let inner = block.inner(area);
    f.render_widget(block, area);
    let width = usize::from(inner.width);
    let height = usize::from(inner.height);
    let mut tail: Vec<Line<'static>> = Vec::new();
    if let Some(hint) = app.pending_request() {
        tail.push(Line::styled(
            hint.to_string(),
            Style::default()
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        ));
    }
    // Lines from the bottom up, only as many as the screen shows: a
    // conversation of 10,000 messages costs what a screenful does.
    let want = height + app.scroll;
    let mut rev: Vec<Line<'static>> = tail.into_iter().rev().collect();
    if let Some(conv) = app.open_conv() {
        for item in conv.items.iter().rev() {
            if rev.len() >= want {
                break;
            }
            rev.extend(item_lines(item, app.me.as_ref(), width).into_iter().rev());
        }
    }
    let max_scroll = rev.len().saturating_sub(height);
    if app.scroll > max_scroll {
        app.scroll = max_scroll;
    }
    if app.scroll == 0 {
        app.new_below = 0;
    }
    let lines: Vec<Line<'static>> = rev
        .into_iter()
        .skip(app.scroll)
        .take(height)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    // Bottom-aligned.
    let pad = height.saturating_sub(lines.len());
    let mut all = vec![Line::raw(""); pad];
    all.extend(lines);
    f.render_widget(Paragraph::new(all), inner);
}

fn draw_composer(f: &mut Frame<'_>, app: &App, area: Rect, lines: &[String], cursor: (u16, u16)) {
    let to = match &app.open {
        ConvId::Direct(n) => format!("message to {n}"),
        ConvId::Group(_) => format!("message to {}", safe(&app.title(&app.open))),
        _ => "command".into(),
    };
    let block = Block::default().borders(Borders::ALL).title(format!(
        " {to} · Enter send · Alt-Enter new line · Ctrl-E editor · ? help "
    ));
    let inner = block.inner(area);
    let visible = usize::from(inner.height);
    let first = usize::from(cursor.0).saturating_sub(visible.saturating_sub(1));
    let shown: Vec<Line<'_>> = lines
        .iter()
        .skip(first)
        .take(visible)
        .map(|l| Line::raw(l.as_str()))
        .collect();
    f.render_widget(Paragraph::new(shown).block(block), area);
    f.set_cursor_position((
        inner.x + cursor.1.min(inner.width.saturating_sub(1)),
        inner.y + (cursor.0 - first as u16),
    ));
}

fn draw_status(f: &mut Frame<'_>, app: &App, area: Rect) {
    let c = &app.chain;
    let me = match (&app.me, &app.server) {
        (Some(me), Some(s)) => format!("{me} on {s}"),
        (Some(me), None) => me.to_string(),
        _ => "not registered (/register @name ~server)".into(),
    };
    let mut spans = vec![
        Span::styled(
            format!(" {me} "),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "│ verified height {} ({} ago) │ nodes {}/{} ",
            c.height,
            age(c.tip_age_secs),
            c.sources_ok,
            c.sources
        )),
    ];
    if c.stale {
        spans.push(Span::styled(
            "│ STALE: no recent block verified; names may be out of date ",
            Style::default().fg(Color::White).bg(Color::Red),
        ));
    }
    if let Some(e) = &c.error {
        spans.push(Span::styled(
            format!("│ sync: {} ", safe(e)),
            Style::default().fg(Color::Yellow),
        ));
    }
    if let Some(why) = &app.stopped {
        spans.push(Span::styled(
            format!("│ STOPPED: {} ", safe(why)),
            Style::default().fg(Color::White).bg(Color::Red),
        ));
    }
    if let Some((text, warn)) = &app.flash {
        let style = if *warn {
            Style::default().fg(Color::Yellow)
        } else {
            Style::default().fg(Color::Green)
        };
        spans.push(Span::styled(format!("│ {}", safe(text)), style));
    }
    f.render_widget(
        Paragraph::new(Line::from(spans)).style(Style::default().bg(Color::Black)),
        area,
    );
}

fn age(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        _ => format!("{} h", secs / 3600),
    }
}

const KEYS: &[(&str, &str)] = &[
    ("Enter", "send the text, or run the /command"),
    ("Alt-Enter, Ctrl-J", "new line"),
    ("Ctrl-E", "write in $EDITOR"),
    (
        "Tab, Shift-Tab",
        "next, previous conversation (also Ctrl-N/P, Alt-↑/↓)",
    ),
    ("PgUp, PgDn, wheel", "scroll the conversation"),
    ("click", "open a conversation"),
    ("//text", "send a text starting with /"),
    ("Ctrl-C, Ctrl-Q", "quit"),
];

fn draw_help(f: &mut Frame<'_>, area: Rect, scroll: &mut usize) {
    let width = area.width.saturating_sub(2).min(100);
    let height = area.height.min((KEYS.len() + HELP.len() + 5) as u16);
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    let mut lines = vec![Line::styled(
        "keys",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    for (k, what) in KEYS {
        lines.push(Line::from(vec![
            Span::styled(format!("  {k:<30}"), Style::default().fg(Color::Cyan)),
            Span::raw(*what),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        "commands",
        Style::default().add_modifier(Modifier::BOLD),
    ));
    for (c, what) in HELP {
        lines.push(Line::from(vec![
            Span::styled(format!("  {c:<30}"), Style::default().fg(Color::Cyan)),
            Span::raw(*what),
        ]));
    }
    // Scrolled with the arrows and pages when it does not fit.
    let visible = usize::from(height.saturating_sub(2));
    *scroll = (*scroll).min(lines.len().saturating_sub(visible));
    let title = if lines.len() > visible {
        " help · ↑ ↓ PgUp PgDn scroll · any other key closes "
    } else {
        " help · any key closes "
    };
    let lines: Vec<Line<'_>> = lines.into_iter().skip(*scroll).collect();
    f.render_widget(Clear, popup);
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
        popup,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_cannot_reach_the_terminal_as_control_characters() {
        let shown = safe("hi\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{202e}");
        assert!(!shown.chars().any(|c| c.is_control()), "{shown:?}");
        assert!(shown.contains("\\u{1b}"));
    }

    #[test]
    fn a_screen_of_hostile_text_holds_no_control_character() {
        use super::super::app::{App, Loaded};
        use ratatui::backend::TestBackend;
        use xirtam_chat::client::store::Message;
        use xirtam_proofs::{Hash, Name};
        let n = |s: &str| Name::new(s).expect("valid");
        let evil = "a\u{1b}[2J\u{1b}]0;title\u{7}\nb\r\u{9b}31m\u{202e}c\t\u{0}";
        let messages = (1..=10_000u64)
            .map(|i| Message {
                local: i,
                id: Hash([(i % 251) as u8 + 1; 32]),
                from: n("@eve"),
                to: n("@alice"),
                time_ms: i,
                after: Hash::ZERO,
                text: evil.into(),
                delivered: false,
                verified_at: 1,
                via: None,
                request: true,
            })
            .collect();
        let mut app = App::new(Loaded {
            me: Some(n("@alice")),
            messages,
            ..Loaded::default()
        });
        app.composer.set("typed\u{1b}[2J".into());
        let mut term = ratatui::Terminal::new(TestBackend::new(100, 30)).expect("terminal");
        term.draw(|f| draw(f, &mut app)).expect("draw");
        let buf = term.backend().buffer();
        let text: String = buf.content().iter().map(|c| c.symbol()).collect();
        assert!(!text.chars().any(|c| c.is_control()), "{text:?}");
        assert!(text.contains("\\u{1b}[2J"), "the escape is shown as text");
        assert!(text.contains("requests"), "a stranger is listed apart");
    }

    #[test]
    fn help_scrolls_to_every_command_on_a_small_terminal() {
        use super::super::app::{App, Loaded};
        use ratatui::backend::TestBackend;
        let screen = |app: &mut App| {
            let mut term = ratatui::Terminal::new(TestBackend::new(80, 24)).expect("terminal");
            term.draw(|f| draw(f, app)).expect("draw");
            term.backend()
                .buffer()
                .content()
                .iter()
                .map(|c| c.symbol())
                .collect::<String>()
        };
        let mut app = App::new(Loaded::default());
        app.help = true;
        let top = screen(&mut app);
        assert!(top.contains("scroll") && !top.contains("/quit"), "{top}");
        app.help_scroll = 1000;
        let bottom = screen(&mut app);
        assert!(bottom.contains("/quit, Ctrl-C"), "{bottom}");
        assert!(app.help_scroll < 1000, "clamped to the end");
    }

    #[test]
    fn wrapping_breaks_at_spaces_and_fits() {
        assert_eq!(wrap("hello big world", 9), vec!["hello ", "big world"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(fit("a long title", 6), "a lon…");
        assert_eq!(fit("short", 6), "short");
    }
}
