//! `frontdesk-bench hello`: the hello-world baseline as a process of its own, so that an
//! outside load generator (wrk in scripts/bench-edge.sh) measures it exactly as it
//! measures `frontdesk serve`: same runtime shape (Tokio multi-thread, one worker per
//! core unless told), same loopback, no layers, no logging.

use std::net::SocketAddr;

use anyhow::Context as _;

pub fn serve(addr: SocketAddr, threads: Option<usize>) -> anyhow::Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        rt.worker_threads(n.max(1));
    }
    let rt = rt.enable_all().build().context("start the runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        let local = listener.local_addr()?;
        {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "hello ready: http://{local}");
            let _ = out.flush();
        }
        axum::serve(listener, crate::ground::hello_router())
            .await
            .context("serve")
    })
}
