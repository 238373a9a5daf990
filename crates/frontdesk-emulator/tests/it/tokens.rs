use frontdesk_emulator::{Emulator, MintSession};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::{Value, json};

use crate::common::{clerk_error, read, start};

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn served_key(c: &crate::common::Ctx) -> DecodingKey {
    let (s, jwks) = c.get("/v1/jwks").await;
    assert_eq!(s, 200);
    let k = &jwks["keys"][0];
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(k["kty"], "RSA");
    assert_eq!(k["use"], "sig");
    assert_eq!(k["alg"], "RS256");
    assert_eq!(k["kid"], c.emu.kid());
    assert_eq!(k["e"], "AQAB");
    DecodingKey::from_rsa_components(k["n"].as_str().unwrap(), k["e"].as_str().unwrap()).unwrap()
}

fn validation(iss: &str) -> Validation {
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[iss]);
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
    v
}

#[tokio::test]
async fn minted_token_verifies_against_served_jwks_with_clerk_v2_claims() {
    let c = start(5).await;
    let user = Emulator::seed_user_id(1);
    let res = c
        .http
        .post(c.url("/__emulator/sessions"))
        .json(&json!({"user_id": user}))
        .send()
        .await
        .unwrap();
    let (s, minted) = read(res).await;
    assert_eq!(s, 200);
    let jwt = minted["jwt"].as_str().unwrap();
    let sid = minted["sid"].as_str().unwrap();
    assert!(sid.starts_with("sess_"));

    let header = decode_header(jwt).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.kid.as_deref(), Some(c.emu.kid()));
    assert_eq!(header.typ.as_deref(), Some("JWT"));

    let key = served_key(&c).await;
    let claims = decode::<Value>(jwt, &key, &validation(c.emu.issuer()))
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], user);
    assert_eq!(claims["sid"], sid);
    assert_eq!(claims["v"], 2);
    assert_eq!(claims["azp"], "http://localhost:3000");
    assert_eq!(claims["fva"], json!([0, -1]));
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let iat = claims["iat"].as_i64().unwrap();
    assert!((iat - now_s()).abs() <= 5);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - iat,
        60,
        "default ttl 60 s"
    );
    assert_eq!(claims["exp"], minted["exp"]);
    assert_eq!(claims["nbf"].as_i64().unwrap(), iat - 10);
    assert!(claims.get("o").is_none());

    // The PEM (CLERK_JWT_KEY form) is the same key.
    let pem = c
        .http
        .get(c.url("/__emulator/jwt_key"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pem, c.emu.public_key_pem());
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let key = DecodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    decode::<Value>(jwt, &key, &validation(c.emu.issuer())).unwrap();
}

#[tokio::test]
async fn org_claim_ttl_azp_and_errors() {
    let c = start(40).await;
    // Seeded user 0 founded (and administers) the first organization.
    let org_id = c.emu.org_ids()[0].clone();
    let m = c
        .emu
        .mint_session(MintSession {
            user_id: Emulator::seed_user_id(0),
            org_id: Some(org_id.clone()),
            ttl_s: Some(300),
            azp: Some("https://app.example.com".into()),
        })
        .unwrap();
    let key = served_key(&c).await;
    let claims = decode::<Value>(&m.jwt, &key, &validation(c.emu.issuer()))
        .unwrap()
        .claims;
    assert_eq!(claims["o"]["id"], org_id);
    assert_eq!(claims["o"]["rol"], "admin", "v2 roles drop the org: prefix");
    assert_eq!(claims["o"]["slg"], "acme-corp");
    assert!(
        claims["o"]["per"]
            .as_str()
            .unwrap()
            .contains("sys_memberships:manage")
    );
    assert_eq!(claims["azp"], "https://app.example.com");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );

    let res = c
        .http
        .post(c.url("/__emulator/sessions"))
        .json(&json!({"user_id": "user_nobody"}))
        .send()
        .await
        .unwrap();
    let (s, body) = read(res).await;
    assert_eq!(s, 404);
    clerk_error(&body, "resource_not_found");
    // Seeded user 3 belongs to no organization.
    let err = c.emu.mint_session(MintSession {
        user_id: Emulator::seed_user_id(3),
        org_id: Some(org_id),
        ..Default::default()
    });
    assert!(matches!(err, Err(frontdesk_emulator::Error::Api(ref e)) if e.status.as_u16() == 422));
}

#[tokio::test]
async fn sign_claims_uses_the_emulator_key_and_header_overrides() {
    let c = start(1).await;
    let claims =
        json!({"sub": "user_x", "iss": c.emu.issuer(), "exp": now_s() + 30, "nbf": now_s() - 1});
    let jwt = c.emu.sign_claims(None, &claims);
    let key = served_key(&c).await;
    let got = decode::<Value>(&jwt, &key, &validation(c.emu.issuer()))
        .unwrap()
        .claims;
    assert_eq!(got, claims);

    let jwt = c
        .emu
        .sign_claims(Some(json!({"kid": "other", "typ": null})), &claims);
    let h = decode_header(&jwt).unwrap();
    assert_eq!(h.kid.as_deref(), Some("other"));
    assert_eq!(h.typ, None);
    let jwt = c.emu.sign_claims(Some(json!({"alg": "RS512"})), &claims);
    let mut v = validation(c.emu.issuer());
    v.algorithms = vec![Algorithm::RS512];
    decode::<Value>(&jwt, &key, &v).unwrap();
}
