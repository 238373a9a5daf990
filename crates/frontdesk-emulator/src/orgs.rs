//! Clerk's organizations: the `Organization` and `OrganizationMembership` objects, the
//! paginated `{"data":[…],"total_count":N}` lists, lookup by id or slug, and a user's
//! memberships. Roles are Clerk's default `org:admin` / `org:member`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::Emulator;
use crate::errors::ApiError;
use crate::query::{Params, include_exclude, order_by};
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub image_url: String,
    pub public_metadata: Map<String, Value>,
    pub private_metadata: Map<String, Value>,
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct Membership {
    pub id: String,
    pub org_id: String,
    pub user_id: String,
    /// Full role key, e.g. `org:admin`.
    pub role: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Permissions of Clerk's default roles.
pub fn role_permissions(role: &str) -> Vec<&'static str> {
    match role {
        "org:admin" => vec![
            "org:sys_profile:manage",
            "org:sys_profile:delete",
            "org:sys_memberships:read",
            "org:sys_memberships:manage",
            "org:sys_domains:read",
            "org:sys_domains:manage",
        ],
        _ => vec!["org:sys_memberships:read"],
    }
}

fn role_name(role: &str) -> String {
    let short = role.strip_prefix("org:").unwrap_or(role);
    let mut c = short.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

impl Org {
    pub fn to_json(&self, members_count: usize) -> Value {
        json!({
            "object": "organization",
            "id": self.id,
            "name": self.name,
            "slug": self.slug,
            "image_url": self.image_url,
            "has_image": false,
            "members_count": members_count,
            "pending_invitations_count": 0,
            "max_allowed_memberships": 0,
            "admin_delete_enabled": true,
            "public_metadata": self.public_metadata,
            "private_metadata": self.private_metadata,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_active_at": self.updated_at,
            "role_set_key": null,
        })
    }
}

impl Store {
    pub fn members_count(&self, org_id: &str) -> usize {
        self.memberships
            .iter()
            .filter(|m| m.org_id == org_id)
            .count()
    }

    pub fn org_by_id_or_slug(&self, key: &str) -> Option<&Org> {
        self.orgs.iter().find(|o| o.id == key || o.slug == key)
    }

    pub fn org_json(&self, o: &Org) -> Value {
        o.to_json(self.members_count(&o.id))
    }

    pub fn membership_json(&self, m: &Membership) -> Option<Value> {
        let org = self.orgs.iter().find(|o| o.id == m.org_id)?;
        let u = self.users.get(&m.user_id)?;
        Some(json!({
            "object": "organization_membership",
            "id": m.id,
            "role": m.role,
            "role_name": role_name(&m.role),
            "permissions": role_permissions(&m.role),
            "public_metadata": {},
            "private_metadata": {},
            "organization": self.org_json(org),
            "public_user_data": {
                "user_id": u.id,
                "first_name": u.first_name,
                "last_name": u.last_name,
                "profile_image_url": u.image_url,
                "image_url": u.image_url,
                "has_image": u.has_image,
                "identifier": u.primary_email().or(u.username.as_deref()),
                "username": u.username,
                "banned": u.banned,
                "deprovisioned": false,
            },
            "created_at": m.created_at,
            "updated_at": m.updated_at,
        }))
    }

    /// The membership of `user_id` in the organization `org_id`, if any.
    pub fn membership(&self, org_id: &str, user_id: &str) -> Option<&Membership> {
        self.memberships
            .iter()
            .find(|m| m.org_id == org_id && m.user_id == user_id)
    }
}

fn paginated(data: Vec<Value>, total: usize) -> Value {
    json!({"data": data, "total_count": total})
}

fn list_orgs(store: &Store, p: &Params) -> Result<Value, ApiError> {
    let page = p.page()?;
    let (field, desc) = order_by(
        p.first("order_by"),
        "-created_at",
        &["created_at", "name", "members_count"],
    )?;
    let (org_inc, org_exc) = include_exclude(&p.filter("organization_id")?);
    let (user_inc, user_exc) = include_exclude(&p.filter("user_id")?);
    let query = p.first("query").map(|q| q.to_lowercase());
    let mut orgs: Vec<&Org> = store
        .orgs
        .iter()
        .filter(|o| org_inc.is_empty() || org_inc.contains(&o.id))
        .filter(|o| !org_exc.contains(&o.id))
        .filter(|o| {
            let has = |u: &String| store.membership(&o.id, u).is_some();
            (user_inc.is_empty() || user_inc.iter().any(has)) && !user_exc.iter().any(has)
        })
        .filter(|o| {
            query.as_deref().is_none_or(|q| {
                o.id == q || o.name.to_lowercase().contains(q) || o.slug.contains(q)
            })
        })
        .collect();
    orgs.sort_by(|a, b| {
        let o = match field.as_str() {
            "name" => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
            "members_count" => store.members_count(&a.id).cmp(&store.members_count(&b.id)),
            _ => a.created_at.cmp(&b.created_at),
        }
        .then_with(|| a.id.cmp(&b.id));
        if desc { o.reverse() } else { o }
    });
    let total = orgs.len();
    let data = page
        .apply(orgs)
        .into_iter()
        .map(|o| store.org_json(o))
        .collect();
    Ok(paginated(data, total))
}

fn list_memberships(
    store: &Store,
    p: &Params,
    keep: impl Fn(&Membership) -> bool,
) -> Result<Value, ApiError> {
    let page = p.page()?;
    let (user_inc, user_exc) = include_exclude(&p.filter("user_id")?);
    let roles = p.filter("role")?;
    let (field, desc) = order_by(
        p.first("order_by"),
        "-created_at",
        &[
            "created_at",
            "first_name",
            "last_name",
            "username",
            "email_address",
            "phone_number",
        ],
    )?;
    let mut ms: Vec<&Membership> = store
        .memberships
        .iter()
        .filter(|m| keep(m))
        .filter(|m| user_inc.is_empty() || user_inc.contains(&m.user_id))
        .filter(|m| !user_exc.contains(&m.user_id))
        .filter(|m| roles.is_empty() || roles.contains(&m.role))
        .collect();
    let key = |m: &Membership| -> String {
        let u = store.users.get(&m.user_id);
        match field.as_str() {
            "first_name" => u.and_then(|u| u.first_name.clone()),
            "last_name" => u.and_then(|u| u.last_name.clone()),
            "username" => u.and_then(|u| u.username.clone()),
            "email_address" => u.and_then(|u| u.primary_email().map(str::to_owned)),
            "phone_number" => u.and_then(|u| u.phones.first().map(|p| p.value.clone())),
            _ => None,
        }
        .unwrap_or_default()
        .to_lowercase()
    };
    ms.sort_by(|a, b| {
        let o = if field == "created_at" {
            a.created_at.cmp(&b.created_at)
        } else {
            key(a).cmp(&key(b))
        }
        .then_with(|| a.id.cmp(&b.id));
        if desc { o.reverse() } else { o }
    });
    let total = ms.len();
    let data = page
        .apply(ms)
        .into_iter()
        .filter_map(|m| store.membership_json(m))
        .collect();
    Ok(paginated(data, total))
}

pub fn router() -> Router<Emulator> {
    Router::new()
        .route("/v1/organizations", get(get_orgs))
        .route("/v1/organizations/{organization_id}", get(get_org))
        .route(
            "/v1/organizations/{organization_id}/memberships",
            get(get_org_memberships),
        )
        .route(
            "/v1/users/{user_id}/organization_memberships",
            get(get_user_memberships),
        )
}

type ApiResult = Result<Json<Value>, ApiError>;

async fn get_orgs(State(emu): State<Emulator>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q.as_deref());
    Ok(Json(list_orgs(&emu.inner.store.read(), &p)?))
}

async fn get_org(State(emu): State<Emulator>, Path(key): Path<String>) -> ApiResult {
    let store = emu.inner.store.read();
    let org = store
        .org_by_id_or_slug(&key)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(store.org_json(org)))
}

async fn get_org_memberships(
    State(emu): State<Emulator>,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let store = emu.inner.store.read();
    let org_id = store
        .org_by_id_or_slug(&key)
        .ok_or_else(ApiError::not_found)?
        .id
        .clone();
    Ok(Json(list_memberships(&store, &p, |m| m.org_id == org_id)?))
}

async fn get_user_memberships(
    State(emu): State<Emulator>,
    Path(user_id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = Params::parse(q.as_deref());
    let store = emu.inner.store.read();
    if !store.users.contains_key(&user_id) {
        return Err(ApiError::not_found());
    }
    Ok(Json(list_memberships(&store, &p, |m| {
        m.user_id == user_id
    })?))
}
