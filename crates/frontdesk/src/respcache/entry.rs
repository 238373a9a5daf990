//! One cached answer (always a `200`) and its Redis record.
//!
//! The record is the answer as HTTP/1 would carry it, without compression:
//! `fdrc1 <stored_at_ms>\r\n`, then `name: value\r\n` per header, a blank line, and
//! the body bytes. Header values cannot hold CR or LF, so the head parses back
//! exactly; the body is whatever the app sent.

use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const MAGIC: &[u8] = b"fdrc1 ";

#[derive(Debug, Clone)]
pub struct Stored {
    /// When the app's answer arrived (injected clock): `Age` and freshness count from it.
    pub stored_at_ms: u64,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `headers` plus every header a served answer sets (`Content-Length` final, the
    /// others placeholders), made on first use: serving clones it and replaces values
    /// in place, where inserting into a clone of `headers` would grow it every time.
    pub served: OnceLock<HeaderMap>,
}

impl Stored {
    /// Bytes this entry holds, for the L1 weigher.
    pub fn new(stored_at_ms: u64, headers: HeaderMap, body: Bytes) -> Self {
        Self {
            stored_at_ms,
            headers,
            body,
            served: OnceLock::new(),
        }
    }

    /// Bytes this entry holds, for the L1 weigher (its headers twice: `served`).
    pub fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        (self.body.len() + 2 * headers + 160).min(u32::MAX as usize) as u32
    }

    /// The headers of a served answer, before its per-request values are set.
    pub fn served_headers(&self) -> &HeaderMap {
        self.served.get_or_init(|| {
            let mut h = HeaderMap::with_capacity(self.headers.len() + 4);
            for (k, v) in &self.headers {
                h.append(k.clone(), v.clone());
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(self.body.len()));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
            h.insert(header::AGE, HeaderValue::from_static("0"));
            h.insert(super::X_CACHE, HeaderValue::from_static("HIT"));
            h
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.weight() as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(self.stored_at_ms.to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    /// `None` for anything that is not a record of this version (the key is then
    /// treated as a miss).
    pub fn decode(raw: &[u8]) -> Option<Self> {
        let raw = raw.strip_prefix(MAGIC)?;
        let end = raw.windows(2).position(|w| w == b"\r\n")?;
        let stored_at_ms = std::str::from_utf8(&raw[..end]).ok()?.parse().ok()?;
        let mut rest = &raw[end + 2..];
        let mut headers = HeaderMap::new();
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n")?;
            let line = &rest[..end];
            rest = &rest[end + 2..];
            if line.is_empty() {
                break;
            }
            let colon = line.iter().position(|&b| b == b':')?;
            let name = HeaderName::from_bytes(&line[..colon]).ok()?;
            let value = line[colon + 1..]
                .strip_prefix(b" ")
                .unwrap_or(&line[colon + 1..]);
            headers.append(name, HeaderValue::from_bytes(value).ok()?);
        }
        Some(Self::new(
            stored_at_ms,
            headers,
            Bytes::copy_from_slice(rest),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_record_reads_back_exactly() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static(" two: 2"));
        let s = Stored::new(
            1_700_000_000_123,
            headers,
            Bytes::from_static(b"\r\n\r\nbody\xff"),
        );
        let back = Stored::decode(&s.encode()).unwrap();
        assert_eq!(back.stored_at_ms, s.stored_at_ms);
        assert_eq!(back.headers, s.headers);
        assert_eq!(back.body, s.body);
        assert!(Stored::decode(b"garbage").is_none());
    }
}
