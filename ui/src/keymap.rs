//! Key bindings as data: defaults in code, overridable from the config file
//! (`[keys]` table: `action = "key"`). Only key presses are handled.

use std::collections::BTreeMap;
use std::fmt;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Everything a key can do on the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    FocusNext,
    FocusPrev,
    Up,
    Down,
    Select,
    Back,
    TogglePause,
    PauseAll,
    ResumeAll,
    CommitStrategy,
    Replay,
    ReplayAll,
    RetryNow,
    DeadLetterNow,
    Filter,
    SortByLag,
    Freeze,
    Help,
    Quit,
}

impl Action {
    pub const ALL: [Action; 19] = [
        Action::FocusNext,
        Action::FocusPrev,
        Action::Up,
        Action::Down,
        Action::Select,
        Action::Back,
        Action::TogglePause,
        Action::PauseAll,
        Action::ResumeAll,
        Action::CommitStrategy,
        Action::Replay,
        Action::ReplayAll,
        Action::RetryNow,
        Action::DeadLetterNow,
        Action::Filter,
        Action::SortByLag,
        Action::Freeze,
        Action::Help,
        Action::Quit,
    ];

    /// The name used in the config file.
    pub fn name(self) -> &'static str {
        match self {
            Action::FocusNext => "focus-next",
            Action::FocusPrev => "focus-prev",
            Action::Up => "up",
            Action::Down => "down",
            Action::Select => "select",
            Action::Back => "back",
            Action::TogglePause => "toggle-pause",
            Action::PauseAll => "pause-all",
            Action::ResumeAll => "resume-all",
            Action::CommitStrategy => "commit-strategy",
            Action::Replay => "replay",
            Action::ReplayAll => "replay-all",
            Action::RetryNow => "retry-now",
            Action::DeadLetterNow => "dead-letter-now",
            Action::Filter => "filter",
            Action::SortByLag => "sort-by-lag",
            Action::Freeze => "freeze",
            Action::Help => "help",
            Action::Quit => "quit",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Action::FocusNext => "focus the next panel",
            Action::FocusPrev => "focus the previous panel",
            Action::Up => "select the row above",
            Action::Down => "select the row below",
            Action::Select => "open the selected record / choose",
            Action::Back => "close, cancel, clear the filter",
            Action::TogglePause => "pause or resume the selected partition",
            Action::PauseAll => "pause every partition",
            Action::ResumeAll => "resume every partition",
            Action::CommitStrategy => "change the commit strategy",
            Action::Replay => "replay the selected dead letter",
            Action::ReplayAll => "replay every dead letter the filter shows",
            Action::RetryNow => "retry the selected parked record now",
            Action::DeadLetterNow => "dead-letter the selected parked record now",
            Action::Filter => "filter the focused list",
            Action::SortByLag => "sort partitions by lag",
            Action::Freeze => "freeze / unfreeze the display",
            Action::Help => "show or hide this help",
            Action::Quit => "quit: drain, commit, leave the group",
        }
    }

    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

/// A key with its modifiers, e.g. `q`, `P`, `ctrl-c`, `tab`, `shift-tab`, `up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub code: KeyCodeOrd,
    pub ctrl: bool,
}

/// `KeyCode` with an order, so bindings sort and print stably.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyCodeOrd {
    Char(char),
    Up,
    Down,
    Left,
    Right,
    Enter,
    Esc,
    Tab,
    BackTab,
    Backspace,
}

impl Key {
    pub const fn char(c: char) -> Key {
        Key { code: KeyCodeOrd::Char(c), ctrl: false }
    }

    pub const fn ctrl(c: char) -> Key {
        Key { code: KeyCodeOrd::Char(c), ctrl: true }
    }

    pub const fn code(code: KeyCodeOrd) -> Key {
        Key { code, ctrl: false }
    }

    pub fn from_event(e: &KeyEvent) -> Option<Key> {
        if e.kind != KeyEventKind::Press {
            return None;
        }
        let code = match e.code {
            KeyCode::Char(c) => KeyCodeOrd::Char(c),
            KeyCode::Up => KeyCodeOrd::Up,
            KeyCode::Down => KeyCodeOrd::Down,
            KeyCode::Left => KeyCodeOrd::Left,
            KeyCode::Right => KeyCodeOrd::Right,
            KeyCode::Enter => KeyCodeOrd::Enter,
            KeyCode::Esc => KeyCodeOrd::Esc,
            KeyCode::Tab => KeyCodeOrd::Tab,
            KeyCode::BackTab => KeyCodeOrd::BackTab,
            KeyCode::Backspace => KeyCodeOrd::Backspace,
            _ => return None,
        };
        Some(Key { code, ctrl: e.modifiers.contains(KeyModifiers::CONTROL) })
    }

    pub fn parse(s: &str) -> Result<Key, String> {
        let (ctrl, rest) = match s.strip_prefix("ctrl-") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let code = match rest {
            "up" => KeyCodeOrd::Up,
            "down" => KeyCodeOrd::Down,
            "left" => KeyCodeOrd::Left,
            "right" => KeyCodeOrd::Right,
            "enter" => KeyCodeOrd::Enter,
            "esc" => KeyCodeOrd::Esc,
            "tab" => KeyCodeOrd::Tab,
            "shift-tab" => KeyCodeOrd::BackTab,
            "backspace" => KeyCodeOrd::Backspace,
            "space" => KeyCodeOrd::Char(' '),
            _ if rest.chars().count() == 1 => KeyCodeOrd::Char(rest.chars().next().unwrap()),
            _ => return Err(format!("unknown key `{s}`: use a character, ctrl-X, up, down, left, right, enter, esc, tab, shift-tab, space")),
        };
        Ok(Key { code, ctrl })
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ctrl {
            write!(f, "ctrl-")?;
        }
        match self.code {
            KeyCodeOrd::Char(' ') => write!(f, "space"),
            KeyCodeOrd::Char(c) => write!(f, "{c}"),
            KeyCodeOrd::Up => write!(f, "↑"),
            KeyCodeOrd::Down => write!(f, "↓"),
            KeyCodeOrd::Left => write!(f, "←"),
            KeyCodeOrd::Right => write!(f, "→"),
            KeyCodeOrd::Enter => write!(f, "enter"),
            KeyCodeOrd::Esc => write!(f, "esc"),
            KeyCodeOrd::Tab => write!(f, "tab"),
            KeyCodeOrd::BackTab => write!(f, "shift-tab"),
            KeyCodeOrd::Backspace => write!(f, "backspace"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMap {
    bindings: BTreeMap<Key, Action>,
}

impl Default for KeyMap {
    fn default() -> Self {
        use KeyCodeOrd::*;
        let defaults = [
            (Key::code(Tab), Action::FocusNext),
            (Key::code(BackTab), Action::FocusPrev),
            (Key::code(Up), Action::Up),
            (Key::char('k'), Action::Up),
            (Key::code(Down), Action::Down),
            (Key::char('j'), Action::Down),
            (Key::code(Enter), Action::Select),
            (Key::code(Esc), Action::Back),
            (Key::char('p'), Action::TogglePause),
            (Key::char('P'), Action::PauseAll),
            (Key::char('U'), Action::ResumeAll),
            (Key::char('c'), Action::CommitStrategy),
            (Key::char('r'), Action::Replay),
            (Key::char('A'), Action::ReplayAll),
            (Key::char('t'), Action::RetryNow),
            (Key::char('d'), Action::DeadLetterNow),
            (Key::char('/'), Action::Filter),
            (Key::char('s'), Action::SortByLag),
            (Key::char('f'), Action::Freeze),
            (Key::char('?'), Action::Help),
            (Key::char('q'), Action::Quit),
            (Key::ctrl('c'), Action::Quit),
        ];
        KeyMap { bindings: defaults.into_iter().collect() }
    }
}

impl KeyMap {
    /// Applies `action = "key"` overrides: the new key replaces the action's defaults.
    pub fn with_overrides<'a>(mut self, overrides: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<KeyMap, String> {
        for (name, key) in overrides {
            let action = Action::from_name(name).ok_or_else(|| {
                let names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
                format!("unknown action `{name}` in [keys]; actions are {}", names.join(", "))
            })?;
            let key = Key::parse(key)?;
            self.bindings.retain(|_, a| *a != action);
            self.bindings.insert(key, action);
        }
        Ok(self)
    }

    pub fn action(&self, e: &KeyEvent) -> Option<Action> {
        Key::from_event(e).and_then(|k| self.bindings.get(&k).copied())
    }

    /// The keys of an action, for help and hints.
    pub fn keys(&self, action: Action) -> Vec<Key> {
        self.bindings.iter().filter(|(_, a)| **a == action).map(|(k, _)| *k).collect()
    }

    pub fn label(&self, action: Action) -> String {
        self.keys(action).iter().map(|k| k.to_string()).collect::<Vec<_>>().join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::KeyEventState;

    fn press(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent { code, modifiers, kind: KeyEventKind::Press, state: KeyEventState::NONE }
    }

    #[test]
    fn every_action_has_a_default_key_and_no_key_does_two_things() {
        let map = KeyMap::default();
        for a in Action::ALL {
            assert!(!map.keys(a).is_empty(), "{a:?} has no key");
        }
        // A BTreeMap from key to action cannot bind one key twice; check names are unique too.
        let mut names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len());
    }

    #[test]
    fn presses_map_to_actions_and_releases_do_not() {
        let map = KeyMap::default();
        assert_eq!(map.action(&press(KeyCode::Char('q'), KeyModifiers::NONE)), Some(Action::Quit));
        assert_eq!(map.action(&press(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Quit));
        assert_eq!(map.action(&press(KeyCode::Char('c'), KeyModifiers::NONE)), Some(Action::CommitStrategy));
        let mut release = press(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(map.action(&release), None);
    }

    #[test]
    fn overrides_replace_the_default_and_bad_ones_are_named() {
        let map = KeyMap::default().with_overrides([("quit", "x")]).unwrap();
        assert_eq!(map.action(&press(KeyCode::Char('x'), KeyModifiers::NONE)), Some(Action::Quit));
        assert_eq!(map.action(&press(KeyCode::Char('q'), KeyModifiers::NONE)), None);
        assert!(KeyMap::default().with_overrides([("fly", "x")]).unwrap_err().contains("unknown action `fly`"));
        assert!(KeyMap::default().with_overrides([("quit", "hyper-x")]).unwrap_err().contains("unknown key"));
    }
}
