//! From a Clerk user to the local row: which email, which display name, which role.

use crate::config::ContextConfig;
use crate::store::UserUpsert;
use crate::users::CachedUser;

/// The role: a configured override (by Clerk id, then email) wins; else Clerk's
/// `public_metadata.role` when it is one of the configured roles; else the default.
/// `email` must be one Clerk marks verified (see [`upsert_from_clerk`]).
pub fn role_of(
    clerk_id: &str,
    email: Option<&str>,
    public_metadata: &serde_json::Value,
    config: &ContextConfig,
) -> String {
    if let Some(r) = config.role_overrides.get(clerk_id) {
        return r.clone();
    }
    if let Some(r) = email.and_then(|e| {
        config
            .role_overrides
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(e))
            .map(|(_, v)| v)
    }) {
        return r.clone();
    }
    match public_metadata.get("role").and_then(|v| v.as_str()) {
        Some(r) if config.roles.iter().any(|allowed| allowed == r) => r.to_string(),
        _ => config.default_role.clone(),
    }
}

/// The local row's values for a Clerk user.
pub fn upsert_from_clerk(user: &CachedUser, config: &ContextConfig) -> UserUpsert {
    let s = &user.summary;
    let name = match (s.first_name.as_deref(), s.last_name.as_deref()) {
        (Some(f), Some(l)) if !f.is_empty() && !l.is_empty() => Some(format!("{f} {l}")),
        (Some(f), _) if !f.is_empty() => Some(f.to_string()),
        (_, Some(l)) if !l.is_empty() => Some(l.to_string()),
        _ => s.username.clone(),
    };
    // Decisions by email only from an address Clerk has verified: anyone can sign up
    // with someone else's address.
    let verified_email = s
        .primary_email
        .as_deref()
        .filter(|_| s.primary_email_verified);
    if let Some(email) = s
        .primary_email
        .as_deref()
        .filter(|_| verified_email.is_none())
        && config
            .role_overrides
            .keys()
            .any(|k| k.eq_ignore_ascii_case(email))
    {
        tracing::warn!(
            user_id = %s.id,
            decision = "role_override",
            "profile_link_unverified_email"
        );
    }
    UserUpsert {
        clerk_id: s.id.clone(),
        email: s.primary_email.clone(),
        name,
        image_url: user.image_url(),
        role: role_of(&s.id, verified_email, &user.public_metadata(), config),
        clerk_updated_at: s.updated_at,
        email_verified: s.primary_email_verified,
    }
}
