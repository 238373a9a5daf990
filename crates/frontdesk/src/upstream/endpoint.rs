//! Backend API endpoints as a closed set: the label of every upstream metric, the key
//! of 429 pauses, and the slots of the per-endpoint counters.

use http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    GetUser,
    ListUsers,
    CountUsers,
    CreateUser,
    UpdateUser,
    UpdateUserMetadata,
    DeleteUser,
    Jwks,
    GetOrganization,
    ListOrganizations,
    OrganizationMemberships,
    OtherRead,
    OtherWrite,
}

impl Endpoint {
    pub const COUNT: usize = 13;
    pub const ALL: [Endpoint; Self::COUNT] = [
        Endpoint::GetUser,
        Endpoint::ListUsers,
        Endpoint::CountUsers,
        Endpoint::CreateUser,
        Endpoint::UpdateUser,
        Endpoint::UpdateUserMetadata,
        Endpoint::DeleteUser,
        Endpoint::Jwks,
        Endpoint::GetOrganization,
        Endpoint::ListOrganizations,
        Endpoint::OrganizationMemberships,
        Endpoint::OtherRead,
        Endpoint::OtherWrite,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::GetUser => "GET /v1/users/{user_id}",
            Endpoint::ListUsers => "GET /v1/users",
            Endpoint::CountUsers => "GET /v1/users/count",
            Endpoint::CreateUser => "POST /v1/users",
            Endpoint::UpdateUser => "PATCH /v1/users/{user_id}",
            Endpoint::UpdateUserMetadata => "PATCH /v1/users/{user_id}/metadata",
            Endpoint::DeleteUser => "DELETE /v1/users/{user_id}",
            Endpoint::Jwks => "GET /v1/jwks",
            Endpoint::GetOrganization => "GET /v1/organizations/{organization_id}",
            Endpoint::ListOrganizations => "GET /v1/organizations",
            Endpoint::OrganizationMemberships => {
                "GET /v1/organizations/{organization_id}/memberships"
            }
            Endpoint::OtherRead => "other read",
            Endpoint::OtherWrite => "other write",
        }
    }

    /// The endpoint of a request, from its method and path (`/v1/...`, no query).
    pub fn classify(method: &Method, path: &str) -> Endpoint {
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let read = method == Method::GET || method == Method::HEAD;
        match (segs.as_slice(), read) {
            (["v1", "users"], true) => Endpoint::ListUsers,
            (["v1", "users"], false) if method == Method::POST => Endpoint::CreateUser,
            (["v1", "users", "count"], true) => Endpoint::CountUsers,
            (["v1", "users", _], true) => Endpoint::GetUser,
            (["v1", "users", _], false) if method == Method::PATCH => Endpoint::UpdateUser,
            (["v1", "users", _], false) if method == Method::DELETE => Endpoint::DeleteUser,
            (["v1", "users", _, "metadata"], false) if method == Method::PATCH => {
                Endpoint::UpdateUserMetadata
            }
            (["v1", "jwks"], true) => Endpoint::Jwks,
            (["v1", "organizations"], true) => Endpoint::ListOrganizations,
            (["v1", "organizations", _], true) => Endpoint::GetOrganization,
            (["v1", "organizations", _, "memberships"], true) => Endpoint::OrganizationMemberships,
            (_, true) => Endpoint::OtherRead,
            (_, false) => Endpoint::OtherWrite,
        }
    }
}
