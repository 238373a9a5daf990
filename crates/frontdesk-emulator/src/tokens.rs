//! Session tokens as Clerk issues them: a 2048-bit RSA key generated at start-up, served
//! as JWKS and as an SPKI PEM (`CLERK_JWT_KEY`), and RS256 JWTs with Clerk's v2 claims
//! (`iss sub sid exp iat nbf azp jti v fva`, `o: {id, slg, rol, per}`). Minted sessions are
//! remembered so they can be revoked (which fires `session.revoked`).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{self, KeyPair as _, RsaEncoding};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::errors::{ApiError, Error};
use crate::{Emulator, ids, webhooks};

/// What Clerk's browser SDK gets: tokens live 60 s.
pub const DEFAULT_TTL_S: u64 = 60;
/// Clerk backdates `nbf` by 10 s to absorb clock skew.
pub const NBF_BACKDATE_S: i64 = 10;
/// `azp` when the caller names none.
pub const DEFAULT_AZP: &str = "http://localhost:3000";

pub struct SigningKey {
    key: KeyPair,
    kid: String,
    n: String,
    e: String,
    pem: String,
}

impl SigningKey {
    pub fn generate() -> Result<Self, Error> {
        let key =
            KeyPair::generate(KeySize::Rsa2048).map_err(|_| Error::Crypto("RSA key generation"))?;
        let comps = PublicKeyComponents::<Vec<u8>>::from(key.public_key());
        let n = URL_SAFE_NO_PAD.encode(&comps.n);
        let e = URL_SAFE_NO_PAD.encode(&comps.e);
        let der = key
            .public_key()
            .as_der()
            .map_err(|_| Error::Crypto("public key encoding"))?;
        let b64 = STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        // Clerk kids look like instance ids; derive ours from the key so a new key
        // always has a new kid.
        let kid = ids::make("ins", &n);
        Ok(Self {
            key,
            kid,
            n,
            e,
            pem,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "use": "sig",
            "kty": "RSA",
            "kid": self.kid,
            "alg": "RS256",
            "n": self.n,
            "e": self.e,
        }]})
    }

    /// Signs `claims` with header `{alg: RS256, kid, typ: JWT}` merged with `overrides`
    /// (a `null` value removes a header field). RS384/RS512 in the header sign with
    /// that digest; any other `alg` is written as given but signed RS256, so tests can
    /// build tokens a verifier must reject.
    pub fn sign(&self, overrides: Option<&Value>, claims: &Value) -> String {
        let mut header = json!({"alg": "RS256", "kid": self.kid, "typ": "JWT"});
        if let (Some(Value::Object(o)), Some(h)) = (overrides, header.as_object_mut()) {
            for (k, v) in o {
                if v.is_null() {
                    h.remove(k);
                } else {
                    h.insert(k.clone(), v.clone());
                }
            }
        }
        let alg: &'static dyn RsaEncoding = match header.get("alg").and_then(Value::as_str) {
            Some("RS384") => &signature::RSA_PKCS1_SHA384,
            Some("RS512") => &signature::RSA_PKCS1_SHA512,
            _ => &signature::RSA_PKCS1_SHA256,
        };
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self.key.sign(alg, &rng, signing_input.as_bytes(), &mut sig) {
            Ok(()) => format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)),
            Err(_) => {
                tracing::error!("RSA signing failed; returning an unsigned token");
                format!("{signing_input}.")
            }
        }
    }
}

/// Input of [`Emulator::mint_session`] and `POST /__emulator/sessions`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct MintSession {
    pub user_id: String,
    #[serde(default)]
    pub org_id: Option<String>,
    #[serde(default)]
    pub ttl_s: Option<u64>,
    #[serde(default)]
    pub azp: Option<String>,
}

/// A minted session token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MintedSession {
    pub jwt: String,
    pub sid: String,
    /// `exp` claim, Unix seconds.
    pub exp: i64,
}

/// A session the emulator minted, kept for revocation.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    pub user_id: String,
    pub org_id: Option<String>,
    pub status: &'static str,
    pub created_at: i64,
    pub updated_at: i64,
    pub expire_at: i64,
}

impl SessionRecord {
    /// The `Session` object (spec `Session`), as carried by `session.*` webhooks.
    pub fn to_json(&self, instance_seed: u64) -> Value {
        json!({
            "object": "session",
            "id": self.id,
            "user_id": self.user_id,
            "client_id": ids::make("client", &format!("{instance_seed}:{}", self.id)),
            "actor": null,
            "status": self.status,
            "last_active_organization_id": self.org_id,
            "last_active_at": self.updated_at,
            "latest_activity": null,
            "expire_at": self.expire_at,
            "abandon_at": self.created_at + 30 * 24 * 3_600_000,
            "updated_at": self.updated_at,
            "created_at": self.created_at,
            "tasks": null,
        })
    }
}

impl Emulator {
    /// Mints a Clerk v2 session token for a user (and optionally one of their orgs).
    pub fn mint_session(&self, req: MintSession) -> Result<MintedSession, Error> {
        let now_ms = self.now_ms();
        let iat = now_ms.div_euclid(1000);
        let ttl = req.ttl_s.unwrap_or(DEFAULT_TTL_S).max(1) as i64;
        let org_claim = {
            let store = self.inner.store.read();
            if !store.users.contains_key(&req.user_id) {
                return Err(ApiError::not_found().into());
            }
            match &req.org_id {
                None => None,
                Some(key) => {
                    let org = store
                        .org_by_id_or_slug(key)
                        .ok_or_else(ApiError::not_found)?;
                    let m = store.membership(&org.id, &req.user_id).ok_or_else(|| {
                        ApiError::invalid_param(
                            "org_id",
                            "The user is not a member of this organization",
                        )
                    })?;
                    let short = |p: &str| p.strip_prefix("org:").unwrap_or(p).to_owned();
                    let per: Vec<String> = crate::orgs::role_permissions(&m.role)
                        .iter()
                        .map(|p| short(p))
                        .collect();
                    Some(json!({
                        "id": org.id,
                        "slg": org.slug,
                        "rol": short(&m.role),
                        "per": per.join(","),
                    }))
                }
            }
        };
        let sid = {
            let mut store = self.inner.store.write();
            store.next_id("sess")
        };
        let exp = iat + ttl;
        let mut claims = json!({
            "azp": req.azp.clone().unwrap_or_else(|| DEFAULT_AZP.to_owned()),
            "exp": exp,
            "fva": [0, -1],
            "iat": iat,
            "iss": self.inner.issuer,
            "jti": ids::hex(&format!("{sid}:{now_ms}"), 20),
            "nbf": iat - NBF_BACKDATE_S,
            "sid": sid,
            "sub": req.user_id,
            "v": 2,
        });
        if let (Some(o), Some(c)) = (org_claim, claims.as_object_mut()) {
            c.insert("o".into(), o);
        }
        let jwt = self.inner.keys.sign(None, &claims);
        self.inner.sessions.lock().insert(
            sid.clone(),
            SessionRecord {
                id: sid.clone(),
                user_id: req.user_id,
                org_id: req.org_id,
                status: "active",
                created_at: now_ms,
                updated_at: now_ms,
                expire_at: now_ms + 7 * 24 * 3_600_000,
            },
        );
        Ok(MintedSession { jwt, sid, exp })
    }

    /// Marks a minted session revoked and fires `session.revoked`; returns the Session.
    pub fn revoke_session(&self, sid: &str) -> Result<Value, Error> {
        let now = self.now_ms();
        let session = {
            let mut sessions = self.inner.sessions.lock();
            let s = sessions.get_mut(sid).ok_or_else(ApiError::not_found)?;
            s.status = "revoked";
            s.updated_at = now.max(s.updated_at + 1);
            s.clone()
        };
        let mut data = session.to_json(self.inner.seed);
        let user = self
            .inner
            .store
            .read()
            .users
            .get(&session.user_id)
            .map(crate::users::User::to_json);
        if let (Some(obj), Some(u)) = (data.as_object_mut(), user) {
            obj.insert("user".into(), u);
        }
        self.emit(webhooks::SESSION_REVOKED, data.clone());
        Ok(data)
    }

    /// Signs arbitrary claims with the emulator's key and kid (for token-matrix tests).
    pub fn sign_claims(&self, header_overrides: Option<Value>, claims: &Value) -> String {
        self.inner.keys.sign(header_overrides.as_ref(), claims)
    }

    /// The JWKS served at `/v1/jwks`.
    pub fn jwks(&self) -> Value {
        self.inner.keys.jwks()
    }

    pub fn kid(&self) -> &str {
        self.inner.keys.kid()
    }

    /// The public key as an SPKI PEM, the format of `CLERK_JWT_KEY`.
    pub fn public_key_pem(&self) -> String {
        self.inner.keys.pem().to_owned()
    }
}

pub fn v1_router() -> Router<Emulator> {
    Router::new().route("/v1/jwks", get(jwks))
}

pub fn control_router() -> Router<Emulator> {
    Router::new()
        .route("/__emulator/sessions", post(mint))
        .route("/__emulator/sessions/{sid}/revoke", post(revoke))
        .route("/__emulator/jwt_key", get(jwt_key))
        .route("/__emulator/jwks", get(jwks))
}

async fn jwks(State(emu): State<Emulator>) -> Json<Value> {
    Json(emu.jwks())
}

async fn jwt_key(State(emu): State<Emulator>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        emu.public_key_pem(),
    )
}

fn api(e: Error) -> ApiError {
    match e {
        Error::Api(a) => a,
        other => {
            tracing::error!(error = %other, "emulator control call failed");
            ApiError::internal()
        }
    }
}

async fn mint(State(emu): State<Emulator>, body: Bytes) -> Result<Json<MintedSession>, ApiError> {
    let req: MintSession = serde_json::from_slice(&body).map_err(|e| {
        ApiError::malformed_body(format!(
            "expected {{\"user_id\", \"org_id\"?, \"ttl_s\"?, \"azp\"?}}: {e}"
        ))
    })?;
    emu.mint_session(req).map(Json).map_err(api)
}

async fn revoke(
    State(emu): State<Emulator>,
    Path(sid): Path<String>,
) -> Result<Json<Value>, ApiError> {
    emu.revoke_session(&sid).map(Json).map_err(api)
}
