//! Consumed, processed and failed records per second over the last minutes.

use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::symbols::Marker;
use ratatui::text::Span;
use ratatui::widgets::{Axis, Chart, Dataset, GraphType};
use ratatui::Frame;

use crate::app::{App, Panel};
use crate::model::Snapshot;
use crate::time;

pub fn render(frame: &mut Frame, area: Rect, app: &App, s: &Snapshot) {
    let now = s.captured_at_ms;
    let window = s.throughput.iter().filter(|t| now.saturating_sub(t.at_ms) <= 300_000);
    let series = |f: fn(&crate::model::ThroughputSample) -> f64| -> Vec<(f64, f64)> {
        window.clone().map(|t| (-(now.saturating_sub(t.at_ms) as f64) / 1000.0, f(t))).collect()
    };
    let (consumed, processed, failed) = (series(|t| t.consumed_per_s), series(|t| t.processed_per_s), series(|t| t.failed_per_s));
    let max = consumed.iter().chain(&processed).chain(&failed).map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let span_s = consumed.first().map_or(60.0, |p| (-p.0).max(60.0));
    let last = s.throughput.last();
    let title = format!(
        "consumed {}/s  processed {}/s  failed {}/s  p50 {}µs  p99 {}µs ",
        time::count(last.map_or(0.0, |t| t.consumed_per_s)),
        time::count(last.map_or(0.0, |t| t.processed_per_s)),
        time::count(last.map_or(0.0, |t| t.failed_per_s)),
        s.latency_p50_us,
        s.latency_p99_us,
    );
    let sets = vec![
        Dataset::default().name("consumed").marker(Marker::Braille).graph_type(GraphType::Line).style(Style::default().fg(Color::Cyan)).data(&consumed),
        Dataset::default().name("processed").marker(Marker::Braille).graph_type(GraphType::Line).style(Style::default().fg(Color::Green)).data(&processed),
        Dataset::default().name("failed").marker(Marker::Braille).graph_type(GraphType::Line).style(Style::default().fg(Color::Red)).data(&failed),
    ];
    let chart = Chart::new(sets)
        .block(super::block(app, Panel::Throughput, title))
        .x_axis(Axis::default().bounds([-span_s, 0.0]).labels([Span::raw(format!("-{}", time::span(span_s as u64 * 1000))), Span::raw("now")]))
        .y_axis(Axis::default().bounds([0.0, max]).labels([Span::raw("0"), Span::raw(time::count(max))]));
    frame.render_widget(chart, area);
}
