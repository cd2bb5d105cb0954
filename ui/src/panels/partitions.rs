//! One row per assigned partition: state, offsets, lag with a bar and in time,
//! rate, and the age of the last record processed.
//! Columns are fitted like the other tables: numbers are never cut (a column
//! that does not fit goes whole), a long topic name is shortened but keeps its
//! partition number.

use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table};
use ratatui::Frame;

use super::fit::{self, Column, Kind};
use crate::app::{App, Panel};
use crate::model::Snapshot;
use crate::{style, time};

const BAR: usize = 12;

pub fn render(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let rows = app.partitions(s);
    let max_lag = rows.iter().filter_map(|p| p.lag).max().unwrap_or(0).max(1);
    let opt = |o: Option<i64>| o.map_or("-".to_string(), |v| v.to_string());
    let texts: Vec<[String; 10]> = rows
        .iter()
        .map(|p| {
            [
                format!("{}[{}]", p.topic, p.partition),
                style::partition_label(p.state).to_string(),
                opt(p.position),
                opt(p.committed),
                opt(p.high_watermark),
                p.lag.map_or("?".to_string(), |l| l.to_string()),
                p.lag_ms.map_or("?".to_string(), |ms| time::span(ms.max(0) as u64)),
                time::count(p.rate),
                p.queued.to_string(),
                p.last_processed_age_ms.map_or("-".to_string(), |ms| time::span(ms.max(0) as u64)),
            ]
        })
        .collect();
    let column = |i: usize| texts.iter().map(move |t| t[i].as_str());
    let bar = "·".repeat(BAR);
    let columns = [
        Column::new("partition", Kind::Text { min: 12 }, 9, column(0)),
        // A state is one word: shown whole, like a number.
        Column::new("state", Kind::Number, 7, column(1)),
        // Position and queue depth matter least when room is short.
        Column::new("position", Kind::Number, 2, column(2)),
        Column::new("committed", Kind::Number, 6, column(3)),
        Column::new("high wm", Kind::Number, 5, column(4)),
        Column::new("lag", Kind::Number, 8, column(5)),
        Column::new("", Kind::Number, 3, [bar.as_str()]),
        Column::new("behind", Kind::Number, 5, column(6)),
        Column::new("rec/s", Kind::Number, 4, column(7)),
        Column::new("queued", Kind::Number, 1, column(8)),
        Column::new("age", Kind::Number, 2, column(9)),
    ];
    let widths = fit::fit(&columns, area.width.saturating_sub(2));
    let selected = app.selected(Panel::Partitions);
    let table_rows: Vec<Row> = rows
        .iter()
        .zip(texts)
        .enumerate()
        .map(|(i, (p, t))| {
            let lag = p.lag.unwrap_or(0);
            let filled = ((lag as f64 / max_lag as f64) * BAR as f64).ceil() as usize;
            let bar = Line::from(vec![
                Span::styled("█".repeat(filled.min(BAR)), if lag > 0 { Style::default().fg(ratatui::style::Color::Yellow) } else { Style::default() }),
                Span::styled("·".repeat(BAR - filled.min(BAR)), style::dim()),
            ]);
            let [name, state, position, committed, high, lag_text, behind, rate, queued, age] = t;
            let name_width = widths[0].unwrap_or(0) as usize;
            let values: Vec<Cell> = vec![
                Cell::from(shorten_keeping_partition(&p.topic, p.partition, &name, name_width)),
                Cell::from(Span::styled(state, style::partition(p.state))),
                Cell::from(position),
                Cell::from(committed),
                Cell::from(high),
                Cell::from(lag_text),
                Cell::from(bar),
                Cell::from(behind),
                Cell::from(rate),
                Cell::from(queued),
                Cell::from(age),
            ];
            let cells: Vec<Cell> = values.into_iter().zip(&widths).filter(|(_, w)| w.is_some()).map(|(c, _)| c).collect();
            let row = Row::new(cells);
            if i == selected && app.focus == Panel::Partitions {
                row.style(style::selected())
            } else {
                row
            }
        })
        .collect();
    let sort = if app.sort_by_lag { "by lag " } else { "" };
    let header = Row::new(fit::titles(&columns, &widths)).style(style::dim());
    // Every column at its fitted width; what is left stays empty at the right.
    let constraints: Vec<Constraint> = widths.iter().flatten().map(|w| Constraint::Length(*w)).collect();
    let t = Table::new(table_rows, constraints)
        .header(header)
        .block(super::block(app, Panel::Partitions, format!("{} {sort}", rows.len())));
    frame.render_widget(t, area);
}

/// `topic[p]` in `width`: the topic is shortened, the partition number never.
fn shorten_keeping_partition(topic: &str, partition: i32, full: &str, width: usize) -> String {
    if full.chars().count() <= width {
        return full.to_string();
    }
    let suffix = format!("[{partition}]");
    let room = width.saturating_sub(suffix.chars().count());
    format!("{}{suffix}", super::cut(topic, room.max(1)))
}

#[cfg(test)]
mod tests {
    use super::shorten_keeping_partition;

    #[test]
    fn a_long_topic_is_shortened_and_its_partition_number_kept() {
        assert_eq!(shorten_keeping_partition("orders", 3, "orders[3]", 20), "orders[3]");
        assert_eq!(shorten_keeping_partition("orders-from-the-web-shop", 12, "orders-from-the-web-shop[12]", 12), "orders-…[12]");
    }
}
