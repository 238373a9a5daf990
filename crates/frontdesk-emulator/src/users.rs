//! Clerk's `/v1/users` family: the User object exactly as the spec shapes it, the list
//! filters (repeated-key arrays, at most 100 values, `+`/`-` include/exclude), count,
//! create, update, metadata merge/replace and delete — each change bumping `updated_at`
//! and firing the matching webhook.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::errors::ApiError;
use crate::query::{Params, include_exclude, order_by};
use crate::store::{Store, deep_merge};
use crate::{Emulator, webhooks};

/// An email address or phone number of a user.
#[derive(Debug, Clone)]
pub struct Ident {
    pub id: String,
    pub value: String,
    /// `email_code`/`phone_code` for identifiers verified by the user, `admin` for ones
    /// created through the Backend API.
    pub strategy: &'static str,
    /// Whether the owner proved it is theirs. Clerk only marks an identifier verified
    /// after a code, a link, an OAuth provider, or an admin saying so.
    pub verified: bool,
    /// Created `reserved` through the Backend API: unverified, but locked to this user.
    pub reserved: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub external_id: Option<String>,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub locale: Option<String>,
    pub emails: Vec<Ident>,
    pub primary_email_id: Option<String>,
    pub phones: Vec<Ident>,
    pub primary_phone_id: Option<String>,
    pub image_url: String,
    pub has_image: bool,
    pub public_metadata: Map<String, Value>,
    pub private_metadata: Map<String, Value>,
    pub unsafe_metadata: Map<String, Value>,
    pub password_enabled: bool,
    pub banned: bool,
    pub locked: bool,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_sign_in_at: Option<i64>,
    pub last_active_at: Option<i64>,
    pub legal_accepted_at: Option<i64>,
    pub delete_self_enabled: bool,
    pub create_organization_enabled: bool,
    pub create_organizations_limit: Option<i64>,
}

/// Clerk's default avatar URL: `img.clerk.com/` + base64url of a small JSON document.
pub fn default_image_url(instance_id: &str, user_id: &str) -> String {
    let doc = json!({"type": "default", "iid": instance_id, "rid": user_id}).to_string();
    format!(
        "https://img.clerk.com/{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(doc)
    )
}

fn verification(strategy: &str, verified: bool, created_at: i64) -> Value {
    if !verified {
        // A code was (or could be) sent; nobody entered it yet.
        return json!({
            "object": "verification_otp",
            "status": "unverified",
            "strategy": strategy,
            "attempts": null,
            "expire_at": created_at + 600_000,
            "verified_at_client": null,
        });
    }
    if strategy == "admin" {
        json!({
            "object": "verification_admin",
            "status": "verified",
            "strategy": "admin",
            "attempts": null,
            "expire_at": null,
            "verified_at_client": null,
        })
    } else {
        json!({
            "object": "verification_otp",
            "status": "verified",
            "strategy": strategy,
            "attempts": 1,
            "expire_at": created_at + 600_000,
            "verified_at_client": null,
        })
    }
}

impl Ident {
    fn email_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "email_address",
            "email_address": self.value,
            "reserved": self.reserved,
            "verification": verification(self.strategy, self.verified, self.created_at),
            "linked_to": [],
            "matches_sso_connection": false,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }

    fn phone_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "phone_number",
            "phone_number": self.value,
            "reserved_for_second_factor": false,
            "default_second_factor": false,
            "reserved": false,
            "verification": verification(self.strategy, self.verified, self.created_at),
            "linked_to": [],
            "backup_codes": null,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

impl User {
    /// The `User` object with every field the spec marks required.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        put("id", json!(self.id));
        put("object", json!("user"));
        put("external_id", json!(self.external_id));
        put("primary_email_address_id", json!(self.primary_email_id));
        put("primary_phone_number_id", json!(self.primary_phone_id));
        put("primary_web3_wallet_id", Value::Null);
        put("username", json!(self.username));
        put("first_name", json!(self.first_name));
        put("last_name", json!(self.last_name));
        put("locale", json!(self.locale));
        put("profile_image_url", json!(self.image_url));
        put("image_url", json!(self.image_url));
        put("has_image", json!(self.has_image));
        put(
            "public_metadata",
            Value::Object(self.public_metadata.clone()),
        );
        put(
            "private_metadata",
            Value::Object(self.private_metadata.clone()),
        );
        put(
            "unsafe_metadata",
            Value::Object(self.unsafe_metadata.clone()),
        );
        put(
            "email_addresses",
            Value::Array(self.emails.iter().map(Ident::email_json).collect()),
        );
        put(
            "phone_numbers",
            Value::Array(self.phones.iter().map(Ident::phone_json).collect()),
        );
        put("web3_wallets", json!([]));
        put("passkeys", json!([]));
        put("password_enabled", json!(self.password_enabled));
        put("two_factor_enabled", json!(false));
        put("totp_enabled", json!(false));
        put("backup_code_enabled", json!(false));
        put("mfa_enabled_at", Value::Null);
        put("mfa_disabled_at", Value::Null);
        put("password_last_updated_at", Value::Null);
        put("external_accounts", json!([]));
        put("saml_accounts", json!([]));
        put("enterprise_accounts", json!([]));
        put("last_sign_in_at", json!(self.last_sign_in_at));
        put("banned", json!(self.banned));
        put("locked", json!(self.locked));
        put("lockout_expires_in_seconds", Value::Null);
        put("verification_attempts_remaining", json!(100));
        put("updated_at", json!(self.updated_at));
        put("created_at", json!(self.created_at));
        put("delete_self_enabled", json!(self.delete_self_enabled));
        put(
            "create_organization_enabled",
            json!(self.create_organization_enabled),
        );
        put(
            "create_organizations_limit",
            json!(self.create_organizations_limit),
        );
        put("last_active_at", json!(self.last_active_at));
        put("legal_accepted_at", json!(self.legal_accepted_at));
        put("bypass_client_trust", json!(false));
        Value::Object(m)
    }

    /// The `{object, id, deleted}` a deletion answers with (and `user.deleted` carries).
    pub fn deleted_json(&self) -> Value {
        json!({"object": "user", "id": self.id, "deleted": true})
    }

    pub fn primary_email(&self) -> Option<&str> {
        let id = self.primary_email_id.as_deref()?;
        self.emails
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.value.as_str())
    }

    fn touch(&mut self, at: i64) {
        self.updated_at = at;
    }

    /// Does the free-text `query` match (partial, case-insensitive) any identifier or name?
    fn matches_query(&self, query: &str) -> bool {
        let q = query.to_lowercase();
        let hit = |s: &str| s.to_lowercase().contains(&q);
        self.id == query
            || self.emails.iter().any(|e| hit(&e.value))
            || self.phones.iter().any(|p| hit(&p.value))
            || self.username.as_deref().is_some_and(hit)
            || self.first_name.as_deref().is_some_and(hit)
            || self.last_name.as_deref().is_some_and(hit)
            || self.external_id.as_deref().is_some_and(hit)
    }

    fn full_name(&self) -> String {
        format!(
            "{} {}",
            self.first_name.as_deref().unwrap_or(""),
            self.last_name.as_deref().unwrap_or("")
        )
    }
}

const USER_ORDER_FIELDS: &[&str] = &[
    "created_at",
    "updated_at",
    "email_address",
    "first_name",
    "last_name",
    "phone_number",
    "username",
    "last_active_at",
    "last_sign_in_at",
    "web3wallet",
];

/// The parsed filters of `GET /v1/users` and `GET /v1/users/count`.
#[derive(Debug, Default)]
pub struct UserFilter {
    user_inc: Vec<String>,
    user_exc: Vec<String>,
    ext_inc: Vec<String>,
    ext_exc: Vec<String>,
    org_inc: Vec<String>,
    org_exc: Vec<String>,
    emails: Vec<String>,
    phones: Vec<String>,
    usernames: Vec<String>,
    web3: Vec<String>,
    query: Option<String>,
    email_query: Option<String>,
    username_query: Option<String>,
    name_query: Option<String>,
    phone_query: Option<String>,
    banned: Option<bool>,
    created_before: Option<i64>,
    created_after: Option<i64>,
}

impl UserFilter {
    pub fn parse(p: &Params) -> Result<Self, ApiError> {
        let (user_inc, user_exc) = include_exclude(&p.filter("user_id")?);
        let (ext_inc, ext_exc) = include_exclude(&p.filter("external_id")?);
        let (org_inc, org_exc) = include_exclude(&p.filter("organization_id")?);
        Ok(Self {
            user_inc,
            user_exc,
            ext_inc,
            ext_exc,
            org_inc,
            org_exc,
            emails: p
                .filter("email_address")?
                .into_iter()
                .map(|e| e.to_lowercase())
                .collect(),
            phones: p.filter("phone_number")?,
            usernames: p
                .filter("username")?
                .into_iter()
                .map(|u| u.to_lowercase())
                .collect(),
            web3: p.filter("web3_wallet")?,
            query: p.first("query"),
            email_query: p.first("email_address_query"),
            username_query: p.first("username_query"),
            name_query: p.first("name_query"),
            phone_query: p.first("phone_number_query"),
            banned: p.bool("banned")?,
            created_before: p.int("created_at_before")?,
            created_after: p.int("created_at_after")?,
        })
    }

    fn matches(&self, store: &Store, u: &User) -> bool {
        if !self.user_inc.is_empty() && !self.user_inc.contains(&u.id) {
            return false;
        }
        if self.user_exc.contains(&u.id) {
            return false;
        }
        let ext = u.external_id.as_deref().unwrap_or("");
        if !self.ext_inc.is_empty() && !self.ext_inc.iter().any(|e| e == ext) {
            return false;
        }
        if !ext.is_empty() && self.ext_exc.iter().any(|e| e == ext) {
            return false;
        }
        if !self.org_inc.is_empty() || !self.org_exc.is_empty() {
            let orgs: Vec<&str> = store
                .memberships
                .iter()
                .filter(|m| m.user_id == u.id)
                .map(|m| m.org_id.as_str())
                .collect();
            if !self.org_inc.is_empty() && !self.org_inc.iter().any(|o| orgs.contains(&o.as_str()))
            {
                return false;
            }
            if self.org_exc.iter().any(|o| orgs.contains(&o.as_str())) {
                return false;
            }
        }
        if !self.emails.is_empty()
            && !u
                .emails
                .iter()
                .any(|e| self.emails.contains(&e.value.to_lowercase()))
        {
            return false;
        }
        if !self.phones.is_empty() && !u.phones.iter().any(|p| self.phones.contains(&p.value)) {
            return false;
        }
        if !self.usernames.is_empty()
            && !u
                .username
                .as_deref()
                .is_some_and(|n| self.usernames.contains(&n.to_lowercase()))
        {
            return false;
        }
        if !self.web3.is_empty() {
            // The emulator's users have no web3 wallets.
            return false;
        }
        if let Some(q) = &self.query
            && !u.matches_query(q)
        {
            return false;
        }
        let ci = |hay: &str, needle: &str| hay.to_lowercase().contains(&needle.to_lowercase());
        if let Some(q) = &self.email_query
            && !u.emails.iter().any(|e| ci(&e.value, q))
        {
            return false;
        }
        if let Some(q) = &self.phone_query
            && !u.phones.iter().any(|p| ci(&p.value, q))
        {
            return false;
        }
        if let Some(q) = &self.username_query
            && !u.username.as_deref().is_some_and(|n| ci(n, q))
        {
            return false;
        }
        if let Some(q) = &self.name_query
            && !ci(&u.full_name(), q)
        {
            return false;
        }
        if let Some(b) = self.banned
            && u.banned != b
        {
            return false;
        }
        if let Some(t) = self.created_before
            && u.created_at >= t
        {
            return false;
        }
        if let Some(t) = self.created_after
            && u.created_at <= t
        {
            return false;
        }
        true
    }

    /// Matching users, unordered. Uses the id index when ids are given.
    pub fn apply<'a>(&self, store: &'a Store) -> Vec<&'a User> {
        if !self.user_inc.is_empty() {
            let mut seen = std::collections::HashSet::new();
            self.user_inc
                .iter()
                .filter(|id| seen.insert(id.as_str()))
                .filter_map(|id| store.users.get(id))
                .filter(|u| self.matches(store, u))
                .collect()
        } else {
            store
                .users
                .values()
                .filter(|u| self.matches(store, u))
                .collect()
        }
    }
}

fn sort_users(users: &mut [&User], field: &str, desc: bool) {
    use std::cmp::Ordering;
    let key_str = |u: &User| -> String {
        match field {
            "email_address" => u.primary_email().unwrap_or("").to_lowercase(),
            "first_name" => u.first_name.clone().unwrap_or_default().to_lowercase(),
            "last_name" => u.last_name.clone().unwrap_or_default().to_lowercase(),
            "username" => u.username.clone().unwrap_or_default().to_lowercase(),
            "phone_number" => u
                .phones
                .first()
                .map(|p| p.value.clone())
                .unwrap_or_default(),
            _ => String::new(),
        }
    };
    let key_num = |u: &User| -> i64 {
        match field {
            "updated_at" => u.updated_at,
            "last_active_at" => u.last_active_at.unwrap_or(0),
            "last_sign_in_at" => u.last_sign_in_at.unwrap_or(0),
            _ => u.created_at,
        }
    };
    let numeric = matches!(
        field,
        "created_at" | "updated_at" | "last_active_at" | "last_sign_in_at" | "web3wallet"
    );
    users.sort_by(|a, b| {
        let o = if numeric {
            key_num(a).cmp(&key_num(b))
        } else {
            key_str(a).cmp(&key_str(b))
        };
        // Ties broken by id so pages are stable.
        let o = if o == Ordering::Equal {
            a.id.cmp(&b.id)
        } else {
            o
        };
        if desc { o.reverse() } else { o }
    });
}

/// `GET /v1/users` without the page cut: filter, order, then `starting_after`/offset/limit.
pub fn list(store: &Store, p: &Params) -> Result<Vec<Value>, ApiError> {
    let filter = UserFilter::parse(p)?;
    let page = p.page()?;
    let (field, desc) = order_by(p.first("order_by"), "-created_at", USER_ORDER_FIELDS)?;
    let starting_after = p.first("starting_after");
    if starting_after.is_some() {
        if field != "created_at" {
            return Err(ApiError::invalid_param(
                "starting_after",
                "`starting_after` requires ordering by `created_at`",
            ));
        }
        if page.offset != 0 {
            return Err(ApiError::invalid_param(
                "starting_after",
                "`starting_after` cannot be combined with a non-zero `offset`",
            ));
        }
    }
    let mut users = filter.apply(store);
    sort_users(&mut users, &field, desc);
    if let Some(cursor) = starting_after {
        let pos = users.iter().position(|u| u.id == cursor);
        users = match pos {
            Some(i) => users.split_off(i + 1),
            None => Vec::new(),
        };
    }
    Ok(page.apply(users).into_iter().map(User::to_json).collect())
}

pub fn count(store: &Store, p: &Params) -> Result<usize, ApiError> {
    Ok(UserFilter::parse(p)?.apply(store).len())
}

// ---------------------------------------------------------------------------------
// Mutations (shared by the HTTP handlers and the library API).

fn body_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::malformed_body(
            "The request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::malformed_body(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}

/// `Some(None)` for an explicit null, `Some(Some(s))` for a string, `None` when absent.
fn opt_string(m: &Map<String, Value>, key: &str) -> Result<Option<Option<String>>, ApiError> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(ApiError::invalid_param(
            key,
            format!("`{key}` must be a string"),
        )),
    }
}

fn opt_bool(m: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid_param(
            key,
            format!("`{key}` must be a boolean"),
        )),
    }
}

fn opt_object(m: &Map<String, Value>, key: &str) -> Result<Option<Map<String, Value>>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o.clone())),
        Some(_) => Err(ApiError::invalid_param(
            key,
            format!("`{key}` must be an object"),
        )),
    }
}

fn string_list(m: &Map<String, Value>, key: &str) -> Result<Vec<String>, ApiError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::invalid_param(key, format!("`{key}` must be strings")))
            })
            .collect(),
        Some(_) => Err(ApiError::invalid_param(
            key,
            format!("`{key}` must be an array"),
        )),
    }
}

impl Store {
    fn email_taken(&self, email: &str, except: Option<&str>) -> bool {
        let e = email.to_lowercase();
        self.users.values().any(|u| {
            Some(u.id.as_str()) != except && u.emails.iter().any(|x| x.value.to_lowercase() == e)
        })
    }

    fn username_taken(&self, name: &str, except: Option<&str>) -> bool {
        let n = name.to_lowercase();
        self.users.values().any(|u| {
            Some(u.id.as_str()) != except
                && u.username.as_deref().is_some_and(|x| x.to_lowercase() == n)
        })
    }

    fn external_id_taken(&self, ext: &str, except: Option<&str>) -> bool {
        self.users
            .values()
            .any(|u| Some(u.id.as_str()) != except && u.external_id.as_deref() == Some(ext))
    }

    fn check_unique(&self, m: &Map<String, Value>, except: Option<&str>) -> Result<(), ApiError> {
        if let Some(Some(name)) = opt_string(m, "username")?
            && self.username_taken(&name, except)
        {
            return Err(ApiError::identifier_exists("username", "username"));
        }
        if let Some(Some(ext)) = opt_string(m, "external_id")?
            && self.external_id_taken(&ext, except)
        {
            return Err(ApiError::identifier_exists("external_id", "external ID"));
        }
        Ok(())
    }

    /// `POST /v1/users`.
    pub fn create_user(&mut self, body: &[u8], now_ms: i64) -> Result<User, ApiError> {
        let m = body_object(body)?;
        let emails = string_list(&m, "email_address")?;
        // Parallel to `email_address`: `verified` (the default) or `reserved`
        // (unverified, but locked to this user).
        let statuses = string_list(&m, "email_address_identification_status")?;
        if !statuses.is_empty()
            && (statuses.len() != emails.len()
                || statuses.iter().any(|s| s != "verified" && s != "reserved"))
        {
            return Err(ApiError::invalid_param(
                "email_address_identification_status",
                "one of verified or reserved per email address",
            ));
        }
        let phones = string_list(&m, "phone_number")?;
        for (i, e) in emails.iter().enumerate() {
            if !e.contains('@') {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "form_param_format_invalid",
                    "is invalid",
                    "email_address must be a valid email address.",
                )
                .with_param("email_address"));
            }
            if self.email_taken(e, None) || emails[..i].iter().any(|o| o.eq_ignore_ascii_case(e)) {
                return Err(ApiError::identifier_exists(
                    "email_address",
                    "email address",
                ));
            }
        }
        for p in &phones {
            if self
                .users
                .values()
                .any(|u| u.phones.iter().any(|x| &x.value == p))
            {
                return Err(ApiError::identifier_exists("phone_number", "phone number"));
            }
        }
        self.check_unique(&m, None)?;
        let at = self.stamp(now_ms);
        let id = self.next_id("user");
        let emails: Vec<Ident> = emails
            .into_iter()
            .enumerate()
            .map(|(i, value)| {
                let reserved = statuses.get(i).is_some_and(|s| s == "reserved");
                Ident {
                    id: self.next_id("idn"),
                    value,
                    strategy: if reserved { "email_code" } else { "admin" },
                    verified: !reserved,
                    reserved,
                    created_at: at,
                    updated_at: at,
                }
            })
            .collect();
        let phones: Vec<Ident> = phones
            .into_iter()
            .map(|value| Ident {
                id: self.next_id("idn"),
                value,
                strategy: "admin",
                verified: true,
                reserved: false,
                created_at: at,
                updated_at: at,
            })
            .collect();
        let user = User {
            image_url: default_image_url(&self.instance_id, &id),
            id,
            external_id: opt_string(&m, "external_id")?.flatten(),
            username: opt_string(&m, "username")?.flatten(),
            first_name: opt_string(&m, "first_name")?.flatten(),
            last_name: opt_string(&m, "last_name")?.flatten(),
            locale: opt_string(&m, "locale")?.flatten(),
            primary_email_id: emails.first().map(|e| e.id.clone()),
            primary_phone_id: phones.first().map(|p| p.id.clone()),
            emails,
            phones,
            has_image: false,
            public_metadata: opt_object(&m, "public_metadata")?.unwrap_or_default(),
            private_metadata: opt_object(&m, "private_metadata")?.unwrap_or_default(),
            unsafe_metadata: opt_object(&m, "unsafe_metadata")?.unwrap_or_default(),
            password_enabled: matches!(m.get("password"), Some(Value::String(_)))
                || matches!(m.get("password_digest"), Some(Value::String(_))),
            banned: opt_bool(&m, "banned")?.unwrap_or(false),
            locked: opt_bool(&m, "locked")?.unwrap_or(false),
            created_at: at,
            updated_at: at,
            last_sign_in_at: None,
            last_active_at: None,
            legal_accepted_at: None,
            delete_self_enabled: opt_bool(&m, "delete_self_enabled")?.unwrap_or(true),
            create_organization_enabled: opt_bool(&m, "create_organization_enabled")?
                .unwrap_or(true),
            create_organizations_limit: m.get("create_organizations_limit").and_then(Value::as_i64),
        };
        self.users.insert(user.id.clone(), user.clone());
        Ok(user)
    }

    /// `PATCH /v1/users/{id}`. Metadata fields, when sent, replace (older API versions
    /// accepted them here; current SDKs use the metadata endpoints).
    pub fn patch_user(&mut self, id: &str, body: &[u8], now_ms: i64) -> Result<User, ApiError> {
        let m = body_object(body)?;
        if !self.users.contains_key(id) {
            return Err(ApiError::not_found());
        }
        self.check_unique(&m, Some(id))?;
        let at = self.stamp(now_ms);
        let u = self.users.get_mut(id).ok_or_else(ApiError::not_found)?;
        if let Some(pid) = opt_string(&m, "primary_email_address_id")?.flatten() {
            if !u.emails.iter().any(|e| e.id == pid) {
                return Err(ApiError::invalid_param(
                    "primary_email_address_id",
                    "The email address does not belong to this user",
                ));
            }
            u.primary_email_id = Some(pid);
        }
        if let Some(pid) = opt_string(&m, "primary_phone_number_id")?.flatten() {
            if !u.phones.iter().any(|p| p.id == pid) {
                return Err(ApiError::invalid_param(
                    "primary_phone_number_id",
                    "The phone number does not belong to this user",
                ));
            }
            u.primary_phone_id = Some(pid);
        }
        if let Some(v) = opt_string(&m, "external_id")? {
            u.external_id = v;
        }
        if let Some(v) = opt_string(&m, "username")? {
            u.username = v;
        }
        if let Some(v) = opt_string(&m, "first_name")? {
            u.first_name = v;
        }
        if let Some(v) = opt_string(&m, "last_name")? {
            u.last_name = v;
        }
        if let Some(v) = opt_string(&m, "locale")? {
            u.locale = v;
        }
        if matches!(m.get("password"), Some(Value::String(_)))
            || matches!(m.get("password_digest"), Some(Value::String(_)))
        {
            u.password_enabled = true;
        }
        if let Some(b) = opt_bool(&m, "delete_self_enabled")? {
            u.delete_self_enabled = b;
        }
        if let Some(b) = opt_bool(&m, "create_organization_enabled")? {
            u.create_organization_enabled = b;
        }
        if let Some(v) = m.get("create_organizations_limit") {
            u.create_organizations_limit = v.as_i64();
        }
        if let Some(o) = opt_object(&m, "public_metadata")? {
            u.public_metadata = o;
        }
        if let Some(o) = opt_object(&m, "private_metadata")? {
            u.private_metadata = o;
        }
        if let Some(o) = opt_object(&m, "unsafe_metadata")? {
            u.unsafe_metadata = o;
        }
        u.touch(at);
        Ok(u.clone())
    }

    /// `PATCH /v1/users/{id}/metadata` (deep merge) and `PUT` (replace per field).
    pub fn user_metadata(
        &mut self,
        id: &str,
        body: &[u8],
        merge: bool,
        now_ms: i64,
    ) -> Result<User, ApiError> {
        let m = body_object(body)?;
        for key in m.keys() {
            if !matches!(
                key.as_str(),
                "public_metadata" | "private_metadata" | "unsafe_metadata"
            ) {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "form_param_unknown",
                    "is unknown",
                    format!("{key} is not a valid parameter for this request."),
                )
                .with_param(key));
            }
        }
        let fields = [
            ("public_metadata", opt_object(&m, "public_metadata")?),
            ("private_metadata", opt_object(&m, "private_metadata")?),
            ("unsafe_metadata", opt_object(&m, "unsafe_metadata")?),
        ];
        if !self.users.contains_key(id) {
            return Err(ApiError::not_found());
        }
        let at = self.stamp(now_ms);
        let u = self.users.get_mut(id).ok_or_else(ApiError::not_found)?;
        for (name, patch) in fields {
            let Some(patch) = patch else { continue };
            let target = match name {
                "public_metadata" => &mut u.public_metadata,
                "private_metadata" => &mut u.private_metadata,
                _ => &mut u.unsafe_metadata,
            };
            if merge {
                deep_merge(target, &patch);
            } else {
                *target = patch;
            }
        }
        u.touch(at);
        Ok(u.clone())
    }

    /// `POST /v1/email_addresses`: a new address for a user, verified only when the
    /// body says `"verified": true`, primary when `"primary": true` or it is the first.
    /// Returns the address and the user as they now are.
    pub fn create_email_address(
        &mut self,
        body: &[u8],
        now_ms: i64,
    ) -> Result<(Value, User), ApiError> {
        let m = body_object(body)?;
        let user_id = opt_string(&m, "user_id")?
            .flatten()
            .ok_or_else(|| ApiError::invalid_param("user_id", "`user_id` is required"))?;
        let email = opt_string(&m, "email_address")?.flatten().ok_or_else(|| {
            ApiError::invalid_param("email_address", "`email_address` is required")
        })?;
        if !email.contains('@') {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "form_param_format_invalid",
                "is invalid",
                "email_address must be a valid email address.",
            )
            .with_param("email_address"));
        }
        if !self.users.contains_key(&user_id) {
            return Err(ApiError::not_found());
        }
        if self.email_taken(&email, None) {
            return Err(ApiError::identifier_exists(
                "email_address",
                "email address",
            ));
        }
        let verified = opt_bool(&m, "verified")?.unwrap_or(false);
        let primary = opt_bool(&m, "primary")?.unwrap_or(false);
        let at = self.stamp(now_ms);
        let ident = Ident {
            id: self.next_id("idn"),
            value: email,
            strategy: if verified { "admin" } else { "email_code" },
            verified,
            reserved: false,
            created_at: at,
            updated_at: at,
        };
        let u = self
            .users
            .get_mut(&user_id)
            .ok_or_else(ApiError::not_found)?;
        if primary || u.emails.is_empty() {
            u.primary_email_id = Some(ident.id.clone());
        }
        let json = ident.email_json();
        u.emails.push(ident);
        u.touch(at);
        Ok((json, u.clone()))
    }

    /// `DELETE /v1/users/{id}`; memberships go with the user.
    pub fn delete_user(&mut self, id: &str) -> Result<User, ApiError> {
        let u = self.users.remove(id).ok_or_else(ApiError::not_found)?;
        self.memberships.retain(|m| m.user_id != id);
        Ok(u)
    }
}

// ---------------------------------------------------------------------------------
// Library API + webhook firing.

impl Emulator {
    /// Same logic as `PATCH /v1/users/{id}` (fires `user.updated`).
    pub fn update_user(&self, id: &str, patch: Value) -> Result<Value, crate::Error> {
        let body =
            serde_json::to_vec(&patch).map_err(|e| ApiError::malformed_body(e.to_string()))?;
        Ok(self.patch_user_bytes(id, &body)?)
    }

    pub(crate) fn patch_user_bytes(&self, id: &str, body: &[u8]) -> Result<Value, ApiError> {
        let now = self.now_ms();
        let user = self
            .inner
            .store
            .write()
            .patch_user(id, body, now)?
            .to_json();
        self.emit(webhooks::USER_UPDATED, user.clone());
        Ok(user)
    }

    fn create_user_bytes(&self, body: &[u8]) -> Result<Value, ApiError> {
        let now = self.now_ms();
        let user = self.inner.store.write().create_user(body, now)?.to_json();
        self.emit(webhooks::USER_CREATED, user.clone());
        Ok(user)
    }

    fn metadata_bytes(&self, id: &str, body: &[u8], merge: bool) -> Result<Value, ApiError> {
        let now = self.now_ms();
        let user = self
            .inner
            .store
            .write()
            .user_metadata(id, body, merge, now)?
            .to_json();
        self.emit(webhooks::USER_UPDATED, user.clone());
        Ok(user)
    }

    /// Same logic as `POST /v1/email_addresses` (fires `user.updated`): adds an address
    /// to a user, verified or not, primary or not. Returns Clerk's `EmailAddress`.
    pub fn add_email_address(
        &self,
        user_id: &str,
        email: &str,
        verified: bool,
        primary: bool,
    ) -> Result<Value, crate::Error> {
        let body = json!({
            "user_id": user_id,
            "email_address": email,
            "verified": verified,
            "primary": primary,
        });
        Ok(self.create_email_address_bytes(body.to_string().as_bytes())?)
    }

    fn create_email_address_bytes(&self, body: &[u8]) -> Result<Value, ApiError> {
        let now = self.now_ms();
        let (email, user) = self.inner.store.write().create_email_address(body, now)?;
        self.emit(webhooks::USER_UPDATED, user.to_json());
        Ok(email)
    }

    fn delete_user_inner(&self, id: &str) -> Result<Value, ApiError> {
        let deleted = self.inner.store.write().delete_user(id)?.deleted_json();
        self.emit(webhooks::USER_DELETED, deleted.clone());
        Ok(deleted)
    }
}

// ---------------------------------------------------------------------------------
// Handlers: extract, call, answer.

pub fn router() -> Router<Emulator> {
    Router::new()
        .route("/v1/users", get(list_users).post(create_user))
        .route("/v1/users/count", get(count_users))
        .route(
            "/v1/users/{user_id}",
            get(get_user).patch(patch_user).delete(delete_user),
        )
        .route(
            "/v1/users/{user_id}/metadata",
            axum::routing::patch(merge_metadata).put(replace_metadata),
        )
        .route(
            "/v1/email_addresses",
            axum::routing::post(create_email_address),
        )
}

async fn create_email_address(State(emu): State<Emulator>, body: Bytes) -> ApiResult {
    Ok(Json(emu.create_email_address_bytes(&body)?))
}

type ApiResult = Result<Json<Value>, ApiError>;

async fn list_users(State(emu): State<Emulator>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let users = list(&emu.inner.store.read(), &p)?;
    Ok(Json(Value::Array(users)))
}

async fn count_users(State(emu): State<Emulator>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let n = count(&emu.inner.store.read(), &p)?;
    Ok(Json(json!({"object": "total_count", "total_count": n})))
}

async fn get_user(State(emu): State<Emulator>, Path(id): Path<String>) -> ApiResult {
    let store = emu.inner.store.read();
    let u = store.users.get(&id).ok_or_else(ApiError::not_found)?;
    Ok(Json(u.to_json()))
}

async fn create_user(State(emu): State<Emulator>, body: Bytes) -> ApiResult {
    Ok(Json(emu.create_user_bytes(&body)?))
}

async fn patch_user(State(emu): State<Emulator>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    Ok(Json(emu.patch_user_bytes(&id, &body)?))
}

async fn merge_metadata(
    State(emu): State<Emulator>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    Ok(Json(emu.metadata_bytes(&id, &body, true)?))
}

async fn replace_metadata(
    State(emu): State<Emulator>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    Ok(Json(emu.metadata_bytes(&id, &body, false)?))
}

async fn delete_user(State(emu): State<Emulator>, Path(id): Path<String>) -> ApiResult {
    Ok(Json(emu.delete_user_inner(&id)?))
}
