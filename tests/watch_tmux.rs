//! `kdeck watch` driven in tmux like an operator would: switch between a
//! group with a live member and an Empty one, have a reset refused on the
//! first, reset the second to earliest after confirming, and see it REWIND.

mod common;

use std::time::Duration;

use common::tmux::Tmux;
use common::*;

/// `kdeck watch -G GROUPS` in a fresh tmux server at 160×48, its stores and
/// log in `dir`; the pane stays open after it exits and shows its status.
fn launch_watch(groups: &str, dir: &std::path::Path, env: &str) -> Tmux {
    let t = Tmux { socket: unique("kdeck-watch") };
    let command = format!(
        "{env} {} watch -b {} -G {groups} --history {} --audit {} --log-file {}; echo KDECK-EXIT=$?; sleep 600",
        env!("CARGO_BIN_EXE_kdeck"),
        brokers(),
        dir.join("history.sqlite").display(),
        dir.join("audit.sqlite").display(),
        dir.join("watch.log").display()
    );
    t.cmd(&["new-session", "-d", "-s", "kdeck", "-x", "160", "-y", "48", &command]);
    t
}

#[test]
fn watch_switches_groups_refuses_a_reset_on_a_live_group_and_resets_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("watch-e2e");
    create_topic(&topic, 1);
    produce_with_kcat(&topic, 20, 20);
    let idle = unique("wi");
    commit_offset(&idle, &topic, 0, 10);
    commit_offset(&idle, &topic, 0, 15);
    let live = unique("wl");
    let mut member = Killed(spawn_run(&live, &topic, &dir.path().join("live.jsonl"), &[]));

    let audit = dir.path().join("audit.sqlite");
    let t = launch_watch(&format!("{idle},{live}"), dir.path(), "");
    t.wait("both groups", |s| s.contains(&idle) && s.contains(&live));

    // Pick the live group with the filter, and ask for a reset: refused.
    t.keys(&["/"]);
    t.keys(&[&live[live.len() - 8..], "Enter"]);
    t.wait("the live group selected", |s| s.contains(&format!(" {live}  Stable")));
    t.keys(&["R"]);
    let refused = t.wait("the refusal", |s| s.contains("Reset refused"));
    assert!(refused.contains("is Stable with 1 member"), "{refused}");
    t.keys(&["Escape", "/"]);
    t.keys(&[&idle[idle.len() - 8..], "Enter"]);
    t.wait("the idle group selected", |s| s.contains(&format!(" {idle}  Empty")));
    t.keys(&["R"]);
    t.wait("the reset form", |s| s.contains("Reset offsets") && s.contains("earliest"));
    t.keys(&["Enter"]);
    t.wait("the question", |s| s.contains("to earliest? y / n"));
    t.keys(&["y"]);
    let done = t.wait("the reset and its REWIND", |s| s.contains(&format!("reset offsets of {idle} to earliest: {topic}[0] 15→0")) && s.contains("REWIND"));
    assert!(!done.contains("KDECK-EXIT"), "{done}");
    assert_eq!(committed_offsets(&idle, &topic).get(&0), Some(&0));

    t.keys(&["q"]);
    let after = t.wait("kdeck to exit", |s| s.contains("KDECK-EXIT="));
    assert!(after.contains("KDECK-EXIT=0"), "{after}");
    let out = kdeck().args(["audit", "--audit"]).arg(&audit).args(["list", "--kind", "action"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("reset offsets of {idle} to earliest")));
    sigterm(&member.0);
    wait_exit(&mut member.0, Duration::from_secs(30));
}

#[test]
fn quitting_during_a_reset_waits_for_it_and_its_audit_record() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("watch-quit");
    create_topic(&topic, 1);
    produce_with_kcat(&topic, 10, 20);
    let idle = unique("wq");
    commit_offset(&idle, &topic, 0, 7);
    let audit = dir.path().join("audit.sqlite");
    let t = launch_watch(&idle, dir.path(), "KDECK_FAILPOINT=slow-reset:3000");
    t.wait("the group", |s| s.contains(&format!(" {idle}  Empty")));
    t.keys(&["R"]);
    t.wait("the reset form", |s| s.contains("Reset offsets"));
    t.keys(&["Enter"]);
    t.wait("the question", |s| s.contains("to earliest? y / n"));
    // Confirm, and quit at once: the reset takes 3 s.
    t.keys(&["y", "q"]);
    let after = t.wait("kdeck to exit", |s| s.contains("KDECK-EXIT="));
    assert!(after.contains("KDECK-EXIT=0"), "{after}");
    assert_eq!(committed_offsets(&idle, &topic).get(&0), Some(&0), "the reset was carried out");
    let out = kdeck().args(["audit", "--audit"]).arg(&audit).args(["list", "--kind", "action"]).output().unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains(&format!("reset offsets of {idle} to earliest: {topic}[0] 7→0")), "the outcome is audited:\n{listed}");
}
