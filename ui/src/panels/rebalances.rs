//! The group's rebalance state and a timeline of recent rebalances.

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{List, ListItem, ListState};
use ratatui::Frame;

use crate::app::{App, Panel};
use crate::model::Snapshot;
use crate::{style, time};

pub fn render(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let mut items = vec![ListItem::new(Line::from(vec![
        Span::raw("state "),
        Span::styled(format!("{:?}", s.rebalance_state), style::rebalance(s.rebalance_state)),
        Span::styled(format!("  {} rebalances", s.rebalances.len()), style::dim()),
    ]))];
    for r in s.rebalances.iter().rev() {
        let mut spans = vec![
            Span::styled(format!("{} ", time::clock(r.started_at_ms)), style::dim()),
            Span::raw(format!("{:>6}ms ", r.duration_ms)),
            Span::styled(format!("+{} ", r.gained.len()), style::partition(crate::model::PartitionState::Active)),
            Span::styled(format!("-{} ", r.lost.len()), style::failure()),
            Span::styled(format!("{} ", r.protocol), style::dim()),
        ];
        if r.assignment_lost {
            spans.push(Span::styled("LOST ", style::failure()));
        }
        let detail = [r.gained.iter().map(|g| format!("+{g}")).collect::<Vec<_>>(), r.lost.iter().map(|l| format!("-{l}")).collect()].concat();
        spans.push(Span::raw(detail.join(" ")));
        items.push(ListItem::new(Line::from(spans)));
    }
    let mut state = ListState::default();
    if app.focus == Panel::Rebalances {
        state.select(Some(app.selected(Panel::Rebalances) + 1));
    }
    let list = List::new(items).block(super::block(app, Panel::Rebalances, String::new())).highlight_style(style::selected());
    frame.render_stateful_widget(list, area, &mut state);
}
