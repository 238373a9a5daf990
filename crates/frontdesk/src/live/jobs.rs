//! Refresh jobs (`[[jobs]]`): a statement run after matching events, debounced, one
//! run at a time across the fleet, its outcome sent as `event: job` to the tenants
//! whose events triggered it.
//!
//! Every instance sees every event (the fleet stream), so every instance debounces the
//! same burst. What keeps it to one run: the run holds `pg_try_advisory_lock` (on a
//! connection of its own, closed afterwards so the lock cannot outlive it), and
//! records in Redis the newest fleet-stream id its reader had seen when it started.
//! An instance whose burst is no newer than that skips: a run that started after an
//! event was published saw that event's changes. An instance that finds the lock taken
//! waits one more debounce period and looks again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Delivery, Live, id_after};
use crate::store::Backend;

pub use crate::config::JobConfig;

/// Tenants remembered per pending run (the rest are not told of its outcome).
const MAX_TENANTS: usize = 1_000;

/// A job's counters on one instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobStats {
    /// Matching events seen.
    pub triggers: u64,
    /// Runs this instance made (whatever their outcome).
    pub runs: u64,
    pub failures: u64,
    /// Bursts another instance's run had already covered.
    pub covered: u64,
    /// Whether a run is waiting (debounce, lock) or running here.
    pub pending: bool,
}

#[derive(Default)]
struct Pending {
    armed: bool,
    first: Option<Instant>,
    last: Option<Instant>,
    /// The newest fleet-stream id among the triggering events.
    upto: Option<String>,
    tenants: BTreeSet<String>,
}

pub(super) struct Job {
    config: JobConfig,
    lock_key: i64,
    state: Mutex<Pending>,
    wake: Notify,
    running: AtomicBool,
    triggers: AtomicU64,
    runs: AtomicU64,
    failures: AtomicU64,
    covered: AtomicU64,
}

pub(super) struct Jobs {
    list: Vec<Arc<Job>>,
}

impl Jobs {
    pub(super) fn new(configs: &[JobConfig]) -> Self {
        let list = configs
            .iter()
            .map(|c| {
                let digest = Sha256::digest(format!("frontdesk:job:{}", c.name).as_bytes());
                let mut key = [0u8; 8];
                key.copy_from_slice(&digest[..8]);
                Arc::new(Job {
                    config: c.clone(),
                    lock_key: i64::from_be_bytes(key),
                    state: Mutex::new(Pending::default()),
                    wake: Notify::new(),
                    running: AtomicBool::new(false),
                    triggers: AtomicU64::new(0),
                    runs: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    covered: AtomicU64::new(0),
                })
            })
            .collect();
        Self { list }
    }

    pub(super) fn all(&self) -> Vec<Arc<Job>> {
        self.list.clone()
    }

    pub(super) fn stats(&self, name: &str) -> Option<JobStats> {
        let j = self.list.iter().find(|j| j.config.name == name)?;
        Some(JobStats {
            triggers: j.triggers.load(Ordering::Relaxed),
            runs: j.runs.load(Ordering::Relaxed),
            failures: j.failures.load(Ordering::Relaxed),
            covered: j.covered.load(Ordering::Relaxed),
            pending: j.state.lock().armed || j.running.load(Ordering::SeqCst),
        })
    }

    /// An event reached this instance: arm the jobs it triggers.
    pub(super) fn observe(&self, d: &Delivery, fleet_id: Option<&str>) {
        for job in &self.list {
            if !triggers(&job.config.on, d) {
                continue;
            }
            job.triggers.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("frontdesk_job_triggers_total", "job" => job.config.name.clone())
                .increment(1);
            let now = Instant::now();
            let mut p = job.state.lock();
            p.armed = true;
            p.first.get_or_insert(now);
            p.last = Some(now);
            if let Some(f) = fleet_id {
                if p.upto.as_deref().is_none_or(|u| id_after(f, u)) {
                    p.upto = Some(f.to_string());
                }
            }
            if p.tenants.len() < MAX_TENANTS {
                p.tenants.insert(d.tenant.clone());
            }
            drop(p);
            job.wake.notify_one();
        }
    }
}

/// Whether an event of this kind and data triggers a job listening `on`.
fn triggers(on: &[String], d: &Delivery) -> bool {
    if on.contains(&d.kind) {
        return true;
    }
    if d.kind != "invalidate" || !on.iter().any(|t| t.starts_with("invalidate:")) {
        return false;
    }
    let resource = serde_json::from_str::<Value>(&d.data)
        .ok()
        .and_then(|v| v.get("resource").and_then(Value::as_str).map(str::to_owned));
    match resource {
        Some(r) => on
            .iter()
            .any(|t| t.strip_prefix("invalidate:") == Some(r.as_str())),
        // A whole-tenant invalidation covers every resource.
        None => true,
    }
}

enum Outcome {
    Ran {
        ok: &'static str,
        ms: u64,
    },
    Covered,
    /// The lock is taken or the store unreachable: look again later.
    Later,
}

/// One job's loop: wait for a trigger, debounce, run (or find it covered), repeat.
pub(super) async fn run(live: Live, job: Arc<Job>, stop: CancellationToken) {
    let debounce = Duration::from_millis(job.config.debounce_ms);
    loop {
        while !job.state.lock().armed {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = job.wake.notified() => {}
            }
        }
        loop {
            let deadline = {
                let p = job.state.lock();
                let (Some(first), Some(last)) = (p.first, p.last) else {
                    break;
                };
                (last + debounce).min(first + debounce * 10)
            };
            if Instant::now() >= deadline {
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {}
                _ = job.wake.notified() => {}
            }
        }
        job.running.store(true, Ordering::SeqCst);
        let (upto, tenants) = {
            let mut p = job.state.lock();
            let taken = (p.upto.take(), std::mem::take(&mut p.tenants));
            *p = Pending::default();
            taken
        };
        match attempt(&live, &job, upto.as_deref()).await {
            Outcome::Ran { ok, ms } => {
                let data = json!({"job": job.config.name, "outcome": ok, "duration_ms": ms});
                for t in &tenants {
                    if let Err(e) = live.publish(t, "job", &data).await {
                        tracing::warn!(job = %job.config.name, code = e.code(), "cannot send a job's outcome");
                    }
                }
            }
            Outcome::Covered => {
                job.covered.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("frontdesk_job_skipped_total", "job" => job.config.name.clone(), "reason" => "covered").increment(1);
            }
            Outcome::Later => {
                metrics::counter!("frontdesk_job_skipped_total", "job" => job.config.name.clone(), "reason" => "busy").increment(1);
                // Put the burst back, merged with whatever arrived meanwhile.
                let now = Instant::now();
                let mut p = job.state.lock();
                p.armed = true;
                p.first.get_or_insert(now);
                p.last = Some(now);
                if let Some(u) = upto {
                    if p.upto.as_deref().is_none_or(|c| id_after(&u, c)) {
                        p.upto = Some(u);
                    }
                }
                for t in tenants {
                    if p.tenants.len() < MAX_TENANTS {
                        p.tenants.insert(t);
                    }
                }
            }
        }
        job.running.store(false, Ordering::SeqCst);
    }
}

async fn attempt(live: &Live, job: &Job, upto: Option<&str>) -> Outcome {
    let name = job.config.name.as_str();
    // Irrefutable without the `sqlite` feature.
    #[allow(irrefutable_let_patterns)]
    let Backend::Postgres(pg) = live.inner.store.backend() else {
        // Refused by config validation; nothing to run on.
        return Outcome::Covered;
    };
    let mut conn = match pg.pool().acquire().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(job = name, error_kind = %crate::store::describe_connect_error(&e), "refresh job cannot reach the store");
            return Outcome::Later;
        }
    };
    let locked: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(job.lock_key)
        .fetch_one(&mut *conn)
        .await;
    if !matches!(locked, Ok(true)) {
        let _ = conn.close().await;
        return Outcome::Later;
    }
    let covered_key = live
        .inner
        .redis
        .as_ref()
        .map(|r| r.key(&format!("live:job:{name}")));
    if let (Some(upto), Some(key), Some(redis)) = (upto, &covered_key, &live.inner.redis) {
        let mut rc = redis.conn();
        let covered: redis::RedisResult<Option<String>> =
            redis::cmd("GET").arg(key).query_async(&mut rc).await;
        redis.record(&covered);
        if let Ok(Some(c)) = covered {
            if !id_after(upto, &c) {
                let _ = conn.close().await;
                return Outcome::Covered;
            }
        }
    }
    let seen_at_start = live.fleet_seen();
    let limit = job.config.timeout_ms.max(1);
    let started = Instant::now();
    let outcome = match sqlx::query(&format!("SET statement_timeout = {limit}"))
        .execute(&mut *conn)
        .await
    {
        Err(_) => Err("error"),
        Ok(_) => match tokio::time::timeout(
            Duration::from_millis(limit) + Duration::from_secs(5),
            sqlx::Executor::execute(&mut *conn, job.config.sql.as_str()),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("57014") => {
                Err("timeout")
            }
            Ok(Err(e)) => {
                tracing::warn!(job = name, error = %e, "refresh job failed");
                Err("error")
            }
            Err(_) => Err("timeout"),
        },
    };
    let ms = started.elapsed().as_millis() as u64;
    if outcome.is_ok() {
        if let (Some(seen), Some(key), Some(redis)) =
            (seen_at_start, &covered_key, &live.inner.redis)
        {
            let mut rc = redis.conn();
            let r: redis::RedisResult<()> = redis::cmd("SET")
                .arg(key)
                .arg(seen)
                .arg("PX")
                .arg(live.inner.config.history_ttl_ms.max(1))
                .query_async(&mut rc)
                .await;
            redis.record(&r);
        }
    }
    // Closing the connection ends its session, and with it the lock and the time-out
    // setting, whatever state the statement left it in.
    let _ = conn.close().await;
    let label = outcome.err().unwrap_or("ok");
    job.runs.fetch_add(1, Ordering::Relaxed);
    if label != "ok" {
        job.failures.fetch_add(1, Ordering::Relaxed);
    }
    metrics::counter!("frontdesk_job_runs_total", "job" => name.to_string(), "outcome" => label)
        .increment(1);
    metrics::histogram!("frontdesk_job_duration_seconds", "job" => name.to_string())
        .record(ms as f64 / 1000.0);
    tracing::info!(
        job = name,
        outcome = label,
        duration_ms = ms,
        "refresh job ran"
    );
    Outcome::Ran { ok: label, ms }
}

pub use crate::config::validate_jobs as validate;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn d(kind: &str, data: &str) -> Delivery {
        Delivery {
            tenant: "org_1".into(),
            id: "1-0".into(),
            kind: kind.into(),
            data: data.into(),
        }
    }

    #[test]
    fn invalidations_trigger_by_resource() {
        let on = vec![
            "invalidate:invoices".to_string(),
            "user.updated".to_string(),
        ];
        assert!(triggers(&on, &d("user.updated", "{}")));
        assert!(triggers(
            &on,
            &d("invalidate", r#"{"resource":"invoices"}"#)
        ));
        assert!(!triggers(&on, &d("invalidate", r#"{"resource":"orders"}"#)));
        assert!(triggers(&on, &d("invalidate", r#"{"resource":null}"#)));
        assert!(!triggers(&on, &d("user.created", "{}")));
        let any = vec!["invalidate".to_string()];
        assert!(triggers(&any, &d("invalidate", r#"{"resource":"orders"}"#)));
    }

    #[test]
    fn jobs_are_refused_on_sqlite() {
        let job = JobConfig {
            name: "kpis".into(),
            sql: "SELECT 1".into(),
            on: vec!["x".into()],
            debounce_ms: 1,
            timeout_ms: 1,
        };
        assert!(
            validate(std::slice::from_ref(&job), true)
                .unwrap_err()
                .contains("Postgres")
        );
        assert!(validate(std::slice::from_ref(&job), false).is_ok());
        assert!(validate(&[job.clone(), job], false).is_err());
    }
}
