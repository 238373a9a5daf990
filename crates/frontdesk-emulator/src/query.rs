//! Query-string parsing the way Clerk reads it: repeated keys form arrays
//! (`user_id=a&user_id=b`), and pagination parameters are validated into Clerk's 422s.
//! axum's `Query` (serde_urlencoded) cannot collect repeated keys, hence this module.

use crate::errors::ApiError;

/// Decoded `key=value` pairs, in order.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

/// Most values Clerk accepts for one array filter.
pub const MAX_FILTER_VALUES: usize = 100;

impl Params {
    pub fn parse(raw: Option<&str>) -> Self {
        let mut out = Vec::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.push((decode(k), decode(v)));
        }
        Self(out)
    }

    /// Every value of `key` (array parameters). Like Clerk, only repeated plain keys
    /// count: `key[]=…`/`key[0]=…` are unknown parameters and ignored, and a
    /// comma-joined value is one value (Clerk documents neither form).
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// An array filter, capped at [`MAX_FILTER_VALUES`] values (422 beyond).
    pub fn filter(&self, key: &str) -> Result<Vec<String>, ApiError> {
        let v = self.all(key);
        if v.len() > MAX_FILTER_VALUES {
            return Err(ApiError::invalid_param(
                key,
                format!(
                    "`{key}` accepts up to {MAX_FILTER_VALUES} values, got {}",
                    v.len()
                ),
            ));
        }
        Ok(v)
    }

    /// The first value of `key` (Clerk ignores repeats of scalar parameters).
    pub fn first(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.first(key) {
            None => Ok(None),
            Some(s) => {
                s.trim().parse::<i64>().map(Some).map_err(|_| {
                    ApiError::invalid_param(key, format!("`{key}` must be an integer"))
                })
            }
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.first(key).as_deref() {
            None => Ok(None),
            Some("true") | Some("1") => Ok(Some(true)),
            Some("false") | Some("0") => Ok(Some(false)),
            Some(_) => Err(ApiError::invalid_param(
                key,
                format!("`{key}` must be true or false"),
            )),
        }
    }

    /// `limit` (1–500, default 10) and `offset` (≥ 0, default 0).
    pub fn page(&self) -> Result<Page, ApiError> {
        let limit = self.int("limit")?.unwrap_or(10);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::invalid_param(
                "limit",
                "`limit` must be between 1 and 500",
            ));
        }
        let offset = self.int("offset")?.unwrap_or(0);
        if offset < 0 {
            return Err(ApiError::invalid_param(
                "offset",
                "`offset` must be greater than or equal to 0",
            ));
        }
        Ok(Page {
            limit: limit as usize,
            offset: offset as usize,
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: usize,
    pub offset: usize,
}

impl Page {
    pub fn apply<T>(&self, items: Vec<T>) -> Vec<T> {
        items
            .into_iter()
            .skip(self.offset)
            .take(self.limit)
            .collect()
    }
}

/// Splits an id filter into included and excluded values (`+id` / `-id`, bare = include).
pub fn include_exclude(values: &[String]) -> (Vec<String>, Vec<String>) {
    let mut inc = Vec::new();
    let mut exc = Vec::new();
    for v in values {
        // A literal '+' arrives as a space when the client did not percent-encode it.
        let t = v.trim();
        if let Some(rest) = t.strip_prefix('-') {
            exc.push(rest.to_owned());
        } else {
            inc.push(t.strip_prefix('+').unwrap_or(t).to_owned());
        }
    }
    (inc, exc)
}

/// `order_by` → (field, descending). No sign means ascending, as Clerk documents.
pub fn order_by(
    raw: Option<String>,
    default: &str,
    allowed: &[&str],
) -> Result<(String, bool), ApiError> {
    let raw = raw.unwrap_or_else(|| default.to_owned());
    let raw = raw.trim();
    let (desc, field) = if let Some(f) = raw.strip_prefix('-') {
        (true, f)
    } else {
        (false, raw.strip_prefix('+').unwrap_or(raw))
    };
    if !allowed.contains(&field) {
        return Err(ApiError::invalid_param(
            "order_by",
            format!("`order_by` must be one of {}", allowed.join(", ")),
        ));
    }
    Ok((field.to_owned(), desc))
}

/// application/x-www-form-urlencoded decoding (`+` is a space, `%XX` a byte).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_keys_and_percent_decoding() {
        let p = Params::parse(Some(
            "user_id=a&user_id=b&email_address=x%40y.com&q=a+b&z=%",
        ));
        assert_eq!(p.all("user_id"), vec!["a", "b"]);
        assert_eq!(p.first("email_address").as_deref(), Some("x@y.com"));
        assert_eq!(p.first("q").as_deref(), Some("a b"));
        assert_eq!(p.first("z").as_deref(), Some("%"));
    }

    #[test]
    fn include_exclude_prefixes() {
        let (i, e) = include_exclude(&["+a".into(), "-b".into(), "c".into(), " d".into()]);
        assert_eq!(i, vec!["a", "c", "d"]);
        assert_eq!(e, vec!["b"]);
    }
}
