//! What both screen tests need: a buffer as text, a key press.
#![allow(dead_code)]

use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyEventState, KeyModifiers};

/// The screen as lines of text, trailing blanks trimmed.
pub fn text(b: &Buffer) -> String {
    let w = b.area.width as usize;
    b.content.chunks(w).map(|row| row.iter().map(|c| c.symbol()).collect::<String>().trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

pub fn key(code: KeyCode) -> KeyEvent {
    KeyEvent { code, modifiers: KeyModifiers::NONE, kind: KeyEventKind::Press, state: KeyEventState::NONE }
}
