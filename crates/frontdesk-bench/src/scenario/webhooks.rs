//! webhooks: Svix-signed Clerk events posted to `/_frontdesk/webhooks/clerk` on the edge
//! listener, as fast as `connections` senders get acknowledgements; Frontdesk on
//! Postgres stores each in its durable inbox before it answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use frontdesk_emulator::{EmulatorConfig, svix};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;

use super::zipf::WEBHOOKS;
use crate::ground::{Ground, WEBHOOK_SECRET};
use crate::load::{self, Outcome, Spec, Verdict, Workload, pct_us};
use crate::report::Report;
use crate::rng::Rng;

#[derive(Debug, Clone)]
pub struct Args {
    pub users: usize,
    pub connections: usize,
    pub duration_s: f64,
}

struct Events {
    addr: SocketAddr,
    users: Vec<String>,
    next: AtomicU64,
    run: u64,
}

impl Events {
    fn signed(&self, rng: &mut Rng) -> anyhow::Result<Request<Full<Bytes>>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let msg_id = format!("msg_bench{:x}x{n:x}", self.run);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let user = &self.users[rng.below(self.users.len())];
        let body = json!({
            "data": {"id": user, "object": "user", "first_name": format!("hook-{n}"),
                     "updated_at": now_ms},
            "object": "event",
            "type": "user.updated",
            "timestamp": now_ms,
            "instance_id": "ins_bench",
        })
        .to_string();
        let ts = now_ms / 1000;
        let sig = svix::sign(WEBHOOK_SECRET, &msg_id, ts, body.as_bytes())
            .map_err(|e| anyhow::anyhow!("sign: {e}"))?;
        Ok(Request::post(WEBHOOKS)
            .header(http::header::HOST, self.addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("svix-id", msg_id)
            .header("svix-timestamp", ts.to_string())
            .header("svix-signature", sig)
            .body(Full::new(Bytes::from(body)))?)
    }
}

impl Workload for Events {
    type Meta = bool;
    fn addr(&self, _: usize) -> SocketAddr {
        self.addr
    }
    fn request(&self, _: usize, rng: &mut Rng) -> (Request<Full<Bytes>>, bool) {
        match self.signed(rng) {
            Ok(req) => (req, true),
            Err(_) => (load::get(self.addr, "/", None), false),
        }
    }
    fn verdict(&self, signed: bool, status: StatusCode, _: &Bytes) -> Verdict {
        Verdict {
            class: 0,
            outcome: if signed && status.is_success() {
                Outcome::Ok
            } else {
                Outcome::Error
            },
        }
    }
}

pub async fn run(g: &Ground, a: &Args, seed: u64) -> anyhow::Result<Report> {
    let mut r = Report::default();
    let emu = g
        .emulator(EmulatorConfig {
            users: a.users,
            ..EmulatorConfig::default()
        })
        .await?;
    let db = g.database().await?;
    let prefix = g.redis_prefix();
    let fd = g.frontdesk(g.config(&db, &emu, prefix.as_deref())).await?;
    let http = crate::ground::http();
    let probe = http
        .post(format!("http://{}{WEBHOOKS}", fd.edge))
        .body("{}")
        .send()
        .await?;
    if probe.status() == reqwest::StatusCode::NOT_FOUND {
        r.unavailable = Some(format!(
            "not available yet: POST {WEBHOOKS} answered 404 (webhook ingestion is not on \
             this branch)"
        ));
        fd.stop().await?;
        return Ok(r);
    }
    let w = Arc::new(Events {
        addr: fd.edge,
        users: (0..a.users)
            .map(frontdesk_emulator::Emulator::seed_user_id)
            .collect(),
        next: AtomicU64::new(0),
        run: seed,
    });
    let spec = Spec::new(a.connections, super::secs(a.duration_s));
    // The hello-world baseline at the same connections, in the same run, just before.
    let hello = g.hello().await?;
    let h = load::drive(Arc::new(super::edge_me::Hello(hello.addr)), spec, seed ^ 1).await;
    drop(hello);
    let run = load::drive(w, spec, seed).await;
    let all = run.total();
    r.add("accepted events/s", run.rps(), "events/s");
    r.add("hello.rps", h.rps(), "req/s");
    r.add("events/hello rps ratio", run.rps() / h.rps(), "x");
    if h.total().ok == 0 {
        r.fail(format!(
            "hello-world baseline answered nothing: {:?}",
            h.first_error
        ));
    }
    r.add("ack.p50", pct_us(&all.lat_ns, 50.0), "µs");
    r.add("ack.p99", pct_us(&all.lat_ns, 99.0), "µs");
    r.add("accepted", all.ok as f64, "events");
    r.add("refused or failed", all.errors as f64, "events");
    r.add("connections", a.connections as f64, "");
    r.note("processing throughput (inbox → cache invalidation) is not measured yet");
    if all.ok == 0 {
        r.fail(format!("no event accepted: {:?}", run.first_error));
    } else if all.errors > 0 {
        r.note(format!("errors, first: {:?}", run.first_error));
    }
    fd.stop().await?;
    drop(emu);
    Ok(r)
}
