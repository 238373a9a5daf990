//! The accept loop of one listener: hyper's HTTP/1 server with a header size limit and
//! a header read time-out (which `axum::serve` does not expose), a semaphore bounding
//! open connections, and graceful shutdown (stop accepting, let open connections
//! finish their requests). Each request carries the peer's address
//! (`ConnectInfo<SocketAddr>`, for `X-Forwarded-For` and per-IP rate limits), and
//! connections may be upgraded (the gateway splices WebSockets to the app).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::Service;

use super::{HttpConfig, MIN_HEADER_BYTES};

const TOO_MANY: &str =
    r#"{"code":"too_many_connections","message":"too many open connections; retry shortly"}"#;

/// Serves `router` on `listener` until `shutdown` fires, then waits for open
/// connections to finish (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: HttpConfig,
    name: &'static str,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.header_read_timeout_ms.max(1)))
        .max_buf_size(config.max_header_bytes.max(MIN_HEADER_BYTES));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics::counter!("frontdesk_connections_refused_total", "listener" => name)
                .increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                // A Router is always ready: `call` needs no `poll_ready` first.
                router.clone().call(req)
            });
        let conn = http1
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let outcome = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = outcome {
                tracing::debug!(listener = name, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    // Every open connection holds a permit: all of them back means all have closed.
    let all = u32::try_from(config.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    Ok(())
}

/// Answers a connection over the limit with a short 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{TOO_MANY}",
        TOO_MANY.len()
    );
    let _ = stream.write_all(answer.as_bytes()).await;
    let _ = stream.shutdown().await;
    // Drain what the client sent, briefly: closing with unread bytes would reset the
    // connection and the client might never see the answer.
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}
