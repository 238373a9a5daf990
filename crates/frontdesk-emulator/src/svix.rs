//! Svix / Standard Webhooks signing, the scheme Clerk's webhooks use:
//! `v1,base64(HMAC-SHA256(base64decode(secret without "whsec_"), "{id}.{ts}.{body}"))`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::errors::Error;

/// Decodes a `whsec_…` signing secret into its key bytes.
pub fn secret_key(secret_whsec: &str) -> Result<Vec<u8>, Error> {
    let b64 = secret_whsec
        .strip_prefix("whsec_")
        .ok_or_else(|| Error::Config("webhook secret must start with `whsec_`".to_owned()))?;
    let key = STANDARD.decode(b64).map_err(|_| {
        Error::Config("webhook secret is not valid base64 after `whsec_`".to_owned())
    })?;
    if key.is_empty() {
        return Err(Error::Config("webhook secret is empty".to_owned()));
    }
    Ok(key)
}

/// The `svix-signature` value (`v1,<base64>`) for one message.
pub fn sign(
    secret_whsec: &str,
    msg_id: &str,
    timestamp_s: i64,
    body: &[u8],
) -> Result<String, Error> {
    let key = secret_key(secret_whsec)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| Error::Config("webhook secret has an unusable length".to_owned()))?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}
