//! Route patterns: `/exact`, a prefix `/x/*` (which matches `/x` too), or a glob where
//! `*` stands for any run of characters (slashes included). First match wins.

use http::Uri;

use crate::config::{RouteAuth, RouteConfig};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    /// The part before `/*`, without the trailing slash.
    Prefix(String),
    /// The literal parts between the `*`s.
    Glob(Vec<String>),
}

impl Pattern {
    pub fn parse(p: &str) -> Result<Self, String> {
        if !p.starts_with('/') {
            return Err(format!("path {p:?} must start with /"));
        }
        if p.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
        {
            return Err(format!(
                "path {p:?} must not hold spaces, control characters, ? or #"
            ));
        }
        if p.contains("**") {
            return Err(format!("path {p:?}: use one * (it already crosses /)"));
        }
        if let Some(base) = p.strip_suffix("/*") {
            if !base.contains('*') {
                return Ok(Pattern::Prefix(base.to_string()));
            }
        }
        if p.contains('*') {
            return Ok(Pattern::Glob(p.split('*').map(String::from).collect()));
        }
        Ok(Pattern::Exact(p.to_string()))
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            Pattern::Exact(e) => e == path,
            Pattern::Prefix(base) => path
                .strip_prefix(base.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            Pattern::Glob(parts) => glob(parts, path),
        }
    }
}

fn glob(parts: &[String], path: &str) -> bool {
    let (first, rest) = match parts.split_first() {
        Some(x) => x,
        None => return path.is_empty(),
    };
    let Some(mut tail) = path.strip_prefix(first.as_str()) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return tail.is_empty();
    };
    for part in middle {
        match tail.find(part.as_str()) {
            Some(i) => tail = &tail[i + part.len()..],
            None => return false,
        }
    }
    tail.ends_with(last.as_str())
}

/// A configured route, checked.
#[derive(Debug)]
pub struct Route {
    pub pattern: Pattern,
    pub auth: RouteAuth,
    /// Index into the limiter's policies.
    pub rate_limit: Option<usize>,
    pub upstream: Option<Upstream>,
    /// A `[[cache_policies]]` name (checked by `respcache::validate`).
    pub cache: Option<String>,
}

/// An app's base URL: scheme, authority and an optional path prefix.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub scheme: http::uri::Scheme,
    pub authority: http::uri::Authority,
    /// Prepended to the request path, without a trailing slash ("" for none).
    pub base_path: String,
}

impl Upstream {
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("upstream {url:?} is not a URL"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("upstream {url:?} needs http://"))?;
        if scheme != http::uri::Scheme::HTTP {
            return Err(format!(
                "upstream {url:?}: only http:// is supported (the app sits on a private hop)"
            ));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("upstream {url:?} has no host"))?;
        if uri.query().is_some() {
            return Err(format!("upstream {url:?} must not have a query"));
        }
        Ok(Self {
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }

    /// The upstream URI for a request's path and query.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let pq = if self.base_path.is_empty() {
            path_and_query.to_string()
        } else {
            format!("{}{}", self.base_path, path_and_query)
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

/// Checks one `[[routes]]` entry against the policy names.
pub fn check(c: &RouteConfig, policies: &[String]) -> Result<Route, String> {
    let pattern = Pattern::parse(&c.path)?;
    let rate_limit = match &c.rate_limit {
        None => None,
        Some(name) => Some(
            policies
                .iter()
                .position(|p| p == name)
                .ok_or_else(|| format!("route {:?}: unknown rate_limit {name:?}", c.path))?,
        ),
    };
    let upstream = c.upstream.as_deref().map(Upstream::parse).transpose()?;
    Ok(Route {
        pattern,
        auth: c.auth,
        rate_limit,
        upstream,
        cache: c.cache.clone(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn patterns() {
        let p = Pattern::parse("/api/*").unwrap();
        assert!(p.matches("/api") && p.matches("/api/") && p.matches("/api/x/y"));
        assert!(!p.matches("/apix") && !p.matches("/"));
        let e = Pattern::parse("/health").unwrap();
        assert!(e.matches("/health") && !e.matches("/health/"));
        let all = Pattern::parse("/*").unwrap();
        assert!(all.matches("/") && all.matches("/a/b"));
        let g = Pattern::parse("/users/*/avatar").unwrap();
        assert!(g.matches("/users/42/avatar") && !g.matches("/users/42/avatar/x"));
        let g = Pattern::parse("*.png").err();
        assert!(g.is_some());
        assert!(Pattern::parse("/a?b").is_err());
    }
}
