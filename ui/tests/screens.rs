//! Screens as text: a fixture snapshot drawn into ratatui's TestBackend and
//! compared with insta snapshots; colours that carry meaning asserted on cells;
//! keys as table tests.

mod common;

use common::{key, text};
use kdeck_ui::app::{App, Overlay, Panel};
use kdeck_ui::intent::{Intent, ReplayMode};
use kdeck_ui::keymap::{Action, KeyMap};
use kdeck_ui::model::*;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::KeyCode;
use ratatui::style::Color;
use ratatui::Terminal;

const NOW: u64 = 1_795_700_000_000;

fn partition(p: i32, state: PartitionState, lag: i64) -> PartitionView {
    PartitionView {
        topic: "orders".into(),
        partition: p,
        state,
        paused: state != PartitionState::Active,
        position: Some(1000 + p as i64),
        committed: Some(1000 + p as i64 - lag),
        finished: Some(1000 + p as i64),
        high_watermark: Some(1000 + p as i64 + 5),
        lag: Some(lag),
        lag_ms: Some(lag * 1500),
        last_processed_age_ms: Some(800),
        queued: 3,
        in_flight: 4,
        rate: 120.0,
        blocked: (state == PartitionState::Blocked).then(|| "dead-letter topic refused the record".into()),
    }
}

fn fixture() -> Snapshot {
    Snapshot {
        captured_at_ms: NOW,
        started_at_ms: NOW - 95_000,
        cluster: "127.0.0.1:9092".into(),
        group: "orders-processor".into(),
        member_id: "kdeck-4f2a".into(),
        group_protocol: "classic".into(),
        assignor: "cooperative-sticky".into(),
        engine_state: EngineState::Running,
        commit_strategy: "batch:1000".into(),
        pending_commit_strategy: None,
        sink: "sqlite:/tmp/out.sqlite".into(),
        consumed: 120_000,
        processed: 119_500,
        failed: 42,
        commits: 130,
        commit_failures: 0,
        lag_total: Some(340),
        partitions: vec![
            partition(0, PartitionState::Active, 20),
            partition(1, PartitionState::PausedByOperator, 300),
            partition(2, PartitionState::PausedByBackPressure, 20),
            partition(3, PartitionState::Blocked, 0),
        ],
        rebalance_state: RebalanceState::Stable,
        rebalances: vec![RebalanceEvent {
            started_at_ms: NOW - 60_000,
            duration_ms: 42,
            protocol: "cooperative".into(),
            gained: vec!["orders[2]".into(), "orders[3]".into()],
            lost: vec!["orders[4]".into()],
            assignment_lost: false,
        }],
        throughput: (0..60)
            .map(|i| ThroughputSample {
                at_ms: NOW - (59 - i) * 1000,
                consumed_per_s: 2000.0 + (i % 7) as f64 * 50.0,
                processed_per_s: 1950.0,
                failed_per_s: if i % 10 == 0 { 12.0 } else { 0.0 },
            })
            .collect(),
        errors: vec![EngineError { at_ms: NOW - 3000, area: "dlq".into(), message: "orders[3] cannot advance".into() }],
        retry_queue: vec![RetryView {
            topic: "orders".into(),
            partition: 0,
            offset: 981,
            key: Some("c-0042".into()),
            attempt: 2,
            next_due_ms: Some(NOW + 2500),
            stage: "handle".into(),
            last_error: "inventory timed out".into(),
        }],
        dead_letters: vec![DeadLetterView {
            at_ms: NOW - 12_000,
            topic: "orders".into(),
            partition: 1,
            offset: 700,
            key: Some("c-0007".into()),
            stage: "validate".into(),
            class: "permanent".into(),
            message: "/amount: -5 is less than the minimum of 0".into(),
            attempts: 1,
            dlq_topic: "orders.dlq".into(),
            dlq_partition: 0,
            dlq_offset: 17,
            audit_id: Some(5),
            headers: vec![("trace".into(), "t-1".into())],
            value_preview: "{\n  \"amount\": -5\n}".into(),
        }],
        failures: [("validate/permanent".to_string(), 40u64), ("handle/retryable".to_string(), 2)].into_iter().collect(),
        dead_lettered: 40,
        notices: vec![EngineError { at_ms: NOW - 1000, area: "replay".into(), message: "replay of audit #4: republished to orders[1]@1201".into() }],
        latency_p50_us: 180,
        latency_p99_us: 2400,
        logs: vec![LogLine { at_ms: NOW - 2000, level: "WARN".into(), message: "orders[3]@990: dead-letter topic refused the record".into() }],
        eos: None,
        rebalances_total: 3,
        commit_latency: LatencyHistogram::default(),
    }
}

fn app() -> App {
    App::new(KeyMap::default(), ["per-message", "batch:1000", "at-most-once"].map(String::from).to_vec())
}

fn draw(app: &App, s: &Snapshot, w: u16, h: u16) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| app.render(f, s)).unwrap();
    t.backend().buffer().clone()
}

fn find(b: &Buffer, needle: &str) -> (u16, u16) {
    let t = text(b);
    for (y, line) in t.lines().enumerate() {
        if let Some(x) = line.find(needle) {
            return (line[..x].chars().count() as u16, y as u16);
        }
    }
    panic!("{needle:?} not on screen:\n{t}")
}

#[test]
fn the_full_dashboard_at_160x48() {
    insta::assert_snapshot!(text(&draw(&app(), &fixture(), 160, 48)));
}

#[test]
fn the_small_dashboard_at_80x24_shows_lower_panels_as_tabs() {
    let mut a = app();
    let s = fixture();
    for panel in [Panel::Rebalances, Panel::Throughput, Panel::Retry, Panel::DeadLetters, Panel::Log] {
        while a.focus != panel {
            a.handle_key(&key(KeyCode::Tab), &s);
        }
        insta::assert_snapshot!(format!("small_{:?}", panel), text(&draw(&a, &s, 80, 24)));
    }
}

#[test]
fn overlays_render() {
    let s = fixture();
    let mut a = app();
    a.overlay = Some(Overlay::Strategy { selected: 0 });
    insta::assert_snapshot!("strategy_picker", text(&draw(&a, &s, 100, 30)));
    a.overlay = Some(Overlay::Detail);
    a.focus = Panel::DeadLetters;
    insta::assert_snapshot!("dead_letter_detail", text(&draw(&a, &s, 100, 30)));
}

#[test]
fn colours_carry_meaning() {
    let s = fixture();
    let b = draw(&app(), &s, 160, 48);
    let at = |needle: &str| {
        let (x, y) = find(&b, needle);
        b[(x, y)].fg
    };
    assert_eq!(at("active"), Color::Green);
    assert_eq!(at("paused"), Color::Yellow);
    assert_eq!(at("backpressure"), Color::Magenta);
    assert_eq!(at("BLOCKED"), Color::Red);
    assert_eq!(at("validate/permanent"), Color::Red, "a failing stage is red");
    assert_eq!(at("● RUNNING"), Color::Green);
}

#[test]
fn the_help_overlay_lists_every_binding() {
    let mut a = app();
    a.overlay = Some(Overlay::Help);
    let t = text(&draw(&a, &fixture(), 120, 40));
    for action in Action::ALL {
        assert!(t.contains(action.describe()), "{action:?} missing from help:\n{t}");
        assert!(t.contains(&a.keymap.label(action)), "{action:?}'s key missing from help");
    }
}

#[test]
fn keys_become_intents() {
    let s = fixture();
    // (keys pressed in order, intents of the last key)
    let cases: Vec<(Vec<KeyCode>, Vec<Intent>)> = vec![
        (vec![KeyCode::Char('p')], vec![Intent::PausePartition { topic: "orders".into(), partition: 0 }]),
        (vec![KeyCode::Down, KeyCode::Char('p')], vec![Intent::ResumePartition { topic: "orders".into(), partition: 1 }]),
        (vec![KeyCode::Char('P')], vec![Intent::PauseAll]),
        (vec![KeyCode::Char('U')], vec![Intent::ResumeAll]),
        (vec![KeyCode::Char('c'), KeyCode::Up, KeyCode::Enter], vec![Intent::SetCommitStrategy("per-message".into())]),
        (vec![KeyCode::Char('c'), KeyCode::Esc], vec![]),
        (vec![KeyCode::Tab, KeyCode::Tab, KeyCode::Tab, KeyCode::Char('t')], vec![Intent::RetryNow { topic: "orders".into(), partition: 0, offset: 981 }]),
        (vec![KeyCode::Tab, KeyCode::Tab, KeyCode::Tab, KeyCode::Char('d')], vec![Intent::DeadLetterNow { topic: "orders".into(), partition: 0, offset: 981 }]),
        (vec![KeyCode::BackTab, KeyCode::BackTab, KeyCode::Char('r'), KeyCode::Char('r')], vec![Intent::Replay { audit_id: 5, mode: ReplayMode::Reprocess, force: false }]),
        (vec![KeyCode::BackTab, KeyCode::BackTab, KeyCode::Char('A'), KeyCode::Char('p')], vec![Intent::Replay { audit_id: 5, mode: ReplayMode::Republish, force: false }]),
        (vec![KeyCode::BackTab, KeyCode::BackTab, KeyCode::Char('r'), KeyCode::Esc], vec![]),
        // A filter that matches nothing leaves nothing to replay.
        (vec![KeyCode::BackTab, KeyCode::BackTab, KeyCode::Char('/'), KeyCode::Char('z'), KeyCode::Enter, KeyCode::Char('A')], vec![]),
        (vec![KeyCode::Char('t')], vec![]),
        (vec![KeyCode::Char('q')], vec![Intent::Quit]),
    ];
    for (keys, expect) in cases {
        let mut a = app();
        let mut last = vec![];
        for k in &keys {
            last = a.handle_key(&key(*k), &s);
        }
        assert_eq!(last, expect, "keys {keys:?}");
    }
}

#[test]
fn freezing_keeps_the_screen_still_and_sorting_orders_by_lag() {
    let s = fixture();
    let mut a = app();
    a.handle_key(&key(KeyCode::Char('f')), &s);
    let mut later = s.clone();
    later.consumed = 999_999;
    assert!(text(&draw(&a, &later, 160, 48)).contains("120000"), "frozen: the old numbers stay");
    assert!(text(&draw(&a, &later, 160, 48)).contains("FROZEN"));
    a.handle_key(&key(KeyCode::Char('f')), &s);
    assert!(text(&draw(&a, &later, 160, 48)).contains("999999"));

    a.handle_key(&key(KeyCode::Char('s')), &s);
    let t = text(&draw(&a, &s, 160, 48));
    assert!(t.find("orders[1]").unwrap() < t.find("orders[0]").unwrap(), "the laggiest partition first");
}

#[test]
fn the_header_shows_exactly_once_transactions_and_the_last_problem() {
    let mut s = fixture();
    s.commit_strategy = "eos".into();
    s.eos = Some(EosView {
        sink: "kafka".into(),
        enabled: true,
        commits: 12,
        aborts: 1,
        open_records: Some(256),
        open_since_ms: Some(NOW - 2000),
        last_problem: Some("transaction aborted: fenced".into()),
    });
    let t = text(&draw(&app(), &s, 220, 48));
    assert!(t.contains("eos 12 txn 1 aborted open 256 rec 2s last: transaction aborted: fenced"), "{t}");
}

#[test]
fn numbers_are_never_cut_at_120_columns_text_is_shortened_instead() {
    let mut s = fixture();
    s.retry_queue[0].topic = "orders-from-the-web-shop".into();
    s.retry_queue[0].partition = 12;
    s.retry_queue[0].offset = 3_456_789;
    s.dead_letters[0].topic = "orders-from-the-web-shop".into();
    s.dead_letters[0].offset = 3_456_701;
    s.partitions[0].topic = "orders-from-the-web-shop".into();
    s.partitions[0].partition = 17;
    s.partitions[0].committed = Some(12_345_678_901);
    s.partitions[0].high_watermark = Some(12_345_679_901);
    s.partitions[0].lag = Some(1_000);
    for (w, h) in [(120, 40), (160, 48), (80, 24)] {
        let mut a = app();
        let mut shown = String::new();
        // Below 120×32 the lower panels are tabs: visit each.
        for _ in 0..6 {
            shown.push_str(&text(&draw(&a, &s, w, h)));
            a.handle_key(&key(KeyCode::Tab), &s);
        }
        for number in ["3456789", "3456701", "12345678901", "12345679901", "[17]"] {
            assert!(shown.contains(number), "{number} whole at {w}x{h}:\n{shown}");
        }
        for cut in ["345678…", "345670…", "@34\n"] {
            assert!(!shown.contains(cut), "a cut number at {w}x{h}");
        }
    }
}
