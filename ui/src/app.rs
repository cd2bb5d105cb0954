//! The dashboard: view state, keys → intents, and the layout.
//!
//! ```text
//! ┌ header: cluster · group · member · protocol · strategy · sink · state · uptime ┐
//! ├ partitions ─────────────────────────────┬ rebalances ─────────────────────────┤
//! │ one row per partition, lag bars         │ state + timeline                    │
//! ├ throughput ─────────────────────────────┴─────────────────────────────────────┤
//! │ consumed / processed / failed per second, p50 / p99                            │
//! ├ retry queue ──────────┬ dead letters ──────────────┬ log ─────────────────────┤
//! └ footer: keys · filter · frozen · latest notice ────────────────────────────────┘
//! ```
//! Below 120×32 the lower panels become tabs: the focused one (or the last
//! focused lower one) is shown.

use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::Frame;

use crate::intent::{Intent, ReplayMode};
use crate::keymap::{Action, KeyMap};
use crate::model::{DeadLetterView, PartitionView, RetryView, Snapshot};
use crate::panels;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    Partitions,
    Rebalances,
    Throughput,
    Retry,
    DeadLetters,
    Log,
}

impl Panel {
    pub const ALL: [Panel; 6] = [Panel::Partitions, Panel::Rebalances, Panel::Throughput, Panel::Retry, Panel::DeadLetters, Panel::Log];

    pub fn title(self) -> &'static str {
        match self {
            Panel::Partitions => "Partitions",
            Panel::Rebalances => "Rebalances",
            Panel::Throughput => "Throughput",
            Panel::Retry => "Retry queue",
            Panel::DeadLetters => "Dead letters",
            Panel::Log => "Log",
        }
    }

    fn index(self) -> usize {
        Panel::ALL.iter().position(|p| *p == self).unwrap()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Overlay {
    Help,
    /// Picking a commit strategy; `selected` indexes `App::strategies`.
    Strategy { selected: usize },
    /// Replaying these dead letters (audit ids): r reprocess, p republish, esc cancel.
    ConfirmReplay { audit_ids: Vec<i64>, what: String },
    /// The selected dead letter in full.
    Detail,
}

pub struct App {
    pub keymap: KeyMap,
    pub focus: Panel,
    /// The last lower panel focused: what the tabbed small layout shows.
    pub lower: Panel,
    selected: [usize; 6],
    pub filter: String,
    pub editing_filter: bool,
    pub frozen: Option<Snapshot>,
    pub sort_by_lag: bool,
    pub overlay: Option<Overlay>,
    /// Commit strategies the sink supports, in their CLI spelling.
    pub strategies: Vec<String>,
    pub quit: bool,
}

impl App {
    pub fn new(keymap: KeyMap, strategies: Vec<String>) -> App {
        App {
            keymap,
            focus: Panel::Partitions,
            lower: Panel::Retry,
            selected: [0; 6],
            filter: String::new(),
            editing_filter: false,
            frozen: None,
            sort_by_lag: false,
            overlay: None,
            strategies,
            quit: false,
        }
    }

    /// The snapshot to draw: the frozen one while frozen.
    pub fn shown<'a>(&'a self, live: &'a Snapshot) -> &'a Snapshot {
        self.frozen.as_ref().unwrap_or(live)
    }

    pub fn selected(&self, panel: Panel) -> usize {
        self.selected[panel.index()]
    }

    fn matches(&self, text: &str) -> bool {
        self.filter.is_empty() || text.to_lowercase().contains(&self.filter.to_lowercase())
    }

    /// Partition rows in display order, filtered.
    pub fn partitions<'a>(&self, s: &'a Snapshot) -> Vec<&'a PartitionView> {
        let mut rows: Vec<&PartitionView> =
            s.partitions.iter().filter(|p| self.focus != Panel::Partitions || self.matches(&format!("{}[{}]", p.topic, p.partition))).collect();
        if self.sort_by_lag {
            // Unknown lag sorts last: None is below every Some.
            rows.sort_by_key(|p| std::cmp::Reverse(p.lag));
        }
        rows
    }

    pub fn retries<'a>(&self, s: &'a Snapshot) -> Vec<&'a RetryView> {
        s.retry_queue
            .iter()
            .filter(|r| self.focus != Panel::Retry || self.matches(&format!("{}[{}]@{} {} {}", r.topic, r.partition, r.offset, r.key.as_deref().unwrap_or(""), r.last_error)))
            .collect()
    }

    pub fn dead_letters<'a>(&self, s: &'a Snapshot) -> Vec<&'a DeadLetterView> {
        s.dead_letters
            .iter()
            .filter(|d| {
                self.focus != Panel::DeadLetters
                    || self.matches(&format!("{}[{}]@{} {} {} {}", d.topic, d.partition, d.offset, d.stage, d.class, d.message))
            })
            .collect()
    }

    fn rows(&self, panel: Panel, s: &Snapshot) -> usize {
        match panel {
            Panel::Partitions => self.partitions(s).len(),
            Panel::Rebalances => s.rebalances.len(),
            Panel::Retry => self.retries(s).len(),
            Panel::DeadLetters => self.dead_letters(s).len(),
            Panel::Log => s.logs.len(),
            Panel::Throughput => 0,
        }
    }

    fn select(&mut self, delta: isize, s: &Snapshot) {
        let n = self.rows(self.focus, s);
        let i = &mut self.selected[self.focus.index()];
        *i = if n == 0 { 0 } else { (*i as isize + delta).clamp(0, n as isize - 1) as usize };
    }

    fn focus(&mut self, delta: isize) {
        let i = (self.focus.index() as isize + delta).rem_euclid(Panel::ALL.len() as isize) as usize;
        self.focus = Panel::ALL[i];
        if self.focus != Panel::Partitions {
            self.lower = self.focus;
        }
        self.filter.clear();
    }

    /// Turns a key press into what the operator asks of the engine (usually nothing:
    /// most keys only change the view).
    pub fn handle_key(&mut self, key: &KeyEvent, live: &Snapshot) -> Vec<Intent> {
        if self.editing_filter {
            edit_filter(&mut self.filter, &mut self.editing_filter, key.code);
            self.selected[self.focus.index()] = 0;
            return vec![];
        }
        let action = self.keymap.action(key);
        let s = self.frozen.clone().unwrap_or_else(|| live.clone());
        if let Some(overlay) = self.overlay.clone() {
            return self.handle_overlay(overlay, key, action);
        }
        let Some(action) = action else { return vec![] };
        match action {
            Action::Quit => {
                self.quit = true;
                return vec![Intent::Quit];
            }
            Action::Help => self.overlay = Some(Overlay::Help),
            Action::FocusNext => self.focus(1),
            Action::FocusPrev => self.focus(-1),
            Action::Up => self.select(-1, &s),
            Action::Down => self.select(1, &s),
            Action::Back => self.filter.clear(),
            Action::Filter => {
                self.editing_filter = true;
                self.filter.clear();
            }
            Action::SortByLag => self.sort_by_lag = !self.sort_by_lag,
            Action::Freeze => self.frozen = if self.frozen.is_some() { None } else { Some(live.clone()) },
            Action::PauseAll => return vec![Intent::PauseAll],
            Action::ResumeAll => return vec![Intent::ResumeAll],
            Action::CommitStrategy => {
                let current = self.strategies.iter().position(|x| *x == s.commit_strategy).unwrap_or(0);
                self.overlay = Some(Overlay::Strategy { selected: current });
            }
            Action::TogglePause => {
                if let Some(p) = self.partitions(&s).get(self.selected(Panel::Partitions)) {
                    let (topic, partition) = (p.topic.clone(), p.partition);
                    return vec![if p.state == crate::model::PartitionState::PausedByOperator {
                        Intent::ResumePartition { topic, partition }
                    } else {
                        Intent::PausePartition { topic, partition }
                    }];
                }
            }
            Action::RetryNow | Action::DeadLetterNow if self.focus == Panel::Retry => {
                if let Some(r) = self.retries(&s).get(self.selected(Panel::Retry)) {
                    let (topic, partition, offset) = (r.topic.clone(), r.partition, r.offset);
                    return vec![if action == Action::RetryNow {
                        Intent::RetryNow { topic, partition, offset }
                    } else {
                        Intent::DeadLetterNow { topic, partition, offset }
                    }];
                }
            }
            Action::Select if self.focus == Panel::DeadLetters && !self.dead_letters(&s).is_empty() => {
                self.overlay = Some(Overlay::Detail)
            }
            Action::Replay if self.focus == Panel::DeadLetters => {
                if let Some(d) = self.dead_letters(&s).get(self.selected(Panel::DeadLetters)) {
                    if let Some(id) = d.audit_id {
                        let what = format!("{}[{}]@{}", d.topic, d.partition, d.offset);
                        self.overlay = Some(Overlay::ConfirmReplay { audit_ids: vec![id], what });
                    }
                }
            }
            Action::ReplayAll if self.focus == Panel::DeadLetters => {
                let ids: Vec<i64> = self.dead_letters(&s).iter().filter_map(|d| d.audit_id).collect();
                if !ids.is_empty() {
                    let what = format!("{} dead letters{}", ids.len(), if self.filter.is_empty() { String::new() } else { format!(" matching `{}`", self.filter) });
                    self.overlay = Some(Overlay::ConfirmReplay { audit_ids: ids, what });
                }
            }
            _ => {}
        }
        vec![]
    }

    fn handle_overlay(&mut self, overlay: Overlay, key: &KeyEvent, action: Option<Action>) -> Vec<Intent> {
        let close = matches!(action, Some(Action::Back)) || key.code == KeyCode::Esc;
        match overlay {
            Overlay::Help | Overlay::Detail => {
                if close || matches!(action, Some(Action::Help | Action::Select)) {
                    self.overlay = None;
                }
            }
            Overlay::Strategy { selected } => match action {
                Some(Action::Up) => self.overlay = Some(Overlay::Strategy { selected: selected.saturating_sub(1) }),
                Some(Action::Down) => {
                    let last = self.strategies.len().saturating_sub(1);
                    self.overlay = Some(Overlay::Strategy { selected: (selected + 1).min(last) });
                }
                Some(Action::Select) => {
                    self.overlay = None;
                    if let Some(s) = self.strategies.get(selected) {
                        return vec![Intent::SetCommitStrategy(s.clone())];
                    }
                }
                _ if close => self.overlay = None,
                _ => {}
            },
            Overlay::ConfirmReplay { audit_ids, .. } => {
                let mode = match key.code {
                    KeyCode::Char('r') => Some(ReplayMode::Reprocess),
                    KeyCode::Char('p') => Some(ReplayMode::Republish),
                    _ => None,
                };
                if let Some(mode) = mode {
                    self.overlay = None;
                    return audit_ids.into_iter().map(|audit_id| Intent::Replay { audit_id, mode, force: false }).collect();
                }
                if close {
                    self.overlay = None;
                }
            }
        }
        vec![]
    }

    pub fn render(&self, frame: &mut Frame, live: &Snapshot) {
        let s = self.shown(live);
        let area = frame.area();
        let small = area.width < 120 || area.height < 32;
        let [header, body, footer] =
            Layout::vertical([Constraint::Length(3), Constraint::Min(0), Constraint::Length(1)]).areas(area);
        panels::header::render(frame, header, s);
        panels::footer::render(frame, footer, self, s);
        if small {
            let rows = (s.partitions.len() as u16 + 3).clamp(5, body.height / 2);
            let [top, tabs, lower] = Layout::vertical([Constraint::Length(rows), Constraint::Length(1), Constraint::Min(0)]).areas(body);
            panels::partitions::render(frame, top, self, s);
            panels::footer::tabs(frame, tabs, self);
            self.render_panel(frame, lower, self.lower, s);
        } else {
            // The partition table takes the room it needs, up to 40%; the rest goes below.
            let rows = (s.partitions.len() as u16 + 3).clamp(8, body.height * 2 / 5);
            let [top, middle, bottom] =
                Layout::vertical([Constraint::Length(rows), Constraint::Percentage(30), Constraint::Min(0)]).areas(body);
            let [parts, rebalances] = Layout::horizontal([Constraint::Percentage(62), Constraint::Min(0)]).areas(top);
            panels::partitions::render(frame, parts, self, s);
            self.render_panel(frame, rebalances, Panel::Rebalances, s);
            self.render_panel(frame, middle, Panel::Throughput, s);
            let [retry, dead, log] =
                Layout::horizontal([Constraint::Percentage(32), Constraint::Percentage(38), Constraint::Min(0)]).areas(bottom);
            self.render_panel(frame, retry, Panel::Retry, s);
            self.render_panel(frame, dead, Panel::DeadLetters, s);
            self.render_panel(frame, log, Panel::Log, s);
        }
        match &self.overlay {
            Some(Overlay::Help) => panels::overlays::help(frame, area, &self.keymap),
            Some(Overlay::Strategy { selected }) => panels::overlays::strategy(frame, area, &self.strategies, *selected, s),
            Some(Overlay::ConfirmReplay { what, .. }) => panels::overlays::confirm_replay(frame, area, what),
            Some(Overlay::Detail) => {
                if let Some(d) = self.dead_letters(s).get(self.selected(Panel::DeadLetters)) {
                    panels::overlays::detail(frame, area, d, s);
                }
            }
            None => {}
        }
    }

    fn render_panel(&self, frame: &mut Frame, area: Rect, panel: Panel, s: &Snapshot) {
        match panel {
            Panel::Partitions => panels::partitions::render(frame, area, self, s),
            Panel::Rebalances => panels::rebalances::render(frame, area, self, s),
            Panel::Throughput => panels::throughput::render(frame, area, self, s),
            Panel::Retry => panels::retry::render(frame, area, self, s),
            Panel::DeadLetters => panels::dead_letters::render(frame, area, self, s),
            Panel::Log => panels::log::render(frame, area, self, s),
        }
    }
}

/// A key while a filter is being typed: characters add to it, backspace takes
/// one away, enter keeps it, esc clears it; the last two end the typing.
/// True when enter kept it.
pub fn edit_filter(filter: &mut String, editing: &mut bool, code: KeyCode) -> bool {
    match code {
        KeyCode::Enter => {
            *editing = false;
            return true;
        }
        KeyCode::Esc => {
            *editing = false;
            filter.clear();
        }
        KeyCode::Backspace => {
            filter.pop();
        }
        KeyCode::Char(c) => filter.push(c),
        _ => {}
    }
    false
}
