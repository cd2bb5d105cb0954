//! `kdeck watch`: a sampler thread observes the groups once a second, keeps
//! the history and carries out offset resets; the dashboard (or, when stdout
//! is not a terminal, a JSON line per sample) shows what it publishes.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use crossbeam_channel::{Receiver, Sender};
use kdeck_ui::watch::app::WatchApp;
use kdeck_ui::watch::intent::WatchIntent;
use kdeck_ui::watch::model::WatchSnapshot;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyModifiers};
use serde_json::json;
use tokio::sync::watch;

use crate::cli::WatchArgs;
use crate::engine::audit::{self, Audit};
use crate::monitor::history::{self, History};
use crate::monitor::{reset, Observer};

const SAMPLE_EVERY: Duration = Duration::from_secs(1);
const NOTICES_KEPT: usize = 20;
const FRAME: Duration = Duration::from_millis(33);

pub fn run(args: &WatchArgs, stop: Arc<AtomicBool>) -> Result<()> {
    let options = crate::lag::options(&args.monitor)?;
    let endpoint = crate::metrics::bind_option(args.metrics.as_deref())?;
    let cluster = options.brokers.clone();
    let observer = Observer::new(options).map_err(|e| anyhow!(e))?;
    let history_path = args.history.clone().unwrap_or_else(history::default_path);
    let history = History::open(&history_path).map_err(|e| anyhow!(e))?;
    let audit = Audit::open(&args.audit.clone().unwrap_or_else(audit::default_path)).map_err(|e| anyhow!(e))?;
    let (snap_tx, snap_rx) = watch::channel(Arc::new(WatchSnapshot { cluster: cluster.clone(), ..Default::default() }));
    if let Some(endpoint) = endpoint {
        crate::metrics::serve(endpoint, crate::metrics::from_channel(snap_rx.clone(), crate::metrics::watch_families))?;
    }
    let (intents, commands) = crossbeam_channel::unbounded();
    let resets_pending = Arc::new(AtomicUsize::new(0));
    let reset_timeout = observer.timeout();
    let sampler = {
        let stop = stop.clone();
        let sampler = Sampler {
            observer,
            history,
            audit,
            cluster: cluster.clone(),
            snapshots: snap_tx,
            notices: Vec::new(),
            last: None,
            resets_pending: resets_pending.clone(),
        };
        std::thread::Builder::new().name("watch-sampler".into()).spawn(move || sampler.run(&commands, &stop))?
    };
    let outcome = if !args.json && crate::tui::available() {
        dashboard(snap_rx, &intents, &resets_pending, &stop, &cluster, &history_path)
    } else {
        json_lines(snap_rx, &stop)
    };
    stop.store(true, Ordering::Relaxed);
    // A sample can wait on the cluster for a long time (a timeout per request):
    // it is not waited out; the process ends with it unfinished. A reset is
    // waited for (its outcome goes to the audit store), within its timeouts.
    let until = Instant::now() + Duration::from_secs(2);
    let reset_until = Instant::now() + reset_timeout * 4 + Duration::from_secs(10);
    while !sampler.is_finished() && (Instant::now() < until || resets_pending.load(Ordering::SeqCst) > 0 && Instant::now() < reset_until) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if sampler.is_finished() {
        let _ = sampler.join();
    }
    outcome
}

struct Sampler {
    observer: Observer,
    history: History,
    audit: Audit,
    cluster: String,
    snapshots: watch::Sender<Arc<WatchSnapshot>>,
    notices: Vec<String>,
    last: Option<Arc<WatchSnapshot>>,
    /// Resets confirmed and not yet done: quitting waits for them (and their audit records).
    resets_pending: Arc<AtomicUsize>,
}

/// Counts a confirmed reset as done when dropped.
struct Done<'a>(&'a AtomicUsize);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Sampler {
    fn run(mut self, commands: &Receiver<WatchIntent>, stop: &AtomicBool) {
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let wait = next.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
            match commands.recv_timeout(wait) {
                Ok(WatchIntent::ResetOffsets { group, partition, to }) => {
                    self.reset(&group, partition, &to);
                    next = Instant::now();
                }
                Ok(WatchIntent::Quit) => stop.store(true, Ordering::Relaxed),
                Err(_) if Instant::now() >= next => {
                    self.sample();
                    next = Instant::now() + SAMPLE_EVERY;
                }
                Err(_) => {}
            }
        }
        // A reset confirmed just before quitting is still carried out.
        for command in commands.try_iter() {
            if let WatchIntent::ResetOffsets { group, partition, to } = command {
                self.reset(&group, partition, &to);
            }
        }
    }

    fn sample(&mut self) {
        let now = now_ms();
        let snap = match self.observer.sample() {
            Ok(groups) => {
                if let Err(e) = self.history.record(&self.cluster, &groups, now) {
                    tracing::warn!("{e}");
                }
                WatchSnapshot { captured_at_ms: now, cluster: self.cluster.clone(), groups, error: None, notices: self.notices.clone() }
            }
            // The last sample stays on screen, with the reason it is not newer.
            Err(e) => {
                let mut s = self.last.as_deref().cloned().unwrap_or_default();
                s.cluster = self.cluster.clone();
                s.error = Some(e);
                s.notices = self.notices.clone();
                s
            }
        };
        let snap = Arc::new(snap);
        self.last = Some(snap.clone());
        let _ = self.snapshots.send(snap);
    }

    fn reset(&mut self, group: &str, partition: Option<(String, i32)>, to: &kdeck_ui::watch::intent::ResetTarget) {
        let scope = partition.as_ref().map_or("every partition".to_string(), |(t, p)| format!("{t}[{p}]"));
        // Recorded before it is tried: whatever happens next, the audit has it.
        self.audit.note("action", &format!("reset offsets of {group} ({scope}) to {to} requested"), &json!({"group": group, "cluster": self.cluster, "scope": scope, "to": to.to_string()}));
        // Test failpoint (`KDECK_FAILPOINT=slow-reset:MS`): a reset that takes that long.
        if let Some(ms) = std::env::var("KDECK_FAILPOINT").ok().and_then(|f| f.strip_prefix("slow-reset:").and_then(|ms| ms.parse().ok())) {
            std::thread::sleep(Duration::from_millis(ms));
        }
        let outcome = reset::reset(self.observer.client(), group, partition.clone(), to, self.observer.timeout());
        // Counted when confirmed (`dashboard`), done once its outcome is noted below.
        let pending = self.resets_pending.clone();
        let _done = Done(&pending);
        let detail = |moves: Option<&Vec<reset::Move>>, error: Option<&String>| {
            json!({"group": group, "cluster": self.cluster, "scope": scope, "to": to.to_string(),
                   "moves": moves.map(|m| m.iter().map(|(t, p, b, a)| json!({"topic": t, "partition": p, "from": b, "to": a})).collect::<Vec<_>>()),
                   "error": error})
        };
        let notice = match &outcome {
            Ok(moves) => {
                let summary = format!("reset offsets of {group} to {to}: {}", reset::describe(moves));
                self.audit.note("action", &summary, &detail(Some(moves), None));
                summary
            }
            Err(e) => {
                self.audit.note("action", &format!("reset offsets of {group} to {to} refused"), &detail(None, Some(e)));
                format!("reset refused: {e}")
            }
        };
        tracing::info!("{notice}");
        self.notices.push(notice);
        if self.notices.len() > NOTICES_KEPT {
            self.notices.remove(0);
        }
    }
}

fn dashboard(
    mut snapshots: watch::Receiver<Arc<WatchSnapshot>>,
    intents: &Sender<WatchIntent>,
    resets_pending: &AtomicUsize,
    stop: &AtomicBool,
    cluster: &str,
    history_path: &Path,
) -> Result<()> {
    // A second connection for the chart: the sampler writes, this one reads (WAL).
    let history = History::open(history_path).map_err(|e| anyhow!(e))?;
    let mut terminal = ratatui::init();
    let restore_and_report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_and_report(info);
        std::process::exit(101);
    }));
    let mut app = WatchApp::new();
    let mut snap = snapshots.borrow_and_update().clone();
    let mut shown = Arc::new(with_chart(&snap, &app, &history, cluster));
    let mut dirty = true;
    let outcome = (|| -> Result<()> {
        while !stop.load(Ordering::Relaxed) && !app.quit {
            if event::poll(FRAME)? {
                match event::read()? {
                    Event::Key(key) if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) => app.quit = true,
                    Event::Key(key) => {
                        for intent in app.handle_key(&key, &shown) {
                            if matches!(intent, WatchIntent::ResetOffsets { .. }) {
                                resets_pending.fetch_add(1, Ordering::SeqCst);
                            }
                            let _ = intents.send(intent);
                        }
                        dirty = true;
                    }
                    Event::Resize(..) => dirty = true,
                    _ => {}
                }
            }
            if snapshots.has_changed().unwrap_or(false) {
                snap = snapshots.borrow_and_update().clone();
                dirty = true;
            }
            if dirty {
                shown = Arc::new(with_chart(&snap, &app, &history, cluster));
                terminal.draw(|f| kdeck_ui::watch::view::render(f, &app, &shown))?;
                dirty = false;
            }
        }
        Ok(())
    })();
    ratatui::restore();
    outcome
}

/// The snapshot with the selected group's lag chart over the chosen span.
fn with_chart(snap: &WatchSnapshot, app: &WatchApp, history: &History, cluster: &str) -> WatchSnapshot {
    let mut s = snap.clone();
    let Some(name) = app.selected_group(snap).map(|g| g.description.group.clone()) else { return s };
    if let Some(g) = s.groups.iter_mut().find(|g| g.description.group == name) {
        match history.chart(cluster, &name, app.zoom.span_ms(), s.captured_at_ms) {
            Ok(points) => g.lag_history = points,
            Err(e) => tracing::warn!("{e}"),
        }
    }
    s
}

/// Not a terminal: one JSON snapshot per sample on stdout.
fn json_lines(mut snapshots: watch::Receiver<Arc<WatchSnapshot>>, stop: &AtomicBool) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    while !stop.load(Ordering::Relaxed) {
        if snapshots.has_changed().unwrap_or(false) {
            let snap = snapshots.borrow_and_update().clone();
            if snap.captured_at_ms > 0 || snap.error.is_some() {
                writeln!(out, "{}", serde_json::to_string(&*snap)?)?;
                out.flush()?;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}
