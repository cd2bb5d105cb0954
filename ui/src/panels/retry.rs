//! Parked records: attempt, countdown to the next attempt, last error.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

use crate::app::{App, Panel};
use crate::model::Snapshot;
use crate::{style, time};

pub fn render(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let rows = app.retries(s);
    let selected = app.selected(Panel::Retry);
    let table_rows: Vec<Row> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let due = r.next_due_ms.map_or("waits".to_string(), |d| time::until(d, s.captured_at_ms));
            let row = Row::new(vec![
                Cell::from(format!("{}[{}]@{}", r.topic, r.partition, r.offset)),
                Cell::from(r.key.clone().unwrap_or_default()),
                Cell::from(r.attempt.to_string()),
                Cell::from(due),
                Cell::from(Span::styled(format!("{}: {}", r.stage, r.last_error), style::failure())),
            ]);
            if i == selected && app.focus == Panel::Retry {
                row.style(style::selected())
            } else {
                row
            }
        })
        .collect();
    let widths = [Constraint::Min(12), Constraint::Length(8), Constraint::Length(3), Constraint::Length(7), Constraint::Min(10)];
    let header = Row::new(["record", "key", "#", "next", "last error"]).style(style::dim());
    let t = Table::new(table_rows, widths).header(header).block(super::block(app, Panel::Retry, format!("{} ", rows.len())));
    frame.render_widget(t, area);
}
