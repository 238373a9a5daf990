//! Aliases of a user: the other keys an app looks a user up by (an email address, a
//! username), normalised the way Clerk compares them (case-insensitively, trimmed).
//! The alias index maps an alias to a user id; the user itself is cached once, under
//! its id.

use super::batcher::Kind;

/// A normalised alias: what the alias index is keyed by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Alias {
    pub kind: AliasKind,
    /// Trimmed and lower-cased.
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AliasKind {
    Email,
    Username,
}

/// The longest alias accepted (Clerk's identifiers are far shorter).
const MAX_LEN: usize = 320;

impl Alias {
    /// Checks and normalises an alias from a request; `None` for a value that cannot
    /// be one (empty, too long, control characters, an email without `@`).
    pub fn parse(kind: AliasKind, raw: &str) -> Option<Self> {
        let value = raw.trim().to_lowercase();
        if value.is_empty() || value.len() > MAX_LEN || value.chars().any(char::is_control) {
            return None;
        }
        if kind == AliasKind::Email && !value.contains('@') {
            return None;
        }
        Some(Self { kind, value })
    }

    /// An alias taken from Clerk's own data (no checks beyond normalising).
    pub fn of(kind: AliasKind, raw: &str) -> Self {
        Self {
            kind,
            value: raw.trim().to_lowercase(),
        }
    }

    /// The key of this alias in L1 and (under the Redis prefix) in L2.
    pub fn key(&self) -> String {
        match self.kind {
            AliasKind::Email => format!("alias:email:{}", self.value),
            AliasKind::Username => format!("alias:username:{}", self.value),
        }
    }

    pub(crate) fn kind_of(&self) -> Kind {
        match self.kind {
            AliasKind::Email => Kind::Email,
            AliasKind::Username => Kind::Username,
        }
    }

    pub fn label(&self) -> &'static str {
        match self.kind {
            AliasKind::Email => "email",
            AliasKind::Username => "username",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_are_normalised_and_checked() {
        assert_eq!(
            Alias::parse(AliasKind::Email, " Ada@Example.COM ").map(|a| a.value),
            Some("ada@example.com".to_string())
        );
        assert!(Alias::parse(AliasKind::Email, "nope").is_none());
        assert!(Alias::parse(AliasKind::Username, "").is_none());
        assert!(Alias::parse(AliasKind::Username, "a\nb").is_none());
        assert_eq!(
            Alias::parse(AliasKind::Username, "Ada").map(|a| a.key()),
            Some("alias:username:ada".to_string())
        );
    }
}
