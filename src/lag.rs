//! `kdeck lag`: one observation of consumer groups as a table or JSON, and an
//! exit status by the worst verdict, for scripts and alerting (the Nagios
//! convention: 0 OK, 1 WARN, 2 an error verdict, 3 unknown or no answer).

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use kdeck_ui::time;

use crate::cli::{LagArgs, MonitorArgs};
use kdeck_ui::watch::model::GroupView;

use crate::monitor::{verdict, Observer, Options};

const UNKNOWN: u8 = 3;

pub fn run(args: &LagArgs) -> ExitCode {
    match observe(&args.monitor) {
        Ok(reports) => {
            if args.json {
                println!("{}", serde_json::json!({ "groups": reports }));
            } else {
                print!("{}", table(&reports, now_ms()));
            }
            ExitCode::from(exit_status(&reports))
        }
        Err(e) => {
            eprintln!("kdeck: {e:#}");
            ExitCode::from(UNKNOWN)
        }
    }
}

pub fn options(args: &MonitorArgs) -> Result<Options> {
    let duration = |name: &str, v: &str| humantime::parse_duration(v).map_err(|_| anyhow!("--{name} `{v}` is not a duration like 30s or 10m"));
    let mut properties = args.security.properties().map_err(|e| anyhow!(e))?;
    for kv in &args.properties {
        properties.push(kv.split_once('=').map(|(k, v)| (k.trim().to_string(), v.to_string())).ok_or_else(|| anyhow!("-X `{}` is not KEY=VALUE", crate::security::key_of(kv)))?);
    }
    if let Some(g) = args.groups.iter().find(|g| g.trim().is_empty()) {
        bail!("-G `{g}` is not a group name");
    }
    Ok(Options {
        brokers: args.brokers.clone(),
        properties,
        groups: args.groups.clone(),
        all: args.all,
        window: args.window as usize,
        lookback: duration("lookback", &args.lookback)?,
        stop_after: duration("stop-after", &args.stop_after)?,
        timeout: duration("connect-timeout", &args.connect_timeout)?.max(Duration::from_millis(100)),
    })
}

fn observe(args: &MonitorArgs) -> Result<Vec<GroupView>> {
    let mut observer = Observer::new(options(args)?).map_err(|e| anyhow!(e))?;
    let reports = observer.sample().map_err(|e| anyhow!(e))?;
    for r in &reports {
        if r.description.state == "Dead" && r.partitions.is_empty() {
            bail!("group `{}` does not exist on {} (no members, no committed offsets)", r.description.group, args.brokers);
        }
    }
    Ok(reports)
}

/// The worst group's status; a group that could not be judged at all is unknown.
pub fn exit_status(reports: &[GroupView]) -> u8 {
    reports.iter().map(|r| r.verdict.map_or(UNKNOWN, verdict::exit_code)).max().unwrap_or(0)
}

pub fn table(reports: &[GroupView], now: i64) -> String {
    let mut out = String::new();
    for r in reports {
        let d = &r.description;
        out += &format!(
            "group {}  {}  {}{}  coordinator {}  {} member{}  verdict {}\n",
            d.group,
            d.state,
            d.protocol,
            if d.assignor.is_empty() { String::new() } else { format!("/{}", d.assignor) },
            d.coordinator.as_deref().unwrap_or("unknown"),
            d.members.len(),
            if d.members.len() == 1 { "" } else { "s" },
            r.verdict.map_or("unknown", |v| v.as_str()),
        );
        if let Some(e) = &d.error {
            out += &format!("  cannot describe the group: {e}\n");
        }
        out += &format!("  history: {}\n", r.history);
        let mut rows = vec![["TOPIC", "PART", "COMMITTED", "END", "LAG", "LAG TIME", "COMMITS", "LAST COMMIT", "VERDICT", "MEMBER"].map(String::from)];
        for p in &r.partitions {
            let known = |v: Option<i64>| v.map_or("?".to_string(), |v| v.to_string());
            rows.push([
                p.topic.clone(),
                p.partition.to_string(),
                known(p.committed),
                known(p.end),
                known(p.lag),
                p.lag_ms.map_or("?".into(), |ms| time::span(ms.max(0) as u64)),
                p.commit_rate.map_or("?".into(), |r| format!("{}/s", time::count(r))),
                p.last_commit_ms.map_or("?".into(), |at| time::ago(at.max(0) as u64, now.max(0) as u64)),
                p.verdict.map_or("?", |v| v.as_str()).to_string(),
                p.member.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        let widths: Vec<usize> = (0..10).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
        for row in rows {
            let line: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            out += &format!("  {}\n", line.join("  ").trim_end());
        }
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64
}
