//! The watch screen, a pure function of (snapshot, view state).
//!
//! ```text
//! ┌ kdeck watch · cluster · N groups · sampled at ───────────────────────────────┐
//! ├ Groups ───────────┬ group · state · protocol/assignor · coordinator · verdict ┤
//! │ name verdict lag  ├ Partitions ──────────────────────────────────────────────┤
//! │                   │ committed, end, lag, lag time, commits/s, verdict, member │
//! │                   ├ Members ──────────────────┬ Lag (1m) ────────────────────┤
//! └ keys · filter · latest notice or error ───────────────────────────────────────┘
//! ```
//! Below 120 columns the members and the chart share one panel: the members
//! while they are focused, the chart otherwise.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Cell, Paragraph, Row, Sparkline, Table};
use ratatui::Frame;

use super::app::{Focus, WatchApp, WatchOverlay, RESET_CHOICES};
use super::model::{GroupView, LagPoint, Verdict, WatchSnapshot};
use crate::panels::fit::{self, Column, Kind};
use crate::panels::overlays::popup;
use crate::{style, time};

pub fn verdict_style(v: Option<Verdict>) -> Style {
    Style::default().fg(match v {
        Some(Verdict::Ok) => Color::Green,
        Some(Verdict::Warn) => Color::Yellow,
        Some(_) => Color::Red,
        None => Color::DarkGray,
    })
}

fn verdict_text(v: Option<Verdict>) -> &'static str {
    v.map_or("?", Verdict::as_str)
}

fn block<'a>(title: String, focused: bool) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_type(if focused { BorderType::Thick } else { BorderType::Plain })
        .title(Span::styled(title, style::title(focused)))
}

pub fn render(frame: &mut Frame, app: &WatchApp, s: &WatchSnapshot) {
    let [header, body, footer] = Layout::vertical([Constraint::Length(1), Constraint::Min(6), Constraint::Length(1)]).areas(frame.area());
    render_header(frame, header, s);
    let groups_width = (body.width / 3).clamp(24, 48);
    let [left, right] = Layout::horizontal([Constraint::Length(groups_width), Constraint::Min(30)]).areas(body);
    render_groups(frame, left, app, s);
    let group = app.selected_group(s);
    let lower = if body.height >= 30 { 12 } else { 8 };
    let [info, partitions, bottom] = Layout::vertical([Constraint::Length(2), Constraint::Min(4), Constraint::Length(lower)]).areas(right);
    render_info(frame, info, group);
    render_partitions(frame, partitions, app, s);
    if bottom.width >= 90 {
        let [members, chart] = Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(bottom);
        render_members(frame, members, app, group);
        render_chart(frame, chart, app, group, s.captured_at_ms);
    } else if app.focus == Focus::Members {
        render_members(frame, bottom, app, group);
    } else {
        render_chart(frame, bottom, app, group, s.captured_at_ms);
    }
    render_footer(frame, footer, app, s);
    render_overlay(frame, frame.area(), app);
}

fn render_header(frame: &mut Frame, area: Rect, s: &WatchSnapshot) {
    let mut spans = vec![
        Span::styled(" kdeck watch ", Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(" {}  {} group{}  sampled {}", s.cluster, s.groups.len(), if s.groups.len() == 1 { "" } else { "s" }, time::clock(s.captured_at_ms))),
    ];
    if let Some(e) = &s.error {
        spans.push(Span::styled(format!("  {e}"), style::failure()));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn render_groups(frame: &mut Frame, area: Rect, app: &WatchApp, s: &WatchSnapshot) {
    let groups = app.groups(s);
    let selected = app.selected_group_index(s);
    let lag = |g: &GroupView| match g.lag_total() {
        _ if g.partitions.is_empty() => "-".to_string(),
        Some(l) => time::count(l as f64),
        None => "?".to_string(),
    };
    // Narrow: name and verdict only; the selected group's lag is beside it.
    let with_lag = area.width >= 30;
    let name_width = area.width.saturating_sub(2 + 8 + if with_lag { 7 } else { 0 }) as usize;
    let rows: Vec<Row> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let mut cells = vec![
                Cell::from(crate::panels::cut(&g.description.group, name_width.max(4))),
                Cell::from(Span::styled(verdict_text(g.verdict), verdict_style(g.verdict))),
            ];
            if with_lag {
                cells.push(Cell::from(lag(g)));
            }
            let row = Row::new(cells);
            if i == selected {
                row.style(style::selected())
            } else {
                row
            }
        })
        .collect();
    let filter = if app.focus == Focus::Groups && !app.filter.is_empty() { format!("[/{}] ", app.filter) } else { String::new() };
    let (widths, titles) = if with_lag {
        (vec![Constraint::Min(4), Constraint::Length(7), Constraint::Length(6)], vec!["group", "verdict", "lag"])
    } else {
        (vec![Constraint::Min(4), Constraint::Length(7)], vec!["group", "verdict"])
    };
    let table = Table::new(rows, widths)
        .header(Row::new(titles).style(style::dim()))
        .block(block(format!(" Groups {filter}{} ", groups.len()), app.focus == Focus::Groups));
    frame.render_widget(table, area);
}

fn render_info(frame: &mut Frame, area: Rect, group: Option<&GroupView>) {
    let Some(g) = group else {
        frame.render_widget(Paragraph::new(" no group to show"), area);
        return;
    };
    let d = &g.description;
    let protocol = if d.assignor.is_empty() { d.protocol.clone() } else { format!("{}/{}", d.protocol, d.assignor) };
    let line = Line::from(vec![
        Span::styled(format!(" {} ", d.group), Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(format!(" {}  {protocol}  coordinator {}  ", d.state, d.coordinator.as_deref().unwrap_or("?"))),
        Span::styled(verdict_text(g.verdict), verdict_style(g.verdict).add_modifier(Modifier::BOLD)),
    ]);
    let second = match &d.error {
        Some(e) => Line::from(Span::styled(format!(" cannot describe: {e}"), style::failure())),
        None => Line::from(Span::styled(format!(" history: {}", g.history), style::dim())),
    };
    frame.render_widget(Paragraph::new(vec![line, second]), area);
}

fn render_partitions(frame: &mut Frame, area: Rect, app: &WatchApp, s: &WatchSnapshot) {
    let rows = app.partitions(s);
    let known = |v: Option<i64>| v.map_or("?".to_string(), |v| v.to_string());
    let now = s.captured_at_ms;
    let texts: Vec<[String; 9]> = rows
        .iter()
        .map(|p| {
            [
                format!("{}[{}]", p.topic, p.partition),
                known(p.committed),
                known(p.end),
                known(p.lag),
                p.lag_ms.map_or("?".into(), |ms| time::span(ms.max(0) as u64)),
                p.commit_rate.map_or("?".into(), time::count),
                p.last_commit_ms.map_or("?".into(), |at| time::ago(at.max(0) as u64, now)),
                verdict_text(p.verdict).to_string(),
                p.member.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let column = |i: usize| texts.iter().map(move |t| t[i].as_str());
    let columns = [
        Column::new("partition", Kind::Text { min: 10 }, 9, column(0)),
        Column::new("committed", Kind::Number, 6, column(1)),
        Column::new("end", Kind::Number, 5, column(2)),
        Column::new("lag", Kind::Number, 8, column(3)),
        Column::new("lag time", Kind::Number, 7, column(4)),
        Column::new("off/s", Kind::Number, 3, column(5)),
        Column::new("last commit", Kind::Number, 2, column(6)),
        Column::new("verdict", Kind::Number, 8, column(7)),
        Column::new("member", Kind::Text { min: 8 }, 1, column(8)),
    ];
    let widths = fit::fit(&columns, area.width.saturating_sub(2));
    let table_rows: Vec<Row> = rows
        .iter()
        .zip(texts)
        .enumerate()
        .map(|(i, (p, t))| {
            let cells: Vec<Cell> = t
                .into_iter()
                .enumerate()
                .zip(&widths)
                .filter_map(|((c, text), w)| {
                    let w = (*w)? as usize;
                    let text = if c == 0 || c == 8 { crate::panels::cut(&text, w) } else { text };
                    Some(if c == 7 { Cell::from(Span::styled(text, verdict_style(p.verdict))) } else { Cell::from(text) })
                })
                .collect();
            let row = Row::new(cells);
            if i == app.selected_partition() && app.focus == Focus::Partitions {
                row.style(style::selected())
            } else {
                row
            }
        })
        .collect();
    let constraints: Vec<Constraint> = widths.iter().flatten().map(|w| Constraint::Length(*w)).collect();
    let filter = if app.focus == Focus::Partitions && !app.filter.is_empty() { format!("[/{}] ", app.filter) } else { String::new() };
    let title = format!(" Partitions {filter}{} {} ", rows.len(), app.sort.label());
    let table = Table::new(table_rows, constraints)
        .header(Row::new(fit::titles(&columns, &widths)).style(style::dim()))
        .block(block(title, app.focus == Focus::Partitions));
    frame.render_widget(table, area);
}

fn render_members(frame: &mut Frame, area: Rect, app: &WatchApp, group: Option<&GroupView>) {
    let members = group.map(|g| g.description.members.as_slice()).unwrap_or_default();
    let rows: Vec<Row> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let parts: Vec<String> = m.partitions.iter().map(|(t, p)| format!("{t}[{p}]")).collect();
            let row = Row::new(vec![
                m.client_id.clone(),
                m.host.clone(),
                m.instance_id.clone().unwrap_or_else(|| "-".into()),
                parts.join(" "),
                m.member_id.clone(),
            ]);
            if i == app.selected_member() && app.focus == Focus::Members {
                row.style(style::selected())
            } else {
                row
            }
        })
        .collect();
    let widths = [Constraint::Length(14), Constraint::Length(14), Constraint::Length(10), Constraint::Fill(2), Constraint::Fill(1)];
    let table = Table::new(rows, widths)
        .header(Row::new(vec!["client id", "host", "instance", "partitions", "member id"]).style(style::dim()))
        .block(block(format!(" Members {} ", members.len()), app.focus == Focus::Members));
    frame.render_widget(table, area);
}

/// The points bucketed into `width` columns over the span ending `now`: each
/// column the worst (largest) value of its points. A column with an unknown
/// point is a gap; so is one with no point, unless it is only narrower than
/// the samples are apart (`every_ms`): it then shows the column before it.
pub fn columns(points: &[(u64, Option<u64>)], span_ms: u64, every_ms: u64, now_ms: u64, width: usize) -> Vec<Option<u64>> {
    if width == 0 {
        return Vec::new();
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Col {
        Empty,
        Unknown,
        Value(u64),
    }
    let mut cols = vec![Col::Empty; width];
    let start = now_ms.saturating_sub(span_ms);
    for &(at_ms, value) in points.iter().filter(|(at, _)| *at >= start && *at <= now_ms) {
        let i = ((((at_ms - start) as u128) * width as u128) / (span_ms.max(1) as u128 + 1)) as usize;
        let c = &mut cols[i.min(width - 1)];
        *c = match (value, *c) {
            (None, _) | (_, Col::Unknown) => Col::Unknown,
            (Some(v), Col::Value(m)) => Col::Value(m.max(v)),
            (Some(v), Col::Empty) => Col::Value(v),
        };
    }
    let column_ms = span_ms / width as u64;
    let bridge = (every_ms / column_ms.max(1)) as usize;
    let mut out = Vec::with_capacity(width);
    let mut since_point = usize::MAX;
    let mut last = None;
    for c in cols {
        match c {
            Col::Value(v) => {
                last = Some(v);
                since_point = 0;
                out.push(Some(v));
            }
            Col::Unknown => {
                last = None;
                out.push(None);
            }
            Col::Empty => {
                since_point = since_point.saturating_add(1);
                out.push(if since_point <= bridge { last } else { None });
            }
        }
    }
    out
}

/// Offsets committed per second between consecutive points; unknown where
/// either sum is, and over a reset (the sum went down).
pub fn commit_rates(points: &[LagPoint]) -> Vec<(u64, Option<u64>)> {
    points
        .windows(2)
        .map(|w| {
            let dt = w[1].at_ms.saturating_sub(w[0].at_ms);
            let rate = match (w[0].committed, w[1].committed) {
                (Some(a), Some(b)) if b >= a && dt > 0 => Some(((b - a) as u64 * 1000) / dt),
                _ => None,
            };
            (w[1].at_ms, rate)
        })
        .collect()
}

fn render_chart(frame: &mut Frame, area: Rect, app: &WatchApp, group: Option<&GroupView>, now: u64) {
    let points = group.map(|g| g.lag_history.as_slice()).unwrap_or_default();
    let inner = area.width.saturating_sub(2) as usize;
    let span = app.zoom.span_ms();
    let every_ms = if span <= 3_600_000 { 1000 } else { 60_000 };
    let lags: Vec<(u64, Option<u64>)> = points.iter().map(|p| (p.at_ms, p.lag.map(|l| l.max(0) as u64))).collect();
    let lag = columns(&lags, span, every_ms, now, inner);
    let rates = columns(&commit_rates(points), span, every_ms, now, inner);
    let max = lag.iter().flatten().max().copied();
    let worst_time = points.iter().filter_map(|p| p.lag_ms).max();
    let latest_rate = rates.iter().rev().find_map(|r| *r);
    // Lag (its worst over the span, in records and time), then the latest commit rate (cyan, below).
    let title = format!(
        " Lag {} (z) max {}{} · {}/s ",
        app.zoom.label(),
        max.map_or("?".to_string(), |m| time::count(m as f64)),
        worst_time.map_or(String::new(), |ms| format!(" · {} behind", time::span(ms.max(0) as u64))),
        latest_rate.map_or("?".to_string(), |r| time::count(r as f64)),
    );
    let outer = block(title, false);
    let body = outer.inner(area);
    frame.render_widget(outer, area);
    let [top, bottom] = Layout::vertical([Constraint::Min(1), Constraint::Length(2)]).areas(body);
    frame.render_widget(Sparkline::default().data(lag).style(Style::default().fg(Color::Yellow)), top);
    frame.render_widget(Sparkline::default().data(rates).style(Style::default().fg(Color::Cyan)), bottom);
}

fn render_footer(frame: &mut Frame, area: Rect, app: &WatchApp, s: &WatchSnapshot) {
    let line = if app.editing_filter {
        Line::from(format!(" filter: {}▏ enter: keep · esc: clear", app.filter))
    } else if let Some(n) = s.notices.last() {
        Line::from(Span::styled(format!(" {n}"), Style::default().fg(Color::Cyan)))
    } else {
        Line::from(Span::styled(" q quit · ? help · tab focus · ↑↓ select · / filter · s sort · z zoom · R reset offsets (Empty group)", style::dim()))
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn render_overlay(frame: &mut Frame, area: Rect, app: &WatchApp) {
    match &app.overlay {
        None => {}
        Some(WatchOverlay::Help) => {
            let keys = [
                ("q", "quit"),
                ("tab / shift-tab", "focus groups, partitions, members"),
                ("↑ ↓ / k j", "select"),
                ("/", "filter the focused list (esc clears)"),
                ("s", "sort partitions: offset order, lag, lag time, verdict"),
                ("z", "chart span: 1m, 15m, 1h, 24h"),
                ("R", "reset the group's offsets (all, or the selected partition): Empty groups only"),
            ];
            let lines = keys.iter().map(|(k, d)| Line::from(vec![Span::styled(format!("{k:>16}  "), style::title(true)), Span::raw(*d)])).collect();
            popup(frame, area, "Keys", lines, 80);
        }
        Some(WatchOverlay::Refused(why)) => {
            popup(frame, area, "Reset refused", vec![Line::from(format!(" {why}")), Line::from(Span::styled(" any key: close", style::dim()))], 70)
        }
        Some(WatchOverlay::Confirm { question, .. }) => popup(frame, area, "Confirm", vec![Line::from(format!(" {question}"))], 70),
        Some(WatchOverlay::Reset { group, partition, choice, input, problem }) => {
            let scope = partition.as_ref().map_or("every partition".to_string(), |(t, p)| format!("{t}[{p}]"));
            let mut lines = vec![Line::from(format!(" Reset {group}, {scope}, to:"))];
            for (i, c) in RESET_CHOICES.iter().enumerate() {
                let typed = if i == *choice && i >= 2 { format!(": {input}▏") } else { String::new() };
                let st = if i == *choice { style::selected() } else { Style::default() };
                lines.push(Line::from(Span::styled(format!("   {c}{typed} "), st)));
            }
            if let Some(p) = problem {
                lines.push(Line::from(Span::styled(format!(" {p}"), style::failure())));
            }
            lines.push(Line::from(Span::styled(" ↑↓ choose · type the time or offset · enter: next · esc: cancel", style::dim())));
            popup(frame, area, "Reset offsets", lines, 70);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_columns_keep_the_worst_lag_and_show_unknown_as_a_gap() {
        let p = |at_ms, lag: Option<u64>| (at_ms, lag);
        let points = [p(1_000, Some(5)), p(1_400, Some(9)), p(5_000, None), p(9_000, Some(2))];
        let cols = columns(&points, 10_000, 1000, 10_000, 5);
        assert_eq!(cols, vec![Some(9), None, None, None, Some(2)]);
        // Columns narrower than the samples are apart: a column between two samples
        // shows the one before; a longer absence stays a gap.
        let every_second: Vec<(u64, Option<u64>)> = (0..10).map(|s| p(s * 1000, Some(s))).collect();
        let cols = columns(&every_second, 10_000, 1000, 10_000, 15);
        assert!(cols.iter().skip(1).all(Option::is_some), "{cols:?}");
        let cols = columns(&[p(0, Some(1)), p(9_000, Some(1))], 10_000, 1000, 10_000, 15);
        assert_eq!(cols.iter().filter(|c| c.is_none()).count(), 15 - 2 - 2, "{cols:?}");
    }

    #[test]
    fn the_commit_rate_is_unknown_over_a_reset_or_an_unknown_sum() {
        let p = |at_ms, committed| LagPoint { at_ms, committed, ..Default::default() };
        let rates = commit_rates(&[p(0, Some(100)), p(1000, Some(350)), p(2000, Some(0)), p(3000, None), p(4000, Some(10))]);
        assert_eq!(rates, vec![(1000, Some(250)), (2000, None), (3000, None), (4000, None)]);
    }
}
