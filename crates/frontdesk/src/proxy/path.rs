//! The proxied path, kept as the client sent it. The raw path after `/clerk` is
//! forwarded byte for byte; its segments are percent-decoded only to decide what the
//! request is (which namespace, which user) and to refuse what could change meaning on
//! the way to Clerk: a segment that decodes to `.`/`..` (the URL parser resolves
//! `%2e%2e` like `..`), an empty segment (`//`), or one that decodes to a `/`, `\`,
//! `?` or `#`. So a request can never reach outside `/v1/` of the upstream, and the
//! id a write invalidates is the id Clerk sees.

use percent_encoding::percent_decode_str;

/// A checked `/v1/…` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPath {
    /// `/v1/…` exactly as the client sent it (still percent-encoded).
    pub raw: String,
    /// The segments after `/v1/`, percent-decoded.
    pub segments: Vec<String>,
}

impl ProxyPath {
    /// `raw_after_prefix` is the request path with `/clerk` removed (starts `/v1/`).
    pub fn parse(raw_after_prefix: &str) -> Result<Self, &'static str> {
        let rest = raw_after_prefix
            .strip_prefix("/v1/")
            .ok_or("the path must start with /v1/")?;
        let mut segments = Vec::new();
        for raw in rest.split('/') {
            segments.push(decode_segment(raw)?);
        }
        Ok(Self {
            raw: raw_after_prefix.to_string(),
            segments,
        })
    }

    /// The resource namespace (`users`, `organizations`, …): the first segment.
    pub fn namespace(&self) -> &str {
        self.segments.first().map(String::as_str).unwrap_or("")
    }

    pub fn segs(&self) -> Vec<&str> {
        self.segments.iter().map(String::as_str).collect()
    }
}

fn decode_segment(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Err("empty path segment");
    }
    // RFC 3986 `pchar`: unreserved, sub-delims, ':', '@' and percent-escapes.
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%".contains(&b);
    if !raw.bytes().all(allowed) {
        return Err("path segment with a character that must be percent-encoded");
    }
    let bytes = raw.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err("malformed percent-escape in the path");
        }
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| "path segment is not UTF-8")?;
    if decoded == "." || decoded == ".." {
        return Err("dot segment in the path");
    }
    if decoded
        .chars()
        .any(|c| matches!(c, '/' | '\\' | '?' | '#') || c.is_control())
    {
        return Err("path segment that decodes to a separator");
    }
    Ok(decoded.into_owned())
}

/// Clerk's id syntax: a lowercase prefix, `_`, then ASCII letters and digits
/// (`user_2abc…`, `org_…`, `sess_…`). Only such ids become cache keys.
pub fn is_clerk_id(s: &str) -> bool {
    let Some((prefix, body)) = s.split_once('_') else {
        return false;
    };
    s.len() <= 128
        && !prefix.is_empty()
        && prefix.bytes().all(|b| b.is_ascii_lowercase())
        && !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_raw_path_and_decodes_segments() {
        let p = ProxyPath::parse("/v1/users/user_2ab%43/metadata").unwrap();
        assert_eq!(p.raw, "/v1/users/user_2ab%43/metadata");
        assert_eq!(p.segs(), ["users", "user_2abC", "metadata"]);
        assert_eq!(p.namespace(), "users");
    }

    #[test]
    fn refuses_what_could_change_meaning() {
        for bad in [
            "/v1/users/x%2F..%2F..%2Fjwks",
            "/v1/users/..%2F..%2F__emulator%2Fconfig",
            "/v1/users/UA%2F..%2FUB",
            "/v1/users/..",
            "/v1/users/%2e%2E",
            "/v1/users/.",
            "/v1/users//x",
            "/v1/users/",
            "/v1/users/a%3Fb",
            "/v1/users/a%23b",
            "/v1/users/a%5Cb",
            "/v1/users/a%00b",
            "/v1/users/a%zz",
            "/v1/users/a%2",
            "/v1/users/a\\b",
            "/v1/users/a b",
            "/v1/users/%FF",
            "/v2/users",
        ] {
            assert!(ProxyPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn clerk_id_syntax() {
        assert!(is_clerk_id("user_2abcXYZ09"));
        assert!(is_clerk_id("org_1"));
        for bad in [
            "count", "user_", "_abc", "User_abc", "user_a-b", "user_a_b", "user_a/b", "",
        ] {
            assert!(!is_clerk_id(bad), "{bad}");
        }
    }
}
