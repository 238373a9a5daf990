//! Webhook messages from anywhere: fuzzed `svix-*`/`webhook-*` headers, body and
//! clock against a fixed secret, and fuzzed signing-secret strings. Nothing fuzzed
//! may verify (it would need the HMAC key), and nothing may panic.
#![no_main]

use frontdesk::webhooks::{SignedHeaders, SigningKeys};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    // Fields separated by 0x00: id, timestamp, signature, now, then the body.
    let mut parts = rest.splitn(5, |b| *b == 0);
    let id = parts.next().unwrap_or_default();
    let ts = parts.next().unwrap_or_default();
    let sig = parts.next().unwrap_or_default();
    let now = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();

    let _ = SigningKeys::parse(&String::from_utf8_lossy(rest));

    let keys = SigningKeys::parse(SECRET).unwrap();
    let now: i64 = if sel & 1 == 0 {
        1_900_000_000
    } else {
        String::from_utf8_lossy(now).parse().unwrap_or(i64::MIN)
    };
    let mut headers = http::HeaderMap::new();
    let prefix = if sel & 2 == 0 { "svix" } else { "webhook" };
    for (name, value) in [("id", id), ("timestamp", ts), ("signature", sig)] {
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            headers.insert(
                http::HeaderName::try_from(format!("{prefix}-{name}")).unwrap(),
                v,
            );
        }
    }
    if let Ok(h) = SignedHeaders::from_headers(&headers) {
        assert!(keys.verify(&h, body, now, 300).is_err());
    }
    let id = String::from_utf8_lossy(id);
    let ts = String::from_utf8_lossy(ts);
    let sig = String::from_utf8_lossy(sig);
    let h = SignedHeaders {
        id: &id,
        timestamp: &ts,
        signature: &sig,
    };
    assert!(keys.verify(&h, body, now, 300).is_err());
});
