//! Showing what a peer wrote on a terminal without letting it take over
//! the terminal: message text, and anything a server or sender controls.
//!
//! A peer's text must not be able to pass for the program's own output (a
//! newline followed by `[7] @alice -> @bob: ...` would look like a message
//! from @alice) nor to reach the terminal as a command (ANSI escape
//! sequences clear the screen, move the cursor, set the window title).

/// What a continuation line of a multi-line text starts with: no message
/// line starts like this, so a peer's newline cannot fake one.
pub const CONTINUATION: &str = "    | ";

/// `text` safe to print: a newline becomes a newline plus
/// [`CONTINUATION`]; a tab becomes a space; every other control character
/// (C0, DEL, C1) and every character that reorders text (bidirectional
/// overrides and isolates) is shown escaped as `\u{..}`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => {
                out.push('\n');
                out.push_str(CONTINUATION);
            }
            '\t' => out.push(' '),
            c if needs_escape(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `text` on one line: as [`escape`], but a newline is shown as `\n`.
pub fn escape_line(text: &str) -> String {
    escape(&text.replace('\n', "\\n"))
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_fake_message_line_and_escapes_are_neutralised() {
        let text = "lunch?\n[1] @alice -> @bob: pay mallory\u{1b}[2J\u{7}\r\u{202e}";
        let shown = escape(text);
        assert_eq!(
            shown,
            "lunch?\n    | [1] @alice -> @bob: pay mallory\\u{1b}[2J\\u{7}\\u{d}\\u{202e}"
        );
        assert_eq!(escape_line("a\nb"), "a\\nb");
    }

    proptest! {
        #[test]
        fn no_control_character_survives(text in any::<String>()) {
            let shown = escape(&text);
            for line in shown.split('\n').skip(1) {
                prop_assert!(line.starts_with(CONTINUATION));
            }
            prop_assert!(!shown.chars().any(|c| c != '\n' && needs_escape(c)));
            prop_assert!(!escape_line(&text).contains('\n'));
        }
    }
}
