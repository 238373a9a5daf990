//! Clerk-looking identifiers (`user_…`, `org_…`, `idn_…`, `sess_…`) that are
//! deterministic: derived by hashing a description of the object, so the same seed
//! and the same sequence of calls give the same ids on every run.

use sha2::{Digest, Sha256};

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Length of the random part of a Clerk id (KSUID-like, 27 base62 characters).
const BODY_LEN: usize = 27;

/// `prefix_` + 27 base62 characters derived from `material`.
pub fn make(prefix: &str, material: &str) -> String {
    let digest = Sha256::digest(material.as_bytes());
    let mut out = String::with_capacity(prefix.len() + 1 + BODY_LEN);
    out.push_str(prefix);
    out.push('_');
    // Clerk ids start with '2' (KSUID timestamp era); keep the look.
    out.push('2');
    let mut acc: u64 = 0;
    let mut bits = 0u32;
    let mut bytes = digest.iter().cycle();
    while out.len() < prefix.len() + 1 + BODY_LEN {
        if bits < 6 {
            let b = bytes.next().copied().unwrap_or(0);
            acc = (acc << 8) | u64::from(b);
            bits += 8;
        }
        bits -= 6;
        let v = ((acc >> bits) & 0x3f) as usize;
        // 64 → 62 symbols: fold the two extra values back in.
        out.push(char::from(BASE62[v % 62]));
    }
    out
}

/// Lowercase hex of `material`'s SHA-256, truncated (for `jti`, kids, instance ids).
pub fn hex(material: &str, len: usize) -> String {
    let digest = Sha256::digest(material.as_bytes());
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s.truncate(len);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_clerk_shaped() {
        let a = make("user", "seed:1");
        assert_eq!(a, make("user", "seed:1"));
        assert_ne!(a, make("user", "seed:2"));
        assert!(a.starts_with("user_2"));
        assert_eq!(a.len(), "user_".len() + BODY_LEN);
        assert!(a[5..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
