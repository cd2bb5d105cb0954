//! One row per assigned partition: state, offsets, lag with a bar, rate.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

use crate::app::{App, Panel};
use crate::model::Snapshot;
use crate::{style, time};

const BAR: usize = 12;

pub fn render(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let narrow = area.width < 90;
    let rows = app.partitions(s);
    let max_lag = rows.iter().filter_map(|p| p.lag).max().unwrap_or(0).max(1);
    let opt = |o: Option<i64>| o.map_or("-".to_string(), |v| v.to_string());
    let selected = app.selected(Panel::Partitions);
    let table_rows: Vec<Row> = rows
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let lag = p.lag.unwrap_or(0);
            let filled = ((lag as f64 / max_lag as f64) * BAR as f64).ceil() as usize;
            let bar = Line::from(vec![
                Span::styled("█".repeat(filled.min(BAR)), if lag > 0 { Style::default().fg(ratatui::style::Color::Yellow) } else { Style::default() }),
                Span::styled("·".repeat(BAR - filled.min(BAR)), style::dim()),
            ]);
            let state = style::partition_label(p.state).to_string();
            let mut cells = vec![
                Cell::from(format!("{}[{}]", p.topic, p.partition)),
                Cell::from(Span::styled(state, style::partition(p.state))),
                Cell::from(opt(p.position)),
                Cell::from(opt(p.committed)),
                Cell::from(opt(p.high_watermark)),
                Cell::from(p.lag.map_or("?".to_string(), |l| l.to_string())),
                Cell::from(bar),
                Cell::from(time::count(p.rate)),
                Cell::from(p.queued.to_string()),
            ];
            if narrow {
                // Position and queue depth matter least when room is short.
                cells.remove(8);
                cells.remove(2);
            }
            let row = Row::new(cells);
            if i == selected && app.focus == Panel::Partitions {
                row.style(style::selected())
            } else {
                row
            }
        })
        .collect();
    let mut names = vec!["partition", "state", "position", "committed", "high wm", "lag", "", "rec/s", "queued"];
    let sort = if app.sort_by_lag { "by lag " } else { "" };
    let mut widths = vec![
        Constraint::Min(14),
        Constraint::Length(12),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(BAR as u16),
        Constraint::Length(7),
        Constraint::Length(7),
    ];
    if narrow {
        for i in [8, 2] {
            names.remove(i);
            widths.remove(i);
        }
    }
    let header = Row::new(names).style(style::dim());
    let t = Table::new(table_rows, widths).header(header).block(super::block(app, Panel::Partitions, format!("{} {sort}", rows.len())));
    frame.render_widget(t, area);
}
