//! The composer: a multi-line text being written, and a cursor in it.

use unicode_width::UnicodeWidthChar;

/// Text and a cursor (a byte offset on a character boundary).
#[derive(Debug, Default, Clone)]
pub(crate) struct Composer {
    text: String,
    cursor: usize,
}

impl Composer {
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Take the text out, leaving the composer empty.
    pub(crate) fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }

    /// Replace the text; the cursor goes to its end.
    pub(crate) fn set(&mut self, text: String) {
        self.cursor = text.len();
        self.text = text;
    }

    pub(crate) fn insert(&mut self, c: char) {
        self.text.insert(self.cursor, c);
        self.cursor += c.len_utf8();
    }

    pub(crate) fn insert_str(&mut self, s: &str) {
        // Pasted text: line ends (CR, LF, CR LF: terminals send CR)
        // become newlines, other control characters (escape sequences) are
        // dropped.
        let s = s.replace("\r\n", "\n").replace('\r', "\n");
        for c in s.chars() {
            match c {
                '\n' | '\t' => self.insert(c),
                c if c.is_control() => {}
                c => self.insert(c),
            }
        }
    }

    fn prev_boundary(&self) -> Option<usize> {
        self.text[..self.cursor]
            .char_indices()
            .last()
            .map(|(i, _)| i)
    }

    fn next_boundary(&self) -> Option<usize> {
        self.text[self.cursor..]
            .chars()
            .next()
            .map(|c| self.cursor + c.len_utf8())
    }

    pub(crate) fn backspace(&mut self) {
        if let Some(i) = self.prev_boundary() {
            self.text.replace_range(i..self.cursor, "");
            self.cursor = i;
        }
    }

    pub(crate) fn delete(&mut self) {
        if let Some(j) = self.next_boundary() {
            self.text.replace_range(self.cursor..j, "");
        }
    }

    pub(crate) fn left(&mut self) {
        if let Some(i) = self.prev_boundary() {
            self.cursor = i;
        }
    }

    pub(crate) fn right(&mut self) {
        if let Some(j) = self.next_boundary() {
            self.cursor = j;
        }
    }

    fn line_start(&self) -> usize {
        self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1)
    }

    fn line_end(&self) -> usize {
        self.text[self.cursor..]
            .find('\n')
            .map_or(self.text.len(), |i| self.cursor + i)
    }

    pub(crate) fn home(&mut self) {
        self.cursor = self.line_start();
    }

    pub(crate) fn end(&mut self) {
        self.cursor = self.line_end();
    }

    /// Move to the line above (`up`) or below, at the same column as far
    /// as that line reaches. False when there is no such line.
    pub(crate) fn vertical(&mut self, up: bool) -> bool {
        let start = self.line_start();
        let column = self.text[start..self.cursor].chars().count();
        let target_start = if up {
            if start == 0 {
                return false;
            }
            self.text[..start - 1].rfind('\n').map_or(0, |i| i + 1)
        } else {
            let end = self.line_end();
            if end == self.text.len() {
                return false;
            }
            end + 1
        };
        let line_end = self.text[target_start..]
            .find('\n')
            .map_or(self.text.len(), |i| target_start + i);
        self.cursor = self.text[target_start..line_end]
            .char_indices()
            .nth(column)
            .map_or(line_end, |(i, _)| target_start + i);
        true
    }

    /// Delete the word before the cursor (Ctrl-W).
    pub(crate) fn delete_word(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end_matches(' ');
        let start = trimmed.rfind([' ', '\n']).map_or(0, |i| i + 1);
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Delete from the start of the line to the cursor (Ctrl-U).
    pub(crate) fn delete_to_line_start(&mut self) {
        let start = self.line_start();
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// The text as display lines of at most `width` columns (wrapped at
    /// character boundaries), and the cursor's `(row, column)` in them.
    /// Control characters are shown as `?` (the user's own text, but the
    /// terminal must never receive one).
    pub(crate) fn layout(&self, width: u16) -> (Vec<String>, (u16, u16)) {
        let width = usize::from(width.max(2));
        let mut lines = vec![String::new()];
        let mut col = 0usize;
        let mut cursor = (0u16, 0u16);
        for (i, c) in self.text.char_indices() {
            if i == self.cursor {
                cursor = ((lines.len() - 1) as u16, col as u16);
            }
            if c == '\n' {
                lines.push(String::new());
                col = 0;
                continue;
            }
            let c = if c.is_control() { '?' } else { c };
            let w = c.width().unwrap_or(0);
            if col + w > width {
                lines.push(String::new());
                col = 0;
                if i == self.cursor {
                    cursor = ((lines.len() - 1) as u16, 0);
                }
            }
            if let Some(l) = lines.last_mut() {
                l.push(c);
            }
            col += w;
        }
        if self.cursor == self.text.len() {
            if col >= width {
                lines.push(String::new());
                col = 0;
            }
            cursor = ((lines.len() - 1) as u16, col as u16);
        }
        (lines, cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(s: &str) -> Composer {
        let mut c = Composer::default();
        for ch in s.chars() {
            c.insert(ch);
        }
        c
    }

    #[test]
    fn editing_keeps_the_cursor_on_character_boundaries() {
        let mut c = typed("héllo wörld");
        c.backspace();
        assert_eq!(c.text(), "héllo wörl");
        c.home();
        c.right();
        c.right();
        c.backspace();
        assert_eq!(c.text(), "hllo wörl");
        c.delete();
        assert_eq!(c.text(), "hlo wörl");
        c.end();
        c.delete_word();
        assert_eq!(c.text(), "hlo ");
        c.delete_to_line_start();
        assert!(c.is_empty());
    }

    #[test]
    fn multi_line_movement_and_layout() {
        let mut c = typed("first line\nsecond");
        assert!(c.vertical(true));
        // Column 6 of the first line.
        c.insert('!');
        assert_eq!(c.text(), "first !line\nsecond");
        assert!(c.vertical(false));
        assert!(!c.vertical(false));
        let (lines, cursor) = c.layout(6);
        assert_eq!(lines, vec!["first ", "!line", "second", ""]);
        assert_eq!(cursor, (3, 0));
        assert_eq!(c.take(), "first !line\nsecond");
        assert_eq!(c.layout(10), (vec![String::new()], (0, 0)));
    }

    #[test]
    fn pasted_escapes_are_dropped() {
        let mut c = Composer::default();
        c.insert_str("a\u{1b}[2Jb\r\nc\rd");
        assert_eq!(c.text(), "a[2Jb\nc\nd");
    }
}
