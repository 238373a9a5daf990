//! The edge in front of the app: every edge path outside `/_frontdesk/*` that matches
//! a `[[routes]]` entry is forwarded to the app, with the client's `X-Frontdesk-*`
//! headers stripped and, for a verified session, the identity headers and a signed
//! `X-Frontdesk-Assertion` added; the route's rate limit (if any) decides first.
//!
//! It runs as the outermost layer of the edge router (outside the listener-wide body
//! limit, the request id and the access log), so a proxied upload streams to the app
//! at any size: the app enforces its own body limits, as it does without Frontdesk.
//! Routes whose path is under `/_frontdesk/` are never forwarded; only their rate
//! limit applies (so `/_frontdesk/me` can be limited by config).

pub mod assertion;
pub mod client_ip;
pub mod forward;
pub mod identity;
pub mod routes;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, http};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, RateLimitKey, RouteAuth, RouteConfig};
use crate::context::{Auth, Context};
use crate::error::Error;
use crate::ratelimit::{self, BucketKind, Decision, Limiter, Mode, Policy};
use crate::redis_link::RedisLink;
use crate::tokens::Session;

use assertion::Signer;
use client_ip::TrustedProxies;
use forward::{HttpClient, Origin};
use identity::{Identities, Subject};
use routes::{Route, Upstream};

/// What the gateway's layers and routes need: the gateway itself, the same `Auth` as
/// `/_frontdesk/me`, and Redis and the clock for the assertion keys. Cheap to clone.
#[derive(Clone)]
pub struct GatewayState {
    pub gateway: Arc<Gateway>,
    pub auth: Auth,
    pub redis: Option<Arc<RedisLink>>,
    pub clock: crate::clock::SharedClock,
    pub respcache: Arc<crate::respcache::ResponseCache>,
}

pub const JWKS_PATH: &str = "/_frontdesk/.well-known/jwks.json";

/// Routes, the upstream client, the limiter and the assertion signer of one instance.
pub struct Gateway {
    routes: Vec<Route>,
    default_upstream: Option<Upstream>,
    policies: Vec<Policy>,
    limiter: Limiter,
    client: HttpClient,
    trusted: TrustedProxies,
    signer: Arc<Signer>,
    /// Identity headers and assertions already signed (`proxy.assertion_cache_bytes`).
    identities: Identities,
    /// The policy guarding `/clerk/v1/*` on the api listener.
    clerk_api_policy: Option<usize>,
    sign_in_url: Option<String>,
    timeout: Duration,
}

/// The routes in effect: `[[routes]]`, or one catch-all when only an upstream is set.
fn effective_routes(config: &Config) -> Vec<RouteConfig> {
    if config.routes.is_empty() && config.proxy.upstream.is_some() {
        return vec![RouteConfig {
            path: "/*".into(),
            auth: RouteAuth::Optional,
            rate_limit: None,
            upstream: None,
            cache: None,
        }];
    }
    config.routes.clone()
}

fn invalid(key: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { key, reason }
}

/// The start-up checks of `[proxy]`, `[[routes]]` and `[[rate_limits]]`.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    let mut names: Vec<String> = Vec::new();
    for p in &config.rate_limits {
        if p.name.is_empty()
            || !p
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        {
            return Err(invalid(
                "rate_limits",
                format!("name {:?} must be letters, digits, '_', '-' or '.'", p.name),
            ));
        }
        if names.contains(&p.name) {
            return Err(invalid(
                "rate_limits",
                format!("name {:?} is used twice", p.name),
            ));
        }
        if p.limit == 0 || p.window_s == 0 {
            return Err(invalid(
                "rate_limits",
                format!("{:?}: limit and window_s must be at least 1", p.name),
            ));
        }
        names.push(p.name.clone());
    }
    let default_upstream = config
        .proxy
        .upstream
        .as_deref()
        .map(Upstream::parse)
        .transpose()
        .map_err(|e| invalid("proxy.upstream", e))?;
    for r in effective_routes(config) {
        let route = routes::check(&r, &names).map_err(|e| invalid("routes", e))?;
        let internal = matches!(&route.pattern, routes::Pattern::Exact(p) | routes::Pattern::Prefix(p) if p.starts_with("/_frontdesk"));
        if route.upstream.is_none() && default_upstream.is_none() && !internal {
            return Err(invalid(
                "routes",
                format!(
                    "route {:?} has no upstream and proxy.upstream is not set",
                    r.path
                ),
            ));
        }
    }
    TrustedProxies::parse(&config.proxy.trusted_proxies)
        .map_err(|e| invalid("proxy.trusted_proxies", e))?;
    if let Some(url) = &config.proxy.sign_in_url {
        if !(url.starts_with("https://") || url.starts_with("http://") || url.starts_with('/')) {
            return Err(invalid(
                "proxy.sign_in_url",
                "must be an http(s) URL or a path".into(),
            ));
        }
    }
    if let Some(name) = &config.proxy.clerk_api_rate_limit {
        if !names.contains(name) {
            return Err(invalid(
                "proxy.clerk_api_rate_limit",
                format!("unknown rate_limit {name:?}"),
            ));
        }
    }
    if config.proxy.timeout_ms == 0 {
        return Err(invalid("proxy.timeout_ms", "must be at least 1".into()));
    }
    Ok(())
}

impl Gateway {
    pub fn new(
        config: &Config,
        redis: Option<Arc<RedisLink>>,
        clock: crate::clock::SharedClock,
    ) -> crate::Result<Self> {
        validate(config).map_err(|e| anyhow::anyhow!("{e}"))?;
        let policies: Vec<Policy> = config.rate_limits.iter().map(Policy::from_config).collect();
        let names: Vec<String> = policies.iter().map(|p| p.name.clone()).collect();
        let routes = effective_routes(config)
            .iter()
            .map(|r| routes::check(r, &names))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("routes: {e}"))?;
        let default_upstream = config
            .proxy
            .upstream
            .as_deref()
            .map(Upstream::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("proxy.upstream: {e}"))?;
        let signer = Signer::new(
            config.proxy.assertion_key_file.as_deref(),
            &config.proxy.assertion_issuer,
            &config.proxy.assertion_audience,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let clerk_api_policy = config
            .proxy
            .clerk_api_rate_limit
            .as_ref()
            .and_then(|n| names.iter().position(|p| p == n));
        Ok(Self {
            clerk_api_policy,
            routes,
            default_upstream,
            policies,
            limiter: Limiter::new(redis, clock),
            client: forward::client(config.proxy.pool_max_idle),
            trusted: TrustedProxies::parse(&config.proxy.trusted_proxies)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            signer: Arc::new(signer),
            identities: Identities::new(config.proxy.assertion_cache_bytes),
            sign_in_url: config.proxy.sign_in_url.clone(),
            timeout: Duration::from_millis(config.proxy.timeout_ms),
        })
    }

    pub fn enabled(&self) -> bool {
        !self.routes.is_empty()
    }

    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    fn route(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.pattern.matches(path))
    }
}

/// Edge routes of the gateway itself: the assertion keys.
pub fn edge_router(state: GatewayState) -> Router {
    Router::new().route(JWKS_PATH, get(jwks)).with_state(state)
}

async fn jwks(State(state): State<GatewayState>) -> Response {
    let body = state
        .gateway
        .signer
        .jwks(state.redis.as_deref(), &state.clock)
        .await;
    ([(header::CACHE_CONTROL, "public, max-age=60")], Json(body)).into_response()
}

/// Wraps the finished edge router: configured routes are forwarded (or, under
/// `/_frontdesk/`, rate-limited) before any inner layer runs.
pub fn front(router: Router, state: &GatewayState) -> Router {
    if !state.gateway.enabled() {
        return router;
    }
    router.layer(middleware::from_fn_with_state(state.clone(), handle))
}

/// Wraps the finished api router: `/clerk/v1/*` is rate-limited per bearer key when
/// `proxy.clerk_api_rate_limit` names a policy.
pub fn front_api(router: Router, state: &GatewayState) -> Router {
    if state.gateway.clerk_api_policy.is_none() {
        return router;
    }
    router.layer(middleware::from_fn_with_state(state.clone(), handle_api))
}

async fn handle_api(State(state): State<GatewayState>, req: Request, next: Next) -> Response {
    let gw = &state.gateway;
    let (Some(i), true) = (
        gw.clerk_api_policy,
        req.uri().path().starts_with("/clerk/v1/"),
    ) else {
        return next.run(req).await;
    };
    let policy = &gw.policies[i];
    // The key itself never becomes part of a Redis key: its SHA-256 does.
    let caller = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(v.as_bytes());
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        })
        .unwrap_or_default();
    let b = policy.bucket(BucketKind::Key, &caller);
    let d = gw.limiter.decide(policy, &b, Mode::Hit).await;
    if !d.allowed {
        return limited(policy, &d);
    }
    let mut response = next.run(req).await;
    d.write_headers(policy, response.headers_mut());
    response
}

/// Publishes this instance's assertion key while the app runs.
pub async fn run_key_publisher(state: GatewayState, stop: CancellationToken) {
    // No routes: no assertion is ever signed, so there is nothing to publish (and no
    // reason to warn about a single instance's key).
    if !state.gateway.enabled() {
        return;
    }
    assertion::run_publisher(
        state.gateway.signer.clone(),
        state.redis.clone(),
        state.clock.clone(),
        stop,
    )
    .await
}

const FRONTDESK_PREFIX: &str = "x-frontdesk-";

/// The identity of a verified request.
struct Identity {
    session: Session,
    context: Arc<Context>,
}

async fn handle(State(state): State<GatewayState>, mut req: Request, next: Next) -> Response {
    let gw = &state.gateway;
    let path = req.uri().path();
    let internal = path == "/_frontdesk" || path.starts_with("/_frontdesk/");
    let Some(route) = gw.route(path) else {
        return next.run(req).await;
    };
    if internal && route.rate_limit.is_none() {
        return next.run(req).await;
    }
    strip_client_identity(req.headers_mut());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let client = gw.trusted.client_ip(peer, req.headers());

    // Who is this.
    let identity = match route.auth {
        RouteAuth::Public => None,
        RouteAuth::Optional => identify(&state, req.headers()).await.ok().flatten(),
        RouteAuth::Required => match identify(&state, req.headers()).await {
            Ok(Some(id)) => Some(id),
            Ok(None) => return unauthenticated(gw, &req, None),
            Err(e) => return unauthenticated(gw, &req, Some(e)),
        },
    };

    // May it pass.
    let limit = match route.rate_limit {
        Some(i) => {
            let policy = &gw.policies[i];
            let role = identity.as_ref().map(|id| id.context.user.role.as_str());
            if policy.bypasses(role) {
                ratelimit::count_bypass(policy);
                None
            } else {
                match bucket(policy, identity.as_ref(), client) {
                    None => None,
                    Some(b) => {
                        let mode = if policy.failures_only {
                            Mode::Peek
                        } else {
                            Mode::Hit
                        };
                        let d = gw.limiter.decide(policy, &b, mode).await;
                        if !d.allowed {
                            return limited(policy, &d);
                        }
                        Some((policy, b, d))
                    }
                }
            }
        }
        None => None,
    };

    let mut response = if internal {
        next.run(req).await
    } else {
        let upstream = match route.upstream.as_ref().or(gw.default_upstream.as_ref()) {
            Some(u) => u,
            None => return next.run(req).await,
        };
        let origin = Origin {
            peer,
            peer_trusted: gw.trusted.trusts(peer),
            client,
        };
        match route.cache.as_deref() {
            Some(policy) => {
                // The identity headers (with their signature) and the forwarding
                // headers are only for the app: a cache hit does without them. Unless
                // the policy reads its tenant from one of them.
                let identity = identity.map(Arc::new);
                let who = crate::respcache::Who {
                    user_id: identity.as_ref().map(|i| i.session.user_id.as_str()),
                    org_id: identity
                        .as_ref()
                        .and_then(|i| i.session.org.as_ref())
                        .map(|o| o.id.as_str()),
                };
                let prepare = Prepare {
                    gateway: state.gateway.clone(),
                    identity: identity.clone(),
                    origin,
                };
                if state
                    .respcache
                    .tenant_header(policy)
                    .is_some_and(written_by_gateway)
                {
                    req = prepare.apply(req);
                }
                let fetch = fetcher(gw, upstream, prepare);
                state.respcache.handle(policy, who, req, fetch).await
            }
            None => {
                let req = prepared(gw, identity.as_ref(), &origin, req);
                forward::forward(&gw.client, upstream, req, gw.timeout).await
            }
        }
    };
    metrics::counter!("frontdesk_gateway_requests_total", "status" => status_class(response.status()))
        .increment(1);

    if let Some((policy, b, mut d)) = limit {
        if policy.failures_only && response.status().as_u16() >= 400 {
            d = gw.limiter.decide(policy, &b, Mode::Add).await;
            d.allowed = true;
        }
        d.write_headers(policy, response.headers_mut());
    }
    response
}

/// What a request needs before it goes to the app: its identity headers (for a
/// verified session) and the forwarding headers.
#[derive(Clone)]
struct Prepare {
    gateway: Arc<Gateway>,
    identity: Option<Arc<Identity>>,
    origin: Origin,
}

impl Prepare {
    fn apply(&self, req: Request) -> Request {
        prepared(&self.gateway, self.identity.as_deref(), &self.origin, req)
    }
}

/// `req` with the identity headers (for a verified session) and the forwarding
/// headers added: what only the app needs.
fn prepared(gw: &Gateway, identity: Option<&Identity>, origin: &Origin, req: Request) -> Request {
    let (mut parts, body) = req.into_parts();
    if let Some(id) = identity {
        add_identity(
            gw,
            parts.method.as_str(),
            parts.uri.path(),
            id,
            &mut parts.headers,
        );
    }
    forward::set_forwarding(&mut parts.headers, origin);
    Request::from_parts(parts, body)
}

/// Whether the gateway writes header `name` on the way to the app (so a cache policy
/// reading its tenant from it must see the gateway's value, not the client's).
fn written_by_gateway(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with(FRONTDESK_PREFIX)
        || matches!(
            n,
            "forwarded" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host"
        )
}

/// Forwarding to `upstream` as the response cache calls it (from its own load task,
/// only when the app is needed): identity and forwarding headers are added here.
fn fetcher(gw: &Gateway, upstream: &Upstream, prepare: Prepare) -> crate::respcache::Fetch {
    let (client, upstream, timeout) = (gw.client.clone(), upstream.clone(), gw.timeout);
    Arc::new(move |req: Request| {
        let (client, upstream) = (client.clone(), upstream.clone());
        let req = prepare.apply(req);
        Box::pin(async move { forward::forward(&client, &upstream, req, timeout).await })
    })
}

/// The session and context of a request that carries a token; `Ok(None)` without one.
async fn identify(state: &GatewayState, headers: &HeaderMap) -> Result<Option<Identity>, Error> {
    if crate::tokens::extract_token(headers).is_none() {
        return Ok(None);
    }
    let session = state.auth.authenticate(headers).await?;
    let (context, _) = state.auth.resolve(&session).await?;
    Ok(Some(Identity { session, context }))
}

fn bucket(policy: &Policy, id: Option<&Identity>, ip: IpAddr) -> Option<String> {
    let user = id.map(|i| i.session.user_id.as_str());
    let ip_s = || ip.to_string();
    Some(match policy.key {
        RateLimitKey::Ip => policy.bucket(BucketKind::Ip, &ip_s()),
        RateLimitKey::User => policy.bucket(BucketKind::User, user?),
        RateLimitKey::UserOrIp => match user {
            Some(u) => policy.bucket(BucketKind::User, u),
            None => policy.bucket(BucketKind::Ip, &ip_s()),
        },
        RateLimitKey::Org => match (id.and_then(|i| i.session.org.as_ref()), user) {
            (Some(org), _) => policy.bucket(BucketKind::Org, &org.id),
            (None, Some(u)) => policy.bucket(BucketKind::User, u),
            (None, None) => policy.bucket(BucketKind::Ip, &ip_s()),
        },
    })
}

fn limited(policy: &Policy, d: &Decision) -> Response {
    let mut r = Error::client(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("rate limit {:?} exceeded; retry later", policy.name),
    )
    .into_response();
    d.write_headers(policy, r.headers_mut());
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(d.reset_s()));
    metrics::counter!("frontdesk_gateway_requests_total", "status" => "429").increment(1);
    r
}

/// No valid session on an `auth = "required"` route: a browser navigation goes to the
/// sign-in page when one is configured; everything else gets the JSON error.
fn unauthenticated(gw: &Gateway, req: &Request, error: Option<Error>) -> Response {
    let error = error.unwrap_or_else(|| {
        Error::unauthorized("token_missing", "this route needs a signed-in session")
    });
    let browser = req.method() == http::Method::GET
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    if let (true, Some(url), StatusCode::UNAUTHORIZED) = (browser, &gw.sign_in_url, error.status())
    {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let back = format!(
            "http://{host}{}",
            req.uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        );
        let sep = if url.contains('?') { '&' } else { '?' };
        let location: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("redirect_url", &back)
            .finish();
        if let Ok(v) = HeaderValue::from_str(&format!("{url}{sep}{location}")) {
            return (StatusCode::FOUND, [(header::LOCATION, v)]).into_response();
        }
    }
    error.into_response()
}

/// Removes every `X-Frontdesk-*` header a client sent: only Frontdesk writes them.
pub fn strip_client_identity(headers: &mut HeaderMap) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(FRONTDESK_PREFIX))
        .cloned()
        .collect();
    for k in spoofed {
        headers.remove(k);
    }
}

fn add_identity(gw: &Gateway, method: &str, path: &str, id: &Identity, headers: &mut HeaderMap) {
    let s = &id.session;
    let u = &id.context.user;
    let org = s.org.as_ref();
    let subject = Subject {
        user_id: &s.user_id,
        session_id: s.session_id.as_deref(),
        token_exp_ms: s.expires_at_ms,
        local_user_id: u.id,
        profile_id: id.context.profile.id,
        role: &u.role,
        email: u.email.as_deref(),
        org_id: org.map(|o| o.id.as_str()),
        org_role: org.and_then(|o| o.role.as_deref()),
        method,
        path,
    };
    let signed = gw
        .identities
        .headers(&gw.signer, &subject, gw.limiter.now_s());
    for (name, value) in &signed.headers {
        headers.insert(name.clone(), value.clone());
    }
}

fn status_class(s: StatusCode) -> &'static str {
    match s.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        429 => "429",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
