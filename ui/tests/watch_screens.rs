//! The watch screen as text (insta) at 80×24 and 160×48, verdict colours on
//! cells, and keys: group switching, sort, zoom, and the offset-reset flow
//! (refused on a group with members, confirmed on an Empty one).

mod common;

use common::{key, text};
use kdeck_ui::watch::app::{Focus, Sort, WatchApp, WatchOverlay, Zoom};
use kdeck_ui::watch::intent::{ResetTarget, WatchIntent};
use kdeck_ui::watch::model::*;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::KeyCode;
use ratatui::style::Color;
use ratatui::Terminal;

const NOW: u64 = 1_795_700_000_000;

fn partition(topic: &str, p: i32, committed: i64, end: i64, lag_ms: Option<i64>, verdict: Option<Verdict>) -> GroupPartitionView {
    GroupPartitionView {
        topic: topic.into(),
        partition: p,
        committed: Some(committed),
        end: Some(end),
        lag: Some(end - committed),
        lag_ms,
        commit_rate: Some(250.0),
        last_commit_ms: Some(NOW as i64 - 4000),
        verdict,
        member: Some("billing-1@/10.0.0.7".into()),
        error: None,
    }
}

fn group(name: &str, state: &str, members: usize, partitions: Vec<GroupPartitionView>, verdict: Option<Verdict>) -> GroupView {
    GroupView {
        description: GroupDescription {
            group: name.into(),
            state: state.into(),
            protocol: "classic".into(),
            assignor: "range".into(),
            coordinator: Some("10.0.0.1:9092 (id 1)".into()),
            members: (0..members)
                .map(|i| MemberView {
                    member_id: format!("billing-{i}-5c1e0d2a-7f00-4a4e-9d59-0f3a7e1c2b11"),
                    client_id: format!("billing-{i}"),
                    host: "/10.0.0.7".into(),
                    instance_id: (i == 0).then(|| "host-a".into()),
                    partitions: vec![("payments".into(), i as i32)],
                })
                .collect(),
            error: None,
        },
        partitions,
        verdict,
        history: "__consumer_offsets, from 10m before start".into(),
        lag_history: (0..60)
            .map(|i| LagPoint { at_ms: NOW - (59 - i) * 1000, lag: Some(100 + i as i64 * 5), lag_ms: Some(2000), committed: Some(1000 + i as i64 * 250) })
            .collect(),
    }
}

fn fixture() -> WatchSnapshot {
    WatchSnapshot {
        captured_at_ms: NOW,
        cluster: "10.0.0.1:9092".into(),
        groups: vec![
            group(
                "billing",
                "Stable",
                2,
                vec![
                    partition("payments", 0, 1200, 1500, Some(192_000), Some(Verdict::Warn)),
                    partition("payments", 1, 900, 900, Some(0), Some(Verdict::Ok)),
                ],
                Some(Verdict::Warn),
            ),
            group("reports-nightly", "Empty", 0, vec![partition("orders", 0, 50, 4000, Some(3_600_000), Some(Verdict::Stop))], Some(Verdict::Stop)),
            group("audit-trail", "Empty", 0, vec![], None),
        ],
        error: None,
        notices: vec![],
    }
}

fn draw(app: &WatchApp, s: &WatchSnapshot, w: u16, h: u16) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| kdeck_ui::watch::view::render(f, app, s)).unwrap();
    t.backend().buffer().clone()
}

fn press(app: &mut WatchApp, s: &WatchSnapshot, keys: &[KeyCode]) -> Vec<WatchIntent> {
    keys.iter().flat_map(|k| app.handle_key(&key(*k), s)).collect()
}

#[test]
fn the_watch_screen_at_160x48() {
    insta::assert_snapshot!(text(&draw(&WatchApp::new(), &fixture(), 160, 48)));
}

#[test]
fn the_watch_screen_at_80x24() {
    insta::assert_snapshot!(text(&draw(&WatchApp::new(), &fixture(), 80, 24)));
}

#[test]
fn verdicts_are_coloured_and_unknown_is_grey() {
    let b = draw(&WatchApp::new(), &fixture(), 160, 48);
    let t = text(&b);
    let colour_of = |needle: &str| {
        let (y, line) = t.lines().enumerate().find(|(_, l)| l.contains(needle)).unwrap();
        let x = line[..line.find(needle).unwrap()].chars().count() as u16;
        b[(x, y as u16)].fg
    };
    assert_eq!(colour_of("WARN"), Color::Yellow);
    assert_eq!(colour_of("STOP"), Color::Red);
    assert_eq!(colour_of("OK"), Color::Green);
}

#[test]
fn switching_groups_sorting_and_zooming() {
    let s = fixture();
    let mut app = WatchApp::new();
    assert_eq!(app.selected_group(&s).unwrap().description.group, "billing");
    press(&mut app, &s, &[KeyCode::Down]);
    assert_eq!(app.selected_group(&s).unwrap().description.group, "reports-nightly");
    assert!(text(&draw(&app, &s, 160, 48)).contains("reports-nightly  Empty"));
    press(&mut app, &s, &[KeyCode::Up, KeyCode::Char('/'), KeyCode::Char('a'), KeyCode::Char('u'), KeyCode::Enter]);
    assert_eq!(app.groups(&s).len(), 1, "the filter keeps audit-trail only");
    assert_eq!(app.selected_group(&s).unwrap().description.group, "audit-trail");
    press(&mut app, &s, &[KeyCode::Esc, KeyCode::Up, KeyCode::Up, KeyCode::Char('s')]);
    assert_eq!(app.sort, Sort::Lag);
    assert_eq!(app.partitions(&s)[0].partition, 0, "the most behind first");
    press(&mut app, &s, &[KeyCode::Char('z'), KeyCode::Char('z')]);
    assert_eq!(app.zoom, Zoom::Hour);
    assert!(text(&draw(&app, &s, 160, 48)).contains("Lag 1h (z)"));
}

#[test]
fn a_reset_is_refused_on_a_group_with_members_and_confirmed_on_an_empty_one() {
    let s = fixture();
    let mut app = WatchApp::new();
    assert!(press(&mut app, &s, &[KeyCode::Char('R')]).is_empty());
    match &app.overlay {
        Some(WatchOverlay::Refused(why)) => assert!(why.contains("billing is Stable with 2 members"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(text(&draw(&app, &s, 80, 24)).contains("Reset refused"));
    press(&mut app, &s, &[KeyCode::Esc, KeyCode::Down, KeyCode::Char('R')]);
    assert!(matches!(app.overlay, Some(WatchOverlay::Reset { .. })));
    // An offset that is not a number is refused in the form.
    press(&mut app, &s, &[KeyCode::Down, KeyCode::Down, KeyCode::Down, KeyCode::Char('x'), KeyCode::Enter]);
    assert!(text(&draw(&app, &s, 80, 24)).contains("`x` is not an offset"));
    press(&mut app, &s, &[KeyCode::Backspace, KeyCode::Char('4'), KeyCode::Char('2'), KeyCode::Enter]);
    assert!(text(&draw(&app, &s, 160, 48)).contains("Reset reports-nightly, every partition, to offset 42? y / n"));
    let intents = press(&mut app, &s, &[KeyCode::Char('y')]);
    assert_eq!(intents, vec![WatchIntent::ResetOffsets { group: "reports-nightly".into(), partition: None, to: ResetTarget::Offset(42) }]);
    // From the partitions: that partition only; n cancels.
    press(&mut app, &s, &[KeyCode::Tab, KeyCode::Char('R'), KeyCode::Enter]);
    assert_eq!(app.focus, Focus::Partitions);
    assert!(matches!(&app.overlay, Some(WatchOverlay::Confirm { question, .. }) if question.contains("orders[0], to earliest")));
    assert!(press(&mut app, &s, &[KeyCode::Char('n')]).is_empty());
    assert!(app.overlay.is_none());
}
