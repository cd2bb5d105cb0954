//! Parked records: attempt, countdown to the next attempt, last error.

use ratatui::style::Style;
use ratatui::layout::Rect;
use ratatui::Frame;

use super::fit::{self, Column, Kind};
use crate::app::{App, Panel};
use crate::model::Snapshot;
use crate::{style, time};

pub fn render(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let rows = app.retries(s);
    let selected = app.selected(Panel::Retry);
    let values: Vec<Vec<(String, Style)>> = rows
        .iter()
        .map(|r| {
            let due = r.next_due_ms.map_or("waits".to_string(), |d| time::until(d, s.captured_at_ms));
            vec![
                (r.topic.clone(), Style::default()),
                (r.partition.to_string(), Style::default()),
                (r.offset.to_string(), Style::default()),
                (r.key.clone().unwrap_or_default(), Style::default()),
                (r.attempt.to_string(), Style::default()),
                (due, Style::default()),
                (format!("{}: {}", r.stage, r.last_error), style::failure()),
            ]
        })
        .collect();
    let column = |i: usize| values.iter().map(move |v| v[i].0.as_str());
    let columns = [
        Column::new("topic", Kind::Text { min: 6 }, 3, column(0)),
        Column::new("p", Kind::Number, 5, column(1)),
        Column::new("offset", Kind::Number, 6, column(2)),
        Column::new("key", Kind::Text { min: 4 }, 1, column(3)),
        Column::new("#", Kind::Number, 4, column(4)),
        Column::new("next", Kind::Number, 4, column(5)),
        Column::new("last error", Kind::Text { min: 8 }, 2, column(6)),
    ];
    let t = fit::table(&columns, area.width.saturating_sub(2), values, (app.focus == Panel::Retry).then_some(selected))
        .block(super::block(app, Panel::Retry, format!("{} ", rows.len())));
    frame.render_widget(t, area);
}
