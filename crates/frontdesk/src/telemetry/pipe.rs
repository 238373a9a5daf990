//! The log pipe: every log line of the process goes through one bounded queue to one
//! writer thread, which owns the output. A request hands its access record (a few
//! fields, no formatting) to the queue and goes on; the thread formats it and writes
//! it, batching lines into one `write` while the queue is busy and flushing when it
//! runs dry. Senders never wake the thread (it naps a few milliseconds when idle), so
//! logging a request costs no context switch. When the queue is full the line is dropped and counted
//! (`frontdesk_log_dropped_total`): a request never waits for the log.
//!
//! Other log lines (`tracing` events) are formatted where they happen, as before, and
//! handed to the same queue as bytes, so one thread writes everything and lines never
//! interleave.
//!
//! Why not `tracing-appender`'s non-blocking writer: it moves only the write off the
//! request's thread, not the formatting, and it cannot carry a record that is
//! formatted later. The queue is `crossbeam-channel`'s bounded channel.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::http::{HeaderValue, Method};
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};

use crate::config::LogFormat;

/// One answered request, as the access log keeps it.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    pub at: SystemTime,
    pub listener: &'static str,
    pub method: Method,
    /// The path only: never the query, which may carry tokens.
    pub path: Box<str>,
    pub status: u16,
    pub latency_us: u64,
    pub request_id: HeaderValue,
    pub user_id: Option<Box<str>>,
}

enum Msg {
    Text(Vec<u8>),
    Access(Box<AccessRecord>),
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// The sending side of the pipe; cheap to share. The writer thread ends when every
/// `LogPipe` for it is dropped.
#[derive(Clone)]
pub struct LogPipe {
    tx: Sender<Msg>,
    dropped: Arc<AtomicU64>,
    thread: Option<std::thread::Thread>,
}

/// How long the writer sleeps once the queue is dry: from the first to the last,
/// doubling while nothing comes. Senders never wake it: a wake per line was a context
/// switch per request (measured: the largest single cost of the access log), so a line
/// waits at most `NAP_MAX` for its write, and a busy queue is written in bursts.
const NAP_MIN: Duration = Duration::from_millis(2);
const NAP_MAX: Duration = Duration::from_millis(50);

impl LogPipe {
    /// Starts the writer thread over `out`, with room for `capacity` lines.
    pub fn start(out: Box<dyn Write + Send>, format: LogFormat, capacity: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let spawned = std::thread::Builder::new()
            .name("frontdesk-log".into())
            .spawn(move || writer(rx, out, format));
        let thread = match spawned {
            Ok(handle) => Some(handle.thread().clone()),
            Err(e) => {
                // No thread, no log: every line will count as dropped rather than block.
                eprintln!("frontdesk: cannot start the log writer: {e}");
                None
            }
        };
        Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
            thread,
        }
    }

    /// Queues an access record; drops and counts it when the queue is full.
    pub fn access(&self, record: AccessRecord) {
        self.send(Msg::Access(Box::new(record)));
    }

    /// Queues an already formatted line.
    pub fn text(&self, line: Vec<u8>) {
        self.send(Msg::Text(line));
    }

    fn send(&self, msg: Msg) {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("frontdesk_log_dropped_total").increment(1);
            }
        }
    }

    /// Lines dropped because the queue was full, since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits (up to `within`) until every line queued before this call is written and
    /// flushed. Returns whether it was. Blocks the calling thread: for shutdown and
    /// tests, never a request.
    pub fn flush(&self, within: Duration) -> bool {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        if self.tx.send_timeout(Msg::Flush(done), within).is_err() {
            return false;
        }
        if let Some(t) = &self.thread {
            t.unpark();
        }
        wait.recv_timeout(within).is_ok()
    }
}

fn writer(rx: Receiver<Msg>, out: Box<dyn Write + Send>, format: LogFormat) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut line = Vec::with_capacity(512);
    let mut nap = NAP_MIN;
    loop {
        let msg = match rx.try_recv() {
            Ok(msg) => {
                nap = NAP_MIN;
                msg
            }
            Err(TryRecvError::Empty) => {
                // The queue ran dry: what is buffered goes out now, then a nap (a
                // flush request cuts it short).
                let _ = out.flush();
                std::thread::park_timeout(nap);
                nap = (nap * 2).min(NAP_MAX);
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
        };
        // A failing output (a closed stderr) must not stop the thread: the queue
        // would fill and every line after would count as dropped, which is the truth.
        match msg {
            Msg::Text(bytes) => {
                let _ = out.write_all(&bytes);
            }
            Msg::Access(record) => {
                line.clear();
                match format {
                    LogFormat::Json => json_line(&record, &mut line),
                    LogFormat::Pretty => pretty_line(&record, &mut line),
                }
                let _ = out.write_all(&line);
            }
            Msg::Flush(done) => {
                let _ = out.flush();
                let _ = done.send(());
            }
        }
    }
    let _ = out.flush();
}

/// A request's fields as every log line written during it shows them: the access
/// line here, and any other event (`request::WithRequest`).
pub(crate) struct Fields<'a> {
    pub id: &'a str,
    pub listener: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub user: Option<&'a str>,
}

impl Fields<'_> {
    /// The JSON object under `request`.
    pub(crate) fn json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(br#"{"request_id":"#);
        json_str(out, self.id);
        let _ = write!(
            out,
            r#","listener":"{}","method":"{}","path":"#,
            self.listener, self.method
        );
        json_str(out, self.path);
        if let Some(user) = self.user {
            out.extend_from_slice(br#","user_id":"#);
            json_str(out, user);
        }
        out.push(b'}');
    }

    /// The ` key=value` pairs of the pretty format.
    pub(crate) fn pretty(&self, out: &mut Vec<u8>) {
        let _ = write!(
            out,
            " request_id={} listener={} method={} path={}",
            self.id,
            self.listener,
            self.method,
            self.path.escape_debug(),
        );
        if let Some(user) = self.user {
            let _ = write!(out, " user_id={user}");
        }
    }
}

impl AccessRecord {
    fn fields(&self) -> Fields<'_> {
        Fields {
            id: self.request_id.to_str().unwrap_or("-"),
            listener: self.listener,
            method: self.method.as_str(),
            path: &self.path,
            user: self.user_id.as_deref(),
        }
    }
}

/// The same shape as the other JSON lines: event fields flat, the request's fields
/// under `request`.
pub(crate) fn json_line(r: &AccessRecord, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        r#"{{"timestamp":"{}","level":"{}","message":"request finished","status":{},"latency_us":{},"target":"frontdesk::access","request":"#,
        humantime::format_rfc3339_micros(r.at),
        level_of(r.status),
        r.status,
        r.latency_us,
    );
    r.fields().json(out);
    out.extend_from_slice(b"}\n");
}

fn pretty_line(r: &AccessRecord, out: &mut Vec<u8>) {
    let _ = write!(
        out,
        "{} {:>5} request finished status={} latency_us={}",
        humantime::format_rfc3339_micros(r.at),
        level_of(r.status),
        r.status,
        r.latency_us,
    );
    r.fields().pretty(out);
    out.push(b'\n');
}

/// 5xx answers are errors of ours; everything else is information.
fn level_of(status: u16) -> &'static str {
    if status >= 500 { "ERROR" } else { "INFO" }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a &str cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(path: &str) -> AccessRecord {
        AccessRecord {
            at: SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456),
            listener: "edge",
            method: Method::GET,
            path: path.into(),
            status: 200,
            latency_us: 17,
            request_id: HeaderValue::from_static("rid-1"),
            user_id: Some("user_1".into()),
        }
    }

    #[test]
    fn json_lines_are_json_and_escape_the_path() {
        let mut out = Vec::new();
        json_line(&record("/a\"b\\c"), &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["latency_us"], 17);
        assert_eq!(v["message"], "request finished");
        assert_eq!(v["request"]["path"], "/a\"b\\c");
        assert_eq!(v["request"]["request_id"], "rid-1");
        assert_eq!(v["request"]["user_id"], "user_1");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
