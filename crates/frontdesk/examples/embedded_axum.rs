//! A Rust app with Frontdesk inside: no sidecar, the same session verification,
//! first-login provisioning and user cache as `frontdesk serve`, through a tower layer
//! and axum extractors.
//!
//! Run it against dev mode (an in-process Clerk emulator, an SQLite file, no
//! accounts):
//!
//! ```sh
//! cargo run -p frontdesk --example embedded_axum
//! ```
//!
//! It prints curl commands with a demo session token. `DATABASE_URL` (Postgres) and
//! `REDIS_URL` are honoured as by `frontdesk serve`; `EMBED_ADDR` sets the address
//! (default `127.0.0.1:3000`).

use axum::Json;
use axum::Router;
use axum::routing::get;
use frontdesk::embed::Admin;
use frontdesk::{Config, Context, Frontdesk, FrontdeskLayer, OptionalSession, RequireRole};
use frontdesk_emulator::MintSession;
use serde_json::{Value, json};

/// Public: who is asking, if anyone.
async fn hello(OptionalSession(session): OptionalSession) -> String {
    match session {
        Some(s) => format!("hello, {}\n", s.user_id),
        None => "hello, stranger\n".to_string(),
    }
}

/// Signed in: the local user and the app's profile (created on the first request).
async fn me(ctx: Context) -> Json<Value> {
    Json(json!({
        "user": {"id": ctx.user.id, "clerk_id": ctx.user.clerk_id, "email": ctx.user.email, "role": ctx.user.role},
        "profile": {"id": ctx.profile.id, "display_name": ctx.profile.display_name},
        "session": {"sid": ctx.session.session_id},
    }))
}

/// Admins only.
async fn admin(who: RequireRole<Admin>) -> String {
    format!("hello, admin {}\n", who.user.clerk_id)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut config, _warnings) = Config::load(None)?;
    config.dev.enabled = true;
    if std::env::var_os("DATABASE_URL").is_none() {
        config.database_url = frontdesk::config::Secret::new("sqlite://embedded_axum.db");
    }
    let dev = frontdesk::devmode::start(&mut config).await?;
    // The first seeded user is this demo's admin; the second an ordinary user.
    let admin_id = frontdesk_emulator::Emulator::seed_user_id(0);
    let user_id = frontdesk_emulator::Emulator::seed_user_id(1);
    config
        .context
        .role_overrides
        .insert(admin_id.clone(), "admin".into());

    let fd = Frontdesk::builder(config).build().await?;
    fd.start();

    let app = Router::new()
        .route("/", get(hello))
        .route("/me", get(me))
        .route("/admin", get(admin))
        .layer(FrontdeskLayer::new(fd.clone()));

    let addr = std::env::var("EMBED_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let addr = listener.local_addr()?;
    let mint = |user_id: &str| {
        dev.emulator().mint_session(MintSession {
            user_id: user_id.to_string(),
            org_id: None,
            ttl_s: Some(3600),
            azp: None,
        })
    };
    let (admin_token, user_token) = (mint(&admin_id)?.jwt, mint(&user_id)?.jwt);
    println!("embedded_axum on http://{addr}");
    println!("  curl http://{addr}/");
    println!("  curl -H 'Authorization: Bearer {user_token}' http://{addr}/me");
    println!("  curl -H 'Authorization: Bearer {user_token}' http://{addr}/admin   # 403");
    println!("  curl -H 'Authorization: Bearer {admin_token}' http://{addr}/admin");

    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    fd.stop().await;
    dev.stop().await;
    Ok(())
}
