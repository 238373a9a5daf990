//! Who is this request: the verified session, the local user and the app's profile,
//! resolved together and cached; and race-free first-login provisioning.

pub mod roles;

pub use roles::{role_of, upsert_from_clerk};
