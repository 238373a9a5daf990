//! The claims of a signature-checked token: time checks against the injected clock,
//! `sub`, `iss`, `azp`, and Clerk's v1 and v2 organization claims mapped to one
//! [`Org`].

use serde::Serialize;
use serde_json::{Map, Value};

use super::TokenError;

/// A verified Clerk session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    /// `sub`: the Clerk user id.
    pub user_id: String,
    /// `sid`: the Clerk session id (absent in some custom JWT templates).
    pub session_id: Option<String>,
    /// The active organization, from `o` (v2) or `org_*` (v1).
    pub org: Option<Org>,
    /// `exp` in Unix milliseconds.
    pub expires_at_ms: u64,
    /// `iat` in Unix milliseconds, when present.
    pub issued_at_ms: Option<u64>,
    /// `azp`: the origin the token was minted for, when present.
    pub azp: Option<String>,
    /// `iss`, when present.
    pub issuer: Option<String>,
    /// Claims version: `v` (2), or 1 when absent.
    pub version: u8,
    /// `sts`: the session status (`active`, `pending`), when the instance sends it.
    pub session_status: Option<String>,
    /// `act`: the impersonator, when the session is an impersonation.
    pub actor: Option<Value>,
}

/// The active organization of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Org {
    pub id: String,
    pub slug: Option<String>,
    /// With Clerk's `org:` prefix, as `@clerk/backend` reports it (`org:admin`).
    pub role: Option<String>,
    /// Full keys, as `@clerk/backend` reports them (`org:feature:permission`).
    pub permissions: Vec<String>,
}

/// The claim checks' settings.
pub(crate) struct ClaimRules<'a> {
    pub skew_ms: u64,
    pub issuer: Option<&'a str>,
    pub authorized_parties: &'a [String],
    pub require_azp: bool,
}

/// A claim holding a NumericDate (seconds, possibly fractional) as Unix ms.
fn time_ms(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            if let Some(s) = v.as_u64() {
                return s
                    .checked_mul(1000)
                    .map(Some)
                    .ok_or(TokenError::Malformed("a time claim is out of range"));
            }
            match v.as_f64() {
                Some(f) if (0.0..1e15).contains(&f) => Ok(Some((f * 1000.0) as u64)),
                _ => Err(TokenError::Malformed(
                    "exp, nbf and iat must be non-negative numbers",
                )),
            }
        }
    }
}

fn opt_str(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Checks the claims of a token whose signature has been verified, in this order:
/// `exp`, `nbf`, `iat`, `sub`, `iss`, `azp`.
pub(crate) fn check(
    claims: &Map<String, Value>,
    rules: &ClaimRules<'_>,
    now_ms: u64,
) -> Result<Session, TokenError> {
    let exp = time_ms(claims, "exp")?.ok_or(TokenError::Malformed("exp is required"))?;
    let nbf = time_ms(claims, "nbf")?;
    let iat = time_ms(claims, "iat")?;
    // As @clerk/backend: expired when exp <= now - skew; early when nbf/iat > now + skew.
    if exp.saturating_add(rules.skew_ms) <= now_ms {
        return Err(TokenError::Expired);
    }
    let latest = now_ms.saturating_add(rules.skew_ms);
    if nbf.is_some_and(|nbf| nbf > latest) {
        return Err(TokenError::NotYetValid);
    }
    if iat.is_some_and(|iat| iat > latest) {
        return Err(TokenError::IssuedInFuture);
    }

    let user_id = opt_str(claims, "sub").ok_or(TokenError::MissingSub)?;

    let issuer = opt_str(claims, "iss");
    if let Some(expected) = rules.issuer {
        let same = issuer
            .as_deref()
            .is_some_and(|iss| iss.trim_end_matches('/') == expected.trim_end_matches('/'));
        if !same {
            return Err(TokenError::IssMismatch);
        }
    }

    let azp = match claims.get("azp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(TokenError::Malformed("azp must be a string")),
    };
    if !rules.authorized_parties.is_empty() {
        match &azp {
            Some(azp) if rules.authorized_parties.iter().any(|p| p == azp) => {}
            Some(_) => return Err(TokenError::AzpMismatch),
            None if rules.require_azp => return Err(TokenError::AzpMismatch),
            None => {}
        }
    }

    let version = match claims.get("v").and_then(Value::as_u64) {
        Some(v) if v >= 2 => u8::try_from(v).unwrap_or(u8::MAX),
        _ => 1,
    };
    let org = if version >= 2 {
        org_v2(claims)
    } else {
        org_v1(claims)
    };

    Ok(Session {
        user_id,
        session_id: opt_str(claims, "sid"),
        org,
        expires_at_ms: exp,
        issued_at_ms: iat,
        azp,
        issuer,
        version,
        session_status: opt_str(claims, "sts"),
        actor: claims.get("act").filter(|a| !a.is_null()).cloned(),
    })
}

/// v1: `org_id`, `org_slug`, `org_role`, `org_permissions` (an array), as given.
fn org_v1(claims: &Map<String, Value>) -> Option<Org> {
    let id = opt_str(claims, "org_id")?;
    let permissions = claims
        .get("org_permissions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Some(Org {
        id,
        slug: opt_str(claims, "org_slug"),
        role: opt_str(claims, "org_role"),
        permissions,
    })
}

/// v2: `o: {id, slg, rol, per, fpm}` plus the top-level `fea`, decoded as
/// `@clerk/backend` does: the role gets the `org:` prefix; permissions are
/// `org:{feature}:{permission}` for each organization feature (`o:`-scoped `fea`
/// entries) whose `fpm` bitmask (a decimal string per feature, bit i = `per[i]`) has the
/// permission's bit set.
///
/// When a token carries `per` but neither `fpm` nor `fea` (the Frontdesk emulator's
/// tokens), each `per` entry is taken as a permission key and given the `org:` prefix.
fn org_v2(claims: &Map<String, Value>) -> Option<Org> {
    let o = claims.get("o")?.as_object()?;
    let id = opt_str(o, "id")?;
    let role = opt_str(o, "rol").map(|r| {
        if r.starts_with("org:") {
            r
        } else {
            format!("org:{r}")
        }
    });
    let per: Vec<&str> = o
        .get("per")
        .and_then(Value::as_str)
        .map(|p| {
            p.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let fpm = o.get("fpm").and_then(Value::as_str);
    let fea = claims.get("fea").and_then(Value::as_str);
    let permissions = match (fpm, fea) {
        (Some(fpm), Some(fea)) => feature_permissions(&per, fpm, fea),
        (Some(_), None) | (None, Some(_)) => Vec::new(),
        (None, None) => per
            .iter()
            .map(|p| {
                if p.starts_with("org:") {
                    (*p).to_owned()
                } else {
                    format!("org:{p}")
                }
            })
            .collect(),
    };
    Some(Org {
        id,
        slug: opt_str(o, "slg"),
        role,
        permissions,
    })
}

fn feature_permissions(per: &[&str], fpm: &str, fea: &str) -> Vec<String> {
    let features: Vec<&str> = fea
        .split(',')
        .map(str::trim)
        .filter_map(|f| f.strip_prefix("o:"))
        .collect();
    let masks: Vec<Vec<bool>> = fpm.split(',').map(|m| decimal_bits(m.trim())).collect();
    let mut out = Vec::new();
    for (feature, bits) in features.iter().zip(masks.iter()) {
        for (i, permission) in per.iter().enumerate() {
            if bits.get(i).copied().unwrap_or(false) {
                out.push(format!("org:{feature}:{permission}"));
            }
        }
    }
    out
}

/// The bits of a non-negative decimal string of any length, least significant first;
/// empty when it is not a decimal number.
fn decimal_bits(decimal: &str) -> Vec<bool> {
    if decimal.is_empty() || !decimal.bytes().all(|b| b.is_ascii_digit()) {
        return Vec::new();
    }
    let mut digits: Vec<u8> = decimal.bytes().map(|b| b - b'0').collect();
    let mut bits = Vec::new();
    while digits.iter().any(|d| *d != 0) {
        let mut remainder = 0u8;
        for d in digits.iter_mut() {
            let value = remainder * 10 + *d;
            *d = value / 2;
            remainder = value % 2;
        }
        bits.push(remainder == 1);
    }
    bits
}
