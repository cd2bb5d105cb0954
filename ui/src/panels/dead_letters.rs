//! Records in the dead-letter topic, newest first: source, stage/class, error.

use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::Frame;

use super::fit::{self, Column, Kind};
use crate::app::{App, Panel};
use crate::model::Snapshot;
use crate::{style, time};

pub fn render(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let rows = app.dead_letters(s);
    let selected = app.selected(Panel::DeadLetters);
    let values: Vec<Vec<(String, Style)>> = rows
        .iter()
        .map(|d| {
            vec![
                (time::ago(d.at_ms, s.captured_at_ms), style::dim()),
                (d.topic.clone(), Style::default()),
                (d.partition.to_string(), Style::default()),
                (d.offset.to_string(), Style::default()),
                (format!("{}/{}", d.stage, d.class), style::failure()),
                (d.message.clone(), Style::default()),
            ]
        })
        .collect();
    let column = |i: usize| values.iter().map(move |v| v[i].0.as_str());
    let columns = [
        Column::new("when", Kind::Number, 2, column(0)),
        Column::new("topic", Kind::Text { min: 6 }, 3, column(1)),
        Column::new("p", Kind::Number, 5, column(2)),
        Column::new("offset", Kind::Number, 6, column(3)),
        Column::new("failed at", Kind::Text { min: 6 }, 4, column(4)),
        Column::new("error", Kind::Text { min: 8 }, 3, column(5)),
    ];
    let t = fit::table(&columns, area.width.saturating_sub(2), values, (app.focus == Panel::DeadLetters).then_some(selected))
        .block(super::block(app, Panel::DeadLetters, format!("{} in all ", s.dead_lettered)));
    frame.render_widget(t, area);
}
