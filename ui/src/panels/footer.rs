//! Key hints, the filter being typed, the frozen mark, the newest notice; tabs when small.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Tabs};
use ratatui::Frame;

use crate::app::{App, Panel};
use crate::keymap::Action;
use crate::model::Snapshot;
use crate::{style, time};

pub fn render(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let mut spans = Vec::new();
    if app.editing_filter {
        spans.push(Span::styled(format!(" filter: {}▏", app.filter), Style::default().fg(Color::Cyan)));
    } else {
        for (a, what) in [
            (Action::Help, "help"),
            (Action::FocusNext, "panel"),
            (Action::TogglePause, "pause"),
            (Action::CommitStrategy, "commit"),
            (Action::Replay, "replay"),
            (Action::Freeze, "freeze"),
            (Action::Quit, "quit"),
        ] {
            spans.push(Span::styled(format!(" {} ", app.keymap.label(a)), Style::default().fg(Color::Black).bg(Color::Gray)));
            spans.push(Span::raw(format!(" {what} ")));
        }
    }
    if app.frozen.is_some() {
        spans.push(Span::styled(" FROZEN ", Style::default().fg(Color::Black).bg(Color::Yellow)));
    }
    if let Some(n) = s.notices.last() {
        let st = if n.message.contains("failed") || n.message.contains("--force") { style::failure() } else { style::dim() };
        spans.push(Span::styled(format!(" {} {}", time::ago(n.at_ms, s.captured_at_ms), n.message), st));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The lower panels as tabs (small terminals).
pub fn tabs(frame: &mut Frame, area: Rect, app: &App) {
    let lower = [Panel::Rebalances, Panel::Throughput, Panel::Retry, Panel::DeadLetters, Panel::Log];
    let selected = lower.iter().position(|p| *p == app.lower).unwrap_or(0);
    let t = Tabs::new(lower.iter().map(|p| p.title())).select(selected).highlight_style(style::title(true));
    frame.render_widget(t, area);
}
