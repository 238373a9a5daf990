//! Deterministic seed data: N users with names, emails, usernames, metadata and spread
//! `created_at`, a few organizations and their memberships. User ids depend only on the
//! index ([`crate::Emulator::seed_user_id`]); everything else also on the seed.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Map, Value, json};

use crate::ids;
use crate::orgs::{Membership, Org};
use crate::store::Store;
use crate::users::{Ident, User, default_image_url};

const FIRST: &[&str] = &[
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Radia",
    "Edsger",
    "Frances",
    "Donald",
    "Hedy",
    "John",
    "Katherine",
    "Tim",
    "Annie",
    "Vint",
    "Sophie",
    "Guido",
    "Joan",
    "Bjarne",
    "Karen",
    "Niklaus",
    "Lynn",
    "Brian",
    "Shafi",
    "Leslie",
    "Mary",
    "Yukihiro",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Ritchie",
    "Liskov",
    "Thompson",
    "Perlman",
    "Dijkstra",
    "Allen",
    "Knuth",
    "Lamarr",
    "McCarthy",
    "Johnson",
    "Berners-Lee",
    "Easley",
    "Cerf",
    "Wilson",
    "Rossum",
    "Clarke",
    "Stroustrup",
    "Jones",
    "Wirth",
    "Conway",
    "Kernighan",
    "Goldwasser",
    "Lamport",
    "Keller",
    "Matsumoto",
];
const ORGS: &[&str] = &[
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Labs",
    "Hooli",
    "Stark Industries",
    "Wayne Enterprises",
    "Cyberdyne",
];
const PLANS: &[&str] = &["free", "pro", "team"];

/// 2024-01-01T00:00:00Z in ms: seeded users are created hourly from here.
const EPOCH_MS: i64 = 1_704_067_200_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

pub fn user_id(i: usize) -> String {
    ids::make("user", &format!("seed-user:{i}"))
}

fn slugify(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

pub fn seed(store: &mut Store, users: usize) {
    let mut rng = StdRng::seed_from_u64(store.seed);
    let mut max_ms = 0;
    for i in 0..users {
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        let created_at = EPOCH_MS + (i as i64) * HOUR_MS + rng.random_range(0..HOUR_MS);
        let updated_at = created_at + rng.random_range(0..30 * DAY_MS);
        let id = user_id(i);
        let email = Ident {
            id: ids::make("idn", &format!("seed-idn:{i}:email")),
            value: format!("{}.{}.{i}@example.com", slugify(first), slugify(last)),
            strategy: "email_code",
            verified: true,
            reserved: false,
            created_at,
            updated_at: created_at,
        };
        let phones = if i % 3 == 0 {
            vec![Ident {
                id: ids::make("idn", &format!("seed-idn:{i}:phone")),
                value: format!("+1555{i:07}"),
                strategy: "phone_code",
                verified: true,
                reserved: false,
                created_at,
                updated_at: created_at,
            }]
        } else {
            Vec::new()
        };
        let mut public = Map::new();
        public.insert(
            "role".into(),
            json!(if i % 10 == 0 { "admin" } else { "member" }),
        );
        public.insert(
            "plan".into(),
            json!(PLANS[rng.random_range(0..PLANS.len())]),
        );
        let mut private = Map::new();
        private.insert("internal_id".into(), json!(i));
        let sign_in = updated_at - rng.random_range(0..DAY_MS);
        max_ms = max_ms.max(updated_at);
        let user = User {
            image_url: default_image_url(&store.instance_id, &id),
            id: id.clone(),
            external_id: (i % 2 == 0).then(|| format!("ext_{i:06}")),
            username: Some(format!("{}_{}_{i}", slugify(first), slugify(last))),
            first_name: Some(first.to_owned()),
            last_name: Some(last.to_owned()),
            locale: None,
            primary_email_id: Some(email.id.clone()),
            emails: vec![email],
            primary_phone_id: phones.first().map(|p| p.id.clone()),
            phones,
            has_image: false,
            public_metadata: public,
            private_metadata: private,
            unsafe_metadata: Map::new(),
            password_enabled: true,
            banned: false,
            locked: false,
            created_at,
            updated_at,
            last_sign_in_at: Some(sign_in.max(created_at)),
            last_active_at: Some(updated_at - updated_at.rem_euclid(DAY_MS)),
            legal_accepted_at: None,
            delete_self_enabled: true,
            create_organization_enabled: true,
            create_organizations_limit: None,
        };
        store.users.insert(id, user);
    }

    // A few organizations; user j (< orgs) founds org j and is its admin. Three users in
    // four belong to org i % orgs; every tenth user is an admin there.
    let n_orgs = if users == 0 {
        0
    } else {
        (users / 20).clamp(1, ORGS.len())
    };
    for j in 0..n_orgs {
        let created_at = EPOCH_MS + (j as i64) * HOUR_MS + HOUR_MS / 2;
        let id = ids::make("org", &format!("seed-org:{j}"));
        store.orgs.push(Org {
            image_url: format!(
                "https://img.clerk.com/{}",
                ids::make("img", &format!("seed-org:{j}"))
            ),
            id,
            name: ORGS[j].to_owned(),
            slug: slugify(ORGS[j]),
            public_metadata: Map::from_iter([("tier".to_owned(), json!(PLANS[j % PLANS.len()]))]),
            private_metadata: Map::<String, Value>::new(),
            created_by: user_id(j),
            created_at,
            updated_at: created_at,
        });
    }
    for i in 0..users {
        if n_orgs == 0 || (i % 4 == 3 && i >= n_orgs) {
            continue;
        }
        let j = i % n_orgs;
        let org = &store.orgs[j];
        let role = if i < n_orgs || i % 10 == 0 {
            "org:admin"
        } else {
            "org:member"
        };
        let created_at = store
            .users
            .get(&user_id(i))
            .map(|u| u.created_at)
            .unwrap_or(org.created_at)
            .max(org.created_at)
            + 1;
        store.memberships.push(Membership {
            id: ids::make("orgmem", &format!("seed-orgmem:{j}:{i}")),
            org_id: org.id.clone(),
            user_id: user_id(i),
            role: role.to_owned(),
            created_at,
            updated_at: created_at,
        });
        max_ms = max_ms.max(created_at);
    }
    store.observe(max_ms);
}
