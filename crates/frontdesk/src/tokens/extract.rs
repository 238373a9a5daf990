//! Where a session token travels: `Authorization: Bearer <jwt>` (API calls, native
//! apps) or the `__session` cookie (browsers). Clerk's multi-domain and
//! multi-instance setups also write suffixed cookies, `__session_<suffix>`.

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};

/// The cookie Clerk's browser SDK keeps the session token in.
pub const SESSION_COOKIE: &str = "__session";

/// The session token of a request, borrowed from its headers.
///
/// The `Authorization: Bearer` header wins over cookies. Among cookies the plain
/// `__session` wins over suffixed `__session_<suffix>` ones; among suffixed ones the
/// first wins. Use [`extract_token_with_suffix`] when the instance's suffix is known.
pub fn extract_token(headers: &HeaderMap) -> Option<&str> {
    extract_token_with_suffix(headers, None)
}

/// Like [`extract_token`], but `__session_<cookie_suffix>` (the cookie of this
/// instance when several Clerk instances share a domain) wins over the other cookies.
pub fn extract_token_with_suffix<'h>(
    headers: &'h HeaderMap,
    cookie_suffix: Option<&str>,
) -> Option<&'h str> {
    if let Some(token) = bearer(headers) {
        return Some(token);
    }
    let mut plain = None;
    let mut own = None;
    let mut other = None;
    for (name, value) in cookies(headers) {
        if value.is_empty() {
            continue;
        }
        if name == SESSION_COOKIE {
            plain.get_or_insert(value);
        } else if let Some(suffix) = name
            .strip_prefix(SESSION_COOKIE)
            .and_then(|s| s.strip_prefix('_'))
            .filter(|s| !s.is_empty())
        {
            if cookie_suffix == Some(suffix) {
                own.get_or_insert(value);
            } else {
                other.get_or_insert(value);
            }
        }
    }
    own.or(plain).or(other)
}

/// The token of the first `Authorization: Bearer …` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let v = v.trim();
            let (scheme, rest) = v.split_once(' ')?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return None;
            }
            let token = rest.trim();
            (!token.is_empty()).then_some(token)
        })
}

/// `(name, value)` pairs of every `Cookie` header (HTTP/2 may send several), values
/// with optional surrounding quotes removed.
fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            Some((name.trim(), value))
        })
}
