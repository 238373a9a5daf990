//! Keys of the response cache, in Redis and in process (the same strings).
//!
//! Every part a request or an operator controls (tenant id, resource, version nonce)
//! is percent-encoded so that only `A-Z a-z 0-9 _ - .` and `%XX` remain: no `:` can
//! shift a segment, no `{`/`}` can pick another Redis Cluster hash tag, no `*`/`?`/`[`
//! can mean anything to a pattern, and `%` itself is encoded, so the encoding is
//! injective. The tenant sits between `{` and `}` right after the fixed `rc:` (a hash
//! tag: every key of one tenant lives on one Cluster slot, so the version script may
//! touch them together), and an encoded tenant cannot contain `}`, so a key's tenant is
//! exactly what [`tenant_of_key`] reads back: no input can reach another tenant's keys.
//! The path and the normalised query go through SHA-256 with a length prefix, so they
//! add a fixed-size, syntax-free segment.
//!
//! Layout (after the deployment's `redis_prefix`):
//! - `rc:{<tenant>}:v` — the tenant's version nonce;
//! - `rc:{<tenant>}:v:<resource>` — the `(tenant, resource)` version nonce;
//! - `rc:{<tenant>}:e:<resource>:<tenant nonce>.<resource nonce>:<sha256 hex>` — an entry.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// Everything but `A-Z a-z 0-9 _ - .` is encoded (`%` included).
const ENCODED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'-').remove(b'.');

/// A part of a key, percent-encoded (injective; no Redis key or pattern syntax left).
pub fn encode(part: &str) -> String {
    utf8_percent_encode(part, ENCODED).to_string()
}

/// Appends `part`, percent-encoded: keys are built in one buffer, as they are made on
/// every cached request.
fn push_encoded(out: &mut String, part: &str) {
    for chunk in utf8_percent_encode(part, ENCODED) {
        out.push_str(chunk);
    }
}

/// `rc:{<tenant>}:`, appended.
fn push_tenant_prefix(out: &mut String, tenant: &str) {
    out.push_str("rc:{");
    push_encoded(out, tenant);
    out.push_str("}:");
}

/// The key of a tenant's version nonce.
pub fn tenant_version_key(tenant: &str) -> String {
    let mut out = String::with_capacity(tenant.len() + 8);
    push_tenant_prefix(&mut out, tenant);
    out.push('v');
    out
}

/// The key of a `(tenant, resource)` version nonce.
pub fn resource_version_key(tenant: &str, resource: &str) -> String {
    version_keys(tenant, resource).0
}

/// The `(tenant, resource)` version key, and the length of its prefix that is the
/// tenant's version key (`rc:{t}:v` + `:r`): both keys in one allocation.
pub fn version_keys(tenant: &str, resource: &str) -> (String, usize) {
    let mut out = String::with_capacity(tenant.len() + resource.len() + 10);
    push_tenant_prefix(&mut out, tenant);
    out.push('v');
    let tenant_len = out.len();
    out.push(':');
    push_encoded(&mut out, resource);
    (out, tenant_len)
}

/// What one cached answer is keyed by.
#[derive(Debug, Clone, Copy)]
pub struct EntryParts<'a> {
    pub tenant: &'a str,
    pub resource: &'a str,
    pub tenant_version: &'a str,
    pub resource_version: &'a str,
    pub path: &'a str,
    /// The raw query when the policy varies on it (`vary_query`), else `None`.
    pub query: Option<&'a str>,
}

/// The key of one cached answer. The query is [normalised](crate::proxy::normalize_query)
/// (decoded once, pairs sorted), so `b=2&a=1` and `a=1&b=2` share an entry.
pub fn entry_key(p: EntryParts<'_>) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut h = Sha256::new();
    h.update((p.path.len() as u64).to_be_bytes());
    h.update(p.path.as_bytes());
    match p.query {
        None => h.update([0u8]),
        Some(q) => {
            h.update([1u8]);
            h.update(crate::proxy::normalize_query(q).as_bytes());
        }
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(
        p.tenant.len()
            + p.resource.len()
            + p.tenant_version.len()
            + p.resource_version.len()
            + 64
            + 16,
    );
    push_tenant_prefix(&mut out, p.tenant);
    out.push_str("e:");
    push_encoded(&mut out, p.resource);
    out.push(':');
    push_encoded(&mut out, p.tenant_version);
    out.push('.');
    push_encoded(&mut out, p.resource_version);
    out.push(':');
    for b in digest.iter() {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
    out
}

/// The tenant a key belongs to (decoded), read back from its hash tag.
pub fn tenant_of_key(key: &str) -> Option<String> {
    let rest = key.strip_prefix("rc:{")?;
    let (enc, _) = rest.split_once("}:")?;
    percent_decode_str(enc)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Whether a key uses only the characters the encoding leaves, plus the fixed
/// separators (`:`, `.`, one `{…}` hash tag).
pub fn is_plain(key: &str) -> bool {
    key.matches('{').count() == 1
        && key.matches('}').count() == 1
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.%:{}".contains(&b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn separators_in_ids_cannot_shift_segments() {
        let a = |t: &'static str, r: &'static str| {
            entry_key(EntryParts {
                tenant: t,
                resource: r,
                tenant_version: "1",
                resource_version: "2",
                path: "/x",
                query: None,
            })
        };
        assert_ne!(a("org_1:e:x", "y"), a("org_1", "x:e:y"));
        assert_eq!(tenant_of_key(&a("o}:{p", "r")).unwrap(), "o}:{p");
        assert!(is_plain(&a("a{b}*?[", "x y")));
    }

    #[test]
    fn keys_keep_their_layout() {
        let k = entry_key(EntryParts {
            tenant: "org:1",
            resource: "in voices",
            tenant_version: "00ff",
            resource_version: "a.b",
            path: "/x",
            query: None,
        });
        let mut h = Sha256::new();
        h.update(2u64.to_be_bytes());
        h.update(b"/x");
        h.update([0u8]);
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(k, format!("rc:{{org%3A1}}:e:in%20voices:00ff.a.b:{hex}"));
        let (rk, n) = version_keys("org:1", "in voices");
        assert_eq!(rk, "rc:{org%3A1}:v:in%20voices");
        assert_eq!(&rk[..n], tenant_version_key("org:1"));
        assert_eq!(rk, resource_version_key("org:1", "in voices"));
    }
}
