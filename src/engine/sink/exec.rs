//! `exec:'COMMAND'`: plug in your own logic in any language. One long-lived
//! child (started with `sh -c`) gets a JSON line per record on stdin and
//! answers one line per record on stdout: `ok`, `retry: reason` (try again
//! later) or `fail: reason` (dead-letter it). Partitions take turns, one
//! record at a time, so the child sees a simple request/answer stream.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};

use rdkafka::message::OwnedMessage;
use serde_json::Value;

use super::{record_json, Sink};
use crate::engine::handler::{Failure, Stage};

/// How long a new child must stay up to count as started.
const STARTUP_CHECK: std::time::Duration = std::time::Duration::from_millis(300);

#[derive(Clone)]
pub struct SharedChild {
    inner: Arc<Mutex<Running>>,
}

struct Running {
    command: String,
    child: Option<(Child, ChildStdin, BufReader<ChildStdout>)>,
}

impl Running {
    fn start(command: &str) -> Result<(Child, ChildStdin, BufReader<ChildStdout>), String> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the exec sink `{command}`: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Ok((child, stdin, stdout))
    }

    fn ask(&mut self, line: &[u8]) -> Result<String, String> {
        if self.child.is_none() {
            self.child = Some(Running::start(&self.command)?);
        }
        let (_, stdin, stdout) = self.child.as_mut().unwrap();
        let mut answer = String::new();
        let result = stdin
            .write_all(line)
            .and_then(|_| stdin.flush())
            .and_then(|_| stdout.read_line(&mut answer).map(|_| ()));
        match result {
            Ok(()) if !answer.is_empty() => Ok(answer.trim().to_string()),
            outcome => {
                // The child is gone or broken: reap it; the next record starts a new one.
                if let Some((mut child, _, _)) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                Err(match outcome {
                    Err(e) => format!("the exec sink `{}` failed: {e}", self.command),
                    Ok(()) => format!("the exec sink `{}` exited without answering", self.command),
                })
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some((mut child, stdin, _)) = self.child.take() {
            drop(stdin); // EOF: a well-behaved child exits by itself
            let _ = child.wait();
        }
    }
}

impl SharedChild {
    /// Starts the child and checks it is still there a moment later, so a typo
    /// in the command (the shell exits at once) is caught before any record moves.
    pub fn start(command: &str) -> Result<SharedChild, String> {
        let mut child = Running::start(command)?;
        let until = std::time::Instant::now() + STARTUP_CHECK;
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = child.0.try_wait() {
                let why = match status.code() {
                    Some(127) => " (command not found)".to_string(),
                    Some(126) => " (not executable)".to_string(),
                    _ => String::new(),
                };
                return Err(format!("the exec sink `{command}` exited at start with {status}{why}; check the command"));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(SharedChild { inner: Arc::new(Mutex::new(Running { command: command.to_string(), child: Some(child) })) })
    }
}

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
        _ => Err(Failure::retryable(Stage::Handle, format!("unexpected answer from the exec sink: {answer:?}"))),
    }
}

impl Sink for SharedChild {
    fn write(&mut self, record: &OwnedMessage, value: &Value) -> Result<(), Failure> {
        let mut line = serde_json::to_vec(&record_json(record, value)).map_err(|e| Failure::retryable(Stage::Handle, e.to_string()))?;
        line.push(b'\n');
        // The child not starting, dying or breaking the pipe is the sink's trouble, not the record's.
        let answer = self.inner.lock().unwrap().ask(&line).map_err(|e| Failure::unavailable(Stage::Sink, e))?;
        parse_answer(&answer)
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
