//! One file per panel, each a pure render function of (snapshot, view state).

pub mod dead_letters;
pub mod fit;
pub mod footer;
pub mod header;
pub mod log;
pub mod overlays;
pub mod partitions;
pub mod rebalances;
pub mod retry;
pub mod throughput;

use ratatui::text::Span;
use ratatui::widgets::{Block, BorderType, Borders};

use crate::app::{App, Panel};
use crate::style;

/// A panel's frame: focused panels get a bright title and a thick border.
pub fn block<'a>(app: &App, panel: Panel, extra: String) -> Block<'a> {
    let focused = app.focus == panel;
    let mut title = format!(" {} ", panel.title());
    if focused && !app.filter.is_empty() {
        title.push_str(&format!("[/{}] ", app.filter));
    }
    title.push_str(&extra);
    Block::default()
        .borders(Borders::ALL)
        .border_type(if focused { BorderType::Thick } else { BorderType::Plain })
        .title(Span::styled(title, style::title(focused)))
}

/// Cuts `s` to `n` characters, marking the cut.
pub fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}
