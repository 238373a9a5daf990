//! TLS to the managed services (Postgres, Redis): the process-wide crypto provider and
//! one fixed sentence per way a TLS connection fails, so start-up and `/readyz` say
//! *which* failure it is (an untrusted certificate, a host-name mismatch, a server that
//! does not speak TLS) instead of a stack of library errors. The sentences never quote
//! a URL, so they cannot carry a password.

use std::error::Error as StdError;

use rustls::CertificateError;

/// Installs aws-lc-rs as rustls's process-wide provider (the Redis client builds its
/// TLS config from the process default). Idempotent; a provider installed earlier by
/// an embedding app wins.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Why a TLS connection failed, when the error (or one it wraps) is a TLS failure.
pub fn describe(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut next: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(mut e) = next {
        // Some clients keep their cause behind an `Arc` (the Redis client does).
        if let Some(shared) = e.downcast_ref::<std::sync::Arc<dyn StdError + Send + Sync>>() {
            e = shared.as_ref();
        }
        if let Some(r) = e.downcast_ref::<rustls::Error>() {
            return Some(describe_rustls(r));
        }
        // `io::Error::source` skips the error it wraps; look inside it.
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                    return Some(describe_rustls(r));
                }
            }
        }
        next = e.source();
    }
    describe_text(&err.to_string())
}

/// Some clients keep only the text of the TLS error (the Redis connection manager
/// hands out a copy of the error that broke the connection): read rustls's wording.
fn describe_text(text: &str) -> Option<String> {
    if text.contains("invalid peer certificate: UnknownIssuer") {
        Some(describe_rustls(&rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        )))
    } else if text.contains("certificate not valid for name")
        || text.contains("invalid peer certificate: NotValidForName")
    {
        Some(describe_rustls(&rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        )))
    } else if text.contains("invalid peer certificate: Expired")
        || text.contains("certificate expired")
    {
        Some(describe_rustls(&rustls::Error::InvalidCertificate(
            CertificateError::Expired,
        )))
    } else if text.contains("received corrupt message") {
        Some(NOT_TLS.into())
    } else {
        None
    }
}

/// The sentence for a server that answered the TLS request with something else.
pub const NOT_TLS: &str =
    "the server does not speak TLS (it refused the TLS request or answered in plain text)";

fn describe_rustls(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "the server's TLS certificate does not verify: \
                 it is not signed by a trusted CA (give your CA's certificate: sslrootcert= \
                 for Postgres, [redis] ca_file or SSL_CERT_FILE for Redis)"
                .into(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "the server's TLS certificate is not valid for the host name in the URL \
                 (host-name mismatch: connect with a name the certificate lists)"
                    .into()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's TLS certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's TLS certificate is not valid yet (check the clock)".into()
            }
            other => format!("the server's TLS certificate does not verify ({other:?})"),
        },
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. } => NOT_TLS.into(),
        other => format!("the TLS handshake failed ({other})"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_rustls_error_is_found_and_named() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let text = describe(&io).unwrap();
        assert!(text.contains("not signed by a trusted CA"), "{text}");
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
        );
        assert!(describe(&io).unwrap().contains("host-name mismatch"));
        let plain = std::io::Error::other("connection refused");
        assert!(describe(&plain).is_none());
    }
}
