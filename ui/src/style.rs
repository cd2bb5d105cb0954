//! Colours that carry meaning, in one place (tests assert them on cells).

use ratatui::style::{Color, Modifier, Style};

use crate::model::{EngineState, PartitionState, RebalanceState};

pub fn partition(state: PartitionState) -> Style {
    Style::default().fg(match state {
        PartitionState::Active => Color::Green,
        PartitionState::PausedByOperator => Color::Yellow,
        PartitionState::PausedByBackPressure => Color::Magenta,
        PartitionState::PausedByEngine => Color::Blue,
        PartitionState::Blocked => Color::Red,
    })
}

pub fn partition_label(state: PartitionState) -> &'static str {
    match state {
        PartitionState::Active => "active",
        PartitionState::PausedByOperator => "paused",
        PartitionState::PausedByBackPressure => "backpressure",
        PartitionState::PausedByEngine => "held",
        PartitionState::Blocked => "BLOCKED",
    }
}

pub fn engine(state: EngineState) -> Style {
    let c = match state {
        EngineState::Running => Color::Green,
        EngineState::Starting | EngineState::Draining => Color::Cyan,
        EngineState::Paused => Color::Yellow,
        EngineState::Stopped => Color::DarkGray,
        EngineState::Error => Color::Red,
    };
    Style::default().fg(c).add_modifier(Modifier::BOLD)
}

pub fn rebalance(state: RebalanceState) -> Style {
    Style::default().fg(match state {
        RebalanceState::Stable => Color::Green,
        RebalanceState::PreparingRebalance => Color::Yellow,
        RebalanceState::CompletingRebalance => Color::Cyan,
    })
}

pub fn failure() -> Style {
    Style::default().fg(Color::Red)
}

pub fn title(focused: bool) -> Style {
    if focused {
        Style::default().fg(Color::Cyan).add_modifier(Modifier::BOLD)
    } else {
        Style::default().fg(Color::Gray)
    }
}

pub fn selected() -> Style {
    Style::default().add_modifier(Modifier::REVERSED)
}

pub fn dim() -> Style {
    Style::default().fg(Color::DarkGray)
}
