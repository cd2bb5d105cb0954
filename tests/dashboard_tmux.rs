//! The real binary's dashboard, driven like a person would: `kdeck demo` in
//! tmux, keys sent with send-keys, the screen read with capture-pane.

mod common;

use std::process::Command;

use common::tmux::Tmux;
use common::*;

/// Starts `kdeck demo` with its dashboard in a fresh tmux server; the pane stays
/// open after kdeck exits and shows its exit status.
fn start_demo(dir: &std::path::Path) -> Tmux {
    let t = launch(dir, "");
    t.wait("the dashboard", |s| s.contains("RUNNING") && s.contains("orders[5]"));
    t
}

fn launch(dir: &std::path::Path, env: &str) -> Tmux {
    let t = Tmux { socket: unique("kdeck-tmux") };
    let command = format!(
        "{env} {} demo --rate 500 --log-file {} --audit {}; echo KDECK-EXIT=$?; sleep 600",
        env!("CARGO_BIN_EXE_kdeck"),
        dir.join("demo.log").display(),
        dir.join("audit.sqlite").display()
    );
    t.cmd(&["new-session", "-d", "-s", "kdeck", "-x", "160", "-y", "48", &command]);
    t
}

#[test]
fn a_panic_on_a_worker_thread_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let t = launch(dir.path(), "RUST_BACKTRACE=0 KDECK_FAILPOINT=panic-worker");
    let after = t.wait("kdeck to exit", |s| s.contains("KDECK-EXIT="));
    assert!(after.contains("KDECK-EXIT=101"), "{after}");
    assert!(after.contains("failpoint panic-worker"), "the panic is reported on the restored screen:\n{after}");
    assert_eq!(t.cmd(&["display", "-p", "-t", "kdeck", "#{alternate_on}"]).trim(), "0");
}

#[test]
fn sigterm_stops_the_dashboard_gracefully_and_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let t = start_demo(dir.path());
    let shell = t.cmd(&["display", "-p", "-t", "kdeck", "#{pane_pid}"]);
    let pid = Command::new("pgrep").args(["-P", shell.trim(), "-x", "kdeck"]).output().unwrap();
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_string();
    assert!(!pid.is_empty(), "kdeck runs in the pane");
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let after = t.wait("kdeck to exit", |s| s.contains("KDECK-EXIT="));
    assert!(after.contains("KDECK-EXIT=0"), "{after}");
    assert_eq!(t.cmd(&["display", "-p", "-t", "kdeck", "#{alternate_on}"]).trim(), "0");
}

#[test]
fn the_dashboard_pauses_switches_strategy_replays_and_quits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.sqlite");
    let t = start_demo(dir.path());

    // Pause the selected (first) partition.
    t.keys(&["p"]);
    t.wait("orders[0] paused", |s| s.lines().any(|l| l.contains("orders[0] ") && l.contains("paused")));

    // Switch the commit strategy with the picker: per-message is first, batch:1000 current.
    t.keys(&["c"]);
    t.wait("the strategy picker", |s| s.contains("Commit strategy"));
    t.keys(&["Up", "Enter"]);
    t.wait("the new strategy in the header", |s| s.contains("commit per-message"));

    // Focus the dead letters and replay the newest one by republishing it.
    t.keys(&["Tab", "Tab", "Tab", "Tab"]);
    t.wait("dead letters", |s| s.contains("/permanent") || s.contains("/retryable"));
    t.keys(&["r"]);
    t.wait("the replay confirmation", |s| s.contains("republish to its source"));
    t.keys(&["p"]);
    t.wait("the replay's outcome", |s| s.contains("republished to orders["));

    // Quit: drain, commit, restore the terminal.
    t.keys(&["q"]);
    let after = t.wait("kdeck to exit", |s| s.contains("KDECK-EXIT="));
    assert!(after.contains("KDECK-EXIT=0"), "{after}");
    assert_eq!(t.cmd(&["display", "-p", "-t", "kdeck", "#{alternate_on}"]).trim(), "0", "the alternate screen was left");
    assert!(!after.contains("Partitions"), "the dashboard is gone from the restored screen:\n{after}");

    // The operator's actions are in the audit store (by kind: the demo's dead
    // letters alone can fill a whole listing).
    for (kind, expect) in [("action", "pause orders[0]"), ("action", "commit strategy batch:1000 -> per-message"), ("replay", "republish")] {
        let out = kdeck().args(["audit", "list", "--kind", kind, "--audit"]).arg(&audit).output().unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(listing.contains(expect), "{expect} in the audit:\n{listing}");
    }
}
