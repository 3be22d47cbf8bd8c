//! What every table of `nettune top` shares, the node's and the cluster's: the
//! keys (quit, sort, order, filter, pause, help, moving), the state they change,
//! and matching rows against the filter. The views keep only what is theirs
//! (their columns, panes, drill-in).

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What the user chose in a table.
#[derive(Clone, Debug)]
pub struct Controls {
    /// Largest first.
    pub descending: bool,
    /// Rows must contain this text.
    pub filter: String,
    /// The filter is being typed.
    pub editing_filter: bool,
    /// Index of the selected row.
    pub selected: usize,
    /// New figures are ignored.
    pub paused: bool,
    /// The help popup is open.
    pub show_help: bool,
}

impl Default for Controls {
    fn default() -> Self {
        Self {
            descending: true,
            filter: String::new(),
            editing_filter: false,
            selected: 0,
            paused: false,
            show_help: false,
        }
    }
}

/// What a key meant, once the shared keys are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Common {
    /// Applied here (filter typing, order, pause, help): nothing left to do.
    Done,
    /// Leave `top` (Ctrl-C, `q`, Esc).
    Quit,
    /// Sort by the next (`1`) or previous (`-1`) column.
    Sort(isize),
    /// Move the selection (or scroll) by this many rows.
    Move(isize),
    /// Not a shared key: the view's own (`l`, `d`, Tab, Enter, …).
    Other(KeyEvent),
}

impl Controls {
    /// Applies `key` if every table shares it; the caller clamps the selection.
    pub fn handle(&mut self, key: KeyEvent) -> Common {
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Common::Quit;
        }
        if self.editing_filter {
            match key.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            return Common::Done;
        }
        if self.show_help {
            self.show_help = false;
            return Common::Done;
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Common::Quit,
            KeyCode::Char('s') => return Common::Sort(1),
            KeyCode::Char('S') => return Common::Sort(-1),
            KeyCode::Char('o') => self.descending = !self.descending,
            KeyCode::Char('/') => {
                self.editing_filter = true;
                self.filter.clear();
            }
            KeyCode::Char('p') => self.paused = !self.paused,
            KeyCode::Char('?') => self.show_help = true,
            KeyCode::Up => return Common::Move(-1),
            KeyCode::Down => return Common::Move(1),
            KeyCode::PageUp => return Common::Move(-10),
            KeyCode::PageDown => return Common::Move(10),
            KeyCode::Home => return Common::Move(isize::MIN / 2),
            KeyCode::End => return Common::Move(isize::MAX / 2),
            _ => return Common::Other(key),
        }
        Common::Done
    }

    /// Moves the selection by `by` within `rows` rows.
    pub fn move_selection(&mut self, by: isize, rows: usize) {
        if rows > 0 {
            self.selected = (self.selected as isize + by).clamp(0, rows as isize - 1) as usize;
        }
    }

    /// Keeps the selection on one of `rows` rows.
    pub fn clamp(&mut self, rows: usize) {
        self.selected = self.selected.min(rows.saturating_sub(1));
    }

    /// Whether any of `fields` contains the filter (case-insensitive).
    pub fn matches<'a>(&self, fields: impl IntoIterator<Item = &'a str>) -> bool {
        let needle = self.filter.to_lowercase();
        needle.is_empty()
            || fields
                .into_iter()
                .any(|f| f.to_lowercase().contains(&needle))
    }

    /// `order` as the user wants it (reversed when descending).
    pub fn ordered(&self, order: std::cmp::Ordering) -> std::cmp::Ordering {
        if self.descending {
            order.reverse()
        } else {
            order
        }
    }
}

/// The column `by` places after `at` in `all` (wrapping).
pub fn cycle<T: Copy + PartialEq>(all: &[T], at: T, by: isize) -> T {
    let i = all.iter().position(|c| *c == at).unwrap_or(0) as isize;
    all[(i + by).rem_euclid(all.len() as isize) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn typing_a_filter_takes_every_key_until_enter_and_esc_clears_it() {
        let mut c = Controls::default();
        assert_eq!(c.handle(key(KeyCode::Char('/'))), Common::Done);
        for ch in ['q', 's'] {
            assert_eq!(c.handle(key(KeyCode::Char(ch))), Common::Done);
        }
        assert_eq!(c.filter, "qs");
        c.handle(key(KeyCode::Enter));
        assert!(c.matches(["xQSx"]) && !c.matches(["q"]));
        c.handle(key(KeyCode::Char('/')));
        c.handle(key(KeyCode::Esc));
        assert!(c.filter.is_empty() && !c.editing_filter);
        assert_eq!(c.handle(key(KeyCode::Char('q'))), Common::Quit);
    }

    #[test]
    fn help_closes_on_any_key_and_moves_stay_in_the_rows() {
        let mut c = Controls::default();
        c.handle(key(KeyCode::Char('?')));
        assert!(c.show_help);
        assert_eq!(c.handle(key(KeyCode::Char('q'))), Common::Done);
        assert!(!c.show_help);
        let Common::Move(by) = c.handle(key(KeyCode::End)) else {
            panic!("End is a move")
        };
        c.move_selection(by, 3);
        assert_eq!(c.selected, 2);
        c.clamp(1);
        assert_eq!(c.selected, 0);
        assert_eq!(cycle(&[1, 2, 3], 1, -1), 3);
        assert_eq!(
            c.handle(key(KeyCode::Tab)),
            Common::Other(key(KeyCode::Tab))
        );
    }
}
