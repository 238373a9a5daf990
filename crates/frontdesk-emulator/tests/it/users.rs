use frontdesk_emulator::Emulator;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{clerk_error, ids, start};

/// Required properties of `User` in bapi_2026-05-12.yml.
const USER_REQUIRED: &[&str] = &[
    "id",
    "object",
    "username",
    "first_name",
    "last_name",
    "has_image",
    "primary_email_address_id",
    "primary_phone_number_id",
    "primary_web3_wallet_id",
    "password_enabled",
    "two_factor_enabled",
    "totp_enabled",
    "backup_code_enabled",
    "email_addresses",
    "phone_numbers",
    "web3_wallets",
    "passkeys",
    "external_accounts",
    "saml_accounts",
    "enterprise_accounts",
    "public_metadata",
    "external_id",
    "last_sign_in_at",
    "banned",
    "locked",
    "lockout_expires_in_seconds",
    "verification_attempts_remaining",
    "created_at",
    "updated_at",
    "delete_self_enabled",
    "create_organization_enabled",
    "last_active_at",
    "mfa_enabled_at",
    "mfa_disabled_at",
    "legal_accepted_at",
];

fn assert_user_shape(u: &Value) {
    for k in USER_REQUIRED {
        assert!(u.get(*k).is_some(), "user lacks required `{k}`: {u}");
    }
    assert_eq!(u["object"], "user");
    let primary = u["primary_email_address_id"].as_str().unwrap();
    let email = &u["email_addresses"][0];
    assert_eq!(email["id"], primary);
    assert_eq!(email["object"], "email_address");
    assert_eq!(email["verification"]["status"], "verified");
    for k in [
        "email_address",
        "verification",
        "linked_to",
        "reserved",
        "created_at",
        "updated_at",
    ] {
        assert!(email.get(k).is_some(), "email lacks `{k}`");
    }
    // Timestamps are Unix milliseconds.
    assert!(u["created_at"].as_i64().unwrap() > 1_600_000_000_000);
}

#[tokio::test]
async fn get_user_has_every_required_field_and_404s_unknown() {
    let c = start(20).await;
    let id = Emulator::seed_user_id(3);
    let (s, u) = c.get(&format!("/v1/users/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(u["id"], id);
    assert_user_shape(&u);
    assert!(
        u["email_addresses"][0]["email_address"]
            .as_str()
            .unwrap()
            .ends_with(".3@example.com")
    );
    assert_eq!(u["phone_numbers"][0]["object"], "phone_number");

    let (s, body) = c.get("/v1/users/user_doesnotexist").await;
    assert_eq!(s, 404);
    clerk_error(&body, "resource_not_found");
}

#[tokio::test]
async fn seeding_is_deterministic_per_seed() {
    let a = Emulator::new(frontdesk_emulator::EmulatorConfig {
        users: 5,
        seed: 7,
        ..Default::default()
    })
    .unwrap();
    let b = Emulator::new(frontdesk_emulator::EmulatorConfig {
        users: 5,
        seed: 7,
        ..Default::default()
    })
    .unwrap();
    let id = Emulator::seed_user_id(2);
    assert_eq!(a.user_ids(), b.user_ids());
    assert_eq!(a.user(&id), b.user(&id));
    assert_eq!(a.user_ids().len(), 5);
    assert!(id.starts_with("user_") && id.len() == 32);
}

#[tokio::test]
async fn list_is_a_bare_array_filtered_by_repeated_user_ids_ignoring_unknown() {
    let c = start(30).await;
    let a = Emulator::seed_user_id(1);
    let b = Emulator::seed_user_id(2);
    let (s, list) = c
        .get(&format!(
            "/v1/users?user_id={a}&user_id={b}&user_id=user_unknown&limit=100"
        ))
        .await;
    assert_eq!(s, 200);
    let mut got = ids(&list);
    got.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(got, want);
    assert_user_shape(&list[0]);

    // Exclusion with '-' (percent-encoded '+' includes).
    let (_, list) = c
        .get(&format!(
            "/v1/users?user_id=%2B{a}&user_id=%2B{b}&user_id=-{b}"
        ))
        .await;
    assert_eq!(ids(&list), vec![a]);
}

#[tokio::test]
async fn list_filters_email_username_external_id_phone_query() {
    let c = start(30).await;
    let id = Emulator::seed_user_id(6);
    let u = c.emu.user(&id).unwrap();
    let email = u["email_addresses"][0]["email_address"]
        .as_str()
        .unwrap()
        .to_owned();
    let username = u["username"].as_str().unwrap().to_owned();

    let (_, l) = c
        .get(&format!("/v1/users?email_address={}", email.to_uppercase()))
        .await;
    assert_eq!(ids(&l), vec![id.clone()]);
    let (_, l) = c.get(&format!("/v1/users?username={username}")).await;
    assert_eq!(ids(&l), vec![id.clone()]);
    let (_, l) = c.get("/v1/users?external_id=ext_000006").await;
    assert_eq!(ids(&l), vec![id.clone()]);
    let (_, l) = c.get("/v1/users?phone_number=%2B15550000006").await;
    assert_eq!(ids(&l), vec![id.clone()]);
    let (_, l) = c.get("/v1/users?query=.6%40example").await;
    assert_eq!(ids(&l), vec![id.clone()]);
    let (_, l) = c.get(&format!("/v1/users?query={id}")).await;
    assert_eq!(ids(&l), vec![id.clone()]);
    // Bracket and comma forms are not Clerk's array syntax: the filter is ignored / no match.
    let (_, l) = c.get(&format!("/v1/users?user_id[0]={id}&limit=100")).await;
    assert_eq!(l.as_array().unwrap().len(), 30);
    let (_, l) = c
        .get(&format!(
            "/v1/users?user_id={id},{}",
            Emulator::seed_user_id(7)
        ))
        .await;
    assert_eq!(ids(&l), Vec::<String>::new());
    // Filters combine with AND.
    let (_, l) = c
        .get(&format!(
            "/v1/users?username={username}&external_id=ext_000008"
        ))
        .await;
    assert_eq!(ids(&l), Vec::<String>::new());
}

#[tokio::test]
async fn filter_values_are_capped_at_100() {
    let c = start(5).await;
    let q = |n: usize| {
        (0..n)
            .map(|i| format!("user_id={}", Emulator::seed_user_id(i)))
            .collect::<Vec<_>>()
            .join("&")
    };
    let (s, l) = c.get(&format!("/v1/users?{}", q(100))).await;
    assert_eq!(s, 200);
    assert_eq!(l.as_array().unwrap().len(), 5, "unknown ids are ignored");
    let (s, body) = c.get(&format!("/v1/users?{}", q(101))).await;
    assert_eq!(s, 422);
    let e = clerk_error(&body, "form_param_value_invalid");
    assert_eq!(e["meta"]["param_name"], "user_id");
    let emails = (0..101)
        .map(|i| format!("email_address=a{i}%40x.com"))
        .collect::<Vec<_>>()
        .join("&");
    let (s, _) = c.get(&format!("/v1/users/count?{emails}")).await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn limit_offset_and_order() {
    let c = start(30).await;
    let (_, l) = c.get("/v1/users").await;
    assert_eq!(l.as_array().unwrap().len(), 10, "default limit");
    // Default order: newest first; seeded user 29 is the newest.
    assert_eq!(l[0]["id"], Emulator::seed_user_id(29));
    let created: Vec<i64> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["created_at"].as_i64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]));

    let (_, l) = c
        .get("/v1/users?order_by=%2Bcreated_at&limit=3&offset=1")
        .await;
    assert_eq!(
        ids(&l),
        vec![
            Emulator::seed_user_id(1),
            Emulator::seed_user_id(2),
            Emulator::seed_user_id(3)
        ]
    );
    let (_, l) = c.get("/v1/users?order_by=created_at&limit=1").await;
    assert_eq!(
        ids(&l),
        vec![Emulator::seed_user_id(0)],
        "no sign means ascending"
    );
    let (_, l) = c.get("/v1/users?limit=500").await;
    assert_eq!(l.as_array().unwrap().len(), 30);

    for bad in [
        "limit=0",
        "limit=501",
        "limit=abc",
        "offset=-1",
        "order_by=shoe_size",
    ] {
        let (s, body) = c.get(&format!("/v1/users?{bad}")).await;
        assert_eq!(s, 422, "{bad}");
        clerk_error(&body, "form_param_value_invalid");
    }
    // Cursor pagination.
    let (_, l) = c
        .get(&format!(
            "/v1/users?limit=2&starting_after={}",
            Emulator::seed_user_id(29)
        ))
        .await;
    assert_eq!(
        ids(&l),
        vec![Emulator::seed_user_id(28), Emulator::seed_user_id(27)]
    );
}

#[tokio::test]
async fn count_uses_the_same_filters() {
    let c = start(25).await;
    let (s, body) = c.get("/v1/users/count").await;
    assert_eq!(s, 200);
    assert_eq!(body, json!({"object": "total_count", "total_count": 25}));
    let (_, body) = c
        .get(&format!(
            "/v1/users/count?user_id={}&user_id=user_nope",
            Emulator::seed_user_id(0)
        ))
        .await;
    assert_eq!(body["total_count"], 1);
}

#[tokio::test]
async fn create_update_metadata_delete_lifecycle() {
    let c = start(3).await;
    let (s, u) = c
        .send(
            Method::POST,
            "/v1/users",
            json!({"email_address": ["New.Person@example.com"], "username": "newperson",
                   "first_name": "New", "last_name": "Person", "external_id": "ext_new",
                   "public_metadata": {"role": "admin", "prefs": {"theme": "dark", "lang": "en"}}}),
        )
        .await;
    assert_eq!(s, 200);
    assert_user_shape(&u);
    let id = u["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("user_"));
    assert_eq!(
        u["email_addresses"][0]["email_address"],
        "New.Person@example.com"
    );
    assert!(
        u["email_addresses"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("idn_")
    );
    let t0 = u["updated_at"].as_i64().unwrap();

    // Duplicates are Clerk's form_identifier_exists.
    let (s, body) = c
        .send(
            Method::POST,
            "/v1/users",
            json!({"email_address": ["new.person@example.com"]}),
        )
        .await;
    assert_eq!(s, 422);
    assert_eq!(
        clerk_error(&body, "form_identifier_exists")["meta"]["param_name"],
        "email_address"
    );
    let (s, body) = c
        .send(Method::POST, "/v1/users", json!({"username": "NEWPERSON"}))
        .await;
    assert_eq!(s, 422);
    clerk_error(&body, "form_identifier_exists");
    let (s, body) = c
        .send(Method::POST, "/v1/users", json!("not an object"))
        .await;
    assert_eq!(s, 400);
    clerk_error(&body, "malformed_request_body");

    // PATCH
    let (s, u) = c
        .send(
            Method::PATCH,
            &format!("/v1/users/{id}"),
            json!({"first_name": "Renamed"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(u["first_name"], "Renamed");
    assert_eq!(u["last_name"], "Person");
    let t1 = u["updated_at"].as_i64().unwrap();
    assert!(t1 > t0, "updated_at strictly increases");

    // Metadata deep merge; null deletes.
    let (s, u) = c
        .send(
            Method::PATCH,
            &format!("/v1/users/{id}/metadata"),
            json!({"public_metadata": {"prefs": {"lang": null, "tz": "UTC"}, "role": null, "plan": "pro"},
                   "private_metadata": {"stripe": "cus_1"}}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        u["public_metadata"],
        json!({"prefs": {"theme": "dark", "tz": "UTC"}, "plan": "pro"})
    );
    assert_eq!(u["private_metadata"], json!({"stripe": "cus_1"}));
    let t2 = u["updated_at"].as_i64().unwrap();
    assert!(t2 > t1);
    // PUT replaces the fields sent, keeps the others.
    let (_, u) = c
        .send(
            Method::PUT,
            &format!("/v1/users/{id}/metadata"),
            json!({"public_metadata": {"only": 1}}),
        )
        .await;
    assert_eq!(u["public_metadata"], json!({"only": 1}));
    assert_eq!(u["private_metadata"], json!({"stripe": "cus_1"}));
    assert!(u["updated_at"].as_i64().unwrap() > t2);
    // The library call is the same operation.
    let u = c.emu.update_user(&id, json!({"last_name": "Lib"})).unwrap();
    assert_eq!(u["last_name"], "Lib");
    let (_, fetched) = c.get(&format!("/v1/users/{id}")).await;
    assert_eq!(fetched, u);

    let (s, body) = c
        .send(Method::PATCH, "/v1/users/user_missing/metadata", json!({}))
        .await;
    assert_eq!(s, 404);
    clerk_error(&body, "resource_not_found");

    // DELETE → DeletedObject, then 404.
    let res = c
        .api(Method::DELETE, &format!("/v1/users/{id}"))
        .send()
        .await
        .unwrap();
    let (s, body) = crate::common::read(res).await;
    assert_eq!(s, 200);
    assert_eq!(body, json!({"object": "user", "id": id, "deleted": true}));
    let (s, _) = c.get(&format!("/v1/users/{id}")).await;
    assert_eq!(s, 404);
    let (_, n) = c.get("/v1/users/count").await;
    assert_eq!(n["total_count"], 3);
}

#[tokio::test]
async fn create_email_address_can_be_unverified_and_primary() {
    let c = start(3).await;
    let id = Emulator::seed_user_id(1);
    let (s, e) = c
        .send(
            Method::POST,
            "/v1/email_addresses",
            serde_json::json!({"user_id": id, "email_address": "someone.else@example.com", "primary": true}),
        )
        .await;
    assert_eq!(s, 200, "{e}");
    assert_eq!(e["object"], "email_address");
    assert_eq!(e["verification"]["object"], "verification_otp");
    assert_eq!(
        e["verification"]["status"], "unverified",
        "verified defaults to false"
    );
    let (_, u) = c.get(&format!("/v1/users/{id}")).await;
    assert_eq!(u["object"], "user");
    assert_eq!(u["primary_email_address_id"], e["id"]);
    assert_eq!(u["email_addresses"].as_array().unwrap().len(), 2);
    let (s, e) = c
        .send(
            Method::POST,
            "/v1/email_addresses",
            serde_json::json!({"user_id": id, "email_address": "own@example.com", "verified": true}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(e["verification"]["status"], "verified");
    let (_, after) = c.get(&format!("/v1/users/{id}")).await;
    assert_eq!(
        after["primary_email_address_id"], u["primary_email_address_id"],
        "not primary unless asked"
    );
    // Taken, unknown user, not an address.
    let (s, body) = c
        .send(
            Method::POST,
            "/v1/email_addresses",
            serde_json::json!({"user_id": Emulator::seed_user_id(2), "email_address": "own@example.com"}),
        )
        .await;
    assert_eq!(s, 422, "{body}");
    clerk_error(&body, "form_identifier_exists");
    let (s, body) = c
        .send(
            Method::POST,
            "/v1/email_addresses",
            serde_json::json!({"user_id": "user_nope", "email_address": "x@example.com"}),
        )
        .await;
    assert_eq!(s, 404);
    clerk_error(&body, "resource_not_found");
    let (s, _) = c
        .send(
            Method::POST,
            "/v1/email_addresses",
            serde_json::json!({"user_id": id, "email_address": "nope"}),
        )
        .await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn create_user_can_reserve_an_unverified_email() {
    let c = start(1).await;
    let (s, u) = c
        .send(
            Method::POST,
            "/v1/users",
            json!({
                "email_address": ["claimed@example.com", "mine@example.com"],
                "email_address_identification_status": ["reserved", "verified"],
            }),
        )
        .await;
    assert_eq!(s, 200, "{u}");
    let primary = &u["email_addresses"][0];
    assert_eq!(u["primary_email_address_id"], primary["id"]);
    assert_eq!(primary["email_address"], "claimed@example.com");
    assert_eq!(primary["reserved"], true);
    assert_eq!(primary["verification"]["status"], "unverified");
    assert_eq!(
        u["email_addresses"][1]["verification"]["status"],
        "verified"
    );
    let (s, body) = c
        .send(
            Method::POST,
            "/v1/users",
            json!({
                "email_address": ["x@example.com"],
                "email_address_identification_status": ["verified", "reserved"],
            }),
        )
        .await;
    assert_eq!(s, 422, "{body}");
}
