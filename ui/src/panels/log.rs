//! Recent log lines of the process (bounded), newest at the bottom.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{List, ListItem};
use ratatui::Frame;

use crate::app::{App, Panel};
use crate::model::Snapshot;
use crate::{style, time};

pub fn render(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let height = area.height.saturating_sub(2) as usize;
    let lines = s.logs.iter().filter(|l| app.focus != Panel::Log || app.filter.is_empty() || l.message.contains(&app.filter));
    let lines: Vec<_> = lines.collect();
    let items: Vec<ListItem> = lines[lines.len().saturating_sub(height)..]
        .iter()
        .map(|l| {
            let level = match l.level.as_str() {
                "ERROR" => style::failure(),
                "WARN" => Style::default().fg(Color::Yellow),
                _ => style::dim(),
            };
            ListItem::new(Line::from(vec![
                Span::styled(format!("{} ", time::clock(l.at_ms)), style::dim()),
                Span::styled(format!("{:<5} ", l.level), level),
                Span::raw(l.message.clone()),
            ]))
        })
        .collect();
    frame.render_widget(List::new(items).block(super::block(app, Panel::Log, String::new())), area);
}
