//! Criterion micro-benchmarks of the hot paths: a user from L1, a user from L2 (Redis
//! from the test ground; skipped when `FRONTDESK_TEST_REDIS_URL` is unset), session
//! token verification with the verified-token cache hit and missed, and a request
//! context from L1, and one in-memory rate-limit decision.
//!
//! `cargo bench -p frontdesk --bench hot_paths`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use frontdesk::App;
use frontdesk::clock;
use frontdesk::config::{Config, Secret};
use frontdesk::tokens::{Verifier, VerifierConfig};
use frontdesk_emulator::{Emulator, EmulatorConfig, MintSession, RunningEmulator};

struct Fixture {
    _dir: tempfile::TempDir,
    emu: RunningEmulator,
    app: App,
    l2: bool,
}

async fn fixture() -> Fixture {
    let emu = Emulator::new(EmulatorConfig {
        users: 100,
        ..EmulatorConfig::default()
    })
    .expect("emulator");
    let emu = emu
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("spawn emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Config {
        database_url: Secret::new(format!("sqlite://{}/bench.db", dir.path().display())),
        ..Config::default()
    };
    c.clerk.api_url = emu.url.clone();
    c.clerk.secret_key = Some(Secret::new(emu.emulator.secret_key()));
    c.clerk.jwt_key = Some(emu.emulator.public_key_pem());
    c.upstream.rate_limit_requests = 1_000_000;
    let redis = std::env::var("FRONTDESK_TEST_REDIS_URL").ok();
    if let Some(url) = &redis {
        c.redis_url = Some(Secret::new(url.clone()));
        c.redis_prefix = format!("fdbench:crit:{}:", std::process::id());
    }
    let app = App::build(c).await.expect("build app");
    Fixture {
        _dir: dir,
        emu,
        app,
        l2: redis.is_some(),
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let f = rt.block_on(fixture());
    let users = f.app.state().users().cloned().expect("user cache");
    let id = Emulator::seed_user_id(1);
    rt.block_on(async {
        users.get(&id).await.expect("first load");
    });

    c.bench_function("users/l1_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(users.get(black_box(&id)).await.unwrap()) })
    });

    if f.l2 {
        c.bench_function("users/l2_hit (evict_local + get)", |b| {
            b.to_async(&rt).iter(|| async {
                users.evict_local(&id);
                black_box(users.get(black_box(&id)).await.unwrap())
            })
        });
    } else {
        eprintln!("users/l2_hit: skipped (FRONTDESK_TEST_REDIS_URL is not set)");
    }

    let pem = f.emu.emulator.public_key_pem();
    let verifier_config = VerifierConfig {
        jwt_key_pem: Some(pem),
        ..Default::default()
    };
    let token = f
        .emu
        .emulator
        .mint_session(MintSession {
            user_id: Emulator::seed_user_id(2),
            ttl_s: Some(3_600),
            ..Default::default()
        })
        .expect("mint")
        .jwt;
    let verifier = Verifier::new(verifier_config.clone(), None, clock::system()).expect("verifier");
    rt.block_on(async { verifier.verify(&token).await.expect("verify") });

    c.bench_function("tokens/verify_cached", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(verifier.verify(black_box(&token)).await.unwrap()) })
    });

    // A fresh verifier per iteration (built outside the timing): signature, claims and
    // the cache insert, as for the first request of every token.
    c.bench_function("tokens/verify_uncached", |b| {
        b.to_async(&rt).iter_batched(
            || Verifier::new(verifier_config.clone(), None, clock::system()).unwrap(),
            |v| {
                let token = &token;
                async move {
                    let s = v.verify(token).await.unwrap();
                    (v, black_box(s))
                }
            },
            BatchSize::SmallInput,
        )
    });

    let context = f.app.state().context().clone();
    let who = Emulator::seed_user_id(3);
    rt.block_on(async { context.resolve(&who).await.expect("first resolve") });
    c.bench_function("context/resolve_l1", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(context.resolve(black_box(&who)).await.unwrap()) })
    });

    // One in-memory rate-limit decision (the sliding log, a bucket of 60 entries kept
    // full by a clock that moves 1 s per decision with a 60 s window).
    let policy = frontdesk::ratelimit::Policy::from_config(&frontdesk::config::RateLimitConfig {
        name: "api".into(),
        key: frontdesk::config::RateLimitKey::User,
        limit: 60,
        window_s: 60,
        count: frontdesk::config::RateLimitCount::All,
        bypass_roles: Vec::new(),
    });
    let memory = frontdesk::ratelimit::memory::MemoryLimiter::default();
    let bucket = policy.bucket(frontdesk::ratelimit::BucketKind::User, "user_2abc");
    let mut now = 0u64;
    c.bench_function("ratelimit/memory_decision", |b| {
        b.iter(|| {
            now += 1_000;
            black_box(memory.decide(
                &policy,
                black_box(&bucket),
                frontdesk::ratelimit::Mode::Hit,
                now,
            ))
        })
    });
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = hot_paths;
    config = config();
    targets = benches
}
criterion_main!(hot_paths);
