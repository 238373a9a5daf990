//! Schema migrations on both stores.

use frontdesk::store::{Backend, Store};

use crate::support;

async fn check_schema(store: &Store) {
    assert!(
        store.migrate().await.unwrap() >= 1,
        "first run applies the schema"
    );
    assert_eq!(store.migrate().await.unwrap(), 0, "second run is a no-op");
    let versions = store.applied_migrations().await.unwrap();
    assert_eq!(versions.first(), Some(&1));
}

#[tokio::test]
async fn postgres_migrations_apply_once_and_enforce_one_profile_per_user() {
    let db = support::fresh_pg_database().await;
    let store = Store::connect(&db, 2).await.unwrap();
    assert_eq!(store.kind(), "postgres");
    check_schema(&store).await;
    let Backend::Postgres(pool) = store.backend() else {
        unreachable!()
    };
    let user_id: i64 = sqlx::query_scalar(
        "INSERT INTO users (clerk_id, created_at, updated_at) VALUES ('user_1', 0, 0) RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let insert = "INSERT INTO profiles (user_id, created_at, updated_at) VALUES ($1, 0, 0)";
    sqlx::query(insert)
        .bind(user_id)
        .execute(pool)
        .await
        .unwrap();
    let dup = sqlx::query(insert).bind(user_id).execute(pool).await;
    assert!(dup.is_err(), "UNIQUE(user_id) holds");
    // Unlinked profiles (user_id NULL) may be many.
    for _ in 0..2 {
        sqlx::query("INSERT INTO profiles (email, created_at, updated_at) VALUES ('a@x', 0, 0)")
            .execute(pool)
            .await
            .unwrap();
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM profiles")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 3);
    store.close().await;
}

#[tokio::test]
async fn sqlite_migrations_apply_once_and_enforce_one_profile_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&support::sqlite_url(&dir), 2).await.unwrap();
    assert_eq!(store.kind(), "sqlite");
    check_schema(&store).await;
    let Backend::Sqlite(pool) = store.backend() else {
        unreachable!()
    };
    let user_id: i64 = sqlx::query_scalar(
        "INSERT INTO users (clerk_id, created_at, updated_at) VALUES ('user_1', 0, 0) RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let insert = "INSERT INTO profiles (user_id, created_at, updated_at) VALUES (?, 0, 0)";
    sqlx::query(insert)
        .bind(user_id)
        .execute(pool)
        .await
        .unwrap();
    assert!(
        sqlx::query(insert)
            .bind(user_id)
            .execute(pool)
            .await
            .is_err()
    );
    store.close().await;
}
