//! Forwarding one request to the app: hop-by-hop headers out, `Forwarded` /
//! `X-Forwarded-*` in, bodies streamed both ways through a pooled keep-alive client,
//! and WebSocket (any `Upgrade`) connections spliced after both sides switch
//! protocols.

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::routes::Upstream;
use crate::error::Error;

pub type HttpClient = Client<HttpConnector, Body>;

pub fn client(pool_max_idle: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(pool_max_idle)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// Headers that describe one hop, never the request (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers (and those `Connection` names); keeps `Connection:
/// upgrade` and `Upgrade` when `keep_upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // `keep-alive` (the usual token) is removed below anyway: skipping it keeps
        // the common case free of allocations.
        .filter(|t| !t.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Where the request came from, as the forwarding headers tell the app.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub peer: IpAddr,
    pub peer_trusted: bool,
    pub client: IpAddr,
}

/// `X-Forwarded-For` / `-Proto` / `-Host` and `Forwarded`. What a trusted proxy in
/// front of us said is kept and extended; what anyone else said is replaced.
pub fn set_forwarding(headers: &mut HeaderMap, origin: &Origin) {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let fwd_name = HeaderName::from_static("forwarded");
    let xff = HeaderName::from_static("x-forwarded-for");
    let xfp = HeaderName::from_static("x-forwarded-proto");
    let xfh = HeaderName::from_static("x-forwarded-host");
    let peer = origin.peer.to_string();
    let (proto, fwd_host) = if origin.peer_trusted {
        let proto = headers
            .get(&xfp)
            .and_then(|v| v.to_str().ok())
            .filter(|p| *p == "https" || *p == "http")
            .unwrap_or("http")
            .to_string();
        let h = headers
            .get(&xfh)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .unwrap_or_else(|| host.clone());
        (proto, h)
    } else {
        ("http".to_string(), host.clone())
    };
    let chain = if origin.peer_trusted {
        let before: Vec<&str> = headers
            .get_all(&xff)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if before.is_empty() {
            peer.clone()
        } else {
            format!("{}, {peer}", before.join(", "))
        }
    } else {
        peer.clone()
    };
    let node = match origin.peer {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let mut forwarded = format!("for={node};proto={proto}");
    if !fwd_host.is_empty() && fwd_host.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        forwarded.push_str(&format!(";host=\"{fwd_host}\""));
    }
    if origin.peer_trusted {
        let before: Vec<&str> = headers
            .get_all(&fwd_name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if !before.is_empty() {
            forwarded = format!("{}, {forwarded}", before.join(", "));
        }
    }
    for (name, value) in [
        (xff, chain),
        (xfp, proto),
        (xfh, fwd_host),
        (fwd_name, forwarded),
    ] {
        headers.remove(&name);
        if let Ok(v) = HeaderValue::from_str(&value) {
            if !value.is_empty() {
                headers.insert(name, v);
            }
        }
    }
}

/// Sends `req` (headers already prepared) to `upstream` and answers with the app's
/// response, streamed; 502 when the app cannot be reached, 504 when its response
/// head takes longer than `timeout`.
pub async fn forward(
    client: &HttpClient,
    upstream: &Upstream,
    mut req: Request,
    timeout: Duration,
) -> Response {
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    strip_hop_by_hop(req.headers_mut(), upgrade);
    let pq = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .to_string();
    let uri = match upstream.uri_for(&pq) {
        Ok(u) => u,
        Err(_) => {
            return Error::bad_request("bad_path", "the request path cannot be forwarded")
                .into_response();
        }
    };
    *req.uri_mut() = uri;
    // The app sees its own host (as nginx's proxy_pass does); the client's is in
    // X-Forwarded-Host and Forwarded.
    req.headers_mut().remove(header::HOST);
    *req.version_mut() = http::Version::HTTP_11;

    let mut response = match tokio::time::timeout(timeout, client.request(req)).await {
        Err(_) => {
            metrics::counter!("frontdesk_gateway_upstream_errors_total", "kind" => "timeout")
                .increment(1);
            return Error::client(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the app did not answer in time",
            )
            .into_response();
        }
        Ok(Err(e)) => {
            let kind = if e.is_connect() { "connect" } else { "other" };
            tracing::warn!(kind, error = %e, "upstream request failed");
            metrics::counter!("frontdesk_gateway_upstream_errors_total", "kind" => kind)
                .increment(1);
            return Error::client(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                "the app cannot be reached",
            )
            .into_response();
        }
        Ok(Ok(r)) => r,
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, upstream_upgrade) {
                    Ok((c, u)) => {
                        let mut c = TokioIo::new(c);
                        let mut u = TokioIo::new(u);
                        let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade not completed"),
                }
            });
            let (mut parts, _) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            return Response::from_parts(parts, Body::empty());
        }
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    Response::from_parts(parts, Body::new(body))
}
