//! The scenarios. Each returns one [`Report`](crate::report::Report) per run.

pub mod bulk;
pub mod cold_storm;
pub mod edge_me;
pub mod fleet;
pub mod memory;
pub mod webhooks;
pub mod zipf;

use std::time::Duration;

use frontdesk_emulator::{Emulator, MintSession, RunningEmulator};

/// Mints `n` session tokens (valid 1 h) for seeded users 0..n, on blocking threads.
pub async fn mint_tokens(emu: &RunningEmulator, n: usize) -> anyhow::Result<Vec<String>> {
    let threads = std::thread::available_parallelism()
        .map(|p| p.get())
        .unwrap_or(1)
        .max(1);
    let chunk = n.div_ceil(threads).max(1);
    let mut tasks = Vec::new();
    for start in (0..n).step_by(chunk) {
        let emu: Emulator = emu.emulator.clone();
        let end = (start + chunk).min(n);
        tasks.push(tokio::task::spawn_blocking(move || {
            (start..end)
                .map(|i| {
                    emu.mint_session(MintSession {
                        user_id: Emulator::seed_user_id(i),
                        ttl_s: Some(3_600),
                        ..Default::default()
                    })
                    .map(|m| m.jwt)
                    .map_err(|e| anyhow::anyhow!("mint session: {e}"))
                })
                .collect::<anyhow::Result<Vec<String>>>()
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.extend(t.await??);
    }
    Ok(out)
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.05))
}
