//! The shared Redis connection: one multiplexed, self-reconnecting connection per
//! instance, the key prefix that namespaces everything Frontdesk writes, and an
//! up/down flag that every caller updates, so stats and readiness can say whether the
//! shared tier is working without a probe of their own.
//!
//! Redis is optional and never on the critical path: callers treat any error as "tier
//! unavailable" and carry on without it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::StreamRangeReply;

use crate::error::Result;

/// How long one `XREAD BLOCK` of a stream reader waits for news (the bus and live
/// events); it doubles as their heartbeat.
pub const STREAM_BLOCK: Duration = Duration::from_millis(1_000);
/// A `BLOCK` round trip that has not come back after this long means a dead link.
const STREAM_READ_TIMEOUT: Duration = Duration::from_millis(2_500);
const STREAM_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The id of `stream`'s newest entry, `0-0` when it is empty: where a reader that
/// only wants what comes next starts.
pub async fn stream_newest(
    conn: &mut MultiplexedConnection,
    stream: &str,
) -> redis::RedisResult<String> {
    let newest: StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(newest
        .ids
        .first()
        .map(|e| e.id.clone())
        .unwrap_or_else(|| "0-0".to_string()))
}

/// How long one Redis command may take before the caller gives up on the tier. Short:
/// an L2 that answers slowly is worse than no L2.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

pub struct RedisLink {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    up: AtomicBool,
    /// Why the last command failed, when it was a TLS failure (a configuration error,
    /// not an outage): start-up stops on it and `/readyz` shows it.
    tls_failure: parking_lot::Mutex<Option<String>>,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client holds the URL, which may hold a password: never print it.
        f.debug_struct("RedisLink")
            .field("prefix", &self.prefix)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl RedisLink {
    /// Prepares the connection without waiting for Redis: Frontdesk starts (and keeps
    /// serving from L1) while Redis is down, and connects when it comes back.
    ///
    /// `rediss://` verifies the server against `ca_file` when given, else against the
    /// platform's roots (rustls-native-certs, which honours `SSL_CERT_FILE`).
    pub fn new(url: &str, prefix: &str, ca_file: Option<&str>) -> Result<Self> {
        let client = match ca_file {
            Some(path) if url.starts_with("rediss://") => {
                let pem = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("cannot read the Redis CA file ([redis] ca_file) {path}: {e}")
                })?;
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(url, certs)
            }
            _ => redis::Client::open(url),
        }
        .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {:?}", e.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| anyhow::anyhow!("cannot set up the Redis connection: {:?}", e.kind()))?;
        Ok(Self {
            client,
            conn,
            prefix: prefix.to_string(),
            up: AtomicBool::new(false),
            tls_failure: parking_lot::Mutex::new(None),
        })
    }

    /// A handle to the shared connection (cheap to clone).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The client, for dedicated connections such as pub/sub subscribers.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// A dedicated connection for one blocking stream reader (`XREAD BLOCK`, at most
    /// [`STREAM_BLOCK`]): its own socket, so a blocked read never holds up the shared
    /// connection, and a response time-out above the block time, so a dead link is
    /// noticed within [`STREAM_READ_TIMEOUT`].
    pub async fn stream_reader(&self) -> redis::RedisResult<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(STREAM_CONNECT_TIMEOUT))
            .set_response_timeout(Some(STREAM_READ_TIMEOUT));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `prefix + suffix`: every key and channel Frontdesk uses goes through here.
    pub fn key(&self, suffix: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + suffix.len());
        k.push_str(&self.prefix);
        k.push_str(suffix);
        k
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Callers report each command's outcome; the flag flips on the first failure and
    /// back on the first success.
    pub fn record<T>(&self, result: &redis::RedisResult<T>) {
        let ok = result.is_ok();
        *self.tls_failure.lock() = result.as_ref().err().and_then(|e| crate::tls::describe(e));
        let was = self.up.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!("redis reachable again");
            } else if let Some(reason) = self.tls_failure() {
                tracing::warn!(
                    reason,
                    "redis TLS failed; continuing without the shared tier"
                );
            } else if let Err(e) = result {
                tracing::warn!(error_kind = ?e.kind(), "redis unreachable; continuing without the shared tier");
            }
        }
        metrics::gauge!("frontdesk_redis_up").set(if ok { 1.0 } else { 0.0 });
    }

    /// Why Redis last failed, when that was a TLS failure (one line, no URL).
    pub fn tls_failure(&self) -> Option<String> {
        self.tls_failure.lock().clone()
    }

    /// For a `rediss://` URL whose server did not complete a TLS handshake: whether it
    /// answers plain-text Redis instead (a `redis://` server behind a `rediss://` URL
    /// waits silently for more of what it takes for a command, so the TLS attempt
    /// only times out). One short probe, made at start-up only.
    pub async fn speaks_plain_redis(&self) -> bool {
        let redis::ConnectionAddr::TcpTls { host, port, .. } =
            self.client.get_connection_info().addr()
        else {
            return false;
        };
        let probe = async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut tcp = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            tcp.write_all(b"PING\r\n").await?;
            let mut buf = [0u8; 1];
            tcp.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf[0] == b'+' || buf[0] == b'-')
        };
        matches!(
            tokio::time::timeout(CONNECT_TIMEOUT, probe).await,
            Ok(Ok(true))
        )
    }

    /// A round trip, for readiness and the health loop.
    pub async fn ping(&self) -> bool {
        let mut conn = self.conn();
        let result: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut conn).await;
        self.record(&result);
        result.is_ok()
    }
}
