//! The watch view's state and keys. Keys become `WatchIntent`s; the rest
//! (selection, focus, sort, filter, zoom, overlays) is view state only.

use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::intent::{ResetTarget, WatchIntent};
use super::model::{GroupPartitionView, GroupView, WatchSnapshot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Groups,
    Partitions,
    Members,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Partition,
    Lag,
    LagTime,
    Verdict,
}

impl Sort {
    pub fn label(self) -> &'static str {
        match self {
            Sort::Partition => "",
            Sort::Lag => "by lag",
            Sort::LagTime => "by lag time",
            Sort::Verdict => "by verdict",
        }
    }
}

/// The lag chart's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zoom {
    Minute,
    Quarter,
    Hour,
    Day,
}

impl Zoom {
    pub fn span_ms(self) -> u64 {
        match self {
            Zoom::Minute => 60_000,
            Zoom::Quarter => 15 * 60_000,
            Zoom::Hour => 3_600_000,
            Zoom::Day => 24 * 3_600_000,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Zoom::Minute => "1m",
            Zoom::Quarter => "15m",
            Zoom::Hour => "1h",
            Zoom::Day => "24h",
        }
    }

    fn next(self) -> Zoom {
        match self {
            Zoom::Minute => Zoom::Quarter,
            Zoom::Quarter => Zoom::Hour,
            Zoom::Hour => Zoom::Day,
            Zoom::Day => Zoom::Minute,
        }
    }
}

pub const RESET_CHOICES: [&str; 4] = ["earliest", "latest", "a time (RFC 3339)", "an offset"];

#[derive(Debug, Clone, PartialEq)]
pub enum WatchOverlay {
    Help,
    /// Choosing where to reset `group` (one partition or all) to.
    Reset { group: String, partition: Option<(String, i32)>, choice: usize, input: String, problem: Option<String> },
    /// The reset, spelled out, waiting for y.
    Confirm { intent: WatchIntent, question: String },
    /// Why a reset cannot be offered for this group.
    Refused(String),
}

pub struct WatchApp {
    pub focus: Focus,
    /// The selected group, by name (stays on it as groups come and go).
    pub group: Option<String>,
    selected_partition: usize,
    selected_member: usize,
    pub filter: String,
    pub editing_filter: bool,
    pub sort: Sort,
    pub zoom: Zoom,
    pub overlay: Option<WatchOverlay>,
    pub quit: bool,
}

impl Default for WatchApp {
    fn default() -> Self {
        WatchApp::new()
    }
}

impl WatchApp {
    pub fn new() -> WatchApp {
        WatchApp {
            focus: Focus::Groups,
            group: None,
            selected_partition: 0,
            selected_member: 0,
            filter: String::new(),
            editing_filter: false,
            sort: Sort::Partition,
            zoom: Zoom::Minute,
            overlay: None,
            quit: false,
        }
    }

    /// Groups in display order: filtered by name while the group list is focused.
    pub fn groups<'a>(&self, s: &'a WatchSnapshot) -> Vec<&'a GroupView> {
        let filter = self.filter.to_lowercase();
        s.groups.iter().filter(|g| self.focus != Focus::Groups || filter.is_empty() || g.description.group.to_lowercase().contains(&filter)).collect()
    }

    /// The selected group: the one by name, else the first shown.
    pub fn selected_group<'a>(&self, s: &'a WatchSnapshot) -> Option<&'a GroupView> {
        let groups = self.groups(s);
        self.group.as_ref().and_then(|name| groups.iter().find(|g| &g.description.group == name).copied()).or(groups.first().copied())
    }

    pub fn selected_group_index(&self, s: &WatchSnapshot) -> usize {
        let chosen = self.selected_group(s).map(|g| g.description.group.clone());
        self.groups(s).iter().position(|g| Some(&g.description.group) == chosen.as_ref()).unwrap_or(0)
    }

    /// The selected group's partitions in display order, filtered while focused.
    pub fn partitions<'a>(&self, s: &'a WatchSnapshot) -> Vec<&'a GroupPartitionView> {
        let Some(g) = self.selected_group(s) else { return Vec::new() };
        let filter = self.filter.to_lowercase();
        let mut rows: Vec<&GroupPartitionView> = g
            .partitions
            .iter()
            .filter(|p| self.focus != Focus::Partitions || filter.is_empty() || format!("{}[{}]", p.topic, p.partition).to_lowercase().contains(&filter))
            .collect();
        match self.sort {
            Sort::Partition => {}
            // Unknown sorts last: None is below every Some.
            Sort::Lag => rows.sort_by_key(|p| std::cmp::Reverse(p.lag)),
            Sort::LagTime => rows.sort_by_key(|p| std::cmp::Reverse(p.lag_ms)),
            Sort::Verdict => rows.sort_by_key(|p| std::cmp::Reverse(p.verdict)),
        }
        rows
    }

    pub fn selected_partition(&self) -> usize {
        self.selected_partition
    }

    pub fn selected_member(&self) -> usize {
        self.selected_member
    }

    pub fn handle_key(&mut self, key: &KeyEvent, s: &WatchSnapshot) -> Vec<WatchIntent> {
        if let Some(overlay) = self.overlay.take() {
            return self.overlay_key(overlay, key);
        }
        if self.editing_filter {
            // The group found stays selected when the filter is cleared.
            if crate::app::edit_filter(&mut self.filter, &mut self.editing_filter, key.code) && self.focus == Focus::Groups {
                self.group = self.selected_group(s).map(|g| g.description.group.clone());
            }
            return Vec::new();
        }
        match key.code {
            KeyCode::Char('q') => {
                self.quit = true;
                return vec![WatchIntent::Quit];
            }
            KeyCode::Char('?') => self.overlay = Some(WatchOverlay::Help),
            KeyCode::Tab => self.cycle_focus(true),
            KeyCode::BackTab => self.cycle_focus(false),
            KeyCode::Down | KeyCode::Char('j') => self.step(s, 1),
            KeyCode::Up | KeyCode::Char('k') => self.step(s, -1),
            KeyCode::Char('/') => {
                self.editing_filter = true;
                self.filter.clear();
            }
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Char('s') => {
                self.sort = match self.sort {
                    Sort::Partition => Sort::Lag,
                    Sort::Lag => Sort::LagTime,
                    Sort::LagTime => Sort::Verdict,
                    Sort::Verdict => Sort::Partition,
                }
            }
            KeyCode::Char('z') => self.zoom = self.zoom.next(),
            KeyCode::Char('R') => self.offer_reset(s),
            _ => {}
        }
        Vec::new()
    }

    fn cycle_focus(&mut self, forward: bool) {
        let order = [Focus::Groups, Focus::Partitions, Focus::Members];
        let i = order.iter().position(|f| *f == self.focus).unwrap_or(0);
        self.focus = order[if forward { (i + 1) % 3 } else { (i + 2) % 3 }];
        self.filter.clear();
    }

    fn step(&mut self, s: &WatchSnapshot, by: i64) {
        let move_in = |at: usize, len: usize| (at as i64 + by).clamp(0, len.saturating_sub(1) as i64) as usize;
        match self.focus {
            Focus::Groups => {
                let groups = self.groups(s);
                let at = move_in(self.selected_group_index(s), groups.len());
                if let Some(g) = groups.get(at) {
                    if self.group.as_ref() != Some(&g.description.group) {
                        self.selected_partition = 0;
                        self.selected_member = 0;
                    }
                    self.group = Some(g.description.group.clone());
                }
            }
            Focus::Partitions => self.selected_partition = move_in(self.selected_partition, self.partitions(s).len()),
            Focus::Members => {
                let n = self.selected_group(s).map_or(0, |g| g.description.members.len());
                self.selected_member = move_in(self.selected_member, n);
            }
        }
    }

    /// `R`: the selected partition with the partitions focused, else all of
    /// the group's; refused at once unless the group is Empty.
    fn offer_reset(&mut self, s: &WatchSnapshot) {
        let Some(g) = self.selected_group(s) else { return };
        let d = &g.description;
        if d.state != "Empty" {
            let members = d.members.len();
            self.overlay = Some(WatchOverlay::Refused(format!(
                "{} is {} with {members} member{}: offsets can be reset only when the group is Empty.",
                d.group,
                d.state,
                if members == 1 { "" } else { "s" }
            )));
            return;
        }
        let partition = if self.focus == Focus::Partitions {
            self.partitions(s).get(self.selected_partition).map(|p| (p.topic.clone(), p.partition))
        } else {
            None
        };
        self.overlay = Some(WatchOverlay::Reset { group: d.group.clone(), partition, choice: 0, input: String::new(), problem: None });
    }

    fn overlay_key(&mut self, overlay: WatchOverlay, key: &KeyEvent) -> Vec<WatchIntent> {
        match overlay {
            WatchOverlay::Help | WatchOverlay::Refused(_) => Vec::new(),
            WatchOverlay::Confirm { intent, .. } => {
                if key.code == KeyCode::Char('y') {
                    vec![intent]
                } else {
                    Vec::new()
                }
            }
            WatchOverlay::Reset { group, partition, mut choice, mut input, .. } => {
                let mut problem = None;
                match key.code {
                    KeyCode::Esc => return Vec::new(),
                    KeyCode::Up => choice = choice.saturating_sub(1),
                    KeyCode::Down => choice = (choice + 1).min(RESET_CHOICES.len() - 1),
                    KeyCode::Backspace => {
                        input.pop();
                    }
                    KeyCode::Char(c) if choice >= 2 => input.push(c),
                    KeyCode::Enter => match target(choice, &input) {
                        Ok(to) => {
                            let scope = partition.as_ref().map_or("every partition".to_string(), |(t, p)| format!("{t}[{p}]"));
                            let question = format!("Reset {group}, {scope}, to {to}? y / n");
                            self.overlay = Some(WatchOverlay::Confirm { intent: WatchIntent::ResetOffsets { group, partition, to }, question });
                            return Vec::new();
                        }
                        Err(why) => problem = Some(why),
                    },
                    _ => {}
                }
                self.overlay = Some(WatchOverlay::Reset { group, partition, choice, input, problem });
                Vec::new()
            }
        }
    }
}

fn target(choice: usize, input: &str) -> Result<ResetTarget, String> {
    let input = input.trim();
    match choice {
        0 => Ok(ResetTarget::Earliest),
        1 => Ok(ResetTarget::Latest),
        2 if input.is_empty() => Err("type a time like 2026-11-27T10:00:00Z".into()),
        2 => Ok(ResetTarget::Timestamp(input.to_string())),
        _ => input.parse::<i64>().ok().filter(|o| *o >= 0).map(ResetTarget::Offset).ok_or_else(|| format!("`{input}` is not an offset (0 or more)")),
    }
}
