//! Dev mode: `serve --dev` (or `FRONTDESK_DEV=true`) starts the Clerk emulator
//! in-process on its own loopback port, points the Clerk settings at it, and prints how
//! to try the service — so a fresh clone runs with one command and no accounts. It is
//! never implied by a missing key (the emulator mints valid tokens), and only exists in
//! builds with the `emulator` feature.

use std::net::SocketAddr;

use frontdesk_emulator::{Emulator, EmulatorConfig, MintSession, RunningEmulator};

use crate::config::{Config, Secret};
use crate::error::Result;
use crate::facade::Frontdesk;

/// Lifetime of the demo token printed at start: long enough to paste into curl.
const DEMO_TOKEN_TTL_S: u64 = 3600;

pub struct DevEmulator {
    running: RunningEmulator,
    emulator: Emulator,
    demo_user: String,
    demo_token: String,
}

/// Starts the emulator and rewrites `config.clerk` to use it.
pub async fn start(config: &mut Config) -> Result<DevEmulator> {
    let emulator = Emulator::new(EmulatorConfig {
        users: config.dev.users.max(1),
        ..EmulatorConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("cannot start the embedded Clerk emulator: {e}"))?;
    let running = emulator
        .clone()
        .spawn(config.dev.emulator_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the embedded Clerk emulator: {e}"))?;
    config.clerk.secret_key = Some(Secret::new(emulator.secret_key()));
    config.clerk.api_url = running.url.clone();
    let demo_user = Emulator::seed_user_id(0);
    let minted = emulator
        .mint_session(MintSession {
            user_id: demo_user.clone(),
            org_id: None,
            ttl_s: Some(DEMO_TOKEN_TTL_S),
            azp: None,
        })
        .map_err(|e| anyhow::anyhow!("cannot mint the demo session token: {e}"))?;
    tracing::info!(emulator = %running.url, users = config.dev.users, "dev mode: embedded Clerk emulator started");
    Ok(DevEmulator {
        running,
        emulator,
        demo_user,
        demo_token: minted.jwt,
    })
}

impl DevEmulator {
    pub fn emulator(&self) -> &Emulator {
        &self.emulator
    }

    /// What `serve` prints once it is ready in dev mode.
    pub fn banner(&self, edge: SocketAddr, api: SocketAddr, state: &Frontdesk) -> String {
        let token = &self.demo_token;
        let clerk = &self.running.url;
        // The api token is a secret: name the variable, never print the value.
        let auth = if state.config().api_token.is_some() {
            " -H \"Authorization: Bearer $FRONTDESK_API_TOKEN\""
        } else {
            ""
        };
        format!(
            "\nFrontdesk is ready in dev mode (--dev): an embedded Clerk emulator stands in for Clerk. Never use it in production.\n\
             \n  edge   http://{edge}   public: /_frontdesk/*\
             \n  api    http://{api}   internal: /clerk/v1/*, /v1/*, /readyz, /metrics\
             \n  clerk  {clerk}   emulator with {users} demo users\
             \n  store  {store}\
             \n\nDemo session token for {user} (valid {ttl} s):\n  {token}\n\
             \nTry:\
             \n  TOKEN={token}\
             \n  curl -s -H \"Authorization: Bearer $TOKEN\" http://{edge}/_frontdesk/me\
             \n  curl -s -H 'Authorization: Bearer {secret}' http://{api}/clerk/v1/users/{user}   # the Backend API proxy\
             \n  curl -s{auth} http://{api}/v1/users/{user}?fields=minimal\
             \n  curl -s{auth} http://{api}/v1/stats\
             \n  curl -s http://{api}/readyz\
             \n  curl -s -X POST {clerk}/__emulator/sessions -d '{{\"user_id\":\"{user}\"}}'   # a fresh token\n",
            users = state.config().dev.users,
            store = state.store().kind(),
            user = self.demo_user,
            ttl = DEMO_TOKEN_TTL_S,
            secret = self.emulator.secret_key(),
        )
    }

    pub async fn stop(self) {
        let _ = self.running.shutdown().await;
    }
}
