//! edge-me: `GET /_frontdesk/me` with cached tokens against a hello-world axum server
//! measured in the same run, at many connections and at one.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use frontdesk_emulator::EmulatorConfig;
use http::{Request, StatusCode};
use http_body_util::Full;

use crate::ground::Ground;
use crate::load::{self, Outcome, Spec, Verdict, Workload, pct_us};
use crate::report::Report;
use crate::rng::Rng;

#[derive(Debug, Clone)]
pub struct Args {
    pub users: usize,
    pub connections: usize,
    pub duration_s: f64,
    pub one_conn_duration_s: f64,
}

pub const ME: &str = "/_frontdesk/me";

/// `GET /` of the hello-world baseline; other edge scenarios measure it too.
pub struct Hello(pub SocketAddr);

impl Workload for Hello {
    type Meta = ();
    fn addr(&self, _: usize) -> SocketAddr {
        self.0
    }
    fn request(&self, _: usize, _: &mut Rng) -> (Request<Full<Bytes>>, ()) {
        (load::get(self.0, "/", None), ())
    }
    fn verdict(&self, _: (), status: StatusCode, _: &Bytes) -> Verdict {
        ok_if(status == StatusCode::OK)
    }
}

struct Me {
    addr: SocketAddr,
    tokens: Arc<Vec<String>>,
}

impl Workload for Me {
    type Meta = ();
    fn addr(&self, _: usize) -> SocketAddr {
        self.addr
    }
    fn request(&self, _: usize, rng: &mut Rng) -> (Request<Full<Bytes>>, ()) {
        let t = &self.tokens[rng.below(self.tokens.len())];
        (load::get(self.addr, ME, Some(t)), ())
    }
    fn verdict(&self, _: (), status: StatusCode, _: &Bytes) -> Verdict {
        ok_if(status == StatusCode::OK)
    }
}

fn ok_if(ok: bool) -> Verdict {
    Verdict {
        class: 0,
        outcome: if ok { Outcome::Ok } else { Outcome::Error },
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
    let hello = g.hello().await?;
    let t0 = std::time::Instant::now();
    let tokens = Arc::new(super::mint_tokens(&emu, a.users).await?);
    r.note(format!(
        "{} session tokens minted in {:.1} s (not measured)",
        tokens.len(),
        t0.elapsed().as_secs_f64()
    ));
    let http = crate::ground::http();

    // Is /me there?
    let first = tokens.first().cloned().unwrap_or_default();
    let probe = http
        .get(format!("http://{}{ME}", fd.edge))
        .bearer_auth(&first)
        .send()
        .await?;
    let me_status = probe.status();
    let available = me_status == reqwest::StatusCode::OK;
    if !available {
        r.unavailable = Some(format!(
            "GET {ME} answered {me_status} (the route is not on this branch yet); \
             only the hello-world baseline was measured"
        ));
    }

    // Warm every token and context once (not measured).
    if available {
        let t0 = std::time::Instant::now();
        use futures::StreamExt as _;
        let edge = fd.edge;
        let bad = futures::stream::iter(tokens.iter().cloned())
            .map(|t| {
                let http = http.clone();
                async move {
                    http.get(format!("http://{edge}{ME}"))
                        .bearer_auth(t)
                        .send()
                        .await
                        .map(|resp| resp.status().is_success())
                        .unwrap_or(false)
                }
            })
            .buffer_unordered(a.connections.max(1))
            .filter(|ok| futures::future::ready(!ok))
            .count()
            .await;
        if bad > 0 {
            r.note(format!(
                "warm-up: {bad} of {} /me calls failed",
                tokens.len()
            ));
        }
        r.note(format!(
            "warm-up of {} tokens + contexts took {:.1} s (not measured)",
            tokens.len(),
            t0.elapsed().as_secs_f64()
        ));
    }
    emu.emulator.reset();

    let hello_w = Arc::new(Hello(hello.addr));
    let me_w = Arc::new(Me {
        addr: fd.edge,
        tokens: tokens.clone(),
    });
    let many = Spec::new(a.connections, super::secs(a.duration_s));
    let one = Spec::new(1, super::secs(a.one_conn_duration_s));

    let h = load::drive(hello_w.clone(), many, seed).await;
    let h_all = h.total();
    r.add("hello.rps", h.rps(), "req/s");
    if h_all.ok == 0 {
        r.fail(format!(
            "hello-world baseline answered nothing: {:?}",
            h.first_error
        ));
    }
    let h1 = load::drive(hello_w, one, seed + 1).await.total();

    if available {
        let m = load::drive(me_w.clone(), many, seed + 2).await;
        let m_all = m.total();
        let m1 = load::drive(me_w, one, seed + 3).await.total();
        r.add("me.rps", m.rps(), "req/s");
        r.add("me/hello rps ratio", m.rps() / h.rps(), "x");
        r.add("me.p50", pct_us(&m_all.lat_ns, 50.0), "µs");
        r.add("me.p90", pct_us(&m_all.lat_ns, 90.0), "µs");
        r.add("me.p99", pct_us(&m_all.lat_ns, 99.0), "µs");
        r.add("hello.p50", pct_us(&h_all.lat_ns, 50.0), "µs");
        r.add("hello.p99", pct_us(&h_all.lat_ns, 99.0), "µs");
        r.add("me.errors", m_all.errors as f64, "req");
        r.add("1conn.me.p50", pct_us(&m1.lat_ns, 50.0), "µs");
        r.add("1conn.me.p99", pct_us(&m1.lat_ns, 99.0), "µs");
        r.add("1conn.hello.p50", pct_us(&h1.lat_ns, 50.0), "µs");
        r.add("1conn.hello.p99", pct_us(&h1.lat_ns, 99.0), "µs");
        r.add(
            "1conn.added.p50",
            pct_us(&m1.lat_ns, 50.0) - pct_us(&h1.lat_ns, 50.0),
            "µs",
        );
        r.add(
            "1conn.added.p99",
            pct_us(&m1.lat_ns, 99.0) - pct_us(&h1.lat_ns, 99.0),
            "µs",
        );
        r.add(
            "clerk calls (measured phase)",
            emu.emulator.stats().total as f64,
            "calls",
        );
        if m_all.ok == 0 {
            r.fail(format!("/me answered nothing: {:?}", m.first_error));
        } else if m_all.errors > 0 {
            r.note(format!("/me errors, first: {:?}", m.first_error));
        }
    } else {
        r.add("hello.p50", pct_us(&h_all.lat_ns, 50.0), "µs");
        r.add("hello.p99", pct_us(&h_all.lat_ns, 99.0), "µs");
        r.add("1conn.hello.p50", pct_us(&h1.lat_ns, 50.0), "µs");
        r.add("1conn.hello.p99", pct_us(&h1.lat_ns, 99.0), "µs");
    }
    r.add("users (tokens)", a.users as f64, "");
    r.add("connections", a.connections as f64, "");
    drop(hello);
    fd.stop().await?;
    drop(emu);
    Ok(r)
}
