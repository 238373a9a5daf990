use frontdesk_emulator::Emulator;
use serde_json::Value;

use crate::common::{clerk_error, start};

const ORG_REQUIRED: &[&str] = &[
    "object",
    "id",
    "name",
    "slug",
    "has_image",
    "max_allowed_memberships",
    "admin_delete_enabled",
    "public_metadata",
    "created_at",
    "updated_at",
];

#[tokio::test]
async fn organizations_list_get_by_id_or_slug_and_paginate() {
    let c = start(100).await;
    let (s, page) = c.get("/v1/organizations?limit=2").await;
    assert_eq!(s, 200);
    assert_eq!(page["total_count"], 5);
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for o in data {
        for k in ORG_REQUIRED {
            assert!(o.get(*k).is_some(), "org lacks `{k}`");
        }
        assert_eq!(o["object"], "organization");
        assert!(o["id"].as_str().unwrap().starts_with("org_"));
    }
    // Newest first by default.
    assert!(data[0]["created_at"].as_i64() > data[1]["created_at"].as_i64());

    let (_, page) = c.get("/v1/organizations?query=glob").await;
    assert_eq!(page["total_count"], 1);
    let org = page["data"][0].clone();
    assert_eq!(org["slug"], "globex");

    let (s, by_id) = c
        .get(&format!(
            "/v1/organizations/{}",
            org["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, 200);
    let (_, by_slug) = c.get("/v1/organizations/globex").await;
    assert_eq!(by_id, by_slug);
    assert_eq!(by_id["name"], "Globex");

    let (s, body) = c.get("/v1/organizations/org_missing").await;
    assert_eq!(s, 404);
    clerk_error(&body, "resource_not_found");
    let (s, _) = c.get("/v1/organizations?limit=501").await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn memberships_carry_org_and_public_user_data() {
    let c = start(40).await;
    let org_id = c.emu.org_ids()[0].clone();
    let (s, page) = c
        .get(&format!("/v1/organizations/{org_id}/memberships?limit=100"))
        .await;
    assert_eq!(s, 200);
    let data = page["data"].as_array().unwrap();
    assert_eq!(page["total_count"].as_u64().unwrap() as usize, data.len());
    assert!(!data.is_empty());
    let founder = Emulator::seed_user_id(0);
    let m = data
        .iter()
        .find(|m| m["public_user_data"]["user_id"] == founder)
        .expect("founder is a member");
    assert_eq!(m["object"], "organization_membership");
    assert!(m["id"].as_str().unwrap().starts_with("orgmem_"));
    assert_eq!(m["role"], "org:admin");
    assert_eq!(m["organization"]["id"], org_id);
    assert!(
        m["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "org:sys_memberships:manage")
    );
    let pud = &m["public_user_data"];
    for k in [
        "first_name",
        "last_name",
        "profile_image_url",
        "image_url",
        "has_image",
        "identifier",
    ] {
        assert!(pud.get(k).is_some(), "public_user_data lacks `{k}`");
    }
    assert!(
        pud["identifier"]
            .as_str()
            .unwrap()
            .ends_with("@example.com")
    );
    let roles: Vec<&Value> = data.iter().map(|m| &m["role"]).collect();
    assert!(roles.iter().any(|r| *r == "org:member"));

    let (_, mine) = c
        .get(&format!("/v1/users/{founder}/organization_memberships"))
        .await;
    assert_eq!(mine["total_count"], 1);
    assert_eq!(mine["data"][0]["organization"]["id"], org_id);
    // organization_id filter on users.
    let (_, n) = c
        .get(&format!("/v1/users/count?organization_id={org_id}"))
        .await;
    assert_eq!(n["total_count"].as_u64().unwrap() as usize, data.len());
}
