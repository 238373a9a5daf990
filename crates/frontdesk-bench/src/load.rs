//! The load generator: a fixed number of keep-alive HTTP/1.1 connections, each a task
//! sending one request at a time (closed loop) until a deadline. Every request has a
//! time limit, every connection a bounded number of reconnects, so a run always ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::rng::Rng;

/// What one answer counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Answered, but with data older than an acknowledged write.
    Stale,
    Error,
}

/// The verdict on one answer: which latency class it belongs to and how it went.
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    pub class: usize,
    pub outcome: Outcome,
}

/// Generates requests and judges answers. `Meta` travels from one to the other.
pub trait Workload: Send + Sync + 'static {
    type Meta: Send + 'static;
    /// Where connection `conn` goes.
    fn addr(&self, conn: usize) -> SocketAddr;
    fn request(&self, conn: usize, rng: &mut Rng) -> (Request<Full<Bytes>>, Self::Meta);
    fn verdict(&self, meta: Self::Meta, status: StatusCode, body: &Bytes) -> Verdict;
    /// Number of latency classes `verdict` uses.
    fn classes(&self) -> usize {
        1
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub connections: usize,
    pub duration: Duration,
    pub request_timeout: Duration,
}

impl Spec {
    pub fn new(connections: usize, duration: Duration) -> Self {
        Self {
            connections: connections.max(1),
            duration,
            request_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Class {
    pub ok: u64,
    pub stale: u64,
    pub errors: u64,
    /// Latencies of answered requests (ok or stale), nanoseconds.
    pub lat_ns: Vec<u64>,
}

impl Class {
    fn merge(&mut self, other: Class) {
        self.ok += other.ok;
        self.stale += other.stale;
        self.errors += other.errors;
        self.lat_ns.extend(other.lat_ns);
    }

    pub fn answered(&self) -> u64 {
        self.ok + self.stale
    }
}

#[derive(Debug, Clone)]
pub struct Run {
    pub elapsed: Duration,
    pub classes: Vec<Class>,
    pub first_error: Option<String>,
}

impl Run {
    pub fn total(&self) -> Class {
        let mut all = Class::default();
        for c in &self.classes {
            all.merge(c.clone());
        }
        all.lat_ns.sort_unstable();
        all
    }

    /// Answered requests per second over the whole run.
    pub fn rps(&self) -> f64 {
        let n: u64 = self.classes.iter().map(Class::answered).sum();
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Latency percentile `p` (0–100) of sorted nanoseconds, in microseconds.
pub fn pct_us(sorted_ns: &[u64], p: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted_ns.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted_ns.len()) - 1;
    sorted_ns[i] as f64 / 1_000.0
}

/// Drives `workload` per `spec` and returns what happened; latency vectors of each
/// class are sorted.
pub async fn drive<W: Workload>(workload: Arc<W>, spec: Spec, seed: u64) -> Run {
    if std::env::var_os("FRONTDESK_BENCH_PHASES").is_some() {
        // For attaching a profiler to one phase (see BENCHMARKS.md).
        eprintln!(
            "phase: {} x{} for {:?} (pid {})",
            std::any::type_name::<W>(),
            spec.connections,
            spec.duration,
            std::process::id()
        );
    }
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut tasks = Vec::with_capacity(spec.connections);
    for conn in 0..spec.connections {
        let w = workload.clone();
        tasks.push(tokio::spawn(connection(
            w,
            conn,
            spec,
            deadline,
            seed.wrapping_mul(1_000_003).wrapping_add(conn as u64),
        )));
    }
    let mut classes = vec![Class::default(); workload.classes()];
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok((cs, err)) => {
                for (acc, c) in classes.iter_mut().zip(cs) {
                    acc.merge(c);
                }
                if first_error.is_none() {
                    first_error = err;
                }
            }
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(format!("connection task failed: {e}"));
                }
            }
        }
    }
    for c in &mut classes {
        c.lat_ns.sort_unstable();
    }
    Run {
        elapsed: start.elapsed(),
        classes,
        first_error,
    }
}

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// One keep-alive HTTP/1.1 connection (Nagle off), its driver on the current runtime.
pub async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Reconnects allowed per connection before it gives up.
const MAX_RECONNECTS: u32 = 50;

async fn connection<W: Workload>(
    w: Arc<W>,
    conn: usize,
    spec: Spec,
    deadline: Instant,
    seed: u64,
) -> (Vec<Class>, Option<String>) {
    let mut rng = Rng::new(seed);
    let mut classes = vec![Class::default(); w.classes()];
    let mut first_error: Option<String> = None;
    let note = |e: String, first: &mut Option<String>| {
        if first.is_none() {
            *first = Some(e);
        }
    };
    let addr = w.addr(conn);
    let mut sender: Option<Sender> = None;
    let mut reconnects = 0u32;
    while Instant::now() < deadline {
        let s = match sender.as_mut() {
            Some(s) => s,
            None => {
                if reconnects > MAX_RECONNECTS {
                    note(
                        format!("connection {conn}: too many reconnects"),
                        &mut first_error,
                    );
                    break;
                }
                reconnects += 1;
                match connect(addr).await {
                    Ok(s) => sender.insert(s),
                    Err(e) => {
                        note(e, &mut first_error);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
            }
        };
        if s.ready().await.is_err() {
            sender = None;
            continue;
        }
        let (req, meta) = w.request(conn, &mut rng);
        let t0 = Instant::now();
        let answered = tokio::time::timeout(spec.request_timeout, async {
            let resp = s.send_request(req).await.map_err(|e| e.to_string())?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((parts.status, body))
        })
        .await;
        let dt = t0.elapsed().as_nanos() as u64;
        match answered {
            Ok(Ok((status, body))) => {
                let v = w.verdict(meta, status, &body);
                let last = classes.len() - 1;
                let c = &mut classes[v.class.min(last)];
                match v.outcome {
                    Outcome::Ok => {
                        c.ok += 1;
                        c.lat_ns.push(dt);
                    }
                    Outcome::Stale => {
                        c.stale += 1;
                        c.lat_ns.push(dt);
                    }
                    Outcome::Error => {
                        c.errors += 1;
                        note(
                            format!(
                                "HTTP {status}: {}",
                                String::from_utf8_lossy(&body[..body.len().min(200)])
                            ),
                            &mut first_error,
                        );
                    }
                }
            }
            Ok(Err(e)) => {
                classes[0].errors += 1;
                note(e, &mut first_error);
                sender = None;
            }
            Err(_) => {
                classes[0].errors += 1;
                note("request timed out".into(), &mut first_error);
                sender = None;
            }
        }
    }
    (classes, first_error)
}

/// A GET with the headers every workload sends.
pub fn get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::get(path).header(http::header::HOST, addr.to_string());
    if let Some(t) = bearer {
        b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Full::new(Bytes::new()))
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}
