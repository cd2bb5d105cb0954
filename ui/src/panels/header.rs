//! Who and what: cluster, group, member, protocol, strategy, sink, state, uptime; totals.

use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;

use crate::model::Snapshot;
use crate::{style, time};

pub fn render(frame: &mut Frame, area: Rect, s: &Snapshot) {
    let label = |t: &str| Span::styled(format!(" {t} "), style::dim());
    let value = |t: String| Span::raw(t);
    let state = format!("{:?}", s.engine_state).to_uppercase();
    let strategy = match &s.pending_commit_strategy {
        Some(p) => format!("{} → {p}", s.commit_strategy),
        None => s.commit_strategy.clone(),
    };
    let member = super::cut(&s.member_id, 24);
    let first = Line::from(vec![
        Span::styled(" kdeck ", Style::default().add_modifier(Modifier::BOLD)),
        Span::styled(format!("● {state}"), style::engine(s.engine_state)),
        label("cluster"),
        value(super::cut(&s.cluster, 40)),
        label("group"),
        value(s.group.clone()),
        label("member"),
        value(member),
        label("protocol"),
        value(format!("{}/{}", s.group_protocol, s.assignor)),
    ]);
    let mut second = vec![
        label("commit"),
        value(strategy),
        label("sink"),
        value(s.sink.clone()),
        label("up"),
        value(time::span(s.captured_at_ms.saturating_sub(s.started_at_ms))),
        label("consumed"),
        value(s.consumed.to_string()),
        label("processed"),
        value(s.processed.to_string()),
        label("failed"),
        Span::styled(s.failed.to_string(), if s.failed > 0 { style::failure() } else { Style::default() }),
        label("dead"),
        value(s.dead_lettered.to_string()),
        label("lag"),
        value(s.lag_total.map_or("?".to_string(), |l| l.to_string())),
    ];
    if let Some(e) = s.eos.as_ref().filter(|e| e.enabled) {
        second.push(label("eos"));
        let open = match (e.open_records, e.open_since_ms) {
            (Some(n), Some(at)) => format!(" open {n} rec {}", time::span(s.captured_at_ms.saturating_sub(at))),
            _ => String::new(),
        };
        second.push(value(format!("{} txn {} aborted{open}", e.commits, e.aborts)));
        if let Some(p) = &e.last_problem {
            second.push(Span::styled(format!(" last: {}", super::cut(p, 40)), style::failure()));
        }
    }
    // The newest engine error is shown here as well as in its panel.
    if let Some(e) = s.errors.last() {
        second.push(Span::styled(format!("  ⚠ {}: {}", e.area, super::cut(&e.message, 60)), style::failure()));
    }
    let p = Paragraph::new(vec![first, Line::from(second)]).block(Block::default().borders(Borders::BOTTOM));
    frame.render_widget(p, area);
}
