//! The terminal dashboard's event loop: draws the latest snapshot (at most ~30
//! frames a second, only when something changed) and turns keys into engine
//! commands. The terminal is restored on every way out: quit, engine error,
//! SIGTERM (the engine stops, so does this loop) and panics (ratatui's hook).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use kdeck_ui::app::App;
use kdeck_ui::keymap::KeyMap;
use kdeck_ui::model::Snapshot;
use ratatui::crossterm::event::{self, Event};

use crate::engine::{Command, EngineHandle};

const FRAME: Duration = Duration::from_millis(33);

/// True when a dashboard can be shown: stdout is a terminal.
pub fn available() -> bool {
    std::io::stdout().is_terminal()
}

/// Commit strategies the dashboard offers: `eos` only where the sink can honour it.
pub fn strategies(eos: bool) -> Vec<String> {
    let mut s: Vec<String> = ["per-message", "batch:1000", "batch:100", "interval:1s", "interval:5s", "at-most-once"].map(String::from).to_vec();
    if eos {
        s.push("eos".into());
    }
    s
}

pub fn run(engine: EngineHandle, keymap: KeyMap, strategies: Vec<String>) -> Result<()> {
    // ratatui's hook restores the terminal and reports the panic; a panic on any
    // thread then ends the process, since the screen is no longer ours to draw on.
    // Nothing unfinished was committed, so nothing is lost.
    let mut terminal = ratatui::init();
    let restore_and_report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_and_report(info);
        std::process::exit(101);
    }));
    let outcome = event_loop(&mut terminal, &engine, keymap, strategies);
    ratatui::restore();
    let joined = engine.join();
    outcome.and(joined)
}

fn event_loop(terminal: &mut ratatui::DefaultTerminal, engine: &EngineHandle, keymap: KeyMap, strategies: Vec<String>) -> Result<()> {
    let mut app = App::new(keymap, strategies);
    let mut snapshots = engine.subscribe();
    let mut snap: Arc<Snapshot> = snapshots.borrow_and_update().clone();
    let mut dirty = true;
    let mut last_draw = Instant::now() - FRAME;
    while !engine.is_finished() {
        if event::poll(FRAME.saturating_sub(last_draw.elapsed()).max(Duration::from_millis(5)))? {
            match event::read()? {
                Event::Key(key) => {
                    for intent in app.handle_key(&key, &snap) {
                        match Command::try_from(intent) {
                            Ok(c) => engine.send(c),
                            Err(e) => tracing::warn!("{e}"),
                        }
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        if snapshots.has_changed().unwrap_or(false) {
            snap = snapshots.borrow_and_update().clone();
            dirty |= app.frozen.is_none();
        }
        if dirty && last_draw.elapsed() >= FRAME {
            terminal.draw(|f| app.render(f, &snap))?;
            last_draw = Instant::now();
            dirty = false;
        }
    }
    Ok(())
}
