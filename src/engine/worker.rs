//! One worker thread per assigned partition: records of a partition are
//! handled in order, and a slow partition never holds up the others or the
//! poll thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rdkafka::message::{Message, OwnedMessage};

use super::handler::Handler;
use super::Tp;

/// What workers tell the poll thread.
#[derive(Debug)]
pub enum WorkerEvent {
    /// These records finished (handled and flushed).
    Finished { tp: Tp, offsets: Vec<i64>, busy: Duration },
    /// An attempt failed; the record will be tried again.
    Failed { tp: Tp, offset: i64, error: String },
}

/// Records handled between flushes when the queue stays full.
const MAX_BATCH: usize = 256;
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(5);

pub struct Worker {
    tx: Option<Sender<OwnedMessage>>,
    rx_len: Receiver<OwnedMessage>,
    stop: Arc<AtomicBool>,
    /// Set while the operator pauses the partition: no new record is started.
    hold: Arc<AtomicBool>,
    exited: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub fn spawn(tp: Tp, mut handler: Box<dyn Handler>, capacity: usize, events: Sender<WorkerEvent>) -> Worker {
        let (tx, rx) = crossbeam_channel::bounded::<OwnedMessage>(capacity.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let hold = Arc::new(AtomicBool::new(false));
        let (exit_tx, exited) = crossbeam_channel::bounded::<()>(0);
        let rx_len = rx.clone();
        let stop_flag = stop.clone();
        let hold_flag = hold.clone();
        let thread = std::thread::Builder::new()
            .name(format!("kdeck-{}-{}", tp.0, tp.1))
            .spawn(move || {
                let _exit = exit_tx; // dropped when the thread ends: wakes `stop_and_wait`
                run(tp, &mut *handler, rx, &Flags { stop: &stop_flag, hold: &hold_flag }, &events);
            })
            .expect("spawn worker thread");
        Worker { tx: Some(tx), rx_len, stop, hold, exited, thread: Some(thread) }
    }

    /// Hands a record over without blocking; gives it back when the queue is full.
    pub fn offer(&self, record: OwnedMessage) -> Result<(), OwnedMessage> {
        match self.tx.as_ref().expect("worker open").try_send(record) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(r)) | Err(TrySendError::Disconnected(r)) => Err(r),
        }
    }

    /// Holds (or releases) the worker before its next record: an operator pause
    /// stops progress at once, not after the queue has drained.
    pub fn set_hold(&self, hold: bool) {
        self.hold.store(hold, Ordering::SeqCst);
    }

    /// Records waiting in the queue (not counting the one being handled).
    pub fn queued(&self) -> usize {
        self.rx_len.len()
    }

    /// Lets the worker finish everything queued, then exit (graceful shutdown).
    pub fn close(&mut self) {
        self.tx = None;
    }

    /// Stops after the record in hand (queued ones are dropped: they are not
    /// finished, so they are not committed) and waits up to `deadline` for it.
    /// Returns false if the worker was still busy at the deadline.
    pub fn stop_and_wait(&mut self, deadline: Duration) -> bool {
        self.stop.store(true, Ordering::SeqCst);
        self.tx = None;
        self.wait(deadline)
    }

    /// Waits up to `deadline` for the worker to exit.
    pub fn wait(&mut self, deadline: Duration) -> bool {
        match self.exited.recv_timeout(deadline) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => false,
            _ => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                true
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A worker dropped without a wait (engine failure) must not outlive it by long.
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct Flags<'a> {
    stop: &'a AtomicBool,
    hold: &'a AtomicBool,
}

impl Flags<'_> {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Waits while held; false if stopped.
    fn wait_unless_held(&self) -> bool {
        while self.hold.load(Ordering::SeqCst) {
            if self.stopped() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        !self.stopped()
    }
}

fn run(tp: Tp, handler: &mut dyn Handler, rx: Receiver<OwnedMessage>, flags: &Flags, events: &Sender<WorkerEvent>) {
    let stop = flags.stop;
    let mut done = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        let started = Instant::now();
        let mut next = Some(first);
        while let Some(record) = next.take() {
            if !flags.wait_unless_held() || !handle_with_retry(&tp, handler, &record, stop, events) {
                break;
            }
            done.push(record.offset());
            if done.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if done.is_empty() {
            continue;
        }
        // Only durable work is reported finished; a failed flush is retried like a record.
        let mut backoff = Duration::from_millis(50);
        while let Err(error) = handler.flush() {
            let _ = events.send(WorkerEvent::Failed { tp: tp.clone(), offset: done[0], error });
            if !sleep_unless_stopped(backoff, stop) {
                return;
            }
            backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
        }
        let offsets = std::mem::replace(&mut done, Vec::with_capacity(MAX_BATCH));
        let _ = events.send(WorkerEvent::Finished { tp: tp.clone(), offsets, busy: started.elapsed() });
        if stop.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// Tries until the handler succeeds; false if stopped first.
fn handle_with_retry(tp: &Tp, handler: &mut dyn Handler, record: &OwnedMessage, stop: &AtomicBool, events: &Sender<WorkerEvent>) -> bool {
    let mut backoff = Duration::from_millis(50);
    loop {
        match handler.handle(record) {
            Ok(()) => return true,
            Err(error) => {
                let _ = events.send(WorkerEvent::Failed { tp: tp.clone(), offset: record.offset(), error });
                if !sleep_unless_stopped(backoff, stop) {
                    return false;
                }
                backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
            }
        }
    }
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10).min(until.saturating_duration_since(Instant::now())));
    }
    !stop.load(Ordering::SeqCst)
}
