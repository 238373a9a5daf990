//! Session tokens from anywhere: raw bytes, and JWS-shaped input whose header and
//! payload are base64url of fuzzed bytes (so the fuzzer reaches the JSON, algorithm
//! and claim checks). Nothing may be accepted (no token here is signed by the key),
//! and every refusal carries a documented code. Also extracts tokens from fuzzed
//! `Authorization`/`Cookie` headers.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use frontdesk::clock::ManualClock;
use frontdesk::tokens::{TokenError, Verifier, VerifierConfig, extract_token};
use frontdesk_emulator::{Emulator, EmulatorConfig};
use libfuzzer_sys::fuzz_target;

struct Fx {
    rt: tokio::runtime::Runtime,
    verifier: Verifier,
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let emu = Emulator::new(EmulatorConfig::default()).unwrap();
        let verifier = Verifier::new(
            VerifierConfig {
                jwt_key_pem: Some(emu.public_key_pem()),
                ..VerifierConfig::default()
            },
            None,
            ManualClock::new(1_900_000_000_000),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        Fx { rt, verifier }
    })
}

fn token_of(data: &[u8]) -> String {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 1 && rest.len() >= 2 => {
            let a = usize::from(rest[0]).min(rest.len() - 2);
            let b = usize::from(rest[1]).min(rest.len() - 2 - a);
            let body = &rest[2..];
            let (header, tail) = body.split_at(a);
            let (payload, sig) = tail.split_at(b);
            format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(sig)
            )
        }
        _ => String::from_utf8_lossy(data).into_owned(),
    }
}

fuzz_target!(|data: &[u8]| {
    let fx = fx();
    let token = token_of(data);
    match fx.rt.block_on(fx.verifier.verify(&token)) {
        Ok(session) => panic!("an unsigned token was accepted: {session:?}"),
        Err(e) => assert!(TokenError::CODES.contains(&e.code())),
    }
    let mut headers = http::HeaderMap::new();
    let half = data.len() / 2;
    for (name, value) in [("authorization", &data[..half]), ("cookie", &data[half..])] {
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
    }
    if let Some(t) = extract_token(&headers) {
        assert!(!t.is_empty());
    }
});
