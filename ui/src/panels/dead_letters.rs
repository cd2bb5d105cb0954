//! Records in the dead-letter topic, newest first: source, stage/class, error.

use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

use crate::app::{App, Panel};
use crate::model::Snapshot;
use crate::{style, time};

pub fn render(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let rows = app.dead_letters(s);
    let selected = app.selected(Panel::DeadLetters);
    let table_rows: Vec<Row> = rows
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let row = Row::new(vec![
                Cell::from(Span::styled(time::ago(d.at_ms, s.captured_at_ms), style::dim())),
                Cell::from(format!("{}[{}]@{}", d.topic, d.partition, d.offset)),
                Cell::from(Span::styled(format!("{}/{}", d.stage, d.class), style::failure())),
                Cell::from(d.message.clone()),
            ]);
            if i == selected && app.focus == Panel::DeadLetters {
                row.style(style::selected())
            } else {
                row
            }
        })
        .collect();
    let widths = [Constraint::Length(8), Constraint::Min(12), Constraint::Length(18), Constraint::Min(10)];
    let header = Row::new(["when", "source", "failed at", "error"]).style(style::dim());
    let t = Table::new(table_rows, widths)
        .header(header)
        .block(super::block(app, Panel::DeadLetters, format!("{} in all ", s.dead_lettered)));
    frame.render_widget(t, area);
}
