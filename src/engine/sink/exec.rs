//! `exec:'COMMAND'`: plug in your own logic in any language. One long-lived
//! child (started with `sh -c`) gets a JSON line per record on stdin and
//! answers one line per record on stdout: `ok`, `retry: reason` (try again
//! later) or `fail: reason` (dead-letter it), in order. A worker writes a run
//! of its partition's records at once (`--exec-batch`, default 1: request and
//! answer) and then reads their answers; partitions take turns, a run at a
//! time, so answers are due in the order the child read the lines.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use rdkafka::message::OwnedMessage;
use serde_json::Value;

use super::{record_json, Sink};
use crate::engine::handler::{Failure, Stage};

/// How long a new child must stay up to count as started.
const STARTUP_CHECK: Duration = Duration::from_millis(300);
/// The longest answer line read; the rest of a longer one is read as the next.
const MAX_ANSWER: u64 = 64 * 1024;
/// How long a child may take to exit after its stdin closes, at shutdown.
const EXIT_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct SharedChild {
    inner: Arc<Mutex<Running>>,
    /// Records written at once.
    batch: usize,
}

struct Running {
    command: String,
    /// How long one answer may take.
    timeout: Duration,
    child: Option<Proc>,
}

/// A started child. Its pipes are served by two threads, so that a child that
/// stops reading or answering can never block kdeck: every wait has a bound.
struct Proc {
    child: Child,
    lines: Option<Sender<Vec<u8>>>,
    answers: Receiver<String>,
}

impl Proc {
    fn start(command: &str) -> Result<Proc, String> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group, so ending it ends what it started (a pipeline, workers).
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the exec sink `{command}`: {e}"))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let (lines, to_write) = crossbeam_channel::unbounded::<Vec<u8>>();
        let writer = std::thread::Builder::new()
            .name("kdeck-exec-in".into())
            .spawn(move || {
                for line in to_write {
                    if stdin.write_all(&line).and_then(|_| stdin.flush()).is_err() {
                        break;
                    }
                } // stdin dropped: the child sees EOF
            })
            ;
        // Bounded: a child that talks without end blocks on its own stdout, then times out.
        let (answered, answers) = crossbeam_channel::bounded::<String>(64);
        let reader = std::thread::Builder::new()
            .name("kdeck-exec-out".into())
            .spawn(move || {
                let mut line = Vec::new();
                while matches!(std::io::Read::take(&mut stdout, MAX_ANSWER).read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    if answered.send(String::from_utf8_lossy(&line).trim().to_string()).is_err() {
                        break;
                    }
                    line.clear();
                }
            })
            ;
        let proc = Proc { child, lines: Some(lines), answers };
        if let Err(e) = writer.and(reader) {
            proc.end(Duration::ZERO);
            return Err(format!("cannot start the exec sink's pipe threads: {e}"));
        }
        Ok(proc)
    }

    /// Closes stdin and waits a little for the child to go; kills it if it does not.
    fn end(mut self, grace: Duration) {
        self.lines = None;
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: kill(2) on the child's own process group (it leads it: process_group(0)).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Writes `lines` (`n` records) and reads their answers, each within the
    /// timeout. Err from the first that does not come: the child is ended (gone,
    /// broken or hung), and the records from there on have no answer.
    fn ask(&mut self, lines: Vec<u8>, n: usize) -> (Vec<String>, Option<String>) {
        if self.child.is_none() {
            match Proc::start(&self.command) {
                Ok(p) => self.child = Some(p),
                Err(e) => return (Vec::new(), Some(e)),
            }
        }
        let proc = self.child.as_mut().unwrap();
        // Whatever the child printed unasked (a banner, a log line) is not this record's answer.
        while let Ok(stray) = proc.answers.try_recv() {
            tracing::warn!("the exec sink `{}` printed {stray:?} unasked; ignored", self.command);
        }
        let sent = proc.lines.as_ref().is_some_and(|l| l.send(lines).is_ok());
        let mut answers = Vec::with_capacity(n);
        while answers.len() < n {
            let outcome = if sent { proc.answers.recv_timeout(self.timeout) } else { Err(RecvTimeoutError::Disconnected) };
            let problem = match outcome {
                Ok(answer) if !answer.is_empty() => {
                    answers.push(answer);
                    continue;
                }
                Err(RecvTimeoutError::Timeout) => {
                    format!("the exec sink `{}` did not answer within {}", self.command, humantime::format_duration(self.timeout))
                }
                Ok(_) => format!("the exec sink `{}` answered an empty line", self.command),
                Err(RecvTimeoutError::Disconnected) => format!("the exec sink `{}` exited without answering", self.command),
            };
            // The next record starts a new child.
            self.restart();
            return (answers, Some(problem));
        }
        (answers, None)
    }
}

impl Running {
    fn restart(&mut self) {
        if let Some(proc) = self.child.take() {
            proc.end(Duration::ZERO);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(proc) = self.child.take() {
            proc.end(EXIT_GRACE); // EOF first: a well-behaved child exits by itself
        }
    }
}

impl SharedChild {
    /// Starts the child and checks it is still there a moment later, so a typo
    /// in the command (the shell exits at once) is caught before any record moves.
    pub fn start(command: &str, timeout: Duration, batch: usize) -> Result<SharedChild, String> {
        let mut proc = Proc::start(command)?;
        let until = Instant::now() + STARTUP_CHECK;
        while Instant::now() < until {
            if let Ok(Some(status)) = proc.child.try_wait() {
                let why = match status.code() {
                    Some(127) => " (command not found)".to_string(),
                    Some(126) => " (not executable)".to_string(),
                    _ => String::new(),
                };
                return Err(format!("the exec sink `{command}` exited at start with {status}{why}; check the command"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let running = Running { command: command.to_string(), timeout, child: Some(proc) };
        Ok(SharedChild { inner: Arc::new(Mutex::new(running)), batch: batch.max(1) })
    }
}

const UNEXPECTED: &str = "unexpected answer from the exec sink";

/// Reads one answer line.
pub fn parse_answer(answer: &str) -> Result<(), Failure> {
    let (word, reason) = match answer.split_once(':') {
        Some((w, r)) => (w.trim(), r.trim()),
        None => (answer.trim(), ""),
    };
    match word {
        "ok" => Ok(()),
        "retry" => Err(Failure::retryable(Stage::Handle, reason)),
        "fail" => Err(Failure::permanent(Stage::Handle, reason)),
        _ => Err(Failure::retryable(Stage::Handle, format!("{UNEXPECTED}: {answer:?}"))),
    }
}

impl Sink for SharedChild {
    fn write(&mut self, record: &OwnedMessage, value: &Value) -> Result<(), Failure> {
        self.write_run(&[(record, value)]).pop().unwrap_or_else(|| Err(Failure::unavailable(Stage::Sink, "no answer")))
    }

    fn run_size(&self) -> usize {
        self.batch
    }

    /// The run's lines in one write, then an answer per record. Outcomes stop at
    /// the first record past which the child cannot be trusted: one it did not
    /// answer (the sink's trouble, not the record's) or an answer outside the
    /// protocol (two lines for one record?), after which a fresh child puts
    /// answers back in step with records.
    fn write_run(&mut self, records: &[(&OwnedMessage, &Value)]) -> Vec<Result<(), Failure>> {
        let mut lines = Vec::with_capacity(records.len() * 512);
        for (record, value) in records {
            // (A serde_json::Value always serialises.)
            let _ = serde_json::to_writer(&mut lines, &record_json(record, value));
            lines.push(b'\n');
        }
        let mut running = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (answers, problem) = running.ask(lines, records.len());
        let mut outcomes = Vec::with_capacity(records.len());
        for answer in &answers {
            let parsed = parse_answer(answer);
            let out_of_step = parsed.as_ref().is_err_and(|f| f.message.starts_with(UNEXPECTED));
            outcomes.push(parsed);
            if out_of_step {
                running.restart();
                return outcomes;
            }
        }
        if let Some(problem) = problem {
            outcomes.push(Err(Failure::unavailable(Stage::Sink, problem)));
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_outcomes() {
        assert_eq!(parse_answer("ok"), Ok(()));
        assert_eq!(parse_answer("retry: db busy"), Err(Failure::retryable(Stage::Handle, "db busy")));
        assert_eq!(parse_answer("fail: no such customer"), Err(Failure::permanent(Stage::Handle, "no such customer")));
        assert!(parse_answer("maybe").unwrap_err().message.contains("unexpected answer"));
    }
}
