//! Health, readiness, metrics, request ids, logs and graceful shutdown.

use std::time::Duration;

use axum::routing::get;
use frontdesk::App;
use frontdesk::config::Secret;

use crate::support::{self, TestApp, http};

#[tokio::test]
async fn healthz_readyz_and_metrics_on_postgres() {
    let db = support::fresh_pg_database().await;
    let app = TestApp::start(support::config(&db, None, "")).await;
    let c = http();

    let r = c
        .get(format!("{}/_frontdesk/healthz", app.edge))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["status"], "ok");

    let r = c.get(format!("{}/readyz", app.api)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["store"]["kind"], "postgres");
    assert_eq!(body["checks"]["store"]["status"], "up");
    assert_eq!(body["checks"]["redis"], "disabled");

    // The api routes are not on the public listener, and unknown paths get JSON 404s.
    let r = c.get(format!("{}/readyz", app.edge)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["code"],
        "not_found"
    );

    let r = c.get(format!("{}/metrics", app.api)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("frontdesk_http_requests_total{")
                && l.contains("route=\"/_frontdesk/healthz\"")
                && l.contains("status=\"200\"")),
        "{text}"
    );
    assert!(text.contains("# TYPE frontdesk_http_requests_total counter"));
    app.stop().await;
}

#[tokio::test]
async fn readyz_fails_while_the_store_is_down() {
    let db = support::fresh_pg_database().await;
    let app = TestApp::start(support::config(&db, None, "")).await;
    support::set_pg_database_reachable(&db, false).await;
    let r = http()
        .get(format!("{}/readyz", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["store"]["status"], "down");
    support::set_pg_database_reachable(&db, true).await;
    // A store known to be down is refused fast until the background probe (1 s) sees
    // it answer again: ready again within a few probes, not necessarily at once.
    let mut status = 0;
    for _ in 0..50 {
        status = http()
            .get(format!("{}/readyz", app.api))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        status, 200,
        "readyz never recovered after the store came back"
    );
    app.stop().await;
}

#[tokio::test]
async fn readyz_reports_redis() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(&support::sqlite_url(&dir), None, "");
    config.redis_url = Some(Secret::new(support::redis_url()));
    config.redis_prefix = support::redis_prefix();
    let app = TestApp::start(config.clone()).await;
    let r = http()
        .get(format!("{}/readyz", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["checks"]["redis"], "up");
    assert_eq!(body["checks"]["store"]["kind"], "sqlite");
    app.stop().await;

    // Redis configured but unreachable: still ready (degraded), unless required.
    let (_dead, dead_port) = crate::support::refused_port();
    config.redis_url = Some(Secret::new(format!("redis://127.0.0.1:{dead_port}")));
    let app = TestApp::start(config.clone()).await;
    let r = http()
        .get(format!("{}/readyz", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["checks"]["redis"],
        "down"
    );
    app.stop().await;

    config.readyz_require_redis = true;
    let app = TestApp::start(config).await;
    let r = http()
        .get(format!("{}/readyz", app.api))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    app.stop().await;
}

#[tokio::test]
async fn request_ids_are_propagated_and_logged() {
    let logs = support::logs();
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::start(support::config(&support::sqlite_url(&dir), None, "")).await;
    let c = http();
    let given = format!("test-{}", support::unique());
    let r = c
        .get(format!("{}/_frontdesk/healthz", app.edge))
        .header("x-request-id", &given)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], given.as_str());

    // None given: one is generated. An unusable one (too long) is replaced.
    let r = c.get(format!("{}/readyz", app.api)).send().await.unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    let long = "x".repeat(200);
    let r = c
        .get(format!("{}/_frontdesk/healthz", app.edge))
        .header("x-request-id", &long)
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], long.as_str());

    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains(&given))
        .expect("a log line carries the request id");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["request"]["request_id"], given.as_str());
    assert_eq!(v["request"]["path"], "/_frontdesk/healthz");
    assert_eq!(v["message"], "request finished");
    assert_eq!(v["status"], 200);
    app.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::build(support::config(&support::sqlite_url(&dir), None, ""))
        .await
        .unwrap();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let entered_tx = std::sync::Mutex::new(Some(entered_tx));
    let entered_tx = std::sync::Arc::new(entered_tx);
    let server = TestApp::serve(app, move |edge| {
        edge.route(
            "/slow",
            get(move || {
                let tx = entered_tx.lock().unwrap().take();
                async move {
                    if let Some(tx) = tx {
                        let _ = tx.send(());
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "finished"
                }
            }),
        )
    })
    .await;
    let url = format!("{}/slow", server.edge);
    let in_flight = tokio::spawn(async move { http().get(url).send().await });
    entered_rx.await.unwrap();
    let edge = server.edge.clone();
    server.shutdown.cancel();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "finished");
    server.task.await.unwrap().unwrap();
    // After shutdown the listener is closed.
    assert!(
        http()
            .get(format!("{edge}/_frontdesk/healthz"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_access_log_line_can_be_turned_off() {
    let logs = support::logs();
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(&support::sqlite_url(&dir), None, "");
    config.access_log = false;
    let app = TestApp::start(config).await;
    let id = format!("quiet-{}", support::unique());
    let r = app
        .http
        .get(format!("{}/_frontdesk/healthz", app.edge))
        .header("x-request-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-request-id"],
        id.as_str(),
        "ids still propagate"
    );
    assert!(
        !logs.text().contains(&id),
        "no access-log line for this request"
    );
    app.stop().await;
}

#[tokio::test]
async fn sampling_drops_successful_access_lines_but_never_errors() {
    let logs = support::logs();
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(&support::sqlite_url(&dir), None, "");
    config.access_log_sample = 0.0;
    let app = TestApp::start(config).await;
    let ok = format!("sampled-ok-{}", support::unique());
    let missing = format!("sampled-404-{}", support::unique());
    for (path, id, status) in [
        ("/_frontdesk/healthz", &ok, 200),
        ("/_frontdesk/nope", &missing, 404),
    ] {
        let r = app
            .http
            .get(format!("{}{path}", app.edge))
            .header("x-request-id", id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
    }
    let text = logs.text();
    assert!(!text.contains(&ok), "a sampled-out 200 is not logged");
    let line = text
        .lines()
        .find(|l| l.contains(&missing))
        .expect("a 404 is always logged");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["status"], 404);
    app.stop().await;
}

#[test]
fn a_full_log_queue_drops_and_counts_lines_instead_of_waiting() {
    use std::io::Write;
    use std::sync::{Arc, Condvar, Mutex};

    /// An output that blocks until opened: the writer thread is stuck on it.
    #[derive(Clone)]
    struct Gate(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<Vec<u8>>>);
    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.1.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            let _ = self.write(&[])?;
            Ok(())
        }
    }
    let gate = Gate(Arc::default(), Arc::default());
    let pipe = frontdesk::telemetry::LogPipe::start(
        Box::new(gate.clone()),
        frontdesk::config::LogFormat::Json,
        8,
    );
    // The thread buffers what it takes and blocks when it flushes; the queue fills.
    pipe.text(b"first\n".to_vec());
    let mut sent = 1u64;
    let started = std::time::Instant::now();
    while pipe.dropped() == 0 && started.elapsed() < Duration::from_secs(10) {
        for i in 0..100 {
            pipe.text(format!("line {i}\n").into_bytes());
            sent += 1;
        }
    }
    let dropped = pipe.dropped();
    assert!(dropped > 0, "a blocked writer makes the queue drop lines");
    // Open the gate: what was queued is written, nothing more.
    {
        let (open, cv) = &*gate.0;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
    assert!(pipe.flush(Duration::from_secs(5)));
    let written = String::from_utf8(gate.1.lock().unwrap().clone()).unwrap();
    let lines = written.lines().count() as u64;
    assert!(written.starts_with("first\n"));
    assert_eq!(lines + dropped, sent, "every line is written or counted");
    assert_eq!(pipe.dropped(), dropped, "flushing dropped nothing more");
}
