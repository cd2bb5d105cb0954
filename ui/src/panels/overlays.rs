//! Help, the commit-strategy picker, replay confirmation, dead-letter detail.

use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;

use crate::keymap::{Action, KeyMap};
use crate::model::{DeadLetterView, Snapshot};
use crate::{style, time};

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(height.min(area.height))]).flex(Flex::Center).areas(area);
    let [h] = Layout::horizontal([Constraint::Length(width.min(area.width))]).flex(Flex::Center).areas(v);
    h
}

pub(crate) fn popup(frame: &mut Frame, area: Rect, title: &str, lines: Vec<Line>, width: u16) {
    let r = centered(area, width, lines.len() as u16 + 2);
    frame.render_widget(Clear, r);
    let block = Block::default().borders(Borders::ALL).title(Span::styled(format!(" {title} "), style::title(true)));
    frame.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), r);
}

pub fn help(frame: &mut Frame, area: Rect, keys: &KeyMap) {
    let lines = Action::ALL
        .iter()
        .map(|a| Line::from(vec![Span::styled(format!("{:>16}  ", keys.label(*a)), style::title(true)), Span::raw(a.describe())]))
        .collect();
    popup(frame, area, "Keys", lines, 70);
}

pub fn strategy(frame: &mut Frame, area: Rect, strategies: &[String], selected: usize, s: &Snapshot) {
    let mut lines: Vec<Line> = strategies
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mark = if *name == s.commit_strategy { " (current)" } else { "" };
            let st = if i == selected { style::selected() } else { Style::default() };
            Line::from(Span::styled(format!(" {name}{mark} "), st))
        })
        .collect();
    lines.push(Line::from(Span::styled(" enter: switch (in-flight work is committed first) · esc: cancel", style::dim())));
    popup(frame, area, "Commit strategy", lines, 64);
}

pub fn confirm_replay(frame: &mut Frame, area: Rect, what: &str) {
    let lines = vec![
        Line::from(format!(" Replay {what}?")),
        Line::from(""),
        Line::from(vec![
            Span::styled(" r ", style::selected()),
            Span::raw(" reprocess here   "),
            Span::styled(" p ", style::selected()),
            Span::raw(" republish to its source   "),
            Span::styled(" esc ", style::selected()),
            Span::raw(" cancel"),
        ]),
    ];
    popup(frame, area, "Replay", lines, 72);
}

pub fn detail(frame: &mut Frame, area: Rect, d: &DeadLetterView, s: &Snapshot) {
    let bold = Style::default().add_modifier(Modifier::BOLD);
    let mut lines = vec![
        Line::from(vec![Span::styled("source  ", bold), Span::raw(format!("{}[{}]@{}  key {}", d.topic, d.partition, d.offset, d.key.as_deref().unwrap_or("(none)")))]),
        Line::from(vec![Span::styled("dlq     ", bold), Span::raw(format!("{}[{}]@{}  audit #{}", d.dlq_topic, d.dlq_partition, d.dlq_offset, d.audit_id.map_or("-".into(), |i| i.to_string())))]),
        Line::from(vec![Span::styled("failed  ", bold), Span::styled(format!("{}/{} after {} attempt(s), {}", d.stage, d.class, d.attempts, time::ago(d.at_ms, s.captured_at_ms)), style::failure())]),
        Line::from(vec![Span::styled("error   ", bold), Span::raw(d.message.clone())]),
    ];
    for (k, v) in &d.headers {
        lines.push(Line::from(vec![Span::styled(format!("header  {k}: "), style::dim()), Span::raw(v.clone())]));
    }
    lines.push(Line::from(Span::styled("value", bold)));
    let room = area.height.saturating_sub(lines.len() as u16 + 4) as usize;
    lines.extend(d.value_preview.lines().take(room).map(|l| Line::from(l.to_string())));
    popup(frame, area, "Dead letter", lines, area.width.saturating_sub(8).min(110));
}
