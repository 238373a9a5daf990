//! One cached answer (always a `200`) and its Redis record.
//!
//! The record is the answer as HTTP/1 would carry it, without compression:
//! `fdrc1 <stored_at_ms>\r\n`, then `name: value\r\n` per header, a blank line, and
//! the body bytes. Header values cannot hold CR or LF, so the head parses back
//! exactly; the body is whatever the app sent.

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

const MAGIC: &[u8] = b"fdrc1 ";

#[derive(Debug, Clone)]
pub struct Stored {
    /// When the app's answer arrived (injected clock): `Age` and freshness count from it.
    pub stored_at_ms: u64,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Stored {
    /// Bytes this entry holds, for the L1 weigher.
    pub fn weight(&self) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        (self.body.len() + headers + 64).min(u32::MAX as usize) as u32
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
        Some(Self {
            stored_at_ms,
            headers,
            body: Bytes::copy_from_slice(rest),
        })
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
        let s = Stored {
            stored_at_ms: 1_700_000_000_123,
            headers,
            body: Bytes::from_static(b"\r\n\r\nbody\xff"),
        };
        let back = Stored::decode(&s.encode()).unwrap();
        assert_eq!(back.stored_at_ms, s.stored_at_ms);
        assert_eq!(back.headers, s.headers);
        assert_eq!(back.body, s.body);
        assert!(Stored::decode(b"garbage").is_none());
    }
}
